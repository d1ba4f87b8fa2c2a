"""Classification error (paper Table 1): top-k error in percent over the test set."""

import jax
import jax.numpy as jnp
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


def evaluate(logits_fn, batches, *, top_k=(1,)):
  """Top-k classification errors.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode).
    batches: iterable of batch dicts (`image`, `label`, `mask`).
    top_k: the k to report, e.g. `(1, 5)` on ImageNet.

  Returns:
    `{'top{k}_error': percent}` for each k.
  """

  @jax.jit
  def step(batch):
    logits = logits_fn(batch['image']).astype(jnp.float32)
    return {k: jnp.sum(batch['mask'] * top_k_wrong(logits, batch['label'], k)) for k in top_k}

  wrong, count = batches_lib.sum_over_batches(step, batches)
  return {f'top{k}_error': 100.0 * float(wrong[k]) / count for k in top_k}
