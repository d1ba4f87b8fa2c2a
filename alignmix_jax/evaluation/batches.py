"""Running a jitted per-batch step over a stream of evaluation batches.

A batch is a dict of host arrays: `image` `[B, H, W, 3]` in [0, 1], `label` `[B]`, `mask`
`[B]` (0 marks padding of the last batch) and, for localization, `bbox` `[B, 4]`. Steps
run on the device and return device arrays; results stay on the device until the stream
ends, so there is one host transfer per program, not one per batch or per example.
"""

import jax
import jax.numpy as jnp
import numpy as np


def require_examples(count):
  """Raises a clear error when a stream held no unmasked examples."""
  if count == 0:
    raise ValueError('The evaluation stream held no examples (no batches, or every mask is 0): '
                     'check the dataset split and config.eval.batch_size.')


_count = jax.jit(jnp.sum)


def sum_over_batches(step, batches):
  """Sums the outputs of `step` over all batches, on the device (one transfer at the end).

  Args:
    step: jitted `batch -> {name: array}` whose outputs are already masked sums over the
      batch (padding must contribute 0).
    batches: iterable of batch dicts (host arrays, or global arrays of any processes).

  Returns:
    `({name: np.ndarray} totals, number of unmasked examples)`.
  """
  totals = count = None
  for batch in batches:
    out, examples = step(batch), _count(batch['mask'])
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    count = examples if count is None else count + examples
  totals, count = jax.device_get((totals, count))
  count = 0 if count is None else int(round(float(count)))
  require_examples(count)
  return totals, count


def gather_over_batches(step, batches):
  """Concatenates the per-example outputs of `step` over all batches, padding dropped.

  Args:
    step: jitted `batch -> {name: [B, ...] array}`.
    batches: iterable of batch dicts.

  Returns:
    `{name: np.ndarray [N, ...]}` over the N unmasked examples, in stream order.
  """
  outs, masks = [], []
  for batch in batches:
    masks.append(np.asarray(batch['mask']) > 0)
    outs.append(step(batch))
  keep = np.concatenate(masks) if masks else np.zeros([0], bool)
  require_examples(int(keep.sum()))
  outs = jax.device_get(outs)
  return {name: np.concatenate([out[name] for out in outs])[keep] for name in outs[0]}
