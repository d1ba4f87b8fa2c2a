"""CUB-200-2011 weakly-supervised localization, VGG-GAP (paper Table 4: AlignMix 53.71%
top-1 localization accuracy).

  python -m alignmix_jax --config cub_vgg_gap --workdir DIR \
      --config.dataset.data_dir=TFDS_DIR --config.model.pretrained=IMAGENET_VGG_WORKDIR

As cub_resnet50.py with VGG-GAP (VGG16 convolutions, conv 512->1024 3x3 + ReLU, global
average pooling, fully-connected classifier) and learning rates 0.001 (classifier) and
0.0001 (the rest).
Expected runtime: about 3 h on one H100-class GPU (rough estimate, not measured).
"""

from alignmix_jax.configs import cub_resnet50


def get_config(method='alignmix'):
  config = cub_resnet50.get_config(method)
  config.model.name = 'vgg_gap'
  config.model.feature_resolution = 0
  config.optimizer.learning_rate = 0.0001
  config.optimizer.classifier_learning_rate = 0.001
  return config
