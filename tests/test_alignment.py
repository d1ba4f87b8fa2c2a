"""Tests of alignmix_jax.alignment: Sinkhorn plans, alignment and their gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignmix_jax import alignment
import authors_numpy


def _features(seed, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _reference_plan(cost, eps, iters=20_000):
  """Converged entropic OT plan with uniform marginals, float64 NumPy, log domain."""
  cost = np.asarray(cost, np.float64)
  r, s = cost.shape
  log_kernel = -cost / eps
  u, v = np.zeros(r), np.zeros(s)

  def lse(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))

  for _ in range(iters):
    u = -np.log(r) - lse(log_kernel + v[None, :], 1)
    v = -np.log(s) - lse(log_kernel + u[:, None], 0)
  return np.exp(log_kernel + u[:, None] + v[None, :])


def _relu_features(seed, scale, batch=2, h=4, w=4, c=64):
  """Feature tensors like a ReLU network's: non-negative, a spatial pattern shared by the
  batch, magnitudes varying over the positions. At scale 0.3 the squared distances are
  ~50 (cost / eps ~500 at eps 0.1) and 100 iterations leave rows of R summing to up to 3
  (the regime of real features); at 0.03 Sinkhorn converges."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  pattern = jax.random.normal(k1, (1, h, w, c))
  magnitude = jnp.exp(jax.random.normal(k3, (batch, h, w, 1)))
  return scale * magnitude * jax.nn.relu(pattern + jax.random.normal(k2, (batch, h, w, c)))


def test_cost_matrix_is_squared_euclidean():
  a = _features(0, (16, 8))
  b = _features(1, (16, 8))
  expected = ((np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :]) ** 2).sum(-1)
  cost = alignment.cost_matrix(a, b)
  assert cost.dtype == jnp.float32
  np.testing.assert_allclose(cost, expected, rtol=1e-5, atol=1e-5)
  # Identical vectors: exactly 0 on the diagonal after clipping, never negative.
  self_cost = alignment.cost_matrix(a * 100, a * 100)
  assert float(jnp.min(self_cost)) >= 0.0
  np.testing.assert_allclose(jnp.diag(self_cost), 0.0, atol=1.0)


def test_plan_marginals_are_uniform_for_moderate_costs():
  r = 16
  cost = alignment.cost_matrix(_features(0, (r, 8), 0.2), _features(1, (r, 8), 0.2))
  assert 0.5 < float(cost.mean()) < 2.0  # Moderate: a few times eps.
  plan = alignment.sinkhorn(cost, eps=0.1, num_iters=100)
  np.testing.assert_allclose(plan.sum(axis=0), 1.0 / r, atol=1e-4)
  np.testing.assert_allclose(plan.sum(axis=1), 1.0 / r, atol=1e-4)
  assignment = r * plan
  assert float(assignment.min()) >= 0.0
  np.testing.assert_allclose(assignment.sum(axis=0), 1.0, atol=1e-3)
  np.testing.assert_allclose(assignment.sum(axis=1), 1.0, atol=1e-3)


def test_assignment_of_tensors_is_doubly_stochastic():
  a = _features(2, (4, 4, 8), 0.2)
  b = _features(3, (4, 4, 8), 0.2)
  r_matrix = alignment.assignment(a, b)
  assert r_matrix.shape == (16, 16)
  np.testing.assert_allclose(r_matrix.sum(axis=0), 1.0, atol=1e-3)
  np.testing.assert_allclose(r_matrix.sum(axis=1), 1.0, atol=1e-3)


def test_permuted_partner_is_recovered_and_aligned_back():
  h, w, c = 4, 4, 32
  features = _features(4, (h, w, c), scale=3.0)  # Well separated: distances in the hundreds.
  sigma = np.asarray(jax.random.permutation(jax.random.PRNGKey(5), h * w))
  partner = features.reshape(h * w, c)[sigma].reshape(h, w, c)  # a'_j = a_sigma(j)
  r_matrix = alignment.assignment(features, partner)
  # Position i of A corresponds to the j with sigma(j) = i.
  np.testing.assert_array_equal(np.argmax(r_matrix, axis=1), np.argsort(sigma))
  np.testing.assert_allclose(r_matrix.max(axis=1), 1.0, atol=1e-4)
  np.testing.assert_allclose(alignment.align(features, partner), features, atol=1e-3)


def test_plan_equals_converged_float64_reference():
  r = 9
  cost = alignment.cost_matrix(_features(6, (r, 5), 0.3), _features(7, (r, 4 + 1), 0.3))
  for eps in (0.05, 0.1, 0.5):
    plan = alignment.sinkhorn(cost, eps=eps, num_iters=3000)
    reference = _reference_plan(cost, eps)
    np.testing.assert_allclose(plan, reference, rtol=2e-3, atol=1e-6)


def test_early_stopping_tolerance_reaches_the_same_plan():
  r = 16
  cost = alignment.cost_matrix(_features(8, (r, 8), 0.2), _features(9, (r, 8), 0.2))
  reference = _reference_plan(cost, 0.1)
  plan = alignment.sinkhorn(cost, eps=0.1, num_iters=10_000, tol=1e-7)
  np.testing.assert_allclose(plan, reference, rtol=1e-3, atol=1e-7)
  # A loose tolerance stops early: its rows are off by more than the tight one's.
  loose = alignment.sinkhorn(cost * 30, eps=0.1, num_iters=10_000, tol=1e-2)
  tight = alignment.sinkhorn(cost * 30, eps=0.1, num_iters=10_000, tol=1e-4)
  loose_error = float(jnp.abs(loose.sum(1) - 1 / r).max())
  tight_error = float(jnp.abs(tight.sum(1) - 1 / r).max())
  assert tight_error < 1e-4 < loose_error < 1e-2


@pytest.mark.parametrize('scale', [1e2, 1e3, 1e5])
@pytest.mark.parametrize('eps', [1e-3, 1e-2, 0.1])
def test_no_nan_or_inf_for_extreme_costs(scale, eps):
  r = 16
  cost = scale * jax.random.uniform(jax.random.PRNGKey(10), (r, r))
  plan = alignment.sinkhorn(cost, eps=eps, num_iters=100)
  assert bool(jnp.all(jnp.isfinite(plan)))
  assert float(plan.min()) >= 0.0
  np.testing.assert_allclose(plan.sum(axis=0), 1.0 / r, rtol=1e-5)  # Last update: columns.
  if scale / eps <= 1e4:  # The rows too, once converged (not exact by construction).
    converged = alignment.sinkhorn(cost, eps=eps, num_iters=20_000, tol=1e-7)
    np.testing.assert_allclose(converged.sum(axis=1), 1.0 / r, atol=1e-5)


def test_bfloat16_features_give_the_float32_plan_of_their_values():
  a = _features(11, (4, 4, 16)).astype(jnp.bfloat16)
  b = _features(12, (4, 4, 16)).astype(jnp.bfloat16)
  r_matrix = alignment.assignment(a, b)
  assert r_matrix.dtype == jnp.float32
  # The plan is computed in float32 from the bfloat16 values: that of the rounded inputs.
  exact = alignment.assignment(a.astype(jnp.float32), b.astype(jnp.float32))
  np.testing.assert_array_equal(r_matrix, exact)
  aligned = alignment.align(a, b)
  assert aligned.dtype == jnp.bfloat16 and aligned.shape == (4, 4, 16)
  expected = alignment.align(a.astype(jnp.float32), b.astype(jnp.float32))
  np.testing.assert_array_equal(aligned, expected.astype(jnp.bfloat16))


def test_gradients_equal_those_with_the_plan_held_fixed():
  lam = 0.3
  a = _features(13, (4, 4, 8))
  b = _features(14, (4, 4, 8))
  weights = _features(15, (4, 4, 8))

  def loss(features, partner):
    mixed = lam * features + (1 - lam) * alignment.align(features, partner)
    return jnp.sum(weights * mixed ** 2)

  fixed = np.asarray(alignment.assignment(a, b))  # A constant: no gradient can reach it.

  def loss_fixed(features, partner):
    moved = (fixed @ partner.reshape(16, 8)).reshape(4, 4, 8)
    mixed = lam * features + (1 - lam) * moved
    return jnp.sum(weights * mixed ** 2)

  grads = jax.grad(loss, argnums=(0, 1))(a, b)
  grads_fixed = jax.grad(loss_fixed, argnums=(0, 1))(a, b)
  for got, expected in zip(grads, grads_fixed):
    assert float(jnp.abs(expected).max()) > 1e-3  # Both gradients are non-zero.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_batched_align_equals_a_loop_over_examples():
  a = _features(16, (5, 4, 4, 8))
  b = _features(17, (5, 4, 4, 8))
  batched = alignment.batched_align(a, b, eps=0.1, num_iters=50)
  looped = jnp.stack([alignment.align(a[i], b[i], eps=0.1, num_iters=50) for i in range(5)])
  np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)


def test_jitted_alignment_does_not_retrace():
  traces = []

  @jax.jit
  def step(features, partner):
    traces.append(1)
    return alignment.batched_align(features, partner)

  for seed in range(3):
    features, partner = _relu_features(seed, 0.3), _relu_features(seed + 10, 0.3)
    out = np.asarray(step(features, partner))
    top = float(np.abs(partner).max())
    for index in range(2):  # Each example: the authors' (13) A~ of its own pair.
      tilde, _, _ = authors_numpy.alignments(features[index], partner[index])
      np.testing.assert_allclose(out[index], tilde, rtol=2e-5, atol=1e-5 * top)
  assert len(traces) == 1


def test_shape_errors_name_the_problem():
  with pytest.raises(ValueError, match='same shape'):
    alignment.align(jnp.zeros((4, 4, 8)), jnp.zeros((2, 2, 8)))
  with pytest.raises(ValueError, match=r'\[B, H, W, C\]'):
    alignment.batched_align(jnp.zeros((4, 4, 8)), jnp.zeros((4, 4, 8)))


@pytest.mark.parametrize('scale', [0.03, 0.3])
def test_both_directions_equal_the_authors_one_plan_at_100_iterations(scale):
  """(13) and (14) from one plan of M(A, A'), at the paper's eps and 100 iterations: equal to
  the authors' loop, converged or not (scale 0.3: rows of R far from 1)."""
  features = _relu_features(20, scale)
  a, a_prime = features[0], features[1]
  tilde, tilde_prime, weights = authors_numpy.alignments(a, a_prime)
  row_error = np.abs(weights.sum(1) - 1).max()
  if scale == 0.3:
    assert row_error > 1.0  # Far from converged: the setting the authors' code runs in.
  else:
    assert row_error < 1e-5
  np.testing.assert_allclose(alignment.assignment(a, a_prime), weights, rtol=1e-4, atol=1e-5)
  top = float(np.abs(features).max())
  np.testing.assert_allclose(alignment.align(a, a_prime), tilde, atol=1e-5 * top)
  np.testing.assert_allclose(alignment.align(a, a_prime, reverse=True), tilde_prime,
                             atol=1e-5 * top)
  np.testing.assert_allclose(alignment.row_error(alignment.assignment(a, a_prime)), row_error,
                             rtol=1e-4, atol=1e-6)


def _unconverged_cost(shape, scale):
  """A cost of ReLU-like features whose plan after 100 iterations has rows of R far from 1,
  and R from the authors' loop run in float64 on it."""
  h, w = shape
  features = _relu_features(22, scale, batch=2, h=h, w=w)
  a, a_prime = (f.reshape(h * w, -1) for f in features)
  cost = alignment.cost_matrix(a, a_prime)
  reference = h * w * authors_numpy.sinkhorn_plan(np.asarray(cost, np.float64))
  assert np.abs(reference.sum(1) - 1).max() > 1.0
  return cost, reference


@pytest.mark.parametrize('shape,scale', [((8, 8), 0.3), ((4, 6), 0.3), ((4, 4), 1.0),
                                         ((8, 8), 3.0)])
def test_plan_at_100_iterations_equals_the_authors_float64_loop(shape, scale):
  """Unconverged (rows of R far from 1), 4x4, 8x8 and rectangular: the log-stabilised
  scaling iterations keep R within 3e-5 of the authors' log-sum-exp loop run in float64."""
  cost, reference = _unconverged_cost(shape, scale)
  ours = cost.shape[0] * np.asarray(alignment.sinkhorn(cost), np.float64)
  np.testing.assert_allclose(ours, reference, rtol=0, atol=3e-5)


def test_scalings_must_be_absorbed_into_the_potentials(monkeypatch):
  """Scaling iterations on one kernel, never absorbed: entries that underflowed at the start
  are lost, and the plan leaves the authors' (the block length is what keeps it there)."""
  cost, reference = _unconverged_cost((4, 4), 1.0)
  monkeypatch.setattr(alignment, 'scaling_block_length', lambda rows, cols: 100)
  ours = 16 * np.asarray(alignment.sinkhorn(cost), np.float64)
  assert not np.abs(ours - reference).max() < 1e-2


@pytest.mark.parametrize('rows,cols,length', [(16, 16, 10), (64, 64, 6), (49, 49, 7),
                                              (4, 4, 22), (24, 16, 8), (1, 1, 1)])
def test_scaling_block_length_keeps_underflow_below_round_off(rows, cols, length):
  assert alignment.scaling_block_length(rows, cols) == length
  rho = max(rows, cols)
  if rho > 1:  # The longest block with rho^(2k+3) <= 2^96.
    assert rho ** (2 * length + 3) <= 2 ** 96 < rho ** (2 * length + 5)


def test_reverse_uses_the_same_plan_not_a_second_sinkhorn():
  """(14) is A moved by the columns of R(A, A'), which differs from re-solving Sinkhorn on the
  swapped pair when 100 iterations do not converge (what Algorithm 1's swap would do)."""
  features = _relu_features(21, 0.3)
  a, a_prime = features[0], features[1]
  reverse = np.asarray(alignment.align(a, a_prime, reverse=True))
  resolved = np.asarray(alignment.align(a_prime, a))
  weights = np.asarray(alignment.assignment(a, a_prime))
  np.testing.assert_allclose(reverse, (weights.T @ np.asarray(a).reshape(16, -1)).reshape(
      a.shape), rtol=1e-5, atol=1e-5)
  assert np.abs(reverse - resolved).max() > 0.1 * np.abs(features).max()
  # Columns of R sum to 1 (the last update), so every vector of (14) is a convex
  # combination of A's: each channel lies within A's range over the positions.
  np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-4)
  flat = np.asarray(a).reshape(16, -1)
  assert (reverse.reshape(16, -1) <= flat.max(0) + 1e-4).all()
  assert (reverse.reshape(16, -1) >= flat.min(0) - 1e-4).all()


@pytest.mark.parametrize('reverse', [False, True])
def test_barycentric_projection_normalises_the_used_marginal(reverse):
  features = _relu_features(20, 0.3)
  a, a_prime = features[0], features[1]
  weights = np.asarray(alignment.assignment(a, a_prime), np.float64)
  used = weights.T if reverse else weights  # Row i of `used` makes aligned vector i.
  moved = np.asarray(a if reverse else a_prime, np.float64).reshape(16, -1)
  expected = (used / used.sum(1, keepdims=True)) @ moved
  got = alignment.align(a, a_prime, reverse=reverse, barycentric=True)
  np.testing.assert_allclose(np.asarray(got).reshape(16, -1), expected, rtol=1e-5, atol=1e-5)
  # Every aligned vector is a convex combination, even though the rows of R are far from 1.
  assert (np.asarray(got).reshape(16, -1) <= moved.max(0) + 1e-4).all()
  if not reverse:
    assert np.abs(weights.sum(1) - 1).max() > 1.0
    plain = np.asarray(alignment.align(a, a_prime)).reshape(16, -1)
    assert (plain > moved.max(0) + 1e-3).any()  # Without it, (13) leaves A''s range.


@pytest.mark.parametrize('kwargs, message', [
    ({'eps': 0.0}, 'eps must be a positive number'),
    ({'eps': -0.1}, 'eps must be a positive number'),
    ({'num_iters': 0}, 'num_iters must be an int >= 1'),
    ({'num_iters': 2.5}, 'num_iters must be an int >= 1'),
    ({'tol': 0.0}, 'tol must be None or a positive number'),
])
def test_bad_sinkhorn_settings_are_rejected(kwargs, message):
  cost = jnp.ones((4, 4))
  with pytest.raises(ValueError, match=message):
    alignment.sinkhorn(cost, **kwargs)
  with pytest.raises(ValueError, match=message):
    alignment.batched_align(jnp.ones((2, 2, 2, 3)), jnp.ones((2, 2, 2, 3)), **kwargs)
