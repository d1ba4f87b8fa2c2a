"""Feature-tensor alignment by entropic optimal transport (paper section 3.2).

Paper symbols: A = `features`, A' = `partner` (both `[H, W, C]`, one example, channels last),
r = H * W spatial positions, M = `cost` `[r, r]` (8), P* = `plan` `[r, r]` (10),
R = r P* = `weights` (`assignment`), eps = `eps`.

One plan per pair, used both ways, as in the authors' code: P* is solved once from
M(A, A') (`m_ij = ||a_i - a'_j||^2`, i a position of A, j one of A') and
  (11), used by (13): `align(A, A')` moves A' onto the positions of A: position i holds
      `sum_j R_ij a'_j` (A~ = A' R^T, the ROWS of R);
  (12), used by (14): `align(A, A', reverse=True)` moves A onto the positions of A':
      position j holds `sum_i R_ij a_i` (A~' = A R, the COLUMNS of R).
Each Sinkhorn iteration updates the row potential, then the column potential, so the columns
of R sum to 1 exactly and every vector of (12) is a convex combination. The rows sum to 1
only at convergence, and the paper's setting (eps = 0.1, 100 iterations, raw squared
distances) does not converge on real features, whose costs are thousands of times eps: rows
of R then sum to up to 4-5 and a vector of (11) is a weighted sum, not an average.
`row_error` measures that; `barycentric=True` divides by the used marginal (the barycentric
projection: every aligned vector a convex combination), an ablation, off by default.

Everything is written for one pair and batched with `jax.vmap` (`batched_align`). Sinkhorn runs
in the log domain in float32 whatever the input dtype, for a fixed number of iterations in rolled
`lax.while_loop`s (no host sync), and gradients never flow through the plan.
"""

import functools
import math
import numbers

import jax
import jax.numpy as jnp
from jax import lax


def check_settings(eps, num_iters, tol=None):
  """Raises ValueError unless eps > 0, num_iters >= 1 and tol (if given) > 0.

  eps = 0 would give an all-NaN plan and num_iters = 0 the unscaled kernel e^{-M/eps}, a
  finite but wrong R; both are caught here, before anything is traced.
  """
  if not isinstance(eps, numbers.Real) or not eps > 0:
    raise ValueError(f'Sinkhorn eps must be a positive number (paper: 0.1); got {eps!r}. '
                     'Set mixup.sinkhorn_eps.')
  if isinstance(num_iters, bool) or not isinstance(num_iters, numbers.Integral) or num_iters < 1:
    raise ValueError(f'Sinkhorn num_iters must be an int >= 1 (paper: 100); got '
                     f'{num_iters!r}. Set mixup.sinkhorn_iters.')
  if tol is not None and (not isinstance(tol, numbers.Real) or not tol > 0):
    raise ValueError(f'Sinkhorn tol must be None or a positive number; got {tol!r}.')


def cost_matrix(features, partner):
  """Squared Euclidean distances between positions, the paper's M (8).

  Args:
    features: `[r, C]` feature vectors a_i (any float dtype).
    partner: `[r', C]` feature vectors a'_j.

  Returns:
    `[r, r']` float32, `m_ij = ||a_i - a'_j||^2`, computed as `|a|^2 + |a'|^2 - 2 a.a'` (one
    matmul, never a `[r, r', C]` broadcast) after subtracting the mean vector of both sets
    (distances do not change; the norms, and so the round-off of the difference, shrink:
    ReLU features share a large positive mean), and clipped at 0 against round-off.
  """
  features = features.astype(jnp.float32)
  partner = partner.astype(jnp.float32)
  center = 0.5 * (jnp.mean(features, axis=0) + jnp.mean(partner, axis=0))
  features, partner = features - center, partner - center
  cross = jnp.matmul(features, partner.T, precision=lax.Precision.HIGHEST)
  squared = (jnp.sum(features * features, axis=-1)[:, None]
             + jnp.sum(partner * partner, axis=-1)[None, :])
  return jnp.maximum(squared - 2.0 * cross, 0.0)


def scaling_block_length(rows, cols):
  """Sinkhorn iterations between two absorptions of the scalings into the potentials.

  Within a block the plan is `diag(alpha) K~ diag(beta)` with K~ the plan at the block's
  start, and every update rescales a row or column by a factor in `[1/rho, rho]`,
  `rho = max(rows, cols)` (see `sinkhorn`). An entry of K~ that float32 rounds to 0 (below
  2^-126) is then off by at most `2^-126 rho^(2k)` after k iterations, against row and column
  sums of at least `rho^-2`; `rho^(2k+3) <= 2^96` keeps that below 2^-30 of every sum, under
  float32's round-off. 10 iterations for 4x4 features, 6 for 8x8, 22 for 2x2.
  """
  rho = max(rows, cols)
  if rho < 2:
    return 1  # One position: the plan is the marginal.
  return max(1, int((96.0 / math.log2(rho) - 3.0) // 2))


def sinkhorn(cost, *, eps=0.1, num_iters=100, tol=None):
  """Entropic optimal transport plan with uniform marginals, in the log domain.

  Solves `P* = argmin_{P in U_r} <P, M> - eps H(P)` (10) with row and column sums `1/r`
  (square costs; a rectangular `[r, r']` cost gets marginals `a = 1/r` and `b = 1/r'`).

  The iterates are the authors' (potentials f, g in cost units, both 0 at the start; each
  iteration `f = eps log(1/r) - eps LSE_j((g_j - m_ij) / eps)`, then g likewise from the
  new f; `P = exp((f_i + g_j - m_ij) / eps)`), computed on the reduced cost `m_ij - min_k m_ik
  - min_k m_kj` with potentials u, v in units of eps shifted to match: the same plan after
  every iteration, in exact arithmetic, with small potentials (every row and column of the
  reduced cost has a 0), so float32 keeps more digits even for costs 1e5 times eps. (The
  authors also add 1e-8 to 1/r inside the log, a relative change of r * 1e-8 that float32
  does not see.) The column update comes last: the columns of the plan sum to `b` exactly
  (to round-off), the rows only once converged.

  Log-stabilised scaling (Schmitzer 2019): the first iteration is two log-sum-exps; after
  it the plan `K~ = exp(log K + u + v)` has columns summing to `b`, so each later update
  rescales a row by a factor in `[a, 1/b]` (entries at most b, rows summing to at least
  `a b`) or a column by one in `[b, 1/a]`. So the next iterations run on K~ with scalings
  alpha, beta (both 1 at first): `alpha = a / (K~ beta)`, then `beta = b / (alpha K~)`, two
  matrix-vector products, no exponential. Every `scaling_block_length` iterations (early
  enough that an entry of K~ that underflowed stays under round-off) alpha and beta are
  absorbed into the potentials (`u += log alpha`, `v += log beta`) and K~ is recomputed.
  The same iterates as the log-sum-exp loop in exact arithmetic, with one exponential per
  entry every 10 iterations (4x4) instead of two per iteration; in float32, R = r P stays
  within a few 1e-5 of the authors' loop run in float64, converged or not. The loops are
  rolled `lax.while_loop`s: small to compile, and on XLA:CPU no slower than unrolled.

  Args:
    cost: `[r, r']` cost matrix M (any float dtype; used in float32).
    eps: entropic regularisation coefficient (paper: 0.1), > 0.
    num_iters: number of Sinkhorn iterations (paper: 100), >= 1; the most when `tol` is set.
    tol: optional; stop once the largest row-sum error `max_i |sum_j P_ij - 1/r|` is below
      it. Under `vmap` each problem stops on its own (finished ones are frozen). The
      authors' loop stops on another test (batch mean of `sum_i |f_i - f_i^prev| < 0.1`),
      which couples the pairs of a batch and syncs with the host; it is not offered.

  Returns:
    `[r, r']` float32 transport plan P*.

  Raises:
    ValueError: eps <= 0, num_iters < 1 or tol <= 0 (see `check_settings`).
  """
  check_settings(eps, num_iters, tol)
  cost = cost.astype(jnp.float32)
  row_min = jnp.min(cost, axis=1, keepdims=True)
  cost = cost - row_min
  col_min = jnp.min(cost, axis=0)
  log_kernel = -(cost - col_min[None, :]) / eps  # log e^{-M/eps}, up to the shifts.
  rows, cols = log_kernel.shape
  a, b = jnp.float32(1.0 / rows), jnp.float32(1.0 / cols)
  block = scaling_block_length(rows, cols)

  def plan_of(u, v):
    return jnp.exp(log_kernel + u[:, None] + v[None, :])

  # First iteration, two log-sum-exps. The authors' g = 0 is v = -min_k m_kj / eps here (the
  # row shift is absorbed by the row update).
  u = jnp.log(a) - jax.nn.logsumexp(log_kernel - col_min[None, :] / eps, axis=1)
  v = jnp.log(b) - jax.nn.logsumexp(log_kernel + u[:, None], axis=0)

  def scaled_iteration(carry):
    step, kernel, alpha, beta, done = carry
    alpha = a / (kernel @ beta)
    beta = b / (alpha @ kernel)
    if tol is not None:
      done = jnp.max(jnp.abs(alpha * (kernel @ beta) - a)) <= tol
    return step + 1, kernel, alpha, beta, done

  def block_of_iterations(carry):
    step, u, v, done = carry
    stop = jnp.minimum(step + block, num_iters)
    ones_u, ones_v = jnp.ones_like(u), jnp.ones_like(v)
    step, _, alpha, beta, done = lax.while_loop(
        lambda inner: (inner[0] < stop) & ~inner[4], scaled_iteration,
        (step, plan_of(u, v), ones_u, ones_v, done))
    return step, u + jnp.log(alpha), v + jnp.log(beta), done

  done = jnp.bool_(False)
  if tol is not None:
    done = jnp.max(jnp.abs(jnp.sum(plan_of(u, v), axis=1) - a)) <= tol
  _, u, v, _ = lax.while_loop(lambda outer: (outer[0] < num_iters) & ~outer[3],
                              block_of_iterations, (1, u, v, done))
  return plan_of(u, v)


def assignment(features, partner, *, eps=0.1, num_iters=100, tol=None):
  """The assignment R = r P* between the positions of two tensors, from M(A, A').

  Args:
    features: `[H, W, C]` tensor A.
    partner: `[H, W, C]` tensor A'.
    eps, num_iters, tol: Sinkhorn settings, see `sinkhorn`.

  Returns:
    `[r, r]` float32 R (r = H * W), `R_ij` the weight between position i of A and position
    j of A'. Its columns sum to 1; its rows sum to 1 once Sinkhorn has converged
    (`row_error`). Not differentiable: the plan is wrapped in `stop_gradient`.
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


def transport(weights, tensor, *, reverse=False, barycentric=False):
  """Moves `tensor` along the assignment `weights` = R of a pair (A, A').

  Args:
    weights: `[r, r]` R from `assignment(A, A')`.
    tensor: `[H, W, C]`; A' when `reverse` is False, A when it is True.
    reverse: False: (11), position i of the result is `sum_j R_ij a'_j` (rows of R).
      True: (12), position j is `sum_i R_ij a_i` (columns of R).
    barycentric: divide by the used marginal (row sums for (11), column sums for (12)), so
      that every vector is a convex combination even when Sinkhorn has not converged.

  Returns:
    `[H, W, C]` in `tensor`'s dtype (computed in float32).
  """
  h, w, c = tensor.shape
  if reverse:
    weights = weights.T
  if barycentric:
    weights = weights / jnp.sum(weights, axis=1, keepdims=True)
  moved = jnp.matmul(weights, tensor.reshape(h * w, c).astype(jnp.float32),
                     precision=lax.Precision.HIGHEST)
  return moved.reshape(h, w, c).astype(tensor.dtype)


def align(features, partner, *, reverse=False, eps=0.1, num_iters=100, tol=None,
          barycentric=False):
  """One of the two alignments of a pair, from the plan of M(A, A') (paper (11), (12)).

  Args:
    features: `[H, W, C]` feature tensor A.
    partner: `[H, W, C]` feature tensor A'.
    reverse: False: A~ = A' R^T (11), A' moved onto the positions of A (for (13)).
      True: A~' = A R (12), A moved onto the positions of A' (for (14)).
    eps, num_iters, tol: Sinkhorn settings, see `sinkhorn`.
    barycentric: see `transport`.

  Returns:
    `[H, W, C]` aligned tensor in the moved tensor's dtype. Gradients flow to the moved
    tensor (and to the other one through whatever mixes with the result), never through R.
  """
  weights = assignment(features, partner, eps=eps, num_iters=num_iters, tol=tol)
  return transport(weights, features if reverse else partner, reverse=reverse,
                   barycentric=barycentric)


def batched_align(features, partner, **kwargs):
  """`align` over a batch: `[B, H, W, C]`, `[B, H, W, C]` -> `[B, H, W, C]`."""
  if features.ndim != 4:
    raise ValueError(f'batched_align expects [B, H, W, C] tensors, got {features.shape}.')
  return jax.vmap(functools.partial(align, **kwargs))(features, partner)


def row_error(weights):
  """`max |sum_j R_ij - 1|` over the rows of R `[..., r, r]` (all leading axes): how far the
  plan is from convergence, and how far the vectors of (11) are from convex combinations."""
  return jnp.max(jnp.abs(jnp.sum(weights, axis=-1) - 1.0))
