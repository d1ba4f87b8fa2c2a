"""ResNet-50 stage-1 encoder E: x -> A, torchvision's layout (v1.5: stride on the 3x3 conv).

Layout (PyTorch names; convolutions without bias, He fan-out initialisation):
  stem: conv1 7x7 stride 2 (3 -> w) -> bn1 -> ReLU -> max pool 3x3 stride 2
  layer1..layer4: 3, 4, 6, 3 bottlenecks, widths w, 2w, 4w, 8w (expansion 4), strides 1, 2, 2, 2
  bottleneck: relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + downsample(x)),
              conv1 1x1, conv2 3x3 stride s, conv3 1x1 to 4 x width, downsample = 1x1 conv
              stride s -> BN when the shape changes.
A is `[B, H/32, W/32, 32w]`: 7x7x2048 on 224x224. The WSOL variant (layer4 with stride 1,
14x14 on 224) is `remove_last_downsampling`.
"""

from typing import Any

import flax.linen as nn

from alignmix_jax.models import layers

STAGE_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


class Bottleneck(nn.Module):
  """Bottleneck block `[B, H, W, Cin] -> [B, H/s, W/s, 4 width]`."""
  width: int
  strides: int
  dtype: Any
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train):
    def conv_bn(h, features, kernel_size, strides, index):
      h = layers.conv(h, features, kernel_size, strides=strides, init='he',
                      name=f'conv{index}', dtype=self.dtype, impl=self.conv_impl)
      return layers.batch_norm(h, train, name=f'bn{index}', dtype=self.dtype)

    out_features = EXPANSION * self.width
    y = nn.relu(conv_bn(x, self.width, 1, 1, 1))
    y = nn.relu(conv_bn(y, self.width, 3, self.strides, 2))
    y = conv_bn(y, out_features, 1, 1, 3)
    if self.strides != 1 or x.shape[-1] != out_features:
      x = layers.conv(x, out_features, 1, strides=self.strides, init='he',
                      name='downsample_conv', dtype=self.dtype, impl=self.conv_impl)
      x = layers.batch_norm(x, train, name='downsample_bn', dtype=self.dtype)
    return nn.relu(y + x)


class ResNet50(layers.Encoder):
  """ResNet-50 encoder; see the module docstring.

  Fields (see `layers.Encoder`):
    width: base width w (64 in torchvision); stage widths w, 2w, 4w, 8w, A has 32w channels.
    remove_last_downsampling: layer4 with stride 1 (the WSOL variant, 14x14 on 224x224).
    dtype: compute dtype.
  """
  num_stages = 4  # Residual stages layer1..layer4.
  downsamplings = 5
  channels_per_width = 8 * EXPANSION

  @nn.compact
  def __call__(self, x, train, after_stage):
    """Normalised images `[B, H, W, 3]` -> A `[B, H/32, W/32, 32w]` (H/16 without the last
    stride). `after_stage(k, h)` is applied to the output of stage k = 1..4.
    """
    x = layers.conv(x, self.width, 7, strides=2, init='he', name='conv1', dtype=self.dtype,
                    impl=self.conv_impl)
    x = nn.relu(layers.batch_norm(x, train, name='bn1', dtype=self.dtype))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(STAGE_BLOCKS):
      strides = 1 if stage == 0 or (self.remove_last_downsampling and stage == 3) else 2
      for block in range(num_blocks):
        x = Bottleneck(self.width * 2**stage, strides if block == 0 else 1, self.dtype,
                       self.conv_impl,
                       name=f'layer{stage + 1}_{block}')(x, train)
      x = after_stage(stage + 1, x)
    return x
