"""Out-of-distribution detection (paper section 4.2, Tables 3 left and 7).

The score of an image is its max softmax probability; in-distribution (ID) images are the
test set, out-of-distribution (OOD) sets are image folders (LSUN, iSUN, Tiny-ImageNet, crop
or resize, read by the input pipeline) and the built-in noise sets `NOISE`: every test image
replaced by Uniform U(0, 1) or Gaussian N(0.5, 0.5) noise (clipped to the [0, 1] pixel range).

Metrics over all thresholds t (ID predicted when score >= t), as fractions:
  det_acc:  max_t 0.5 * (TPR + TNR), TPR on ID, TNR on OOD.
  auroc:    area under the ROC curve, ID positive.
  aupr_in:  average precision with ID positive (the step-wise sum `sum_n (R_n - R_{n-1}) P_n`).
  aupr_out: average precision with OOD positive and the score negated (low score = OOD).
"""

import jax
import jax.numpy as jnp
import numpy as np

from alignmix_jax.evaluation import batches as batches_lib

METRICS = ('det_acc', 'auroc', 'aupr_in', 'aupr_out')


def _uniform_noise(key, shape):
  return jax.random.uniform(key, shape)


def _gaussian_noise(key, shape):
  return jnp.clip(0.5 + 0.5 * jax.random.normal(key, shape), 0.0, 1.0)


# Built-in OOD sets: name -> `(key, [B, H, W, 3]) -> images in [0, 1]`.
NOISE = {'uniform': _uniform_noise, 'gaussian': _gaussian_noise}


def max_softmax(logits):
  """Max softmax probability `[B]` of `logits` `[B, K]`, the OOD score (high = ID)."""
  return jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def folders(eval_config):
  """`{name: path}` of the OOD image folders in use (`config.eval.ood_folders`; '' unused)."""
  return {name: path for name, path in eval_config.ood_folders.items() if path}


def check_set_names(noise, folder_names):
  """Raises a clear error for unknown noise sets or folder names that clash with them."""
  unknown = [name for name in noise if name not in NOISE]
  if unknown:
    raise ValueError(f'Unknown OOD noise set(s) {unknown} in config.eval.ood_noise; valid: '
                     f'{sorted(NOISE)}.')
  clash = sorted(set(noise) & set(folder_names))
  if clash:
    raise ValueError(f'OOD folder name(s) {clash} clash with built-in noise sets; rename them '
                     'in config.eval.ood_folders.')


def _counts_by_threshold(positive, negative):
  """True and false positive counts for each distinct threshold, thresholds descending."""
  scores = np.concatenate([positive, negative])
  is_positive = np.concatenate([np.ones(positive.size), np.zeros(negative.size)])
  order = np.argsort(-scores, kind='stable')
  scores, is_positive = scores[order], is_positive[order]
  # Last position of each run of tied scores: a threshold admits a whole run or none of it.
  last = np.append(np.flatnonzero(np.diff(scores)), scores.size - 1)
  true_positives = np.cumsum(is_positive)[last]
  return true_positives, last + 1 - true_positives


def _average_precision(true_positives, false_positives):
  precision = true_positives / (true_positives + false_positives)
  recall = true_positives / true_positives[-1]
  return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def detection_metrics(scores_in, scores_out):
  """Det Acc, AuROC, AuPR (ID) and AuPR (OOD) of separating ID from OOD scores.

  Args:
    scores_in: `[N_in]` scores of in-distribution examples (higher = more ID).
    scores_out: `[N_out]` scores of out-of-distribution examples.

  Returns:
    `{'det_acc', 'auroc', 'aupr_in', 'aupr_out'}`, fractions in [0, 1].
  """
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  for name, scores in (('scores_in', scores_in), ('scores_out', scores_out)):
    if scores.size == 0 or not np.all(np.isfinite(scores)):
      raise ValueError(f'{name} must be a non-empty array of finite scores; got {scores.size} '
                       'values (NaN or inf logits mean the model or checkpoint is broken).')
  true_positives, false_positives = _counts_by_threshold(scores_in, scores_out)
  tpr = np.append(0.0, true_positives / scores_in.size)
  fpr = np.append(0.0, false_positives / scores_out.size)
  out_true_positives, out_false_positives = _counts_by_threshold(-scores_out, -scores_in)
  return {
      'det_acc': float(np.max(0.5 * (tpr + 1.0 - fpr))),
      'auroc': float(np.trapezoid(tpr, fpr)),
      'aupr_in': _average_precision(true_positives, false_positives),
      'aupr_out': _average_precision(out_true_positives, out_false_positives),
  }


def _table(rows, num_in):
  """Markdown table, one row per OOD set, metrics in percent."""
  lines = [f'In-distribution: {num_in} test images; scores: max softmax probability.', '',
           '| OOD set | images | Det Acc | AuROC | AuPR (ID) | AuPR (OOD) |',
           '|---|---|---|---|---|---|']
  for name, (num_out, metrics) in rows.items():
    values = ' | '.join(f'{100 * metrics[m]:.2f}' for m in METRICS)
    lines.append(f'| {name} | {num_out} | {values} |')
  return '\n'.join(lines) + '\n'


def evaluate(logits_fn, test_batches, folders, *, noise=tuple(NOISE), seed, table_path):
  """OOD detection of each noise set and image folder against the test set.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode).
    test_batches: iterable of ID batch dicts (`image`, `mask`).
    folders: `{name: iterable of batch dicts}`, one per OOD image folder.
    noise: names of built-in noise sets (keys of `NOISE`).
    seed: seed of the noise (batch i, set j use `fold_in(fold_in(key(seed), i), j)`).
    table_path: where to write the Markdown table.

  Returns:
    `{'ood/<set>/<metric>': percent}` for every set and metric of `METRICS`.
  """
  check_set_names(noise, folders)
  key = jax.random.key(seed)

  def score(images):
    return max_softmax(logits_fn(images))

  @jax.jit
  def test_step(batch):
    images = batch['image']
    out = {'in': score(images)}
    for j, name in enumerate(noise):
      out[name] = score(NOISE[name](jax.random.fold_in(batch['key'], j), images.shape))
    return out

  keyed = ({**batch, 'key': jax.random.fold_in(key, i)} for i, batch in enumerate(test_batches))
  scores = batches_lib.gather_over_batches(test_step, keyed)
  scores_in = scores.pop('in')
  folder_step = jax.jit(lambda batch: {'out': score(batch['image'])})
  for name, batches in folders.items():
    scores[name] = batches_lib.gather_over_batches(folder_step, batches)['out']
  rows = {name: (scores[name].size, detection_metrics(scores_in, scores[name]))
          for name in (*noise, *folders)}
  with open(table_path, 'w') as f:
    f.write(_table(rows, scores_in.size))
  return {f'ood/{name}/{metric}': 100.0 * value
          for name, (_, metrics) in rows.items() for metric, value in metrics.items()}
