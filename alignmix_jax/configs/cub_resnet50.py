"""CUB-200-2011 weakly-supervised localization, ResNet-50 (paper Table 4: AlignMix 57.80%
top-1 localization accuracy).

  python -m alignmix_jax --config cub_resnet50 --workdir DIR \
      --config.dataset.data_dir=TFDS_DIR --config.model.pretrained=IMAGENET_WORKDIR
  python -m alignmix_jax --config cub_resnet50 --workdir DIR --mode eval

Paper appendix B: E pretrained on ImageNet (`model.pretrained`: the workdir of an
imagenet_resnet50.py run), fine-tuned with SGD, learning rate 0.01 for the classifier and
0.001 for the rest, x0.1 every 150 epochs, 600 epochs, momentum 0.9, weight decay 1e-4,
batch 16; train: resize 256, random crop 224, flip; test: resize 224. Layer 4 has stride 1
(A is 14x14x2048). No decoder: the classifier reads the pooled A, so class activation maps
(CAM, threshold 0.15) localize.
Expected runtime: about 3 h on one H100-class GPU (rough estimate, not measured).
"""

from alignmix_jax import methods
from alignmix_jax.configs import default


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'caltech_birds2011'
  config.dataset.image_size = 224
  config.dataset.num_classes = 200
  config.dataset.train_size = 5994
  config.dataset.test_size = 5794
  config.dataset.augment = 'cub'
  config.dataset.with_bbox = True
  config.dataset.mean = (0.485, 0.456, 0.406)
  config.dataset.std = (0.229, 0.224, 0.225)
  config.model.name = 'resnet50'
  config.model.feature_resolution = 14  # Layer 4 with stride 1.
  config.batch_size = 16
  config.num_epochs = 600
  config.optimizer.learning_rate = 0.001
  config.optimizer.classifier_learning_rate = 0.01
  config.optimizer.decay_epochs = (150, 300, 450)
  config.eval_every_epochs = 50
  config.eval.batch_size = 64
  config.eval.programs = ('classification', 'localization')
  # PuzzleMix at 224 x 224 as the official ImageNet code: border terms over 2 pixels, and
  # the transport on the graph cut's blocks.
  config.mixup.puzzlemix.neigh_size = 2
  config.mixup.puzzlemix.t_size = -1
  config = methods.configure(config, method)
  config.model.autoencoder = 'none'  # CAM needs g on the pooled A.
  return config
