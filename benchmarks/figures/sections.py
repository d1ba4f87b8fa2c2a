"""What each section of `python -m benchmarks.figures` runs, and what `--check` checks.

Sections:
  digits          the first README command (`digits`) for each seed, evaluated (`--mode
                  eval`);
  fashion_mnist   `fashion_mnist`, 400 steps, AlignMix/AE and the Baseline, for each seed;
  summary         parameter counts (`--mode summary`) of the CIFAR networks;
  throughput      benchmarks.train_throughput, every row (digits config);
  dispatch        the vanilla and five-mode steps at 1 and 8 steps per dispatch (digits);
  pipelines       the step fed by each data back end (digits and Fashion-MNIST);
  alignment       benchmarks.alignment, 4x4 and 8x8 (with `--authors_dir`: against their
                  code too; against OTT-JAX when it is installed);
  eval            benchmarks.eval_throughput;
  fidelity        benchmarks.fidelity against the authors' code (`--authors_dir`), both
                  networks;
  torch           benchmarks.torch_reference (needs torch): our step against PyTorch's;
  compare         benchmarks.compare_methods on Fashion-MNIST, CPU budget (about 2 hours;
                  resumes its runs in `<--compare_root>/compare_fashion_cpu`);
  compare_lowdata the same, low-data budget (a class-balanced subset trained long);
  compare_gpu_window  the same, GPU-window budget (on an accelerator: every row, 30 epochs);
  tests           the README's two test commands, timed;
  gpu             the figures `benchmarks.gpu_check --out FILE` wrote on an accelerator
                  (`--gpu_jsonl FILE`).
The subprocesses run without `XLA_FLAGS`, as a user typing the commands would.
"""

import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

from alignmix_jax import metric_logging
from benchmarks.figures import documents
from benchmarks.figures import spread

SUMMARY_CONFIGS = ('cifar10_preactresnet18', 'cifar100_preactresnet18', 'cifar10_wrn16_8')
SEEDS = {'digits': tuple(range(10)), 'fashion_mnist': (0, 1, 2)}
FASHION_STEPS = 400
DIGITS_TEST_IMAGE = 100.0 / 360  # One test image, in percent: the resolution of digits.
FASHION_TEST_IMAGE = 100.0 / 10_000


def _env():
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  return env


def _run(command, log):
  """Runs `command` (a list) from the repository root; returns (stdout, seconds)."""
  log.append(' '.join(command))
  print('$', ' '.join(command), flush=True)
  start = time.perf_counter()
  done = subprocess.run([sys.executable] + command[1:] if command[0] == 'python' else command,
                        cwd=documents.ROOT, env=_env(), capture_output=True, text=True,
                        check=False)
  seconds = time.perf_counter() - start
  if done.returncode:
    sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
    raise SystemExit(f'figures: `{" ".join(command)}` failed (status {done.returncode}).')
  return done.stdout, seconds


def _json_lines(text):
  return [json.loads(line) for line in text.splitlines() if line.startswith('{')]


def _train_and_evaluate(config, workdir, log, overrides=()):
  """Trains `config` in a fresh `workdir`; returns the run's figures."""
  command = ['python', '-m', 'alignmix_jax', '--config', config, '--workdir', workdir,
             *overrides]
  _, seconds = _run(command, log)
  lines = metric_logging.read_jsonl(workdir)
  tests = [line for line in lines if 'test/top1' in line]
  row_errors = [line['train/sinkhorn_row_error'] for line in lines
                if 'train/sinkhorn_row_error' in line]
  out = {'top1': tests[-1]['test/top1'], 'best_top1': tests[-1]['test/best_top1'],
         'steps': tests[-1]['step'], 'seconds': seconds, 'evaluations': len(tests)}
  if row_errors:
    out['row_error_range'] = [min(row_errors), max(row_errors)]
  return out


def _seed_runs(args, section, measure):
  """`measure(seed)` for each seed of `section`: `--seeds`, or `SEEDS[section]` (`--check`:
  the first of them)."""
  seeds = args.seeds or (SEEDS[section][:1] if args.check else SEEDS[section])
  return [{'seed': seed, **measure(seed)} for seed in seeds]


def run_digits(args, log):
  """The first README command (`digits`) for each seed, then `--mode eval` on it."""
  def measure(seed):
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, 'digits')
      seed_flag = [f'--config.seed={seed}']
      out = _train_and_evaluate('digits', workdir, log, seed_flag)
      _, out['eval_seconds'] = _run(['python', '-m', 'alignmix_jax', '--config', 'digits',
                                     '--workdir', workdir, '--mode', 'eval', *seed_flag], log)
      with open(os.path.join(workdir, 'eval.json'), encoding='utf-8') as f:
        out['eval'] = json.load(f)
    return out

  return {'runs': _seed_runs(args, 'digits', measure)}


def run_fashion_mnist(args, log):
  """`fashion_mnist` for 400 steps, AlignMix/AE and the Baseline, for each seed."""
  def measure(seed):
    with tempfile.TemporaryDirectory() as tmp:
      return {method: _train_and_evaluate(
          f'fashion_mnist:{method}', os.path.join(tmp, method), log,
          [f'--config.num_train_steps={FASHION_STEPS}', f'--config.seed={seed}'])
              for method in ('alignmix', 'vanilla')}

  return {'runs': _seed_runs(args, 'fashion_mnist', measure)}


def run_summary(args, log):
  del args
  out = {}
  for name in SUMMARY_CONFIGS:
    text, _ = _run(['python', '-m', 'alignmix_jax', '--config', f'{name}:vanilla',
                    '--mode', 'summary'], log)
    match = re.search(r'^classifier params .*: (\d+)$', text, re.M)
    if match is None:
      raise SystemExit(f'figures: no `classifier params ...: N` line in the summary of {name}.')
    out[name] = int(match.group(1))
  return out


def run_throughput(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.train_throughput', '--steps', '20',
                  '--compile_repeats', '3'], log)
  return {'records': _json_lines(text)}


def run_dispatch(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.train_throughput', '--rows', 'vanilla,alignmix',
                  '--steps_per_dispatch', '1,8', '--steps', '24'], log)
  return {'records': _json_lines(text)}


def run_pipelines(args, log):
  del args
  records = []
  for config in ('digits', 'fashion_mnist'):
    text, _ = _run(['python', '-m', 'benchmarks.train_throughput', '--config', config,
                    '--rows', 'vanilla', '--pipeline_steps', '40',
                    '--pipelines', 'device,tfdata'], log)
    records += [r for r in _json_lines(text) if r['row'].startswith('pipeline_')]
  return {'records': records}


def run_alignment(args, log):
  command = ['python', '-m', 'benchmarks.alignment']
  if args.authors_dir:
    command += ['--authors_dir', args.authors_dir]
  text, _ = _run(command, log)
  return {str(r['side']): r for r in _json_lines(text)}


def run_eval(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.eval_throughput'], log)
  return {r['program']: r for r in _json_lines(text)}


def run_fidelity(args, log):
  if not args.authors_dir:
    raise SystemExit('figures: the fidelity section needs --authors_dir (a checkout of '
                     'github.com/shashankvkt/AlignMixup_CVPR22) and torch.')
  out = {}
  for model in ('preactresnet18', 'wrn16_8'):
    text, _ = _run(['python', '-m', 'benchmarks.fidelity', '--authors_dir', args.authors_dir,
                    '--model', model], log)
    out[model] = {r['part']: r for r in _json_lines(text)}
  return out


def run_torch(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.torch_reference'], log)
  return {'records': _json_lines(text), 'torch': importlib.metadata.version('torch')}


def _compare(budget):
  """The section of `benchmarks.compare_methods --budget BUDGET`: resumes, or rereads, its
  runs in `<--compare_root>/compare_fashion_<budget>`; its figures are copied into docs/."""
  def run(args, log):
    out = os.path.join(args.compare_root, f'compare_fashion_{budget}')
    _run(['python', '-m', 'benchmarks.compare_methods', '--out', out, '--budget', budget], log)
    out = os.path.join(documents.ROOT, out)
    with open(os.path.join(out, 'results.json'), encoding='utf-8') as f:
      results = json.load(f)
    for name, copy in COMPARE_FIGURES:
      if os.path.exists(os.path.join(out, name)):  # No interpolations without AlignMix/AE.
        shutil.copyfile(os.path.join(out, name),
                        os.path.join(documents.ROOT, 'docs', copy.format(budget=budget)))
    return results
  return run


# What a compare section copies from its --out into docs/.
COMPARE_FIGURES = (('reliability_best_worst.png', 'compare_{budget}_reliability.png'),
                   ('figure3_interpolations.png', 'compare_{budget}_figure3.png'),
                   ('learning_curves.png', 'compare_{budget}_curves.png'))


def run_tests(args, log):
  """The README's test commands, timed (with whatever compilation cache this machine has)."""
  del args
  out = {}
  for name, command in (('default', ['python', '-m', 'pytest', '-q', '-n', '2', 'tests']),
                        ('slow', ['python', '-m', 'pytest', '-q', '-m', 'slow', 'tests'])):
    text, seconds = _run(command, log)
    passed = re.search(r'(\d+) passed', text)
    out[name] = {'seconds': seconds, 'passed': int(passed.group(1)) if passed else 0}
  return out


def run_gpu(args, log):
  """What `benchmarks.gpu_check --out FILE` wrote on an accelerator (`--gpu_jsonl FILE`):
  read here, not measured; the machine is that of its `environment` line."""
  if not args.gpu_jsonl:
    raise SystemExit('figures: the gpu section needs --gpu_jsonl FILE, written on the '
                     'accelerator by `python -m benchmarks.gpu_check --fashion_dir DIR --out '
                     'FILE`.')
  with open(args.gpu_jsonl, encoding='utf-8') as f:
    records = [json.loads(line) for line in f if line.strip()]
  environment = next(r for r in records if r['check'] == 'environment')
  log.append('python -m benchmarks.gpu_check --fashion_dir DIR --out FILE')
  return {'records': records,
          'machine': {'cpu': f'{environment["devices"]}x {environment["device_kind"]}',
                      'jax': environment['jax']}}


SECTIONS = {'digits': run_digits, 'fashion_mnist': run_fashion_mnist, 'summary': run_summary,
            'throughput': run_throughput, 'dispatch': run_dispatch,
            'pipelines': run_pipelines,
            'alignment': run_alignment, 'eval': run_eval, 'fidelity': run_fidelity,
            'torch': run_torch, 'compare': _compare('cpu'), 'compare_lowdata': _compare('lowdata'),
            'compare_gpu_window': _compare('gpu_window'), 'tests': run_tests, 'gpu': run_gpu}

# The sections a plain `python -m benchmarks.figures` runs (the others need torch, the
# authors' code, an accelerator's output or an hour).
DEFAULT = ('digits', 'fashion_mnist', 'summary', 'throughput', 'dispatch', 'pipelines',
           'alignment', 'eval')


def _eval_figure(name):
  return lambda run: run['eval'][name]


# What `--check` holds a fresh run to, per section with seeds (`spread.Check`): the accuracy
# and evaluation figures. The OOD figures of digits are arbitrary (docs/evaluation.md) and
# times are not checked.
CHECKS = {
    'digits': (
        spread.Check('final test top-1 (%)', lambda run: run['top1'], DIGITS_TEST_IMAGE),
        spread.Check('best test top-1 (%)', lambda run: run['best_top1'], DIGITS_TEST_IMAGE),
        spread.Check('eval top1_error (%)', _eval_figure('top1_error'), DIGITS_TEST_IMAGE),
        spread.Check('eval fgsm_error (%)', _eval_figure('fgsm_error'), DIGITS_TEST_IMAGE),
        spread.Check('eval pgd_error (%)', _eval_figure('pgd_error'), DIGITS_TEST_IMAGE),
        spread.Check('eval ece (%)', _eval_figure('ece'), 0.5),
        spread.Check('largest Sinkhorn row error', lambda run: run['row_error_range'][1], 0.25,
                     (0.0, math.inf)),
    ),
    'fashion_mnist': tuple(
        spread.Check(f'{method} test top-1 (%)', lambda run, m=method: run[m]['top1'],
                     FASHION_TEST_IMAGE) for method in ('alignmix', 'vanilla')),
}


def machine():
  """This machine in words, e.g. `2-core x86_64 CPU, jax 0.10.2`."""
  model = ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      model = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), '')
  except OSError:
    pass
  return {'cpu': f'{os.cpu_count()}-core {platform.machine()} CPU', 'cpu_model': model,
          'jax': importlib.metadata.version('jax'), 'python': platform.python_version()}
