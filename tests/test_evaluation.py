"""Evaluation programs: metrics against independent references, attacks, CAM boxes, runner.
(The checks of the evaluation settings: test_validation.py.)"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from matplotlib.backends import backend_agg
from PIL import Image
from sklearn import metrics as sk_metrics

import helpers
from alignmix_jax.evaluation import attacks
from alignmix_jax.evaluation import calibration
from alignmix_jax.evaluation import classification
from alignmix_jax.evaluation import localization
from alignmix_jax.evaluation import ood
from alignmix_jax.evaluation import runner


def make_batches(images, labels, batch_size, bbox=None):
  """Batches like the input pipeline's: the last one padded with zeros and mask 0."""
  images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
  num = len(images)
  padded = -num % batch_size

  def pad(x):
    return np.concatenate([x, np.zeros((padded, *x.shape[1:]), x.dtype)])

  fields = {'image': pad(images), 'label': pad(labels),
            'mask': pad(np.ones(num, np.float32))}
  if bbox is not None:
    fields['bbox'] = pad(np.asarray(bbox, np.float32))
  return [{k: v[i:i + batch_size] for k, v in fields.items()}
          for i in range(0, num + padded, batch_size)]


def linear_model(key, shape, num_classes):
  """`images [B, *shape] -> logits`: x W + b on flattened pixels, with its parameters."""
  w_key, b_key = jax.random.split(key)
  weights = jax.random.normal(w_key, (int(np.prod(shape)), num_classes))
  bias = jax.random.normal(b_key, (num_classes,))
  return (lambda images: images.reshape(images.shape[0], -1) @ weights + bias), weights


# --- OOD metrics -------------------------------------------------------------------------


def test_detection_metrics_match_sklearn_and_brute_force():
  rng = np.random.default_rng(0)
  # Rounded scores: many ties, which the threshold sweep must treat as one threshold.
  scores_in = np.round(rng.normal(1.0, 1.0, 300), 1)
  scores_out = np.round(rng.normal(0.0, 1.5, 200), 1)
  got = ood.detection_metrics(scores_in, scores_out)
  is_in = np.r_[np.ones(300), np.zeros(200)]
  scores = np.r_[scores_in, scores_out]
  np.testing.assert_allclose(got['auroc'], sk_metrics.roc_auc_score(is_in, scores), rtol=1e-12)
  np.testing.assert_allclose(got['aupr_in'], sk_metrics.average_precision_score(is_in, scores),
                             rtol=1e-12)
  np.testing.assert_allclose(got['aupr_out'],
                             sk_metrics.average_precision_score(1 - is_in, -scores), rtol=1e-12)
  # Det Acc by brute force: every threshold, ID predicted when score >= t.
  thresholds = np.r_[np.unique(scores), np.inf]
  det_acc = max(0.5 * (np.mean(scores_in >= t) + np.mean(scores_out < t)) for t in thresholds)
  np.testing.assert_allclose(got['det_acc'], det_acc, rtol=1e-12)
  assert 0.6 < got['auroc'] < 0.9  # Overlapping sets: neither trivial nor perfect.


def test_detection_metrics_extremes():
  separated = ood.detection_metrics([0.9, 0.8, 0.95], [0.1, 0.3])
  assert separated == {'det_acc': 1.0, 'auroc': 1.0, 'aupr_in': 1.0, 'aupr_out': 1.0}
  swapped = ood.detection_metrics([0.1, 0.3], [0.9, 0.8, 0.95])
  assert swapped['auroc'] == 0.0 and swapped['det_acc'] == 0.5
  with pytest.raises(ValueError, match='scores_out must be a non-empty'):
    ood.detection_metrics([0.5], [])


# --- Calibration -------------------------------------------------------------------------


def test_ece_by_hand():
  # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]. Confidence, prediction, label:
  #   .5 (bin 1, upper edge included) right; .4 (bin 1) wrong; .9 (bin 3) right;
  #   .8 (bin 3) wrong; .6 (bin 2) right; .7 (bin 2) right.
  # bin 1: |acc .5 - conf .45| * 2/6; bin 2: |1 - .65| * 2/6; bin 3: |.5 - .85| * 2/6.
  probs = jnp.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.1, 0.9, 0.0],
                     [0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
  labels = jnp.array([0, 1, 1, 2, 2, 0])
  expected = (0.05 * 2 + 0.35 * 2 + 0.35 * 2) / 6
  np.testing.assert_allclose(calibration.ece(probs, labels, num_bins=4), expected, rtol=1e-6)


def test_ece_matches_loop_reference_and_accumulates_over_masked_batches():
  rng = np.random.default_rng(1)
  probs = rng.dirichlet(np.full(10, 0.3), size=97).astype(np.float32)
  labels = rng.integers(0, 10, 97)
  confidence, correct = probs.max(-1), probs.argmax(-1) == labels
  edges = np.linspace(0, 1, 16)
  expected = 0.0
  for lower, upper in zip(edges[:-1], edges[1:]):
    in_bin = (confidence > lower) & (confidence <= upper)
    if in_bin.any():
      expected += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
  np.testing.assert_allclose(calibration.ece(jnp.asarray(probs), jnp.asarray(labels)), expected,
                             rtol=1e-5)
  # Two batches, the second padded with garbage rows of mask 0: the same ECE.
  garbage = np.eye(10, dtype=np.float32)[:3]
  parts = [(probs[:50], labels[:50], np.ones(50)),
           (np.r_[probs[50:], garbage], np.r_[labels[50:], [5, 5, 5]], np.r_[np.ones(47),
                                                                            np.zeros(3)])]
  totals = [calibration.bin_totals(jnp.asarray(p), jnp.asarray(y), jnp.asarray(m), 15)
            for p, y, m in parts]
  summed = jax.tree.map(jnp.add, *totals)
  np.testing.assert_allclose(calibration.ece_from_totals(summed), expected, rtol=1e-5)
  assert float(jnp.sum(summed['count'])) == 97


def test_reliability_figure_draws_the_bin_counts_under_the_diagram_and_names_the_run(tmp_path):
  rng = np.random.default_rng(3)
  probs = rng.dirichlet(np.full(4, 0.5), size=200).astype(np.float32)
  probs[0] = [0.5, 0.3, 0.2, 0.0]  # Confidence on an edge: in the bin (0.4, 0.5].
  labels = rng.integers(0, 4, 200)
  # A second batch padded with rows of mask 0: counted nowhere.
  garbage = np.full((5, 4), 0.25, np.float32)
  parts = [(probs[:120], labels[:120], np.ones(120)),
           (np.r_[probs[120:], garbage], np.r_[labels[120:], np.zeros(5, int)],
            np.r_[np.ones(80), np.zeros(5)])]
  totals = jax.tree.map(jnp.add, *[
      calibration.bin_totals(jnp.asarray(p), jnp.asarray(y), jnp.asarray(m, jnp.float32), 10)
      for p, y, m in parts])
  # Reference: each bin (lower, upper] by comparison, with its accuracy and the ECE.
  confidence, correct = probs.max(-1), probs.argmax(-1) == labels
  edges = np.linspace(0, 1, 11).astype(np.float32)
  in_bins = [(confidence > lower) & (confidence <= upper)
             for lower, upper in zip(edges[:-1], edges[1:])]
  counts = np.array([in_bin.sum() for in_bin in in_bins])
  accuracies = [correct[in_bin].mean() for in_bin in in_bins if in_bin.any()]
  ece = sum(in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
            for in_bin in in_bins if in_bin.any())
  assert counts.sum() == 200 and counts[4] >= 1 and (counts == 0).any()  # Empty bins too.

  fig = calibration.reliability_figure(totals, title='digits (step 440)')
  backend_agg.FigureCanvasAgg(fig).draw()  # Renders with Agg.
  diagram, histogram = fig.axes
  assert diagram.get_title() == f'digits (step 440): ECE = {100 * ece:.2f}%'
  assert diagram.get_shared_x_axes().joined(diagram, histogram)
  assert diagram.get_position().height > 2 * histogram.get_position().height
  assert diagram.get_position().y0 > histogram.get_position().y1  # Histogram underneath.
  bars = histogram.patches
  np.testing.assert_array_equal([bar.get_height() for bar in bars], counts)
  np.testing.assert_allclose([bar.get_x() for bar in bars], edges[:-1], atol=1e-7)
  np.testing.assert_allclose([bar.get_width() for bar in bars], 0.1)
  accuracy_bars = diagram.containers[0]
  np.testing.assert_allclose([bar.get_height() for bar in accuracy_bars], accuracies,
                             rtol=1e-6)
  untitled = calibration.reliability_figure(totals)
  assert untitled.axes[0].get_title() == f'ECE = {100 * ece:.2f}%'
  path = tmp_path / 'reliability.png'
  calibration.reliability_diagram(totals, str(path), title='digits (step 440)')
  image = Image.open(path)
  assert image.format == 'PNG' and image.height > image.width  # Two panels, one above.


# --- Classification ----------------------------------------------------------------------


def test_top_k_errors_ignore_padding():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(23, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 23)
  # The "images" are the logits themselves: [B, 1, 1, 7].
  batches = make_batches(logits[:, None, None, :], labels, batch_size=10)
  got = classification.evaluate(lambda x: x.reshape(x.shape[0], -1), batches, top_k=(1, 3))
  ranks = np.argsort(-logits, axis=-1)
  expected_top1 = 100 * np.mean(ranks[:, 0] != labels)
  expected_top3 = 100 * np.mean([label not in rank[:3] for label, rank in zip(labels, ranks)])
  np.testing.assert_allclose(got['top1_error'], expected_top1, rtol=1e-6)
  np.testing.assert_allclose(got['top3_error'], expected_top3, rtol=1e-6)
  assert got['top3_error'] < got['top1_error']


# --- Attacks -----------------------------------------------------------------------------


def test_fgsm_on_linear_model_equals_closed_form():
  logits_fn, weights = linear_model(jax.random.key(0), (4, 4, 3), 5)
  images = jax.random.uniform(jax.random.key(1), (6, 4, 4, 3))
  labels = jnp.array([0, 1, 2, 3, 4, 0])
  eps = 8 / 255
  got = attacks.fgsm(logits_fn, images, labels, eps=eps)
  # d CE / d x = W (softmax(xW + b) - onehot(y)).
  residual = jax.nn.softmax(logits_fn(images)) - jax.nn.one_hot(labels, 5)
  grad = (residual @ weights.T).reshape(images.shape)
  expected = jnp.clip(images + eps * jnp.sign(grad), 0, 1)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert float(jnp.max(jnp.abs(got - images))) == pytest.approx(eps, rel=1e-5)


def test_pgd_stays_in_ball_and_box_and_raises_loss():
  logits_fn, _ = linear_model(jax.random.key(2), (4, 4, 3), 5)
  # Pixels at 0 and 1 make the [0, 1] clipping bite.
  images = jnp.round(jax.random.uniform(jax.random.key(3), (8, 4, 4, 3)) * 4) / 4
  labels = jnp.argmax(logits_fn(images), axis=-1)  # Start from correct predictions.
  eps = 4 / 255
  adversarial = attacks.pgd(logits_fn, images, labels, jax.random.key(4), eps=eps,
                            step_size=2 / 255, num_steps=10)
  assert float(jnp.max(jnp.abs(adversarial - images))) <= eps + 1e-6
  assert float(jnp.min(adversarial)) == 0.0 and float(jnp.max(adversarial)) == 1.0
  loss = lambda x: optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), labels)
  assert bool(jnp.all(loss(adversarial) > loss(images)))
  fgsm_loss = loss(attacks.fgsm(logits_fn, images, labels, eps=eps))
  assert float(jnp.sum(loss(adversarial))) >= float(jnp.sum(fgsm_loss)) - 1e-4


def test_pgd_replays_in_numpy_on_a_linear_model():
  """PGD from the same random start (the only jax.random draw) replayed in float64 NumPy:
  the cross-entropy gradient of x W + b is (softmax - onehot) W^T, each step adds
  step * sign(grad), then the eps-ball and [0, 1] clip."""
  logits_fn, weights = linear_model(jax.random.key(7), (3, 3, 1), 4)
  rng = np.random.default_rng(2)
  images = rng.uniform(0.2, 0.8, (5, 3, 3, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0], np.int32)
  key, eps, step, iters = jax.random.key(9), 0.1, 0.03, 6
  got = np.asarray(attacks.pgd(logits_fn, jnp.asarray(images), jnp.asarray(labels), key,
                               eps=eps, step_size=step, num_steps=iters))
  w = np.asarray(weights, np.float64)
  b = np.asarray(logits_fn(jnp.zeros((1, 3, 3, 1)))[0], np.float64)  # Logits of 0 = bias.
  x0 = images.astype(np.float64).reshape(5, -1)
  start = np.asarray(jax.random.uniform(key, images.shape, jnp.float32, -eps, eps))
  lower, upper = np.maximum(x0 - eps, 0.0), np.minimum(x0 + eps, 1.0)
  x = np.clip(x0 + start.reshape(5, -1), lower, upper)
  onehot = np.eye(4)[labels]
  signs = []
  for _ in range(iters):
    logits = x @ w + b
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    grad = (probs - onehot) @ w.T
    signs.append(np.abs(grad).min())
    x = np.clip(x + step * np.sign(grad), lower, upper)
  assert min(signs) > 1e-4  # No gradient near 0, where float32 could flip a sign.
  np.testing.assert_allclose(got.reshape(5, -1), x, atol=1e-5)


def test_attack_errors_reduce_to_clean_error_at_eps_zero_and_grow_with_eps():
  logits_fn, _ = linear_model(jax.random.key(5), (4, 4, 3), 3)
  images = jax.random.uniform(jax.random.key(6), (21, 4, 4, 3))
  labels = jnp.argmax(logits_fn(images), axis=-1).at[:5].set(0)
  batches = make_batches(images, labels, batch_size=8)
  clean = classification.evaluate(logits_fn, batches)['top1_error']
  zero = attacks.evaluate(logits_fn, batches, fgsm_eps=0.0, pgd_eps=0.0, pgd_step=0.0,
                          pgd_iters=2, seed=0)
  assert zero == {'fgsm_error': clean, 'pgd_error': clean}
  strong = attacks.evaluate(logits_fn, batches, fgsm_eps=0.3, pgd_eps=0.3, pgd_step=0.1,
                            pgd_iters=5, seed=0)
  assert strong['fgsm_error'] > clean and strong['pgd_error'] > clean


# --- Localization ------------------------------------------------------------------------


def test_iou_of_drawn_boxes():
  boxes_a = np.array([[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.2, 0.2],
                      [0.0, 0.0, 0.0, 0.0]])
  boxes_b = np.array([[0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 1.0, 1.0],
                      [0.0, 0.0, 0.0, 0.0]])
  # Overlap .25 x .25 over .25 + .25 - .0625; identical; disjoint; empty.
  np.testing.assert_allclose(localization.iou(boxes_a, boxes_b),
                             [0.0625 / 0.4375, 1.0, 0.0, 0.0], rtol=1e-12)


def test_box_from_cam_takes_the_largest_8_connected_component():
  masks = np.zeros((3, 10, 20), np.float32)
  masks[0, 2:6, 1:4] = 1  # 12 pixels: rows 2-5, columns 1-3.
  masks[0, 7:9, 10:15] = 1  # 10 pixels.
  masks[1, 0, 0] = masks[1, 1, 1] = masks[1, 2, 2] = 1  # Diagonal: one component (3 pixels).
  masks[1, 8, 18:20] = 1  # 2 pixels.
  # Image 2 is empty: a blob directly "below" image 1 in the batch must not join it.
  boxes = localization.box_from_cam(masks, threshold=0.5)
  np.testing.assert_allclose(boxes, [[0.2, 0.05, 0.6, 0.2], [0.0, 0.0, 0.3, 0.15],
                                     [0.0, 0.0, 0.0, 0.0]], rtol=1e-6)
  with pytest.raises(ValueError, match=r'\[B, H, W\]'):
    localization.box_from_cam(masks[0])


def blob_images(centers, size=32, half=5):
  """`[N, size, size, 3]` black images with a white square of side 2*half, and its box."""
  images = np.zeros((len(centers), size, size, 3), np.float32)
  boxes = []
  for image, (y, x) in zip(images, centers):
    image[y - half:y + half, x - half:x + half] = 1
    boxes.append([(y - half) / size, (x - half) / size, (y + half) / size, (x + half) / size])
  return images, np.array(boxes, np.float32)


def pooled_cam(images):
  """`[B, 8, 8, 2]` CAM: class 0 is the 4x4 average-pooled image, class 1 its mirror image."""
  pooled = nn.avg_pool(images[..., :1], (4, 4), strides=(4, 4))
  return jnp.concatenate([pooled, pooled[:, :, ::-1]], axis=-1)


def test_cam_box_around_a_synthetic_blob():
  images, true_boxes = blob_images([(10, 9), (22, 20), (16, 16)])
  cams = localization.class_cams(pooled_cam(jnp.asarray(images)), jnp.array([0, 0, 0]),
                                 (32, 32))
  assert cams.shape == (3, 32, 32)
  np.testing.assert_allclose(jnp.min(cams, axis=(1, 2)), 0.0, atol=1e-6)
  np.testing.assert_allclose(jnp.max(cams, axis=(1, 2)), 1.0, atol=1e-6)
  # At half maximum the upsampled pooled square has the square's edges (to a pixel).
  np.testing.assert_allclose(localization.box_from_cam(np.asarray(cams), threshold=0.5),
                             true_boxes, atol=1 / 32)
  # At 0.15 the box holds the square and spreads by less than one 4-pixel CAM cell a side.
  boxes = localization.box_from_cam(np.asarray(cams), threshold=0.15)
  spread = np.concatenate([true_boxes[:, :2] - boxes[:, :2], boxes[:, 2:] - true_boxes[:, 2:]])
  assert np.all(spread > 0) and np.all(spread < 4 / 32), spread * 32


def test_localization_accuracies(tmp_path):
  # Every label is 0 and class 0's CAM finds the blob (exactly, at threshold 0.5); class 1's
  # (mirrored) does not. The model predicts class 0 (right) for the first 4 images, class 1
  # for the other 3.
  images, boxes = blob_images([(8, 8), (8, 10), (10, 8), (9, 9), (8, 8), (9, 8), (10, 9)])
  marker = np.r_[np.zeros(4), np.ones(3)].astype(np.float32)
  images[:, -1, -1, 1] = marker  # A pixel outside the blobs and the CAM channel.
  logits_fn = lambda x: jnp.stack([1 - x[:, -1, -1, 1], x[:, -1, -1, 1]], axis=-1)
  batches = make_batches(images, np.zeros(7), batch_size=4, bbox=boxes)
  figure = tmp_path / 'loc.png'
  got = localization.evaluate(logits_fn, pooled_cam, batches, threshold=0.5,
                              figure_path=str(figure), num_examples=3)
  np.testing.assert_allclose(got['loc/top1'], 100 * 4 / 7, rtol=1e-6)
  assert got['loc/gt_known'] == 100.0
  assert figure.stat().st_size > 1000
  no_boxes = [{k: v for k, v in batch.items() if k != 'bbox'} for batch in batches]
  with pytest.raises(ValueError, match='with_bbox'):
    localization.evaluate(logits_fn, pooled_cam, no_boxes, threshold=0.15,
                          figure_path=str(figure))


# --- OOD program -------------------------------------------------------------------------


def spread_logits(images):
  """Sure on flat images, unsure on noisy ones: logits (s, -s), s = 5 max(0, 1 - 10 std)."""
  sureness = 5 * jnp.maximum(0.0, 1 - 10 * jnp.std(images, axis=(1, 2, 3)))
  return jnp.stack([sureness, -sureness], axis=-1)


def test_ood_program_scores_noise_and_folders(tmp_path):
  rng = np.random.default_rng(3)

  def noisy_gray(count, max_amplitude):
    amplitude = rng.uniform(0, max_amplitude, (count, 1, 1, 1))
    return (0.5 + amplitude * rng.uniform(-1, 1, (count, 8, 8, 3))).astype(np.float32)

  # Test images are near-flat; folder images overlap them (std up to ~0.06 against ~0.03).
  flat, folder_images = noisy_gray(10, 0.05), noisy_gray(9, 0.1)
  table = tmp_path / 'ood.md'
  got = ood.evaluate(spread_logits, make_batches(flat, np.zeros(10), 4),
                     {'folder': make_batches(folder_images, -np.ones(9), 4)}, seed=0,
                     table_path=str(table))
  assert sorted(got) == sorted(f'ood/{name}/{metric}' for name in ('uniform', 'gaussian', 'folder')
                               for metric in ood.METRICS)
  # Noise has std ~0.3: score 0.5, below every test image's: perfectly separated.
  for name in ('uniform', 'gaussian'):
    assert all(got[f'ood/{name}/{metric}'] == 100.0 for metric in ood.METRICS)
  expected = ood.detection_metrics(ood.max_softmax(spread_logits(jnp.asarray(flat))),
                                   ood.max_softmax(spread_logits(jnp.asarray(folder_images))))
  assert 0.6 < expected['auroc'] < 0.95  # Overlapping sets.
  for metric, value in expected.items():
    np.testing.assert_allclose(got[f'ood/folder/{metric}'], 100 * value, rtol=1e-6)
  rows = [line for line in table.read_text().splitlines() if line.startswith('| ')]
  assert [row.split('|')[1].strip() for row in rows] == ['OOD set', 'uniform', 'gaussian',
                                                         'folder']
  assert rows[3].split('|')[2].strip() == '9'  # Padding of the folder's last batch dropped.
  with pytest.raises(ValueError, match=r"valid: \['gaussian', 'uniform'\]"):
    ood.evaluate(spread_logits, [], {}, noise=('salt',), seed=0, table_path=str(table))


# --- Runner ------------------------------------------------------------------------------


class TinyCamNet(nn.Module):
  """Conv features `[B, h, w, 8]`, a linear classifier per position (CAM) and GAP logits."""
  num_classes: int

  def setup(self):
    self.conv = nn.Conv(8, (3, 3), strides=(2, 2))
    self.classifier = nn.Dense(self.num_classes)

  def cam(self, images):
    return self.classifier(nn.relu(self.conv(images)))

  def __call__(self, images):
    return jnp.mean(self.cam(images), axis=(1, 2))


def test_run_title_names_the_workdir_and_the_step():
  assert runner.run_title('/runs/digits/', 440) == 'digits (step 440)'
  assert runner.run_title('/runs/digits') == 'digits'


def test_run_programs_writes_every_key_and_figure(tmp_path, monkeypatch):
  titles = []
  draw = calibration.reliability_figure

  def recording_draw(totals, title=None):
    fig = draw(totals, title)
    titles.append(fig.axes[0].get_title())
    return fig

  monkeypatch.setattr(calibration, 'reliability_figure', recording_draw)
  config = helpers.eval_config(tmp_path, tuple(runner.PROGRAMS))
  config.eval.pgd_iters = 3
  model = TinyCamNet(num_classes=3)
  images, boxes = blob_images([(8 + i % 12, 10 + i % 9) for i in range(11)], size=24, half=4)
  variables = model.init(jax.random.key(0), images[:1])
  fns = runner.ModelFns(logits=lambda x: model.apply(variables, x),
                        cam=lambda x: model.apply(variables, x, method='cam'))
  labels = np.arange(11) % 3

  def batches_fn(dataset_config):
    if dataset_config.name == 'image_folder':
      assert dataset_config.data_dir == config.eval.ood_folders.lsun
      return make_batches(images[:, ::-1], -np.ones(11), 4)
    return make_batches(images, labels, 4, bbox=boxes)

  workdir = tmp_path / 'digits'
  results = runner.run_programs(config, fns, batches_fn, str(workdir), step=440)
  ood_keys = [f'ood/{name}/{metric}' for name in ('uniform', 'gaussian', 'lsun')
              for metric in ood.METRICS]
  assert sorted(results) == sorted(['top1_error', 'fgsm_error', 'pgd_error', 'ece', 'loc/top1',
                                    'loc/gt_known', *ood_keys])
  assert all(0.0 <= value <= 100.0 for value in results.values())
  # A random 3-class model on 11 examples: top-1 error is a multiple of 100/11.
  assert results['top1_error'] * 11 / 100 == pytest.approx(round(results['top1_error'] * 0.11))
  assert results['fgsm_error'] >= results['top1_error']
  assert json.loads((workdir / 'eval.json').read_text()) == results
  for name in ('reliability.png', 'localization.png', 'ood.md'):
    assert (workdir / 'eval' / name).stat().st_size > 100
  assert titles == [f"digits (step 440): ECE = {results['ece']:.2f}%"]
