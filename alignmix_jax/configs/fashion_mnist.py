"""Fashion-MNIST, PreActResNet18: a real, unsaturated benchmark that needs no download at
training time (60,000 train / 10,000 test, 10 classes).

  apt-get install dataset-fashion-mnist       # Debian/Ubuntu: the four IDX files
  python -m alignmix_jax --config fashion_mnist --workdir workdirs/fashion
  python -m alignmix_jax --config fashion_mnist:vanilla --workdir workdirs/fashion_vanilla

The 28x28 grey images are zero-padded to 32x32 (CIFAR's side, so A is 4x4 as in the paper)
and repeated to RGB. data_dir is /usr/share/datasets/fashion-mnist when that folder exists;
elsewhere download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from
https://github.com/zalandoresearch/fashion-mnist (data/fashion) and pass
`--config.dataset.data_dir=DIR`. Augmentation: 4-pixel padded random crops and flips.

The default fits a CPU: the digits settings (PreActResNet18 width 16, lr 0.02) with batch
128 for 10 epochs (4,680 steps). On a GPU, the paper's CIFAR recipe at full width:
`--config.model.width=64 --config.optimizer.learning_rate=0.1 --config.num_epochs=200
--config.optimizer.decay_epochs='(100,150)'`.
"""

import os

from alignmix_jax import methods
from alignmix_jax.configs import default

DEBIAN_DATA_DIR = '/usr/share/datasets/fashion-mnist'


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'fashion_mnist'
  config.dataset.data_dir = DEBIAN_DATA_DIR if os.path.isdir(DEBIAN_DATA_DIR) else ''
  config.dataset.image_size = 32
  config.dataset.num_classes = 10
  config.dataset.train_size = 60_000
  config.dataset.test_size = 10_000
  config.dataset.augment = 'crop_flip'
  config.dataset.mean = (0.2190, 0.2190, 0.2190)  # Of the padded 32x32 training images.
  config.dataset.std = (0.3318, 0.3318, 0.3318)

  config.model.name = 'preactresnet18'
  config.model.width = 16

  config.batch_size = 128
  config.num_epochs = 10
  config.optimizer.learning_rate = 0.02
  config.optimizer.decay_epochs = (6, 8)
  config.log_every_steps = 117
  config.eval_every_epochs = 2
  config.checkpoint_every_steps = 468
  config.eval.batch_size = 500
  return methods.configure(config, method)
