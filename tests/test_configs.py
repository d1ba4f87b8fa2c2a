"""Every setting config, with every method, builds its model, method table and evaluation
programs (abstractly: no data, no compute)."""

import glob
import importlib
import os

import pytest

from alignmix_jax import modes
from alignmix_jax.evaluation import runner
from alignmix_jax.models import summary
from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = sorted(os.path.basename(path)[:-3]
                  for path in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                  if not path.endswith(('default.py', 'digits.py')))


def test_every_paper_setting_has_a_config():
  assert SETTINGS == ['cifar100_preactresnet18', 'cifar100_wrn16_8', 'cifar10_preactresnet18',
                      'cifar10_wrn16_8', 'cub_resnet50', 'cub_vgg_gap', 'imagenet_resnet50',
                      'tiny_imagenet_preactresnet18']


@pytest.mark.parametrize('setting', SETTINGS)
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
