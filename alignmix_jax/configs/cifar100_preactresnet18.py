"""CIFAR-100, PreActResNet18 (paper Table 1: AlignMix 17.82% top-1 error; Tables 2, 3, 5, 7;
the ablations and the OOD and calibration studies use this setting).

  python -m alignmix_jax --config cifar100_preactresnet18 --workdir DIR \
      --config.dataset.data_dir=DATA_DIR  # holds cifar-100-binary.tar.gz
  python -m alignmix_jax --config cifar100_preactresnet18:input_mixup --workdir DIR

The CIFAR-10 recipe (see cifar10_preactresnet18.py) with 100 classes; the normalization
statistics are the CIFAR-10 ones, as in the authors' code. For the OOD table set
`--config.eval.ood_folders.lsun_crop=DIR` (and isun, tiny_imagenet_crop, ...).
Expected runtime: as CIFAR-10, about 6 h on one H100-class GPU (rough estimate, not measured).
"""

from alignmix_jax.configs import cifar10_preactresnet18


def get_config(method='alignmix'):
  config = cifar10_preactresnet18.get_config(method)
  config.dataset.name = 'cifar100'
  config.dataset.num_classes = 100
  return config
