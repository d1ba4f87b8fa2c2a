"""Tests of the command line (alignmix_jax/cli.py, `python -m alignmix_jax` and `python -m
main`) and of what it reads `--config` with (`configs.resolve`, `configs.command_line`):
names and paths, the method as the config's argument or as `--config.mixup.method`,
overrides, and the bad command lines that end in one clear line."""

import glob
import json
import os

import numpy as np
import pytest

import helpers
from alignmix_jax import configs
from alignmix_jax.models import summary

REPO = helpers.REPO
TINY = os.path.join(REPO, 'tests', 'tiny_config.py')
DIGITS = os.path.join(REPO, 'alignmix_jax', 'configs', 'digits.py')


# configs.resolve and configs.command_line.


def test_the_settings_are_the_config_files_of_the_package():
  files = glob.glob(os.path.join(REPO, 'alignmix_jax', 'configs', '*.py'))
  expected = sorted(os.path.basename(f)[:-3] for f in files)
  expected = [name for name in expected if name not in ('__init__', 'default')]
  assert list(configs.NAMES) == expected and 'digits' in expected
  assert os.path.samefile(configs.DIRECTORY, os.path.dirname(DIGITS))
  assert os.path.samefile(os.path.join(REPO, 'configs'), configs.DIRECTORY)  # The symlink.


def test_resolve_turns_names_into_paths_and_keeps_paths():
  assert os.path.samefile(configs.resolve('digits'), DIGITS)
  path, colon, method = configs.resolve('digits:cutmix').partition(':')
  assert os.path.samefile(path, DIGITS) and (colon, method) == (':', 'cutmix')
  assert configs.resolve(TINY) == TINY
  assert configs.resolve(f'{TINY}:vanilla') == f'{TINY}:vanilla'
  with pytest.raises(FileNotFoundError) as error:
    configs.resolve('nope:cutmix')
  assert str(error.value) == (
      "--config nope:cutmix: 'nope' is neither a config file nor a setting; settings: "
      f'{", ".join(configs.NAMES)} (or give the path of a config file).')


def test_command_line_resolves_config_and_folds_the_method_field_into_its_argument():
  digits = configs.resolve('digits')
  assert configs.command_line(['prog', '--config', 'digits', '--workdir', 'w']) == [
      'prog', '--config', digits, '--workdir', 'w']
  assert configs.command_line(['prog', f'--config={TINY}', '--mode=summary']) == [
      'prog', f'--config={TINY}', '--mode=summary']
  assert configs.command_line(['prog', '--config', 'digits', '--config.mixup.method=cutmix',
                               '--config.model.width=8']) == [
                                   'prog', '--config', f'{digits}:cutmix',
                                   '--config.model.width=8']
  assert configs.command_line(['prog', '--config.mixup.method', 'cutmix',
                               '--config=digits']) == ['prog', f'--config={digits}:cutmix']
  # The same method twice is one method.
  assert configs.command_line(['prog', '--config', 'digits:cutmix',
                               '--config.mixup.method=cutmix']) == [
                                   'prog', '--config', f'{digits}:cutmix']
  assert configs.command_line(['prog', '--mode', 'summary']) == ['prog', '--mode', 'summary']
  with pytest.raises(ValueError, match='--config digits:vanilla and '
                                       '--config.mixup.method=cutmix name two methods'):
    configs.command_line(['prog', '--config', 'digits:vanilla',
                          '--config.mixup.method=cutmix'])
  with pytest.raises(FileNotFoundError, match="'nope' is neither"):
    configs.command_line(['prog', '--config=nope'])


# The command line, run.


def test_a_setting_name_runs_from_any_directory_and_cutmix_has_no_decoder(tmp_path):
  env = {**os.environ, 'PYTHONPATH': REPO}
  code, by_name, stderr = helpers.cli('--config', 'digits:cutmix', '--mode', 'summary',
                                      module='alignmix_jax', cwd=tmp_path, env=env)
  assert code == 0, stderr[-2000:]
  assert by_name.strip() == summary.summarize(configs.load('digits:cutmix'))
  assert by_name.startswith('model: preactresnet18, autoencoder: none')
  assert 'decoder' not in by_name and 'latent_encoder' not in by_name  # The paper's network.
  assert 'params/decoder: ' in summary.summarize(configs.load('digits'))  # AlignMix/AE has.
  code, by_field, stderr = helpers.cli('--config', 'digits', '--config.mixup.method=cutmix',
                                       '--mode', 'summary', module='alignmix_jax',
                                       cwd=tmp_path, env=env)
  assert code == 0, stderr[-2000:]
  assert by_field == by_name  # The method's fields are set, as `digits:cutmix` sets them.
  assert not os.listdir(tmp_path)  # A summary writes nothing.


def test_command_line_overrides_reach_the_config(tmp_path):
  code, stdout, stderr = helpers.cli(
      '--config', 'tests/tiny_config.py', '--mode', 'summary',
      f'--config.dataset.data_dir={tmp_path}', '--config.model.width=8')
  assert code == 0, stderr[-2000:]
  assert 'A (features): [2, 2, 64]' in stdout, stdout[:2000]  # Width 8.


def test_the_readme_ood_folder_override_works():
  code, _, stderr = helpers.cli('--config', 'configs/digits.py', '--mode', 'summary',
                                '--config.eval.ood_folders.lsun_crop=/data/LSUN')
  assert code == 0, stderr[-2000:]


@pytest.mark.parametrize('args, message', [
    (['--config', 'configs/nope.py'], "'configs/nope.py' is neither a config file nor a setting"),
    (['--config', 'alignmix_jax/alignment.py'], 'defines no get_config()'),
    (['--config', 'configs/digits.py', '--config.bogus=1'], "the config has no field 'bogus'"),
    (['--config', 'configs/digits.py', '--config.batch_size=abc'],
     'this field holds a int'),
    (['--config', 'configs/digits.py:vanilla', '--config.mixup.method=cutmix'],
     'name two methods'),
    (['--config', 'configs/digits.py', '--checkpoint_step=4'],
     '--checkpoint_step is for --mode eval'),
])
def test_bad_command_lines_end_in_one_clear_line(tmp_path, args, message):
  code, _, stderr = helpers.cli(*args, '--workdir', str(tmp_path / 'run'))
  assert code == 2
  assert message in stderr and 'Traceback' not in stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr  # One line.
  assert not os.path.exists(tmp_path / 'run')


def test_a_bucket_workdir_is_refused_with_the_fix(tmp_path):
  code, _, stderr = helpers.cli('--config', TINY, '--workdir', 'gs://bucket/run',
                                cwd=tmp_path, env={**os.environ, 'PYTHONPATH': REPO})
  assert code == 1
  assert 'gs://bucket/run' in stderr and 'shared filesystem' in stderr
  assert not os.listdir(tmp_path)  # Nothing written (no local 'gs:' folder).


@pytest.mark.parametrize('method', ['puzzlemix', 'comixup'])
def test_the_command_line_trains_and_evaluates_the_graph_cut_baselines(tmp_path, method):
  """`python -m main --config configs/digits.py:<method>`, at a tiny size, then `--mode eval`
  on its checkpoint: the same top-1 as the run measured."""
  small = ['--config.model.width=4', '--config.dataset.image_size=16',
           '--config.batch_size=16', '--config.num_train_steps=6',
           '--config.log_every_steps=3', '--config.checkpoint_every_steps=6',
           "--config.eval.programs=('classification',)", '--config.eval.batch_size=120']
  args = ('--config', f'configs/digits.py:{method}', '--workdir', str(tmp_path), *small)
  code, _, stderr = helpers.cli(*args)
  assert code == 0, stderr[-3000:]
  logged = helpers.scalars(tmp_path)
  assert logged[(6, f'train/mode_fraction/{method}')] == 1.0
  assert np.isfinite(logged[(6, 'train/loss')]) and 0 <= logged[(6, 'test/top1')] <= 100
  code, _, stderr = helpers.cli(*args, '--mode', 'eval')
  assert code == 0, stderr[-3000:]
  results = json.loads((tmp_path / 'eval.json').read_text())
  assert results['top1_error'] == pytest.approx(100 - logged[(6, 'test/top1')], abs=1e-4)
