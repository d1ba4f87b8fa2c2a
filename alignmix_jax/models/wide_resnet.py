"""WRN16-8 stage-1 encoder E: x -> A, as the AlignMix authors' CIFAR code.

The authors' definition (from the widely used `wide-resnet.pytorch` layout, no dropout)
differs from Zagoruyko's reference WRN: every convolution has a bias, the stride sits on the
second convolution of a block and the shortcut reads the block input, not its activation.
Layout (PyTorch names), with w the base width (64 by default, scale w/64):
  stem: conv1 3x3 (3 -> w/4, bias)
  layer1..layer3: 2 blocks each, widths 2w, 4w, 8w (128, 256, 512), strides 1, 2, 2
  block: out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x), conv1 3x3 stride 1,
         conv2 3x3 stride s, shortcut a 1x1 conv with stride s when the shape changes
  final: bn1 -> ReLU. The authors build this BN with PyTorch momentum 0.9, i.e. the running
         statistics follow the latest batch (flax momentum 0.1); reproduced here.
A is `[B, H/4, W/4, 8w]`: 8x8x512 on 32x32.
"""

from typing import Any

import flax.linen as nn

from alignmix_jax.models import layers


class WideBlock(nn.Module):
  """Wide basic block `[B, H, W, Cin] -> [B, H/s, W/s, features]` (biased convolutions)."""
  features: int
  strides: int
  dtype: Any
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(layers.batch_norm(x, train, name='bn1', dtype=self.dtype))
    y = layers.conv(y, self.features, 3, use_bias=True, name='conv1', dtype=self.dtype,
                    impl=self.conv_impl)
    y = nn.relu(layers.batch_norm(y, train, name='bn2', dtype=self.dtype))
    y = layers.conv(y, self.features, 3, strides=self.strides, use_bias=True, name='conv2',
                    dtype=self.dtype, impl=self.conv_impl)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = layers.conv(x, self.features, 1, strides=self.strides, use_bias=True,
                      name='shortcut', dtype=self.dtype, impl=self.conv_impl)
    return y + x


class WideResNet16_8(layers.Encoder):
  """WRN16-8 encoder; see the module docstring.

  Fields (see `layers.Encoder`):
    width: base width w (64 gives the paper's 16/128/256/512); stem max(1, w // 4).
    remove_last_downsampling: layer3 with stride 1 (A 16x16 on 32x32).
    dtype: compute dtype.
  """
  num_stages = 3  # Residual stages layer1..layer3.
  downsamplings = 2
  channels_per_width = 8

  @nn.compact
  def __call__(self, x, train, after_stage):
    """Normalised images `[B, H, W, 3]` -> A `[B, H/4, W/4, 8w]` (H/2 without the last stride).

    `after_stage(k, h)` is applied to the output of stage k = 1..3 (before the final BN).
    """
    x = layers.conv(x, max(1, self.width // 4), 3, use_bias=True, name='conv1',
                    dtype=self.dtype, impl=self.conv_impl)
    for stage in range(self.num_stages):
      strides = 1 if stage == 0 or (self.remove_last_downsampling and stage == 2) else 2
      for block in range(2):
        x = WideBlock(self.width * 2**(stage + 1), strides if block == 0 else 1, self.dtype,
                      self.conv_impl,
                      name=f'layer{stage + 1}_{block}')(x, train)
      x = after_stage(stage + 1, x)
    return nn.relu(layers.batch_norm(x, train, momentum=0.1, name='bn1', dtype=self.dtype))
