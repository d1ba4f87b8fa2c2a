"""The losses of the paper's objective (7): cross-entropy against (mixed) soft targets, and
the autoencoder's reconstruction loss Lr (1); and the classification loss of the official
PuzzleMix code, binary cross-entropy of the softmax (`config.mixup.classification_loss`).

Shapes: logits `[B, K]`, targets `[B, K]` (one-hot or mixed), images and their
reconstructions x_hat `[B, H, W, 3]`.
"""

import jax
import jax.numpy as jnp
import optax

RECONSTRUCTION_LOSSES = ('sum', 'mean')
CLASSIFICATION_LOSSES = ('cross_entropy', 'softmax_bce')


def cross_entropy(logits, targets):
  """Mean softmax cross-entropy against soft targets `[B, K]`, in float32."""
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def softmax_bce(logits, targets):
  """PyTorch's `BCELoss()(softmax(logits), targets)`, as the official PuzzleMix code trains:
  the binary cross-entropy of each class probability p against its target t, averaged over
  `[B, K]`, each log clamped at -100 as PyTorch does. Its gradient is about 1/K of
  `cross_entropy`'s."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
  log_not_p = jnp.log1p(-jnp.exp(log_p))
  return -jnp.mean(targets * jnp.maximum(log_p, -100.0)
                   + (1 - targets) * jnp.maximum(log_not_p, -100.0))


def classification_loss(logits, targets, kind):
  """`cross_entropy` or `softmax_bce` (`kind`, one of `CLASSIFICATION_LOSSES`)."""
  return {'cross_entropy': cross_entropy, 'softmax_bce': softmax_bce}[kind](logits, targets)


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


def check_classification_loss(kind):
  """Raises a ValueError naming the valid losses when `kind` is not one."""
  if kind not in CLASSIFICATION_LOSSES:
    raise ValueError(f'Unknown mixup.classification_loss {kind!r}; valid: '
                     f'{", ".join(CLASSIFICATION_LOSSES)}.')
