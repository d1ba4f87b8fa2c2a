"""VGG-GAP stage-1 encoder E: x -> A, the CAM variant of VGG16 used for WSOL.

torchvision's VGG16 convolutions (3x3, bias, ReLU, no BN, He fan-out initialisation) with
pool5 removed and a conv6 3x3 (8w -> 16w, bias) + ReLU appended; the classifier is global
average pooling -> FC. Stages (PyTorch block names), with w the base width (64):
  stage1: conv1_1, conv1_2 (w)
  stage2: max pool 2x2, conv2_1, conv2_2 (2w)
  stage3: max pool, conv3_1..conv3_3 (4w)
  stage4: max pool, conv4_1..conv4_3 (8w)
  stage5: max pool, conv5_1..conv5_3 (8w), conv6 (16w)
A is `[B, H/16, W/16, 16w]`: 14x14x1024 on 224x224 (28x28 without stage5's pool).
"""


import flax.linen as nn

from alignmix_jax.models import layers

# (convolutions, width multiple of w) per stage; stage5 ends with conv6 (16w).
STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))


class VGGGAP(layers.Encoder):
  """VGG-GAP encoder; see the module docstring.

  Fields (see `layers.Encoder`):
    width: base width w (64 in torchvision); A has 16w channels.
    remove_last_downsampling: no max pool before stage5 (A 28x28 on 224x224).
    dtype: compute dtype.
  """
  num_stages = len(STAGES)
  downsamplings = 4
  channels_per_width = 16

  @nn.compact
  def __call__(self, x, train, after_stage):
    """Normalised images `[B, H, W, 3]` -> A `[B, H/16, W/16, 16w]` (H/8 without the last
    pool). `after_stage(k, h)` is applied to the output of stage k = 1..5. `train` is
    unused: VGG has no BatchNorm.
    """
    del train
    for stage, (num_convs, multiple) in enumerate(STAGES):
      if stage > 0 and not (self.remove_last_downsampling and stage == len(STAGES) - 1):
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for index in range(num_convs):
        x = nn.relu(layers.conv(x, multiple * self.width, 3, use_bias=True, init='he',
                                name=f'conv{stage + 1}_{index + 1}', dtype=self.dtype,
                                impl=self.conv_impl))
      if stage == len(STAGES) - 1:
        x = nn.relu(layers.conv(x, 16 * self.width, 3, use_bias=True, init='he',
                                name='conv6', dtype=self.dtype, impl=self.conv_impl))
      x = after_stage(stage + 1, x)
    return x
