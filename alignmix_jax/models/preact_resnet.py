"""PreActResNet18 stage-1 encoder E: x -> A, as the AlignMix authors' CIFAR/Tiny-ImageNet code.

Layout (PyTorch names; every convolution without bias):
  stem: conv1 3x3 (3 -> w, stride 1) -> bn1 -> ReLU
  layer1..layer4: 2 pre-activation blocks each, widths w, 2w, 4w, 8w, strides 1, 2, 2, 2
  block: o = relu(bn1(x)); shortcut = conv1x1(o) if the shape changes else o;
         out = conv2(relu(bn2(conv1(o)))) + shortcut
No final BN/ReLU: A is the raw layer4 output, `[B, H/8, W/8, 8w]` (4x4x512 on 32x32 with
w = 64, 8x8x512 on 64x64). Two things differ from the common PreActResNet18 (He et al. 2016,
as in kuangliu/pytorch-cifar, PuzzleMix, Co-Mixup, OpenMixup): the stem BN + ReLU (128 more
parameters than its 11,171,146 with a CIFAR-10 classifier), and the identity shortcut, which
adds the pre-activated o where the common block adds x (5 of the 8 blocks: layer1_0,
layer1_1, layer2_1, layer3_1, layer4_1). `shortcut='standard'` adds x instead; the
parameters are the same either way.
"""

from typing import Any

import flax.linen as nn

from alignmix_jax.models import layers

# What the identity shortcut adds: the pre-activated relu(bn1(x)) or x.
SHORTCUTS = ('authors', 'standard')


class PreActBlock(nn.Module):
  """Pre-activation basic block `[B, H, W, Cin] -> [B, H/s, W/s, features]`.

  `shortcut`: 'authors' (identity adds relu(bn1(x))) or 'standard' (identity adds x).
  """
  features: int
  strides: int
  dtype: Any
  shortcut: str = 'authors'
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x, train):
    o = nn.relu(layers.batch_norm(x, train, name='bn1', dtype=self.dtype))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = layers.conv(o, self.features, 1, strides=self.strides, name='shortcut',
                             dtype=self.dtype, impl=self.conv_impl)
    elif self.shortcut == 'authors':
      shortcut = o
    elif self.shortcut == 'standard':
      shortcut = x
    else:
      raise ValueError(f'Unknown PreActBlock shortcut {self.shortcut!r}; valid: '
                       f'{", ".join(SHORTCUTS)}.')
    y = layers.conv(o, self.features, 3, strides=self.strides, name='conv1', dtype=self.dtype,
                    impl=self.conv_impl)
    y = nn.relu(layers.batch_norm(y, train, name='bn2', dtype=self.dtype))
    y = layers.conv(y, self.features, 3, name='conv2', dtype=self.dtype, impl=self.conv_impl)
    return y + shortcut


class PreActResNet18(layers.Encoder):
  """PreActResNet18 encoder; see the module docstring.

  Fields (see `layers.Encoder`):
    width: base width w (64 in the paper); stage widths w, 2w, 4w, 8w.
    remove_last_downsampling: layer4 with stride 1 (A twice as large: the 8x8 ablation).
    dtype: compute dtype.
    shortcut: 'authors' (default) or 'standard', see `PreActBlock`.
  """
  shortcut: str = 'authors'

  num_stages = 4  # Residual stages layer1..layer4.
  downsamplings = 3
  channels_per_width = 8

  @nn.compact
  def __call__(self, x, train, after_stage):
    """Normalised images `[B, H, W, 3]` -> A `[B, H/8, W/8, 8w]` (H/4 without the last stride).

    `after_stage(k, h)` is applied to the output of stage k = 1..4 (the manifold mixup hook).
    """
    x = layers.conv(x, self.width, 3, name='conv1', dtype=self.dtype, impl=self.conv_impl)
    x = nn.relu(layers.batch_norm(x, train, name='bn1', dtype=self.dtype))
    for stage in range(self.num_stages):
      strides = 1 if stage == 0 or (self.remove_last_downsampling and stage == 3) else 2
      for block in range(2):
        x = PreActBlock(self.width * 2**stage, strides if block == 0 else 1, self.dtype,
                        self.shortcut, self.conv_impl,
                        name=f'layer{stage + 1}_{block}')(x, train)
      x = after_stage(stage + 1, x)
    return x
