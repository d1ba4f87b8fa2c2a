"""Decoder D: z -> x_hat, a residual generator mirroring the encoder (paper section 4).

z `[B, d]` is mapped by a fully-connected layer to `[B, h, w, c0]` (Z `[B, h/2, w/2, d]` by
a 2x2 transposed convolution with stride 2, the mirror of e), with h x w the side of A and
c0 the top width. Each of the `num_upsamplings` residual up-blocks (the generator blocks of
Gulrajani et al. 2017) doubles the side and halves the width (never below `min_width`):
  out = conv2(relu(bn2(conv1(up(relu(bn1(x))))))) + shortcut(up(x)),
conv1, conv2 3x3 and shortcut 1x1, all with bias, up = nearest-neighbour x2. A final
BN -> ReLU -> conv 3x3 to 3 channels -> sigmoid gives x_hat `[B, H, W, 3]` in [0, 1].
PreActResNet18 on 32x32: 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 32x32x3.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from alignmix_jax.models import layers


class UpBlock(nn.Module):
  """Residual up-block `[B, H, W, Cin] -> [B, 2H, 2W, features]`."""
  features: int
  dtype: Any
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(layers.batch_norm(x, train, name='bn1', dtype=self.dtype))
    y = layers.conv(layers.upsample(y), self.features, 3, use_bias=True, name='conv1',
                    dtype=self.dtype, impl=self.conv_impl)
    y = nn.relu(layers.batch_norm(y, train, name='bn2', dtype=self.dtype))
    y = layers.conv(y, self.features, 3, use_bias=True, name='conv2', dtype=self.dtype,
                    impl=self.conv_impl)
    shortcut = layers.conv(layers.upsample(x), self.features, 1, use_bias=True,
                           name='shortcut', dtype=self.dtype, impl=self.conv_impl)
    return y + shortcut


class Decoder(nn.Module):
  """D: z `[B, d]` or Z `[B, h/2, w/2, d]` -> x_hat `[B, H, W, 3]` float32 in [0, 1].

  Attributes:
    feature_side: h (= w), the side of A.
    channels: c0, the width at the side of A.
    min_width: the narrowest up-block.
    num_upsamplings: log2(H / h).
    dtype: compute dtype.
    conv_impl: how convolutions are written (`layers.CONV_IMPLS`).
  """
  feature_side: int
  channels: int
  min_width: int
  num_upsamplings: int
  dtype: Any
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, latent, train):
    if latent.ndim == 2:
      x = layers.dense(latent, self.feature_side**2 * self.channels, name='fc',
                       dtype=self.dtype)
      x = x.reshape(-1, self.feature_side, self.feature_side, self.channels)
    else:
      init = layers.torch_uniform(4 * latent.shape[-1])
      x = nn.ConvTranspose(self.channels, (2, 2), strides=(2, 2), padding='VALID',
                           dtype=self.dtype, kernel_init=init, bias_init=init,
                           name='deconv')(latent)
    for block in range(self.num_upsamplings):
      features = max(self.channels // 2**(block + 1), self.min_width)
      x = UpBlock(features, self.dtype, self.conv_impl, name=f'block{block + 1}')(x, train)
    x = nn.relu(layers.batch_norm(x, train, name='bn', dtype=self.dtype))
    x = layers.conv(x, 3, 3, use_bias=True, name='conv_out', dtype=self.dtype,
                    impl=self.conv_impl)
    return nn.sigmoid(x.astype(jnp.float32))
