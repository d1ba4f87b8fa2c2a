"""Classification error (paper Table 1): top-k error in percent over the test set.

The training loop measures its test top-1 with `evaluate` too: one top-1, whichever program
asks for it.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax import lax

from alignmix_jax.evaluation import batches as batches_lib


def top_k_wrong(logits, labels, k=1):
  """Whether each label is missing from the k highest logits.

  Args:
    logits: `[B, K]` class scores.
    labels: `[B]` int true classes.
    k: how many top classes count as a hit (ties go to the lower class index).

  Returns:
    `[B]` float32, 1.0 where the prediction is wrong.
  """
  _, top = lax.top_k(logits, k)
  return 1.0 - jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('top_k', 'with_loss'))
def _sums(logits_fn, batch, top_k, with_loss):
  """Masked sums over one batch: `top{k}` wrong predictions and, `with_loss`, the
  cross-entropy `loss`."""
  logits = logits_fn(batch['image']).astype(jnp.float32)
  mask = batch['mask']
  sums = {f'top{k}': jnp.sum(mask * top_k_wrong(logits, batch['label'], k)) for k in top_k}
  if with_loss:
    sums['loss'] = jnp.sum(mask * optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']))
  return sums


def evaluate(logits_fn, batches, *, top_k=(1,), with_loss=False):
  """Top-k classification errors.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode). A
      `jax.tree_util.Partial` (e.g. the model's apply with the variables bound) is traced
      as an argument: evaluating other variables of the same model compiles nothing new.
    batches: iterable of batch dicts (`image`, `label`, `mask`), host or global arrays.
    top_k: the k to report, e.g. `(1, 5)` on ImageNet.
    with_loss: also report `loss`, the mean cross-entropy.

  Returns:
    `{'top{k}_error': percent}` for each k (and `loss`).
  """
  if not isinstance(logits_fn, jax.tree_util.Partial):
    logits_fn = jax.tree_util.Partial(logits_fn)
  totals, count = batches_lib.sum_over_batches(
      lambda batch: _sums(logits_fn, batch, top_k=tuple(top_k), with_loss=with_loss), batches)
  out = {f'top{k}_error': 100.0 * float(totals[f'top{k}']) / count for k in top_k}
  if with_loss:
    out['loss'] = float(totals['loss']) / count
  return out
