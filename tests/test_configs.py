"""Every setting config, with every method, builds its model, method table and evaluation
programs (abstractly: no data, no compute)."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

from alignmix_jax import modes
from alignmix_jax.evaluation import runner
from alignmix_jax.models import summary
from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = ['digits', 'fashion_mnist']  # Settings of this project, not of the paper.
SETTINGS = sorted(os.path.basename(path)[:-3]
                  for path in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                  if os.path.basename(path)[:-3] not in ['default', *OFFLINE])


def test_every_paper_setting_has_a_config():
  assert SETTINGS == ['cifar100_preactresnet18', 'cifar100_wrn16_8', 'cifar10_preactresnet18',
                      'cifar10_wrn16_8', 'cub_resnet50', 'cub_vgg_gap', 'imagenet_resnet50',
                      'tiny_imagenet_preactresnet18']


@pytest.mark.parametrize('setting', SETTINGS + OFFLINE)
@pytest.mark.parametrize('method', sorted(default.BASELINES))
def test_setting_builds_with_every_method(setting, method):
  module = importlib.import_module(f'configs.{setting}')
  assert 'python -m main --config' in module.__doc__  # Each docstring says how to run it.
  config = module.get_config(method)
  assert config.mixup.method == method
  assert modes.method_table(config)
  runner.check_config(config)
  text = summary.summarize(config)
  assert 'params/total:' in text
  if method != 'alignmix':
    assert config.model.autoencoder == 'none'  # Baselines: the authors' network.


def test_unknown_method_argument_lists_the_valid_ones():
  module = importlib.import_module('configs.cifar10_preactresnet18')
  with pytest.raises(ValueError, match='valid: alignmix'):
    module.get_config('mixmatch')


def _leaves(config, prefix=''):
  for name, value in config.items():
    if hasattr(value, 'items'):
      yield from _leaves(value, f'{prefix}{name}.')
    else:
      yield f'{prefix}{name}', value


@pytest.mark.parametrize('setting', SETTINGS + OFFLINE)
def test_every_field_can_be_set_from_the_command_line(setting):
  """`--config.<field>=<value>` cannot override a field whose value is None."""
  config = importlib.import_module(f'configs.{setting}').get_config()
  assert not [field for field, value in _leaves(config) if value is None]


def test_command_line_overrides_reach_the_config(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'main', '--config', 'tests/tiny_config.py', '--mode', 'summary',
       f'--config.dataset.data_dir={tmp_path}', '--config.model.width=8'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'A (features): [2, 2, 64]' in result.stdout, result.stdout[:2000]  # Width 8.


def test_a_bucket_workdir_is_refused_with_the_fix(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'main', '--config', os.path.join(REPO, 'tests', 'tiny_config.py'),
       '--workdir', 'gs://bucket/run'], cwd=tmp_path, capture_output=True, text=True,
      timeout=300, check=False, env={**os.environ, 'PYTHONPATH': REPO})
  assert result.returncode == 1
  assert 'gs://bucket/run' in result.stderr and 'shared filesystem' in result.stderr
  assert not os.listdir(tmp_path)  # Nothing written (no local 'gs:' folder).
