"""A tiny but complete setting for tests: digits at 16x16, PreActResNet18 at width 4 (A is
2x2x32), the autoencoder, small batches and few steps. Everything else is the real code.

Also a config file: `python -m main --config tests/tiny_config.py --workdir ...`.
"""

from alignmix_jax import configs
from alignmix_jax.configs import digits


def get_config():
  config = digits.get_config()
  config.dataset.image_size = 16
  config.model.width = 4
  config.batch_size = 16
  config.num_train_steps = 12
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  config.eval_every_epochs = 1000  # Only at the end.
  config.eval.batch_size = 120
  config.optimizer.learning_rate = 0.05
  config.optimizer.decay_epochs = ()
  config.mixup.sinkhorn_iters = 10  # Compiles faster; tests of the paper's 100 set it.
  return config


def with_overrides(**overrides):
  """`get_config()` with dotted fields replaced, e.g.
  `with_overrides(**{'mixup.method': 'cutmix'})`."""
  return configs.override(get_config(), overrides)
