"""Tiny-ImageNet, PreActResNet18 (paper Table 1: AlignMix 32.73% top-1 error; Table 2 FGSM).

  python -m alignmix_jax --config tiny_imagenet_preactresnet18 --workdir DIR \
      --config.dataset.data_dir=/data/tiny-imagenet-200

Paper appendix B: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128 (the authors'
code: 256), 1200 epochs, lr x0.1 at 600 and 900; alpha 2. 64x64 images: A is 8x8x512 as in
the authors' code (`--config.model.feature_resolution=4` for 4x4). The test split is the
official `val` folder. Expected runtime: roughly 4x a CIFAR epoch per epoch, about 1.5 days
on one H100-class GPU for 1200 epochs (rough estimate, not measured).
"""

from alignmix_jax import methods
from alignmix_jax.configs import default


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'tiny_imagenet'
  config.dataset.image_size = 64
  config.dataset.num_classes = 200
  config.dataset.train_size = 100_000
  config.dataset.test_split = 'val'
  config.dataset.test_size = 10_000
  config.dataset.augment = 'crop_flip'
  config.dataset.mean = (0.485, 0.456, 0.406)
  config.dataset.std = (0.229, 0.224, 0.225)
  config.model.name = 'preactresnet18'
  config.batch_size = 128
  config.num_epochs = 1200
  config.optimizer.decay_epochs = (600, 900)
  config.eval.programs = ('classification', 'attacks', 'calibration')
  return methods.configure(config, method)
