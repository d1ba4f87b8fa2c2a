"""Calibration (paper section 4.2, Table 3 right, Figure 5): ECE and the reliability diagram.

Confidence is the max softmax probability, the prediction its argmax. Examples fall into
`num_bins` equal-width confidence bins `(lower, upper]`; with per-bin accuracy `acc_b` and
mean confidence `conf_b`, `ECE = sum_b (n_b / N) |acc_b - conf_b|` (Guo et al.).
Per-bin totals add up over batches, so the ECE of a whole test set is exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import figure as mpl_figure

from alignmix_jax.evaluation import batches as batches_lib


def bin_totals(probs, labels, mask, num_bins):
  """Per-bin example count, confidence sum and correct-prediction count.

  Args:
    probs: `[B, K]` class probabilities.
    labels: `[B]` int true classes.
    mask: `[B]` weights (0 for padding).
    num_bins: number of equal-width bins over [0, 1].

  Returns:
    `{'count', 'confidence', 'correct'}`, each `[num_bins]` float32.
  """
  confidence = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
  edges = jnp.asarray(np.linspace(0.0, 1.0, num_bins + 1), confidence.dtype)
  # Bin b holds edges[b] < confidence <= edges[b + 1].
  index = jnp.clip(jnp.searchsorted(edges, confidence, side='left') - 1, 0, num_bins - 1)
  one_hot = jax.nn.one_hot(index, num_bins) * mask[:, None]
  # Broadcast sums, not matmuls: exact float32 on every backend.
  return {'count': jnp.sum(one_hot, axis=0),
          'confidence': jnp.sum(confidence[:, None] * one_hot, axis=0),
          'correct': jnp.sum(correct[:, None] * one_hot, axis=0)}


def ece_from_totals(totals):
  """ECE (a fraction in [0, 1]) from `bin_totals` summed over any number of batches."""
  total = jnp.sum(totals['count'])
  return jnp.sum(jnp.abs(totals['correct'] - totals['confidence'])) / total


def ece(probs, labels, num_bins=15):
  """Expected calibration error of `probs` `[N, K]` against `labels` `[N]`, a fraction."""
  mask = jnp.ones(labels.shape, jnp.float32)
  return ece_from_totals(bin_totals(probs, labels, mask, num_bins))


def reliability_figure(totals, title=None):
  """Per-bin accuracy against confidence, the gap shaded, over the per-bin counts (Figure 5).

  As Guo et al. (2017), Figure 1. Top: each non-empty bin's accuracy as a bar at the bin's
  position, the shaded part spanning from its accuracy to its mean confidence, the dashed
  diagonal perfect calibration. Bottom, sharing the confidence axis: the number of examples
  in each bin.

  Args:
    totals: `bin_totals` summed over the test set, each `[num_bins]`.
    title: names the run in the title, e.g. 'digits (step 440)' gives
      'digits (step 440): ECE = 4.60%'; None: 'ECE = 4.60%'.

  Returns:
    The `matplotlib.figure.Figure`; its axes are [reliability, counts].
  """
  count = np.asarray(totals['count'])
  num_bins = count.size
  left, width = np.linspace(0.0, 1.0, num_bins + 1)[:-1], 1.0 / num_bins
  filled = count > 0
  accuracy = np.asarray(totals['correct'])[filled] / count[filled]
  confidence = np.asarray(totals['confidence'])[filled] / count[filled]
  fig = mpl_figure.Figure(figsize=(4, 5.5), dpi=100)
  ax, counts_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': (3, 1)})
  ax.bar(left[filled], accuracy, width=width, align='edge', color='tab:blue',
         edgecolor='black', label='Accuracy')
  ax.bar(left[filled], confidence - accuracy, bottom=accuracy, width=width, align='edge',
         color='tab:red', alpha=0.3, edgecolor='tab:red', hatch='//', label='Gap')
  ax.plot([0, 1], [0, 1], '--', color='gray')
  ece_text = f'ECE = {100 * float(ece_from_totals(totals)):.2f}%'
  ax.set(xlim=(0, 1), ylim=(0, 1), ylabel='Accuracy',
         title=ece_text if title is None else f'{title}: {ece_text}')
  ax.legend(loc='upper left')
  counts_ax.bar(left, count, width=width, align='edge', color='tab:gray', edgecolor='black')
  counts_ax.set(xlabel='Confidence', ylabel='Examples')
  return fig


def reliability_diagram(totals, path, title=None):
  """Saves `reliability_figure(totals, title)` as a PNG at `path`."""
  reliability_figure(totals, title).savefig(path, bbox_inches='tight')


def evaluate(logits_fn, batches, *, num_bins, figure_path, title=None):
  """ECE in percent over the test set; saves the reliability diagram at `figure_path`.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode).
    batches: iterable of batch dicts (`image`, `label`, `mask`).
    num_bins: number of confidence bins (paper: 15).
    figure_path: where to write the PNG.
    title: the run in the figure's title, e.g. 'digits (step 440)'; None: ECE only.

  Returns:
    `{'ece': percent}`.
  """

  @jax.jit
  def step(batch):
    probs = jax.nn.softmax(logits_fn(batch['image']).astype(jnp.float32))
    return bin_totals(probs, batch['label'], batch['mask'], num_bins)

  totals, _ = batches_lib.sum_over_batches(step, batches)
  reliability_diagram(totals, figure_path, title)
  return {'ece': 100.0 * float(ece_from_totals(totals))}
