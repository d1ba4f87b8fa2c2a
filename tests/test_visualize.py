"""Tests of alignmix_jax.visualize (Figures 3 and 4) and of notebooks/interpolation.ipynb.

The interpolation tests use the tiny setting (digits at 16x16, width 4: A is 2x2x32) with
a freshly initialised model saved as a checkpoint and loaded back through `visualize.load`.
Such a decoder barely depends on z (x_hat and x_hat' differ by ~4e-4), so every endpoint
check first asserts that the two candidates differ by far more than its tolerance. The
notebook test trains a real (tiny) model with the training loop inside the notebook.
"""

import os
import subprocess
import sys

import jax
import matplotlib.image
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from scipy import optimize

import tiny_config
from alignmix_jax import alignment
from alignmix_jax import checkpointing
from alignmix_jax import configs
from alignmix_jax import metric_logging
from alignmix_jax import models
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import visualize
from alignmix_jax.data import arrays

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'interpolation.ipynb')
LAMS = np.array([1.0, 0.75, 0.25, 0.0], np.float32)
TOL = 1e-6  # Decoding the same features in another batch or program: float32 round-off.


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A fresh tiny model saved at step 5 and loaded back with `visualize.load`, two images."""
  config = tiny_config.get_config()
  state = state_lib.create_train_state(config, parallel.data_mesh())
  state = state.replace(step=state.step + 5)
  workdir = tmp_path_factory.mktemp('tiny_checkpoint')
  checkpoints = checkpointing.Checkpoints(workdir)
  checkpoints.save(state, {'best_top1': 0.0})
  checkpoints.wait()
  checkpoints.close()
  trained = visualize.load(workdir, config)
  assert trained.step == 5 and trained.model == models.create_model(config)
  for saved, loaded in zip(jax.tree.leaves(state.variables()),
                           jax.tree.leaves(trained.variables)):
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))
  x, x_prime = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  return trained, x, x_prime


def _apply(trained, *args, method):
  return trained.model.apply(trained.variables, *args, False, method=method)


def _decode_features(trained, features):
  """x_hat = D(e(A)) for one A `[h, w, c]`, computed without `visualize`."""
  latent = _apply(trained, features[None], method='latent')
  return np.asarray(_apply(trained, latent, method='decode')[0])


def _encode(trained, x, x_prime):
  return np.asarray(_apply(trained, np.stack([x, x_prime]), method='features'))


def test_mixed_latents_run_from_z_to_z_prime(tiny):
  trained, x, x_prime = tiny
  z, z_prime = np.asarray(_apply(trained, _encode(trained, x, x_prime), method='latent'))
  mixed = np.asarray(visualize.mixed_latents(trained.model, trained.variables, x, x_prime,
                                             LAMS))
  assert mixed.shape == (4,) + z.shape
  np.testing.assert_array_equal(mixed[0], z)  # lam = 1: 1 * z + 0 * z' is z exactly.
  np.testing.assert_array_equal(mixed[-1], z_prime)
  np.testing.assert_allclose(mixed[1], 0.75 * z + 0.25 * z_prime, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('reverse', [False, True])
def test_aligned_mixed_features_are_13_and_14(tiny, reverse):
  trained, x, x_prime = tiny
  a, a_prime = _encode(trained, x, x_prime)
  # One plan of M(A, A'). (13): mix_lam(A, A'-on-A's-positions);
  # (14): mix_lam(A-on-A''s-positions, A').
  aligned = np.asarray(alignment.align(a, a_prime, reverse=reverse))
  first, last = (aligned, a_prime) if reverse else (a, aligned)
  mixed = np.asarray(visualize.aligned_mixed_features(
      trained.model, trained.variables, x, x_prime, LAMS, reverse=reverse))
  assert mixed.shape == (4,) + a.shape
  assert np.abs(first - last).max() > 100 * TOL  # The endpoints are far apart.
  np.testing.assert_allclose(mixed[0], first, atol=TOL)
  np.testing.assert_allclose(mixed[-1], last, atol=TOL)
  np.testing.assert_allclose(mixed[1], 0.75 * first + 0.25 * last, atol=1e-5)


def test_interpolation_rows_endpoints_shapes_and_range(tiny):
  trained, x, x_prime = tiny
  a, a_prime = _encode(trained, x, x_prime)
  x_hat, x_hat_prime = (_decode_features(trained, f) for f in (a, a_prime))
  moved_to_x = _decode_features(trained, np.asarray(alignment.align(a, a_prime)))
  moved_to_x_prime = _decode_features(trained, np.asarray(alignment.align(a, a_prime,
                                                                          reverse=True)))
  rows = visualize.interpolation_rows(trained.model, trained.variables, x, x_prime, LAMS)
  assert sorted(rows) == sorted(key for key, _ in visualize.ROWS)
  for image in rows.values():
    assert image.shape == (4, 16, 16, 3)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
  # Every row runs from x's end (lam = 1, first column) to x''s end (lam = 0, last).
  expected_ends = {'latent': (x_hat, x_hat_prime),
                   'aligned': (x_hat, moved_to_x),
                   'aligned_reversed': (moved_to_x_prime, x_hat_prime)}
  for key, (first, last) in expected_ends.items():
    assert np.abs(first - last).max() > 100 * TOL, key
    np.testing.assert_allclose(np.asarray(rows[key][0]), first, atol=TOL, err_msg=key)
    np.testing.assert_allclose(np.asarray(rows[key][-1]), last, atol=TOL, err_msg=key)


def test_plot_interpolations_draws_the_rows_framed_by_the_originals(tiny):
  trained, x, x_prime = tiny
  rows = visualize.interpolation_rows(trained.model, trained.variables, x, x_prime, LAMS)
  fig = visualize.plot_interpolations(rows, x, x_prime, LAMS)
  grid = np.array(fig.axes).reshape(3, len(LAMS) + 2)
  for (key, label), axes in zip(visualize.ROWS, grid):
    assert axes[0].get_ylabel() == label
    assert [ax.get_title() for ax in axes] == (
        ['x'] + [rf'$\lambda$={lam:.2f}' for lam in LAMS] + ["x'"])
    np.testing.assert_array_equal(axes[0].images[0].get_array(), x)
    np.testing.assert_array_equal(axes[-1].images[0].get_array(), x_prime)
    for ax, image in zip(axes[1:-1], np.asarray(rows[key])):
      np.testing.assert_array_equal(ax.images[0].get_array(), image)


def test_toy_point_sets_are_seeded():
  points, partner = visualize.toy_point_sets(seed=3)
  assert points.shape == partner.shape == (16, 2) and points.dtype == np.float32
  again, _ = visualize.toy_point_sets(seed=3)
  other, _ = visualize.toy_point_sets(seed=4)
  np.testing.assert_array_equal(points, again)
  assert np.abs(np.sort(points, axis=0) - np.sort(other, axis=0)).max() > 0.01
  # A on a unit circle around the origin, A' on a square to its right.
  np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=0.3)
  assert partner[:, 0].min() > 1.2


def test_toy_alignment_cost_plan_marginals_and_aligned_points():
  points, partner = visualize.toy_point_sets(seed=0)
  result = visualize.toy_alignment(points, partner, eps=0.1, num_iters=1000)
  cost, plan, aligned = result['cost'], result['plan'], result['aligned']
  np.testing.assert_allclose(
      cost, np.sum((points[:, None] - partner[None]) ** 2, axis=-1), rtol=1e-5, atol=1e-5)
  assert plan.min() >= 0.0
  np.testing.assert_allclose(plan.sum(axis=0), 1 / 16, atol=1e-6)
  np.testing.assert_allclose(plan.sum(axis=1), 1 / 16, atol=1e-6)
  # The aligned points are the partner set transported by R = 16 P* (11).
  np.testing.assert_allclose(aligned, 16 * plan @ partner, atol=1e-4)


def test_toy_alignment_with_small_eps_is_the_optimal_permutation():
  points, partner = visualize.toy_point_sets(seed=1)
  result = visualize.toy_alignment(points, partner, eps=0.005, num_iters=3000)
  cost = result['cost']
  _, optimal = optimize.linear_sum_assignment(cost)  # Exact assignment (no entropy).
  assert not np.array_equal(optimal, np.arange(16))  # The sets are in random orders.
  np.testing.assert_array_equal(np.argmax(result['plan'], axis=1), optimal)
  np.testing.assert_allclose(result['aligned'], partner[optimal], atol=0.05)


def test_plot_toy_alignment_panels_and_match_lines():
  points, partner = visualize.toy_point_sets(seed=0)
  result = visualize.toy_alignment(points, partner)
  fig = visualize.plot_toy_alignment(points, partner, result)
  assert len(fig.axes) == 6  # Four panels and the colour bars of M and P*.
  sets_ax, cost_ax, plan_ax, aligned_ax = fig.axes[:4]
  np.testing.assert_array_equal(cost_ax.images[0].get_array(), result['cost'])
  np.testing.assert_array_equal(plan_ax.images[0].get_array(), result['plan'])
  np.testing.assert_allclose(sets_ax.collections[1].get_offsets(), partner)
  assert len(aligned_ax.lines) == 16
  for line, start, end in zip(aligned_ax.lines, points, result['aligned']):
    np.testing.assert_allclose(np.asarray(line.get_xydata()), [start, end])


def test_small_config_shrinks_a_copy():
  config = configs.load('digits:cutmix')
  assert config.mixup.method == 'cutmix'
  config.mixup.method = 'alignmix'
  small = visualize.small_config(config, num_train_steps=40)
  assert (small.model.width, small.batch_size, small.num_train_steps) == (8, 32, 40)
  assert small.checkpoint_every_steps == 40
  assert tuple(small.mixup.mode_weights) == visualize.SMALL_MODE_WEIGHTS
  assert small.dataset == config.dataset and small.optimizer == config.optimizer
  assert (config.model.width, config.num_train_steps) == (16, -1)  # Unchanged.
  tiny = visualize.small_config(tiny_config.get_config(), num_train_steps=40)
  assert (tiny.model.width, tiny.batch_size) == (4, 16)  # Already smaller: kept.


def test_pair_from_test_set_is_the_first_test_image_of_each_class():
  config = tiny_config.get_config()
  x, x_prime = visualize.pair_from_test_set(config, labels=(2, 7))
  test = arrays.load(config.dataset, 'test')  # The test split, in its order, uint8.
  labels = list(test['label'])
  np.testing.assert_allclose(x, test['image'][labels.index(2)] / 255.0, rtol=1e-6)
  np.testing.assert_allclose(x_prime, test['image'][labels.index(7)] / 255.0, rtol=1e-6)
  assert x.shape == (16, 16, 3) and 0.0 <= x.min() and x.max() <= 1.0
  with pytest.raises(ValueError, match='two different classes'):
    visualize.pair_from_test_set(config, labels=(3, 3))


def test_visualize_imports_without_tensorflow():
  code = ('import sys; import alignmix_jax.visualize; '
          "sys.exit('tensorflow' in sys.modules or 'tensorflow_datasets' in sys.modules)")
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_notebook_trains_a_small_model_and_draws_both_figures(tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  parameters = [cell for cell in notebook.cells if 'parameters' in cell.metadata.get('tags', [])]
  assert len(parameters) == 1
  defaults = {}
  exec(parameters[0].source, defaults)  # pylint: disable=exec-used
  assert defaults['OUTPUT_DIR'] == 'figures'  # Saved by default, under the repository root.
  steps = 60
  parameters[0].source = '\n'.join([
      'WORKDIR = None',
      f"CONFIG = {os.path.join(REPO, 'tests', 'tiny_config.py')!r}",
      f'TRAIN_STEPS = {steps}',
      f"TRAIN_DIR = {str(tmp_path / 'train')!r}",
      f"OUTPUT_DIR = {str(tmp_path / 'figures')!r}",
      'LABELS = (2, 7)',
      'NUM_LAMS = 3',
  ])
  # Run from notebooks/, as `jupyter` started there would; errors raise CellExecutionError.
  NotebookClient(notebook, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}}).execute()

  outputs = [output for cell in notebook.cells if cell.cell_type == 'code'
             for output in cell.outputs]
  text = ''.join(output.get('text', '') for output in outputs)
  assert f'Trained {steps} steps' in text
  assert sum('image/png' in output.get('data', {}) for output in outputs) == 2
  # A real model, trained by the training loop: checkpointed, its reconstruction improving.
  saved = checkpointing.Checkpoints(tmp_path / 'train', read_only=True)
  assert saved.latest_step() == steps
  saved.close()
  reconstruction = [line['train/reconstruction']
                    for line in metric_logging.read_jsonl(str(tmp_path / 'train'))
                    if 'train/reconstruction' in line]
  assert len(reconstruction) == 5 and reconstruction[-1] < 0.9 * reconstruction[0]
  for name, (min_height, min_width) in (('figure3_interpolations.png', (300, 500)),
                                        ('figure4_toy_alignment.png', (300, 1200))):
    path = tmp_path / 'figures' / name
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 1000, name
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_height and image.shape[1] >= min_width, name
    assert np.asarray(image[..., :3]).std() > 0.05, name  # Not a blank canvas.
