"""Every setting config, with every method, builds its model, method table and evaluation
programs (abstractly: no data, no compute), with the paper's hyperparameters. (`--config`
names, paths and overrides on the command line: test_cli.py.)"""

import importlib

import numpy as np
import pytest

from alignmix_jax import configs
from alignmix_jax import methods
from alignmix_jax import validation
from alignmix_jax.models import summary

OFFLINE = ['digits', 'fashion_mnist']  # Settings of this project, not of the paper.
SETTINGS = sorted(name for name in configs.NAMES if name not in OFFLINE)


def test_every_paper_setting_has_a_config():
  assert SETTINGS == ['cifar100_preactresnet18', 'cifar100_wrn16_8', 'cifar10_preactresnet18',
                      'cifar10_wrn16_8', 'cub_resnet50', 'cub_vgg_gap', 'imagenet_resnet50',
                      'tiny_imagenet_preactresnet18']


@pytest.mark.parametrize('setting', SETTINGS + OFFLINE)
@pytest.mark.parametrize('method', methods.names())
def test_setting_builds_with_every_method(setting, method):
  module = importlib.import_module(f'alignmix_jax.configs.{setting}')
  assert f'--config {setting}' in module.__doc__  # Each docstring says how to run it.
  config = module.get_config(method)
  assert config.mixup.method == method
  for field, value in methods.get(method).fields.items():  # The method's fields, last.
    group, name = field.split('.')
    assert config[group][name] == value, field
  table = methods.table(config)
  assert table and all(p > 0 for _, p in table)
  np.testing.assert_allclose(sum(p for _, p in table), 1.0, rtol=1e-12)
  validation.validate(config, 1, mode='train')
  validation.validate(config, 1, mode='eval')
  text = summary.summarize(config)
  assert 'params/total:' in text
  assert text.startswith(f'model: {config.model.name}, autoencoder: {config.model.autoencoder}')
  assert ('params/decoder:' in text) == (config.model.autoencoder != 'none')
  if method != 'alignmix':
    assert config.model.autoencoder == 'none'  # Baselines: the authors' network.


def test_unknown_method_argument_lists_the_valid_ones():
  module = importlib.import_module('alignmix_jax.configs.cifar10_preactresnet18')
  with pytest.raises(ValueError, match='valid: vanilla, .*, alignmix'):
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
  config = importlib.import_module(f'alignmix_jax.configs.{setting}').get_config()
  assert not [field for field, value in _leaves(config) if value is None]


# The paper's hyperparameters (appendix B; the CUB ones as the configs' docstrings give them):
# rate, classifier rate, batch, epochs, decay epochs, nesterov, image size, classes.
_CIFAR = dict(lr=0.1, classifier_lr=0.0, batch=128, epochs=2000, decay=(500, 1000, 1500),
              nesterov=False, image=32)
PAPER = {
    'cifar10_preactresnet18': dict(_CIFAR, classes=10),
    'cifar100_preactresnet18': dict(_CIFAR, classes=100),
    'cifar10_wrn16_8': dict(_CIFAR, classes=10),
    'cifar100_wrn16_8': dict(_CIFAR, classes=100),
    'tiny_imagenet_preactresnet18': dict(lr=0.1, classifier_lr=0.0, batch=128, epochs=1200,
                                         decay=(600, 900), nesterov=False, image=64,
                                         classes=200),
    'imagenet_resnet50': dict(lr=0.01, classifier_lr=0.1, batch=100, epochs=300,
                              decay=(100, 200), nesterov=True, image=224, classes=1000),
    'cub_resnet50': dict(lr=0.001, classifier_lr=0.01, batch=16, epochs=600,
                         decay=(150, 300, 450), nesterov=False, image=224, classes=200),
    'cub_vgg_gap': dict(lr=0.0001, classifier_lr=0.001, batch=16, epochs=600,
                        decay=(150, 300, 450), nesterov=False, image=224, classes=200),
}
ALPHA = {'alignmix': 2.0, 'alignmix_official': 2.0, 'input_mixup': 1.0, 'manifold_mixup': 2.0,
         'cutmix': 1.0}


def test_the_paper_table_covers_every_setting():
  assert sorted(PAPER) == SETTINGS


@pytest.mark.parametrize('setting', sorted(PAPER))
def test_settings_use_the_papers_hyperparameters(setting):
  paper = PAPER[setting]
  for method, alpha in ALPHA.items():
    config = importlib.import_module(f'alignmix_jax.configs.{setting}').get_config(method)
    assert config.optimizer.learning_rate == paper['lr']
    assert config.optimizer.classifier_learning_rate == paper['classifier_lr']
    assert (config.optimizer.momentum, config.optimizer.weight_decay) == (0.9, 1e-4)
    assert config.optimizer.decay_factor == 0.1
    assert tuple(config.optimizer.decay_epochs) == paper['decay']
    assert config.optimizer.nesterov == paper['nesterov']
    assert (config.batch_size, config.num_epochs) == (paper['batch'], paper['epochs'])
    assert config.dataset.image_size == paper['image']
    assert config.dataset.num_classes == paper['classes']
    assert config.mixup.alpha == alpha, method
    assert (config.mixup.sinkhorn_eps, config.mixup.sinkhorn_iters) == (0.1, 100)
  assert tuple(importlib.import_module(f'alignmix_jax.configs.{setting}').get_config().mixup.mode_weights) == (
      1.0,) * 5  # The five modes drawn uniformly.
