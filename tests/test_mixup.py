"""Tests of alignmix_jax.mixup: lam, permutations, label mixing, CutMix, aligned mixup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import authors_numpy
from alignmix_jax import mixup


def test_lam_follows_beta_alpha_alpha():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  lams = jax.vmap(lambda k: mixup.sample_lam(k, 2.0))(keys)
  assert lams.dtype == jnp.float32
  assert float(lams.min()) > 0.0 and float(lams.max()) < 1.0
  # Beta(2, 2): mean 1/2, variance 1/20.
  np.testing.assert_allclose(float(lams.mean()), 0.5, atol=0.02)
  np.testing.assert_allclose(float(lams.var()), 0.05, atol=0.005)
  assert float(mixup.sample_lam(keys[0], 0.0)) == 1.0


def test_permutation_is_a_permutation():
  for seed in range(5):
    perm = mixup.sample_permutation(jax.random.PRNGKey(seed), 37)
    assert perm.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(np.asarray(perm)), np.arange(37))
  # Different keys give different pairings.
  first = mixup.sample_permutation(jax.random.PRNGKey(0), 37)
  second = mixup.sample_permutation(jax.random.PRNGKey(1), 37)
  assert not np.array_equal(first, second)


def test_input_mixup_and_label_mixing():
  images = jnp.arange(4 * 2 * 2 * 3, dtype=jnp.float32).reshape(4, 2, 2, 3)
  perm = jnp.array([2, 0, 3, 1], jnp.int32)
  mixed = mixup.mix_with_partner(0.25, images, perm)
  np.testing.assert_allclose(mixed[1], 0.25 * images[1] + 0.75 * images[0])
  targets = mixup.one_hot(jnp.array([0, 1, 2, 1]), 3)
  soft = mixup.mix_labels(0.25, targets, perm)
  np.testing.assert_allclose(soft, [[0.25, 0.0, 0.75],
                                    [0.75, 0.25, 0.0],
                                    [0.0, 0.75, 0.25],
                                    [0.0, 1.0, 0.0]])
  np.testing.assert_allclose(soft.sum(axis=1), 1.0)


def test_latent_mixup_mixes_every_leaf_and_keeps_dtypes():
  latent = {'mean': jnp.ones((3, 4)), 'logvar': jnp.zeros((3, 4), jnp.bfloat16)}
  latent['mean'] = latent['mean'].at[0].set(5.0)
  mixed = mixup.mix_with_partner(0.5, latent, jnp.array([1, 0, 2]))
  np.testing.assert_allclose(mixed['mean'][:, 0], [3.0, 3.0, 1.0])
  assert mixed['logvar'].dtype == jnp.bfloat16


@pytest.mark.parametrize('seed', range(6))
def test_cutmix_box_area_sets_lam(seed):
  rng = jax.random.PRNGKey(seed)
  lam = jax.random.uniform(jax.random.fold_in(rng, 1))
  images = jax.random.uniform(jax.random.fold_in(rng, 2), (3, 16, 12, 3))
  perm = jnp.array([1, 2, 0], jnp.int32)
  mixed, lam_box = mixup.cutmix(rng, lam, images, perm)
  mask, lam_again = mixup.cutmix_box(rng, lam, 16, 12)
  mask = np.asarray(mask).astype(bool)
  assert float(lam_box) == float(lam_again)
  # lam is the fraction of pixels kept from x.
  np.testing.assert_allclose(float(lam_box), 1.0 - mask.sum() / (16 * 12), atol=1e-6)
  # The box has at most the sides sqrt(1 - lam) * (H, W) (fewer where clipped).
  rows, cols = np.nonzero(mask)
  if rows.size:
    assert rows.max() - rows.min() + 1 <= np.floor(16 * np.sqrt(1 - float(lam)))
    assert cols.max() - cols.min() + 1 <= np.floor(12 * np.sqrt(1 - float(lam)))
    assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
  inside = np.asarray(images)[np.asarray(perm)][:, mask]
  np.testing.assert_array_equal(np.asarray(mixed)[:, mask], inside)
  np.testing.assert_array_equal(np.asarray(mixed)[:, ~mask], np.asarray(images)[:, ~mask])


def rand_bbox(box_rng, lam, height, width):
  """CutMix's `rand_bbox` in NumPy from the box key's two draws (the centre): sides
  floor(sqrt(1 - lam) * (H, W)), corners clip(c -+ side // 2, 0, H or W).

  Returns `(mask [H, W, 1] float32, 1 inside the box, lam of the clipped box)`."""
  key_y, key_x = jax.random.split(box_rng)
  cy = int(jax.random.randint(key_y, (), 0, height))
  cx = int(jax.random.randint(key_x, (), 0, width))
  cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
  top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
  left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:bottom, left:right] = 1.0
  return mask, 1.0 - (bottom - top) * (right - left) / (height * width)


@pytest.mark.parametrize('lam', [0.0, 0.3, 0.9])
@pytest.mark.parametrize('seed', range(4))
def test_cutmix_box_is_cutmixs_rand_bbox(lam, seed):
  rng = jax.random.PRNGKey(seed)
  mask, lam_box = mixup.cutmix_box(rng, jnp.float32(lam), 8, 10)
  expected, expected_lam = rand_bbox(rng, lam, 8, 10)
  np.testing.assert_array_equal(mask, expected[..., 0])
  np.testing.assert_allclose(float(lam_box), expected_lam, atol=1e-6)


@pytest.mark.parametrize('reverse', [False, True])
def test_aligned_feature_mix_is_the_authors_13_or_14(reverse):
  """One plan of M(A, A') per pair at 100 iterations; (13) lam A + (1 - lam) A~,
  (14) lam A~' + (1 - lam) A', as the authors' code (NumPy reference, float64)."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(3))
  # Non-negative, magnitudes varying over positions: Sinkhorn does not converge in 100
  # iterations here, so a second plan for (14) would not give the same result.
  features = jax.nn.relu(jax.random.normal(k1, (4, 2, 2, 8))) * jnp.exp(
      jax.random.normal(k2, (4, 2, 2, 1)))
  perm = jnp.array([3, 2, 0, 1], jnp.int32)
  lam = 0.7
  mixed, weights = mixup.aligned_feature_mix(lam, features, perm, reverse=reverse)
  expected = authors_numpy.aligned_mixup(features, perm, lam, reverse)
  np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-5)
  # The direction decided on the device (as the train step does for its two feature modes).
  on_device = jax.jit(lambda r: mixup.aligned_feature_mix(lam, features, perm, reverse=r)[0])(
      jnp.asarray(reverse))
  np.testing.assert_allclose(on_device, expected, rtol=1e-5, atol=1e-5)
  # Its gradient (one transport, chosen on the device) is that of the fixed direction.
  def gradient(direction):
    return jax.grad(lambda f: jnp.sum(jnp.sin(mixup.aligned_feature_mix(
        lam, f, perm, reverse=direction)[0])))(features)
  np.testing.assert_allclose(jax.jit(gradient)(jnp.asarray(reverse)), gradient(reverse),
                             rtol=1e-5, atol=1e-5)
  assert weights.shape == (4, 4, 4)
  for i, j in enumerate(np.asarray(perm)):
    _, _, assignment = authors_numpy.alignments(features[i], features[j])
    np.testing.assert_allclose(weights[i], assignment, rtol=1e-4, atol=1e-6)


def _equations(jaxpr):
  """The number of equations of a jaxpr and of every jaxpr nested in it (loops, branches,
  calls): the size of the traced program."""
  count = 0
  for equation in jaxpr.eqns:
    count += 1
    for param in equation.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, 'eqns'):
          count += _equations(sub)
        elif hasattr(sub, 'jaxpr') and hasattr(sub.jaxpr, 'eqns'):
          count += _equations(sub.jaxpr)
  return count


def _everything(rng, images, features, labels):
  """Every operator on one batch, as a step uses them."""
  k1, k2, k3 = jax.random.split(rng, 3)
  lam = mixup.sample_lam(k1, 2.0)
  perm = mixup.sample_permutation(k2, images.shape[0])
  cut, lam_box = mixup.cutmix(k3, lam, images, perm)
  aligned, _ = mixup.aligned_feature_mix(lam, features, perm, reverse=False)
  aligned_reversed, _ = mixup.aligned_feature_mix(lam, features, perm, reverse=True)
  targets = mixup.mix_labels(lam, mixup.one_hot(labels, 10), perm)
  return {'lam': lam, 'perm': perm, 'mixed': mixup.mix_with_partner(lam, images, perm),
          'cut': cut, 'lam_box': lam_box, 'aligned': aligned,
          'aligned_reversed': aligned_reversed, 'targets': targets}


def _inputs(batch):
  k1, k2 = jax.random.split(jax.random.PRNGKey(batch))
  images = jax.random.uniform(k1, (batch, 8, 8, 3))
  # Non-negative features of varying magnitude, as a ReLU network's.
  features = jax.nn.relu(jax.random.normal(k2, (batch, 2, 2, 8))) * jnp.exp(
      jax.random.normal(jax.random.fold_in(k2, 1), (batch, 2, 2, 1)))
  return images, features, jnp.arange(batch) % 10


def test_operators_jit_without_python_loops():
  """Every operator is traced once for the whole batch: the program has the same number of
  equations (nested loops and branches included) for 2 and for 16 examples, where a Python
  loop over examples or pairs would add some per example; and jitted, it computes what the
  NumPy references compute (the authors' alignment, CutMix's `rand_bbox`)."""
  rng = jax.random.PRNGKey(5)
  sizes = {batch: _equations(jax.make_jaxpr(_everything)(rng, *_inputs(batch)).jaxpr)
           for batch in (2, 16)}
  assert sizes[2] == sizes[16] > 50, sizes

  def looped(features, perm):  # What the check catches: operations per pair.
    return jnp.stack([mixup.mix(0.5, features[i], features[perm[i]])
                      for i in range(features.shape[0])])
  loop_sizes = [_equations(jax.make_jaxpr(looped)(_inputs(batch)[1], jnp.arange(batch)).jaxpr)
                for batch in (2, 16)]
  assert loop_sizes[0] < loop_sizes[1], loop_sizes

  images, features, labels = _inputs(8)
  out = jax.device_get(jax.jit(_everything)(rng, images, features, labels))
  images, features = np.asarray(images, np.float64), np.asarray(features, np.float64)
  lam, perm = float(out['lam']), np.asarray(out['perm'])
  assert 0 < lam < 1 and sorted(perm) == list(range(8)) and (perm != np.arange(8)).any()
  np.testing.assert_allclose(out['mixed'], lam * images + (1 - lam) * images[perm],
                             rtol=1e-6, atol=1e-6)
  y = np.eye(10)[np.asarray(labels)]
  np.testing.assert_allclose(out['targets'], lam * y + (1 - lam) * y[perm], rtol=1e-6,
                             atol=1e-7)
  mask, lam_box = rand_bbox(jax.random.split(rng, 3)[2], lam, 8, 8)
  assert 0 < mask.sum() < mask.size  # A box, not all or nothing.
  np.testing.assert_allclose(out['cut'], images * (1 - mask) + images[perm] * mask,
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(out['lam_box'], lam_box, atol=1e-6)
  for reverse, key in ((False, 'aligned'), (True, 'aligned_reversed')):
    expected = authors_numpy.aligned_mixup(features, perm, lam, reverse)
    np.testing.assert_allclose(out[key], expected, rtol=1e-5, atol=1e-5, err_msg=key)
