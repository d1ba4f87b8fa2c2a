"""Layer factories shared by every model: PyTorch padding, initialisation and BatchNorm.

All models are channels last (`[B, H, W, C]`). Compute runs in `dtype` (float32 or bfloat16);
parameters are always float32 and BatchNorm statistics are reduced in float32.

Initialisation follows the PyTorch definitions the models reproduce:
  'torch': PyTorch's default for `nn.Conv2d` / `nn.Linear` (kernel and bias uniform in
    `+-1/sqrt(fan_in)`), used by the CIFAR encoders, the heads and the decoder.
  'he': `kaiming_normal_(mode='fan_out')` kernels and zero biases, as torchvision's ResNet
    and VGG.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _nhwc_conv(x, kernel, strides, padding, lhs_dilation=(1, 1), rhs_dilation=(1, 1)):
  return lax.conv_general_dilated(x, kernel, strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=_NHWC)


# CPU convolutions this large run in batch pieces (`_batch_pieces`).
_PIECE_MIN_POSITIONS = 256  # H x W of the input: 16x16 and up.
_PIECE_MIN_CHANNELS = 64  # Input and output channels.
_PIECE_MIN_EXAMPLES = 8
_MAX_PIECES = 4


def _batch_pieces(x, kernel):
  """How many batch pieces a CPU convolution of `x` `[B, H, W, Cin]` by `kernel`
  `[k, k, Cin, Cout]` runs in: up to `_MAX_PIECES` of at least `_PIECE_MIN_EXAMPLES`
  examples when H W >= `_PIECE_MIN_POSITIONS` and Cin, Cout >= `_PIECE_MIN_CHANNELS`, else 1.

  XLA:CPU runs one such YNNPACK convolution on one thread (measured, PreActResNet18 width 64,
  jax 0.10.2: layer1's and layer2's convolutions, forward and both gradients, took as long on
  2 threads as on 1), while it runs independent operations concurrently. Batch pieces are
  independent convolutions (the kernel gradient is their sum): the same function up to the
  order of float32 sums, and a faster train step on 2 cores (`benchmarks/torch_reference.py`:
  1.05x at batch 32, 1.5x at batch 128). Each piece compiles on its own, hence the limits:
  smaller convolutions (the digits and test configs) are left whole.
  """
  if (x.shape[1] * x.shape[2] < _PIECE_MIN_POSITIONS
      or min(kernel.shape[2], kernel.shape[3]) < _PIECE_MIN_CHANNELS):
    return 1
  return max(1, min(_MAX_PIECES, x.shape[0] // _PIECE_MIN_EXAMPLES))


def _in_pieces(fn, pieces, *arrays):
  """`fn` on `pieces` batch pieces of `arrays` (all `[B, ...]`), as a list of results."""
  return [fn(*parts) for parts in zip(*(jnp.array_split(a, pieces) for a in arrays))]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _canonical_gradient_conv(x, kernel, strides, padding):
  return _canonical_gradient_conv_fwd(x, kernel, strides, padding)[0]


def _canonical_gradient_conv_fwd(x, kernel, strides, padding):
  pieces = _in_pieces(lambda p: _nhwc_conv(p, kernel, strides, padding),
                      _batch_pieces(x, kernel), x)
  return jnp.concatenate(pieces), (x, kernel)


def _canonical_gradient_conv_bwd(strides, padding, residuals, dy):
  """Both gradients, per batch piece (`_batch_pieces`): d x concatenated, d kernel summed."""
  x, kernel = residuals
  pieces = _in_pieces(functools.partial(_piece_gradients, strides, padding, kernel),
                      _batch_pieces(x, kernel), x, dy)
  return (jnp.concatenate([d_x for d_x, _ in pieces]),
          functools.reduce(jnp.add, [d_kernel for _, d_kernel in pieces]))


def _piece_gradients(strides, padding, kernel, x, dy):
  """Both gradients as convolutions in XLA:CPU's canonical form (b01f, 01io -> b01f).

  x `[B, H, W, Ci]`, kernel `[k, k, Ci, Co]`, dy `[B, H', W', Co]`; D = s (H' - 1) + 1 is
  the side of dy dilated by the stride s, (lo, hi) the forward padding.
    d kernel: x with batch and channels swapped `[Ci, H, W, B]`, convolved with dy as a
      kernel `[H', W', B, Co]` dilated by s, padding (lo, k - 1 + D - H - lo).
    d x: dy dilated by s, convolved with the flipped kernel `[k, k, Co, Ci]`, padding
      (k - 1 - lo, H - D + lo).
  """
  size, ksize = x.shape[1:3], kernel.shape[:2]
  dilated = [s * (n - 1) + 1 for s, n in zip(strides, dy.shape[1:3])]
  kernel_padding = [(lo, k - 1 + d - n - lo) for (lo, _), k, d, n in
                    zip(padding, ksize, dilated, size)]
  d_kernel = _nhwc_conv(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)),
                        (1, 1), kernel_padding, rhs_dilation=strides)
  input_padding = [(k - 1 - lo, n - d + lo) for (lo, _), k, d, n in
                   zip(padding, ksize, dilated, size)]
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
  d_x = _nhwc_conv(dy, flipped, (1, 1), input_padding, lhs_dilation=strides)
  return d_x, jnp.transpose(d_kernel, (1, 2, 0, 3)).astype(kernel.dtype)


_canonical_gradient_conv.defvjp(_canonical_gradient_conv_fwd, _canonical_gradient_conv_bwd)


def _cpu_conv_general_dilated(x, kernel, strides, padding, *, lhs_dilation, rhs_dilation,
                              dimension_numbers, feature_group_count, precision):
  """What `nn.Conv` calls on CPU: `lax.conv_general_dilated` in batch pieces (`_batch_pieces`),
  gradients in canonical form.

  XLA:CPU rewrites convolutions into its fast (Eigen/YNNPACK) form only in the entry
  computation. The convolutions of AD's gradients are not in that form, so inside a
  `lax.cond` branch (the decoder of the train step) or a loop body (PGD) they ran through a
  generic loop, up to 40x slower (weight gradients; measured with jax 0.10.2). For the plain
  2-D NHWC convolutions `conv` makes (no dilation, no groups, default precision).
  """
  trivial = (1,) * (x.ndim - 2)
  if (dimension_numbers != lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
      or tuple(lhs_dilation or trivial) != trivial or tuple(rhs_dilation or trivial) != trivial
      or feature_group_count != 1 or precision is not None):
    raise ValueError('layers.conv makes plain NHWC convolutions only (no dilation, groups or '
                     'precision).')
  return _canonical_gradient_conv(x, kernel, tuple(strides), tuple(map(tuple, padding)))


def conv(x, features, kernel_size, *, name, dtype, strides=1, use_bias=False, init='torch'):
  """A square convolution with PyTorch's symmetric zero padding `(kernel_size - 1) // 2`.

  Called inside a compact method; the `nn.Conv` is created under `name` in the caller.

  Args:
    x: `[B, H, W, Cin]` input.
    features: Cout.
    kernel_size: side k of the square kernel.
    name: parameter scope name (PyTorch layer names: conv1, shortcut, ...).
    dtype: compute dtype.
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
                 conv_general_dilated=(_cpu_conv_general_dilated
                                       if jax.default_backend() == 'cpu' else None))(x)


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

  Subclasses set `num_stages` (manifold mixup after stage k = 1..num_stages),
  `downsamplings` (how many times E halves the input side) and `channels_per_width`
  (c = channels_per_width * w).
  """
  width: int = 64
  remove_last_downsampling: bool = False
  dtype: Any = jnp.float32

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
