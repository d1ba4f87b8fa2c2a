"""CIFAR-100, WRN16-8 (paper Table 1: AlignMix 18.09% top-1 error).

  python -m alignmix_jax --config cifar100_wrn16_8 --workdir DIR \
      --config.dataset.data_dir=DATA_DIR  # holds cifar-100-binary.tar.gz

See cifar10_wrn16_8.py. Expected runtime: about 2x PreActResNet18 per epoch (rough estimate, not
measured).
"""

from alignmix_jax.configs import cifar100_preactresnet18


def get_config(method='alignmix'):
  config = cifar100_preactresnet18.get_config(method)
  config.model.name = 'wrn16_8'
  return config
