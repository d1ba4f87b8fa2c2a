"""CIFAR-10, WRN16-8 (paper Table 1: AlignMix 3.15% top-1 error).

  python -m alignmix_jax --config cifar10_wrn16_8 --workdir DIR \
      --config.dataset.data_dir=DATA_DIR  # holds cifar-10-binary.tar.gz

The CIFAR recipe of cifar10_preactresnet18.py with WRN16-8 as E; A is the 8x8x512 output of
the last stage, as in the authors' code (`--config.model.feature_resolution=4` pools it to
the paper's 4x4). Expected runtime: about 2x PreActResNet18 per epoch (rough estimate, not
measured).
"""

from alignmix_jax.configs import cifar10_preactresnet18


def get_config(method='alignmix'):
  config = cifar10_preactresnet18.get_config(method)
  config.model.name = 'wrn16_8'
  return config
