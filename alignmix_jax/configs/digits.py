"""AlignMix (AE, five modes) on scikit-learn's digits: the offline default.

  python -m alignmix_jax --config digits --workdir workdirs/digits
  python -m alignmix_jax --config digits:cutmix --workdir workdirs/digits_cutmix

No download: the 1,797 bundled 8x8 digits, upscaled to 32x32 (1,437 train / 360 test).
A PreActResNet18 at a quarter of the paper's width (A is 4x4x128), batch 64, 20 epochs:
about 2 minutes on a 2-core CPU; the README's Results give its accuracy over seeds.
"""

from alignmix_jax import methods
from alignmix_jax.configs import default


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'digits'
  config.dataset.image_size = 32
  config.dataset.num_classes = 10
  config.dataset.train_size = 1437
  config.dataset.test_size = 360
  config.dataset.augment = 'crop'  # Padded random crops; no flips (mirrored digits).
  config.dataset.mean = (0.3055, 0.3055, 0.3055)  # Of the 32x32 training images.
  config.dataset.std = (0.3238, 0.3238, 0.3238)

  config.model.name = 'preactresnet18'
  config.model.width = 16
  config.model.autoencoder = 'ae'

  config.batch_size = 64
  config.num_epochs = 20
  config.optimizer.learning_rate = 0.02
  config.optimizer.decay_epochs = (12, 16)
  config.log_every_steps = 22
  config.eval_every_epochs = 5
  config.checkpoint_every_steps = 220
  config.eval.batch_size = 360
  return methods.configure(config, method)
