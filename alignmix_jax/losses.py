"""The losses of the paper's objective (7): cross-entropy against (mixed) soft targets, and
the autoencoder's reconstruction loss Lr (1).

Shapes: logits `[B, K]`, targets `[B, K]` (one-hot or mixed), images and their
reconstructions x_hat `[B, H, W, 3]`.
"""

import jax.numpy as jnp
import optax

RECONSTRUCTION_LOSSES = ('sum', 'mean')


def cross_entropy(logits, targets):
  """Mean softmax cross-entropy against soft targets `[B, K]`, in float32."""
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def reconstruction_loss(x_hat, images, reduction):
  """Lr of (1) averaged over the batch: per image, the squared Euclidean distance
  `||x - x_hat||^2` summed over `[H, W, 3]` ('sum', the paper) or averaged ('mean', as
  PyTorch's `MSELoss`)."""
  squared = jnp.square(x_hat.astype(jnp.float32) - images)
  if reduction == 'sum':
    return jnp.mean(jnp.sum(squared, axis=(1, 2, 3)))
  return jnp.mean(squared)


def check_reconstruction_loss(reduction):
  """Raises a ValueError naming the valid reductions when `reduction` is not one."""
  if reduction not in RECONSTRUCTION_LOSSES:
    raise ValueError(f'Unknown mixup.reconstruction_loss {reduction!r}; valid: '
                     f'{", ".join(RECONSTRUCTION_LOSSES)}.')
