"""ImageNet, ResNet-50 (paper Table 1: AlignMix 18.83% top-1 error at 300 epochs; Table 6:
20.76% at 100 epochs with `--config.num_epochs=100 --config.optimizer.decay_epochs=(33,66)`).

  python -m alignmix_jax --config imagenet_resnet50 --workdir DIR \
      --config.dataset.data_dir=TFDS_DIR          # after the manual download, docs/data.md

Paper appendix B: SGD with Nesterov momentum 0.9, weight decay 1e-4, batch 100 (4 GPUs),
learning rate 0.1 for the classifier and 0.01 for the rest, x0.1 at epochs 100 and 200, 300
epochs; alpha 2; A is 7x7x2048. The batch must divide over the devices: on 8 devices use e.g.
`--config.batch_size=128`. The AE's fully-connected e on the flattened 7x7x2048 A has 205M
parameters; `:alignmix_official` trains the authors' variant without a decoder.
Expected runtime: several days on 8 H100-class GPUs (rough estimate, not measured).
"""

from alignmix_jax import methods
from alignmix_jax.configs import default


def get_config(method='alignmix'):
  config = default.get_config()
  config.dataset.name = 'imagenet2012'
  config.dataset.image_size = 224
  config.dataset.num_classes = 1000
  config.dataset.train_size = 1_281_167
  config.dataset.test_split = 'validation'
  config.dataset.test_size = 50_000
  config.dataset.augment = 'imagenet'
  config.dataset.mean = (0.485, 0.456, 0.406)
  config.dataset.std = (0.229, 0.224, 0.225)
  config.model.name = 'resnet50'
  config.batch_size = 100
  config.num_epochs = 300
  config.optimizer.learning_rate = 0.01
  config.optimizer.classifier_learning_rate = 0.1
  config.optimizer.nesterov = True
  config.optimizer.decay_epochs = (100, 200)
  config.log_every_steps = 500
  config.eval_every_epochs = 5
  config.checkpoint_every_steps = 5000
  config.eval.batch_size = 200
  config.eval.top_k = (1, 5)
  config.eval.programs = ('classification',)
  # PuzzleMix at 224 x 224 as the official ImageNet code: border terms over 2 pixels, and
  # the transport on the graph cut's blocks.
  config.mixup.puzzlemix.neigh_size = 2
  config.mixup.puzzlemix.t_size = -1
  return methods.configure(config, method)
