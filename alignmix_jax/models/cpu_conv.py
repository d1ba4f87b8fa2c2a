"""The convolution written for XLA:CPU (`config.model.conv='cpu'`, the default on a CPU
backend): the function of `lax.conv_general_dilated`, in the form XLA:CPU runs fast.

Two rewrites, both exact up to the order of float32 sums:
  * gradients in canonical form: XLA:CPU rewrites convolutions into its fast (Eigen/YNNPACK)
    form only in the entry computation; the convolutions of AD's gradients are not in that
    form, so inside a `lax.cond` branch (the decoder of the train step) or a loop body (PGD)
    they run through a generic loop, up to 40x slower (weight gradients; jax 0.10.2). A
    custom VJP writes both gradients as convolutions in the canonical form
    (`_piece_gradients`).
  * batch pieces: XLA:CPU runs each large YNNPACK convolution on one thread while it runs
    independent operations concurrently, so convolutions of 16x16 inputs and up with 64
    channels and more in and out run in up to 4 batch pieces (`_batch_pieces`).

`nn.Conv(..., conv_general_dilated=conv_general_dilated)` uses it (`layers.conv`); every
other backend runs `lax.conv_general_dilated` itself. The tests check both forms against
each other, values and gradients.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

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

  XLA:CPU runs one such YNNPACK convolution on one thread (PreActResNet18 width 64, jax
  0.10.2: layer1's and layer2's convolutions, forward and both gradients, take as long on 2
  threads as on 1), while it runs independent operations concurrently. Batch pieces are
  independent convolutions (the kernel gradient is their sum). Each piece compiles on its
  own, hence the limits: smaller convolutions (the digits and test configs) stay whole.
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


def conv_general_dilated(x, kernel, strides, padding, *, lhs_dilation, rhs_dilation,
                         dimension_numbers, feature_group_count, precision):
  """`lax.conv_general_dilated`'s signature and function, for the plain 2-D NHWC
  convolutions `layers.conv` makes (no dilation, no groups, default precision): in batch
  pieces (`_batch_pieces`), gradients in canonical form (the module docstring)."""
  trivial = (1,) * (x.ndim - 2)
  if (dimension_numbers != lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
      or tuple(lhs_dilation or trivial) != trivial or tuple(rhs_dilation or trivial) != trivial
      or feature_group_count != 1 or precision is not None):
    raise ValueError('layers.conv makes plain NHWC convolutions only (no dilation, groups or '
                     'precision).')
  return _canonical_gradient_conv(x, kernel, tuple(strides), tuple(map(tuple, padding)))
