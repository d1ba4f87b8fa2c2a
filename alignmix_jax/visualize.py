"""Figures 3 and 4 of the paper: decoded interpolations of two images and a toy alignment.

Paper symbols: x, x' = `x`, `x_prime` (`[H, W, 3]` in [0, 1]), A = `features` (`[B, h, w, c]`,
the encoder E's output), z = `latent` (the stage-2 encoder e's output), lam = `lam`,
M = `cost`, P* = `plan`. The mixup operator is mix_lam(a, b) = lam a + (1 - lam) b
(`mixup.mix`), so lam = 1 gives the first argument and lam = 0 the second.

Figure 3 (`interpolation_rows`, `plot_interpolations`), decoded through D for each lam:
  (a) latent mixup          D(mix_lam(z, z'))
  (b) aligned (13)          D(e(mix_lam(A, A~)))     A~  = A' moved onto A's positions (11)
  (c) aligned (14)          D(e(mix_lam(A~', A')))   A~' = A moved onto A''s positions (12)
Row (c) is (14) as the authors compute it (the paper writes mix_lam(A', A~'), the same at
1 - lam), so that every row runs from x (lam = 1) to x' (lam = 0).
A~ (`alignment.align(A, A')`) keeps A's spatial layout and takes its feature vectors from
A' (the paper's text calls it "A aligned to A'"); A~' (`alignment.align(A, A',
reverse=True)`, the same plan) keeps A''s layout and takes its vectors from A.

Figure 4 (`toy_alignment`, `plot_toy_alignment`): 16 points in 2D per set, each point one
position of a feature tensor with c = 2 channels; cost (8), Sinkhorn plan (10), and the
partner set moved onto the positions of the first (11).

Models: `load` restores a checkpoint written by the training loop; `train_small` trains a
small AlignMix/AE model on the offline digits with that loop; `pair_from_test_set` takes
two test images (`alignmix_jax.data`: no TensorFlow for the datasets held in memory).
"""

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib import figure as mpl_figure

from alignmix_jax import alignment
from alignmix_jax import checkpointing
from alignmix_jax import data
from alignmix_jax import mixup
from alignmix_jax import models
from alignmix_jax import parallel

# Figure 3's rows: key in `interpolation_rows`, label drawn left of the row.
ROWS = (
    ('latent', "(a) latent\n" r"$D(\mathrm{mix}_\lambda(z, z'))$"),
    ('aligned', "(b) aligned (13)\n" r"$D(e(\mathrm{mix}_\lambda(A, \tilde{A})))$"),
    ('aligned_reversed',
     "(c) aligned (14)\n" r"$D(e(\mathrm{mix}_\lambda(\tilde{A}', A')))$"),
)
# The small model of `train_small` (see `small_config`).
SMALL_MAX_WIDTH = 8
SMALL_MAX_BATCH = 32
SMALL_TRAIN_STEPS = 500
SMALL_RECONSTRUCTION_WEIGHT = 30.0
SMALL_MODE_WEIGHTS = (3.0, 1.0, 1.0, 1.0, 1.0)  # clean, input, latent, (13), (14).


class Trained(NamedTuple):
  """A model, its variables ({'params', 'batch_stats'}), its config and training step."""
  config: ml_collections.ConfigDict
  model: Any
  variables: Any
  step: int


def load(workdir, config, step=None):
  """The model of `config` with the variables of `workdir`'s latest (or `step`) checkpoint."""
  variables, step = checkpointing.restore_variables(workdir, config, step=step)
  return Trained(config, models.create_model(config), variables, step)


def small_config(config, num_train_steps=SMALL_TRAIN_STEPS):
  """A copy of `config` shrunk so that its decoder learns in about a minute on a CPU.

  Width at most `SMALL_MAX_WIDTH`, batch at most `SMALL_MAX_BATCH`, `num_train_steps`
  steps, one evaluation and one checkpoint at the end. The method keeps all its modes, but
  clean steps (the only ones that train D) are drawn 3/7 of the time and the reconstruction
  loss is weighted `SMALL_RECONSTRUCTION_WEIGHT`: with `mixup.reconstruction_loss='mean'`
  (the per-pixel mean; the paper's per-image sum diverges) and weight 1 the decoder of a
  few hundred steps draws blobs. Data, learning rate and the rest are kept.
  """
  config = config.copy_and_resolve_references()
  config.model.width = min(config.model.width, SMALL_MAX_WIDTH)
  config.batch_size = min(config.batch_size, SMALL_MAX_BATCH)
  config.num_train_steps = num_train_steps
  config.eval_every_epochs = 10**6
  config.checkpoint_every_steps = num_train_steps
  config.log_every_steps = max(1, num_train_steps // 5)
  config.mixup.reconstruction_weight = SMALL_RECONSTRUCTION_WEIGHT
  config.mixup.mode_weights = SMALL_MODE_WEIGHTS
  return config


def train_small(workdir, config, num_train_steps=SMALL_TRAIN_STEPS):
  """Trains `small_config(config, num_train_steps)` with the real training loop, then loads it.

  With `configs/digits.py` (AlignMix/AE: the clean steps train the decoder D) and the
  defaults: PreActResNet18 at width 8 on 32x32 digits (A is 4x4x64), batch 32, 500 steps,
  about a minute on a 2-core CPU. It resumes from a checkpoint already in `workdir`.

  Returns:
    `Trained`, and the final scalars of `train_and_evaluate` (`test/top1`, ...).
  """
  from alignmix_jax import train  # pylint: disable=g-import-not-at-top (orbax, writers)
  config = small_config(config, num_train_steps)
  scalars = train.train_and_evaluate(config, workdir)
  return load(workdir, config), scalars


def pair_from_test_set(config, labels=(2, 7)):
  """The first test image of class `labels[0]` (x) and of class `labels[1]` (x').

  Returns:
    `(x, x_prime)`, float32 `[H, W, 3]` in [0, 1], as the model sees them.
  """
  if len(set(labels)) != 2:
    raise ValueError(f'labels must be two different classes, got {labels}.')
  found = {}
  mesh = parallel.data_mesh(jax.devices()[:1])
  for batch in data.eval_batches(config.dataset, mesh, global_batch_size=256):
    batch = jax.device_get(batch)
    for image, label, real in zip(batch['image'], batch['label'], batch['mask']):
      if real and label in labels:
        found.setdefault(int(label), image)
    if len(found) == 2:
      return found[labels[0]], found[labels[1]]
  raise ValueError(f'No test image of class {set(labels) - set(found)}.')


def lam_grid(num=7):
  """`num` values of lam from 1 down to 0, float32: x's end first, as Figure 3 is drawn."""
  return np.linspace(1.0, 0.0, num, dtype=np.float32)


def _features(model, variables, images):
  """A = E(images) `[B, h, w, c]`, eval mode."""
  return model.apply(variables, images, False, method='features')


def _decode(model, variables, features):
  """x_hat = D(e(A)) `[B, H, W, 3]` in [0, 1] for features A `[B, h, w, c]`, eval mode."""
  latent = model.apply(variables, features, False, method='latent')
  return model.apply(variables, latent, False, method='decode')


def mixed_latents(model, variables, x, x_prime, lams):
  """mix_lam(z, z') for each lam: a pytree of `[L, ...]` (`[L, d]` for vector latents).

  lam = 1 gives z (of x), lam = 0 gives z' (of x').
  """
  latent = model.apply(variables, _features(model, variables, jnp.stack([x, x_prime])),
                       False, method='latent')
  first = jax.tree.map(lambda leaf: leaf[0], latent)
  second = jax.tree.map(lambda leaf: leaf[1], latent)
  return jax.vmap(lambda lam: mixup.mix(lam, first, second))(jnp.asarray(lams, jnp.float32))


def aligned_mixed_features(model, variables, x, x_prime, lams, *, reverse=False, eps=0.1,
                           num_iters=100):
  """Aligned feature mixup of the pair for each lam, `[L, h, w, c]`, via
  `mixup.aligned_feature_mix` on the batch (x, x') with partners (x', x).

  `reverse=False`, (13): mix_lam(A, A~): lam = 1 gives A, lam = 0 gives A~ = A' moved
  onto A's positions (`alignment.align(A, A')`).
  `reverse=True`, (14): mix_lam(A~', A'): lam = 1 gives A~' = A moved onto A''s
  positions (`alignment.align(A, A', reverse=True)`), lam = 0 gives A'.
  The alignment does not depend on lam and is computed once.
  """
  features = _features(model, variables, jnp.stack([x, x_prime]))
  perm = jnp.array([1, 0], jnp.int32)

  def one(lam):
    mixed, _ = mixup.aligned_feature_mix(lam, features, perm, reverse=reverse, eps=eps,
                                         num_iters=num_iters)
    return mixed[0]

  return jax.vmap(one)(jnp.asarray(lams, jnp.float32))


@functools.partial(jax.jit, static_argnames=('model', 'eps', 'num_iters'))
def interpolation_rows(model, variables, x, x_prime, lams, *, eps=0.1, num_iters=100):
  """The three rows of Figure 3, each `[L, H, W, 3]` in [0, 1], one image per lam.

  In every row lam is the weight of what comes from x (z, or the feature vectors of A), so
  all rows run from x's end (lam = 1) to x''s end (lam = 0):
    'latent'            (a) D(mix_lam(z, z')): lam = 1 is x_hat, lam = 0 is x_hat'.
    'aligned'           (b) (13) at lam, D(e(mix_lam(A, A~))): lam = 1 is x_hat,
                        lam = 0 is D(e(A~)), x''s features in x's layout.
    'aligned_reversed'  (c) (14), D(e(mix_lam(A~', A'))): lam = 1 is
                        D(e(A~')), x's features in x''s layout, lam = 0 is x_hat'.

  Args:
    model: the `AlignMixNet` (with a decoder: autoencoder 'ae' or 'vae').
    variables: its {'params', 'batch_stats'}.
    x, x_prime: `[H, W, 3]` images in [0, 1].
    lams: `[L]` values of lam in [0, 1].
    eps, num_iters: Sinkhorn settings of the alignment (paper: 0.1, 100).
  """
  lams = jnp.asarray(lams, jnp.float32)
  align = functools.partial(aligned_mixed_features, model, variables, x, x_prime, eps=eps,
                            num_iters=num_iters)
  return {
      'latent': model.apply(variables, mixed_latents(model, variables, x, x_prime, lams),
                            False, method='decode'),
      'aligned': _decode(model, variables, align(lams)),
      'aligned_reversed': _decode(model, variables, align(lams, reverse=True)),
  }


def _show_image(ax, image, title=None):
  ax.imshow(np.clip(np.asarray(image), 0.0, 1.0), interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


def plot_interpolations(rows, x, x_prime, lams):
  """Figure 3 as a matplotlib Figure: rows (a), (b), (c), each framed by x and x'.

  Columns: x, then one per lam (the `interpolation_rows` convention: lam is the weight of
  x's z or features), then x'. 3 x (L + 2) axes.
  """
  lams = np.asarray(lams)
  columns = len(lams) + 2
  fig = mpl_figure.Figure(figsize=(1.1 * columns + 2.0, 1.25 * len(ROWS) + 0.9),
                          layout='constrained')
  axes = fig.subplots(len(ROWS), columns, squeeze=False)
  for row, (key, label) in zip(axes, ROWS):
    _show_image(row[0], x, 'x')
    for ax, lam, image in zip(row[1:-1], lams, np.asarray(rows[key])):
      _show_image(ax, image, rf'$\lambda$={lam:.2f}')
    _show_image(row[-1], x_prime, "x'")
    row[0].set_ylabel(label, rotation=0, ha='right', va='center', fontsize=9)
  fig.suptitle(r"Decoded interpolations, x ($\lambda$ = 1) to x' ($\lambda$ = 0); "
               r"$\tilde{A}$: A' on A's positions, $\tilde{A}'$: A on A''s positions",
               fontsize=10)
  return fig


def toy_point_sets(seed=0, num_points=16):
  """Two sets of 2D points `[n, 2]` float32, in random orders: A on a circle, A' on a
  square outline to its right, both jittered."""
  rng = np.random.default_rng(seed)
  angles = 2.0 * np.pi * np.arange(num_points) / num_points
  circle = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
  # Equal steps along the square's perimeter, corner to corner (side 1.6).
  corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
  walk = 4.0 * np.arange(num_points) / num_points
  side, along = walk.astype(int), (walk % 1.0)[:, None]
  square = corners[side] + along * (corners[side + 1] - corners[side])
  square = 1.6 * square + np.array([1.5, -0.8])
  points = circle + 0.08 * rng.standard_normal(circle.shape)
  partner = square + 0.08 * rng.standard_normal(square.shape)
  return (rng.permutation(points).astype(np.float32),
          rng.permutation(partner).astype(np.float32))


def toy_alignment(points, partner, *, eps=0.1, num_iters=100):
  """Figure 4's computation for two point sets `[n, 2]` (A, A': n positions, c = 2).

  The n points are treated as an `[n, 1, 2]` feature tensor (n x 1 positions, 2 channels),
  the layout `alignment.align` takes.

  Returns:
    dict of float32 numpy arrays: 'cost' M `[n, n]` (8), 'plan' P* `[n, n]` (10) with
    marginals 1/n, 'aligned' A~ `[n, 2]` (11): row i is `sum_j n P*_ij a'_j`, the partner
    set moved onto the positions (indices) of `points`.
  """
  points, partner = jnp.asarray(points, jnp.float32), jnp.asarray(partner, jnp.float32)
  cost = alignment.cost_matrix(points, partner)
  aligned = alignment.align(points[:, None, :], partner[:, None, :], eps=eps,
                            num_iters=num_iters)[:, 0, :]
  return {'cost': np.asarray(cost),
          'plan': np.asarray(alignment.sinkhorn(cost, eps=eps, num_iters=num_iters)),
          'aligned': np.asarray(aligned)}


def _scatter_sets(ax, points, partner, alpha=1.0):
  ax.scatter(points[:, 0], points[:, 1], c='tab:blue', marker='o', alpha=alpha, label='A')
  ax.scatter(partner[:, 0], partner[:, 1], c='tab:orange', marker='s', alpha=alpha,
             label="A'")
  ax.set_aspect('equal')


def _legend_below(ax):
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)


def plot_toy_alignment(points, partner, result, lam=0.5):
  """Figure 4 as a matplotlib Figure: the sets A, A'; the cost M; the plan P*; A~ with a
  line from each a_i to its match a~_i and the mix mix_lam(A, A~) of (13) on it.

  Four panels and the colour bars of M and P* (6 axes).
  """
  aligned = result['aligned']
  mixed = np.asarray(mixup.mix(lam, jnp.asarray(points), jnp.asarray(aligned)))
  fig = mpl_figure.Figure(figsize=(16.0, 4.0), layout='constrained')
  sets_ax, cost_ax, plan_ax, aligned_ax = fig.subplots(1, 4)
  _scatter_sets(sets_ax, points, partner)
  _legend_below(sets_ax)
  sets_ax.set_title(f"A and A' ({len(points)} points in 2D each)")
  for ax, key, title in ((cost_ax, 'cost', r"cost $m_{ij} = \|a_i - a'_j\|^2$ (8)"),
                         (plan_ax, 'plan', r'Sinkhorn plan $P^*$ (10)')):
    fig.colorbar(ax.imshow(result[key], cmap='viridis'), ax=ax, shrink=0.8)
    ax.set_title(title)
    ax.set_xlabel("j (point of A')")
    ax.set_ylabel('i (point of A)')
  _scatter_sets(aligned_ax, points, partner, alpha=0.3)
  for start, end in zip(points, aligned):
    aligned_ax.plot([start[0], end[0]], [start[1], end[1]], c='grey', lw=0.8)
  aligned_ax.scatter(aligned[:, 0], aligned[:, 1], c='tab:red', marker='x',
                     label=r"$\tilde{A} = A' R^\top$ (11)")
  aligned_ax.scatter(mixed[:, 0], mixed[:, 1], c='tab:green', marker='.', s=30,
                     label=rf'$\mathrm{{mix}}_{{{lam:g}}}(A, \tilde{{A}})$ (13)')
  _legend_below(aligned_ax)
  aligned_ax.set_title("A' aligned onto A's points")
  return fig


def save_figure(fig, directory, name):
  """Writes `fig` to `<directory>/<name>` (PNG, 120 dpi), creating the directory."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, name)
  fig.savefig(path, dpi=120)
  return path
