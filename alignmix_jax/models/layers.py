"""Layer factories shared by every model: PyTorch padding, initialisation and BatchNorm.

All models are channels last (`[B, H, W, C]`). Compute runs in `dtype` (float32 or bfloat16);
parameters are always float32 and BatchNorm statistics are reduced in float32.

Initialisation follows the PyTorch definitions the models reproduce:
  'torch': PyTorch's default for `nn.Conv2d` / `nn.Linear` (kernel and bias uniform in
    `+-1/sqrt(fan_in)`), used by the CIFAR encoders, the heads and the decoder.
  'he': `kaiming_normal_(mode='fan_out')` kernels and zero biases, as torchvision's ResNet
    and VGG.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignmix_jax.models import cpu_conv

INITS = ('torch', 'he')


def torch_uniform(fan_in):
  """PyTorch's default weight and bias initialiser: uniform in `[-1/sqrt(fan_in), +...]`."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _initialisers(init, fan_in):
  if init == 'torch':
    return torch_uniform(fan_in), torch_uniform(fan_in)
  if init == 'he':
    return nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'), nn.initializers.zeros
  raise ValueError(f'Unknown init {init!r}; valid: {", ".join(INITS)}.')


# How convolutions are written (`config.model.conv`): 'xla', `lax.conv_general_dilated` as
# `nn.Conv` calls it (what every backend runs); 'cpu', the same function in the form XLA:CPU
# runs fast (`cpu_conv`); 'auto', 'cpu' on a CPU backend, else 'xla'.
CONV_IMPLS = ('auto', 'xla', 'cpu')


def resolve_conv_impl(impl):
  """'xla' or 'cpu' for `config.model.conv` (see `CONV_IMPLS`)."""
  if impl not in CONV_IMPLS:
    raise ValueError(f'Unknown model.conv={impl!r}; valid: {", ".join(CONV_IMPLS)}.')
  if impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def conv(x, features, kernel_size, *, name, dtype, impl='xla', strides=1, use_bias=False,
         init='torch'):
  """A square convolution with PyTorch's symmetric zero padding `(kernel_size - 1) // 2`.

  Called inside a compact method; the `nn.Conv` is created under `name` in the caller.

  Args:
    x: `[B, H, W, Cin]` input.
    features: Cout.
    kernel_size: side k of the square kernel.
    name: parameter scope name (PyTorch layer names: conv1, shortcut, ...).
    dtype: compute dtype.
    impl: 'xla' or 'cpu' (`CONV_IMPLS`): the same function, written for any backend or for
      XLA:CPU's fast path.
    strides: stride s.
    use_bias: whether the layer has a bias.
    init: 'torch' or 'he' (see the module docstring).

  Returns:
    `[B, H', W', Cout]` in `dtype`: H' = ceil(H / s) for odd k, H / k for k = s = 2.
  """
  kernel_init, bias_init = _initialisers(init, kernel_size * kernel_size * x.shape[-1])
  pad = (kernel_size - 1) // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=strides,
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
                 kernel_init=kernel_init, bias_init=bias_init, name=name,
                 conv_general_dilated=(cpu_conv.conv_general_dilated if impl == 'cpu'
                                       else None))(x)


def dense(x, features, *, name, dtype):
  """A fully-connected layer `[B, ..., Cin] -> [B, ..., features]`, PyTorch `nn.Linear`."""
  init = torch_uniform(x.shape[-1])
  return nn.Dense(features, dtype=dtype, kernel_init=init, bias_init=init, name=name)(x)


def batch_norm(x, train, *, name, dtype, momentum=0.9):
  """BatchNorm over `[B, H, W]` per channel, PyTorch defaults (eps 1e-5, momentum 0.1).

  Args:
    x: `[B, H, W, C]` (or `[B, C]`).
    train: True normalises with the batch statistics and updates the running averages
      (needs `mutable=['batch_stats']`); False uses the running averages.
    name: parameter scope name.
    dtype: compute dtype of the output; the statistics are float32.
    momentum: flax convention, `running = momentum * running + (1 - momentum) * batch`,
      i.e. one minus PyTorch's momentum.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                      dtype=dtype, use_fast_variance=False, name=name)(x)


def upsample(x, factor=2):
  """Nearest-neighbour upsampling `[B, H, W, C] -> [B, factor H, factor W, C]`."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class Encoder(nn.Module):
  """What every stage-1 encoder E shares: its fields and its geometry.

  Attributes:
    width: base width w (64 in the paper and in torchvision); widths scale with w / 64.
    remove_last_downsampling: the last downsampling removed (A twice as large: the 8x8
      ablation, the 14x14 WSOL ResNet-50).
    dtype: compute dtype.
    conv_impl: how its convolutions are written, 'xla' or 'cpu' (`CONV_IMPLS`).

  Subclasses set `num_stages` (manifold mixup after stage k = 1..num_stages),
  `downsamplings` (how many times E halves the input side) and `channels_per_width`
  (c = channels_per_width * w).
  """
  width: int = 64
  remove_last_downsampling: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = 'xla'

  num_stages = 0
  downsamplings = 0
  channels_per_width = 0

  @property
  def num_downsamplings(self):
    """How many times this encoder halves the input side."""
    return self.downsamplings - int(self.remove_last_downsampling)

  @property
  def out_channels(self):
    """c, the channels of A."""
    return self.channels_per_width * self.width
