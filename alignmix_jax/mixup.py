"""Mixup operators: input, latent, aligned feature (13)/(14), manifold and CutMix.

Paper symbols: lam = `lam` (interpolation factor, lam ~ Beta(alpha, alpha)), x = `images`
`[B, H, W, 3]`, A = `features` `[B, h, w, c]`, z = `latent` (`[B, d]` or any pytree of
`[B, ...]` arrays, e.g. a VAE's mean and log-variance), y = `labels` (one-hot `[B, K]`).

Pairs come from a permutation `perm` `[B]` of the (per-device) batch: example i is mixed with
example `perm[i]` (Algorithm 1, line 10). Every function is jit-able and vectorised over the
batch; none loops over examples in Python.
"""

import functools

import jax
import jax.numpy as jnp

from alignmix_jax import alignment


def sample_lam(rng, alpha):
  """lam ~ Beta(alpha, alpha) as a float32 scalar; alpha <= 0 gives lam = 1 (no mixing)."""
  if alpha <= 0:
    return jnp.float32(1.0)
  return jax.random.beta(rng, alpha, alpha).astype(jnp.float32)


def sample_permutation(rng, batch_size):
  """A random permutation of `range(batch_size)`, `[B]` int32: the partner of each example."""
  return jax.random.permutation(rng, batch_size).astype(jnp.int32)


def mix(lam, first, second):
  """The mixup operator mix_lam(a, b) = lam a + (1 - lam) b (2), leafwise over pytrees.

  `lam` is a scalar or broadcasts against every leaf; each leaf keeps its dtype.
  """
  def one(a, b):
    weight = jnp.asarray(lam, jnp.float32)
    mixed = weight * a.astype(jnp.float32) + (1.0 - weight) * b.astype(jnp.float32)
    return mixed.astype(a.dtype)
  return jax.tree_util.tree_map(one, first, second)


def partner_of(tree, perm):
  """Reorders the batch axis of every leaf by `perm`: the partners x', A', z' or y'."""
  return jax.tree_util.tree_map(lambda leaf: jnp.take(leaf, perm, axis=0), tree)


def mix_with_partner(lam, tree, perm):
  """mix_lam(x, x') with x' = x[perm]: input mixup (4), latent mixup (6) and manifold mixup."""
  return mix(lam, tree, partner_of(tree, perm))


def one_hot(labels, num_classes):
  """Integer labels `[B]` -> float32 one-hot `[B, K]`."""
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def mix_labels(lam, targets, perm):
  """Mixed targets lam y + (1 - lam) y' `[B, K]` for one-hot or soft `targets` `[B, K]`."""
  return mix_with_partner(lam, targets, perm)


def aligned_feature_mix(lam, features, perm, *, reverse=False, eps=0.1, num_iters=100,
                        tol=None, barycentric=False):
  """Aligned feature mixup, (13) or (14), for a batch, as the authors' code computes it.

  One plan per pair, from M(A, A') (`alignment`), used one way or the other:
  (13), `reverse=False`: A' is aligned onto the positions of A (A~ = A' R^T, rows of R)
  and `mix_lam(A, A~)` is returned.
  (14), `reverse=True`: A is aligned onto the positions of A' (A~' = A R, columns of R)
  and `mix_lam(A~', A')` is returned.
  The targets are `mix_labels(lam, y, perm)` = `lam y + (1 - lam) y'` in both cases: lam
  weighs what comes from x. The paper writes (14) as `mix_lam(A', A~')` with targets
  `mix_lam(y', y)` (Algorithm 1 swaps the pair): the same with lam and 1 - lam exchanged,
  hence the same training distribution, since lam ~ Beta(alpha, alpha) is symmetric.

  Args:
    lam: scalar interpolation factor.
    features: `[B, h, w, c]` feature tensors A.
    perm: `[B]` partner indices.
    reverse: False for (13), True for (14): a Python bool, or a boolean scalar array
      decided on the device (one plan and one transport either way: by the rows of R or
      of R^T).
    eps, num_iters, tol: Sinkhorn settings (see `alignment.sinkhorn`).
    barycentric: normalise the used marginal of R (see `alignment.transport`).

  Returns:
    `(mixed [B, h, w, c], weights [B, r, r])`: the mixed tensor and the assignments R of
    the pairs (e.g. for `alignment.row_error`).
  """
  partner = partner_of(features, perm)
  weights = jax.vmap(functools.partial(alignment.assignment, eps=eps, num_iters=num_iters,
                                       tol=tol))(features, partner)

  # One transport, by the rows of R (13) or of R^T (14); `reverse` may be decided on the
  # device.
  moved = jax.vmap(functools.partial(alignment.transport, barycentric=barycentric))(
      jnp.where(reverse, jnp.swapaxes(weights, 1, 2), weights),
      jnp.where(reverse, features, partner))
  return mix(lam, jnp.where(reverse, moved, features),
             jnp.where(reverse, partner, moved)), weights


def cutmix_box(rng, lam, height, width):
  """One CutMix box for the whole batch and the lam its area implies.

  The box has sides `sqrt(1 - lam) * (height, width)`, a uniformly drawn centre, and is
  clipped to the image; the returned lam is `1 - clipped_area / (height * width)`.

  Returns:
    `(mask [height, width] float32, 1 inside the box, lam_box float32 scalar)`.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio)
  cut_w = jnp.floor(width * ratio)
  center_rng_y, center_rng_x = jax.random.split(rng)
  cy = jax.random.randint(center_rng_y, (), 0, height).astype(jnp.float32)
  cx = jax.random.randint(center_rng_x, (), 0, width).astype(jnp.float32)
  top = jnp.clip(cy - cut_h // 2, 0, height)
  bottom = jnp.clip(cy + cut_h // 2, 0, height)
  left = jnp.clip(cx - cut_w // 2, 0, width)
  right = jnp.clip(cx + cut_w // 2, 0, width)
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]
  mask = ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right))
  area = (bottom - top) * (right - left)
  return mask.astype(jnp.float32), 1.0 - area / (height * width)


def cutmix(rng, lam, images, perm):
  """CutMix: pastes the box of x' = x[perm] into x.

  Args:
    rng: PRNG key for the box position.
    lam: scalar drawn from Beta(alpha, alpha) (CutMix uses alpha = 1).
    images: `[B, H, W, C]`.
    perm: `[B]` partner indices.

  Returns:
    `(mixed images [B, H, W, C], lam_box)`: use `mix_labels(lam_box, targets, perm)`.
  """
  _, height, width, _ = images.shape
  mask, lam_box = cutmix_box(rng, lam, height, width)
  mask = mask[None, :, :, None].astype(images.dtype)
  mixed = images * (1 - mask) + partner_of(images, perm) * mask
  return mixed, lam_box
