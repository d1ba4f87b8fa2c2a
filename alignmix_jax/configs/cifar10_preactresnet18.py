"""CIFAR-10, PreActResNet18 (paper Table 1: AlignMix 2.83% top-1 error).

  python -m alignmix_jax --config cifar10_preactresnet18 --workdir DIR \
      --config.dataset.data_dir=DATA_DIR  # holds cifar-10-binary.tar.gz
  python -m alignmix_jax --config cifar10_preactresnet18:cutmix --workdir DIR  # baseline

Paper appendix B: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 2000 epochs, lr
x0.1 at 500, 1000 and 1500; alpha 2; Sinkhorn eps 0.1, 100 iterations; A is 4x4x512.
Expected runtime: roughly 10 s per epoch on one H100-class GPU, about 6 h for 2000 epochs
(a rough estimate, not measured).
"""

from alignmix_jax import methods
from alignmix_jax.configs import default


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'cifar10'
  config.dataset.image_size = 32
  config.dataset.num_classes = 10
  config.dataset.train_size = 50_000
  config.dataset.test_size = 10_000
  config.dataset.augment = 'crop_flip'
  config.dataset.mean = (0.4914, 0.4822, 0.4465)
  config.dataset.std = (0.2023, 0.1994, 0.2010)
  config.model.name = 'preactresnet18'
  config.batch_size = 128
  config.num_epochs = 2000
  config.optimizer.decay_epochs = (500, 1000, 1500)
  config.eval.batch_size = 500
  return methods.configure(config, method)
