"""Feature-tensor alignment by entropic optimal transport (paper section 3.2).

Paper symbols: A = `features`, A' = `partner` (both `[H, W, C]`, one example, channels last),
r = H * W spatial positions, M = `cost` `[r, r]` (8), P* = `plan` `[r, r]` (10), R = r * P*
(doubly stochastic), eps = `eps`.

`align(features, partner)` returns A' rearranged onto the positions of A: position i holds
`sum_j R_ij a'_j`, i.e. the columns of `A' R^T` in the paper's c x r notation (11). Mixing it
with `features` is (13); calling it with the pair swapped and mixing with `partner` is (14),
as Algorithm 1 does.

Everything is written for one pair and batched with `jax.vmap` (`batched_align`). Sinkhorn runs
in the log domain in float32 whatever the input dtype, for a fixed number of iterations in a
`lax.fori_loop` (unrolled up to 128 iterations; no host sync), and gradients never flow
through the plan.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_MAX_UNROLLED_ITERS = 128


def cost_matrix(features, partner):
  """Squared Euclidean distances between positions, the paper's M (8).

  Args:
    features: `[r, C]` feature vectors a_i (any float dtype).
    partner: `[r', C]` feature vectors a'_j.

  Returns:
    `[r, r']` float32, `m_ij = ||a_i - a'_j||^2`, computed as `|a|^2 + |a'|^2 - 2 a.a'` (one
    matmul, never a `[r, r', C]` broadcast) and clipped at 0 against round-off.
  """
  features = features.astype(jnp.float32)
  partner = partner.astype(jnp.float32)
  cross = jnp.matmul(features, partner.T, precision=lax.Precision.HIGHEST)
  squared = (jnp.sum(features * features, axis=-1)[:, None]
             + jnp.sum(partner * partner, axis=-1)[None, :])
  return jnp.maximum(squared - 2.0 * cross, 0.0)


def sinkhorn(cost, *, eps=0.1, num_iters=100, tol=None):
  """Entropic optimal transport plan with uniform marginals, in the log domain.

  Solves `P* = argmin_{P in U_r} <P, M> - eps H(P)` (10) with row and column sums `1/r`
  (square costs; a rectangular `[r, r']` cost gets marginals `1/r` and `1/r'`). Each
  iteration updates the row potential, then the column potential, so the column sums of the
  returned plan are exact and the row sums converge.

  Args:
    cost: `[r, r']` cost matrix M (any float dtype; used in float32).
    eps: entropic regularisation coefficient (paper: 0.1).
    num_iters: number of Sinkhorn iterations (paper: 100); the most when `tol` is set.
    tol: optional; stop once the largest row-sum error `max_i |sum_j P_ij - 1/r|` is below
      it. Under `vmap` each problem stops on its own (finished ones are frozen).

  Returns:
    `[r, r']` float32 transport plan P*.
  """
  # Subtracting row minima, then column minima, leaves the plan unchanged (the potentials
  # absorb them) but keeps the potentials small, so float32 keeps more digits of the
  # exponent. Every row and column of the reduced cost has a 0.
  cost = cost.astype(jnp.float32)
  cost = cost - jnp.min(cost, axis=1, keepdims=True)
  cost = cost - jnp.min(cost, axis=0, keepdims=True)
  log_kernel = -cost / eps  # log of the similarity matrix e^{-M/eps}, up to the shifts.
  rows, cols = log_kernel.shape
  log_a = -jnp.log(jnp.float32(rows))
  log_b = -jnp.log(jnp.float32(cols))

  def update(potentials):
    _, v = potentials
    u = log_a - jax.nn.logsumexp(log_kernel + v[None, :], axis=1)
    v = log_b - jax.nn.logsumexp(log_kernel + u[:, None], axis=0)
    return u, v

  def plan_of(potentials):
    u, v = potentials
    return jnp.exp(log_kernel + u[:, None] + v[None, :])

  # zeros_like keeps the cost's type, varying manual axes included (under shard_map).
  start = (jnp.zeros_like(log_kernel[:, 0]), jnp.zeros_like(log_kernel[0]))
  if tol is None:
    # Short loops (the paper's 100 iterations) are unrolled: on XLA's CPU backend a while
    # loop anywhere in a train step slowed the whole step by ~1.5x (measured, jax 0.10.2).
    unroll = num_iters <= _MAX_UNROLLED_ITERS
    potentials = lax.fori_loop(0, num_iters, lambda _, p: update(p), start, unroll=unroll)
  else:
    def row_error(potentials):
      return jnp.max(jnp.abs(jnp.sum(plan_of(potentials), axis=1) - jnp.exp(log_a)))

    def not_done(carry):
      step, potentials = carry
      return (step < num_iters) & (row_error(potentials) > tol)

    _, potentials = lax.while_loop(
        not_done, lambda carry: (carry[0] + 1, update(carry[1])), (0, start))
  return plan_of(potentials)


def assignment(features, partner, *, eps=0.1, num_iters=100, tol=None):
  """The doubly stochastic assignment R = r P* between the positions of two tensors.

  Args:
    features: `[H, W, C]` tensor A.
    partner: `[H, W, C]` tensor A'.

  Returns:
    `[r, r]` float32 R (r = H * W), `R_ij` the weight of a'_j at position i of A. Not
    differentiable: the plan is wrapped in `stop_gradient`.
  """
  if features.shape != partner.shape or features.ndim != 3:
    raise ValueError(
        f'align expects two [H, W, C] tensors of the same shape, got {features.shape} and '
        f'{partner.shape}; use batched_align for [B, H, W, C].')
  h, w, c = features.shape
  # Detached inputs: differentiation never traces (or stores residuals of) the loop.
  features, partner = lax.stop_gradient(features), lax.stop_gradient(partner)
  cost = cost_matrix(features.reshape(h * w, c), partner.reshape(h * w, c))
  plan = sinkhorn(cost, eps=eps, num_iters=num_iters, tol=tol)
  return lax.stop_gradient(h * w * plan)


def align(features, partner, *, eps=0.1, num_iters=100, tol=None):
  """Rearranges `partner` onto the positions of `features` (paper (11)).

  Args:
    features: `[H, W, C]` feature tensor A (the positions that are kept).
    partner: `[H, W, C]` feature tensor A' (the features that are moved).
    eps, num_iters, tol: Sinkhorn settings, see `sinkhorn`.

  Returns:
    `[H, W, C]` tensor in `partner`'s dtype whose position i is `sum_j R_ij a'_j`.
    Gradients flow to `partner` (and to `features` through whatever mixes with the result),
    never through R.
  """
  h, w, c = partner.shape
  weights = assignment(features, partner, eps=eps, num_iters=num_iters, tol=tol)
  moved = jnp.matmul(weights, partner.reshape(h * w, c).astype(jnp.float32),
                     precision=lax.Precision.HIGHEST)
  return moved.reshape(h, w, c).astype(partner.dtype)


def batched_align(features, partner, *, eps=0.1, num_iters=100, tol=None):
  """`align` over a batch: `[B, H, W, C]`, `[B, H, W, C]` -> `[B, H, W, C]`."""
  if features.ndim != 4:
    raise ValueError(f'batched_align expects [B, H, W, C] tensors, got {features.shape}.')
  one_pair = functools.partial(align, eps=eps, num_iters=num_iters, tol=tol)
  return jax.vmap(one_pair)(features, partner)
