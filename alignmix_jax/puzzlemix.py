"""PuzzleMix (Kim, Choo and Song, ICML 2020), as the official code computes it.

x = `images` `[B, H, W, 3]` in [0, 1] (H = W), x' = x[perm] the partners, lam ~ Beta(alpha,
alpha). One mixed batch is made in four steps (the official `mixup_graph`):

1. Saliency s `[B, H, W]`: the square root of the channel mean of the squared gradient of
   the mean cross-entropy with respect to the normalised input, BatchNorm in eval mode
   (`saliency`; the step computes the gradient, one extra forward and backward).
2. A grid of n x n blocks, n drawn uniformly from `BLOCK_NUMS` per step. Unary terms: s
   pooled over each block and normalised to sum 1 per image; pairwise terms: the mean
   absolute colour difference across each block border of x and x', pooled over
   `neigh_size` pixels (`graph_terms`). An alpha-beta swap graph cut (the `gco-wrapper`
   package, on the host, as the official code) labels each block with one of `n_labels`
   mixing levels m in {1, ..., 0}, with a prior from lam (`graph_cut`).
3. Transport (`transport_sources`): on a grid of t x t pixel blocks, each image's blocks move
   to where its mask is positive, the salient ones first, by the official code's discrete
   loop (row minima, column contests, losers pay 1), run t_block_num times.
4. `mixed = m x~ + (1 - m) x~'` and the label weight of x is the mean of m per image.

Everything but the graph cut runs on the device, inside the jitted step. The graph cut is a
`jax.pure_callback` into `gco` (install the `baselines` extra). Mixing is written on [0, 1]
images: the official code mixes normalised images, the same mix up to the affine
normalisation; a block that no source moves into is the normalised zero there, the mean
colour here (`fill`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The grid sizes n (blocks per side) the official code draws from: 2 ** randint(1, 5).
BLOCK_NUMS = (2, 4, 8, 16)
INSTALL = "pip install 'alignmix-jax[baselines]'  (or: pip install gco-wrapper==3.0.9)"


def require_solver():
  """Raises an ImportError naming the install command when `gco` (gco-wrapper) is missing."""
  try:
    import gco  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as error:
    raise ImportError(f'PuzzleMix and Co-Mixup label their blocks with the graph-cut solver '
                      f'of the gco-wrapper package, which is not installed: {INSTALL}'
                      ) from error


def check_settings(settings, image_size):
  """Raises a ValueError for `config.mixup.puzzlemix` settings that cannot run on
  `image_size` x `image_size` images."""
  if image_size % BLOCK_NUMS[-1]:
    raise ValueError(f'PuzzleMix cuts the image into up to {BLOCK_NUMS[-1]} x '
                     f'{BLOCK_NUMS[-1]} blocks: dataset.image_size={image_size} must be a '
                     f'multiple of {BLOCK_NUMS[-1]}.')
  if settings.n_labels not in (2, 3, 4):
    raise ValueError(f'mixup.puzzlemix.n_labels={settings.n_labels!r} must be 2, 3 or 4 '
                     '(the mixing levels of the official code).')
  for field in ('neigh_size', 't_size'):
    value = settings[field]
    if not isinstance(value, int) or isinstance(value, bool) or (
        value < 1 and not (field == 't_size' and value == -1)):
      raise ValueError(f'mixup.puzzlemix.{field}={value!r} must be a positive integer'
                       + (' (or -1: the graph-cut blocks)' if field == 't_size' else '') + '.')
    for block_num in BLOCK_NUMS:
      block = image_size // block_num
      size = block if value == -1 else min(value, block)
      if block % size:
        raise ValueError(f'mixup.puzzlemix.{field}={value} must divide every block side '
                         f'({", ".join(str(image_size // n) for n in BLOCK_NUMS)} pixels at '
                         f'image_size {image_size}); e.g. a power of 2.')
  for field in ('beta', 'gamma', 'eta', 't_eps'):
    if not settings[field] >= 0:
      raise ValueError(f'mixup.puzzlemix.{field}={settings[field]!r} must be >= 0.')


def saliency(input_grad, std):
  """s `[B, H, W]` from the gradient `[B, H, W, C]` of the loss with respect to the [0, 1]
  images: the official code differentiates with respect to the normalised images
  (x - mean) / std, a gradient `std` times this one."""
  grad = input_grad.astype(jnp.float32) * jnp.asarray(std, jnp.float32)
  return jnp.sqrt(jnp.mean(jnp.square(grad), axis=-1))


def pool(x, size):
  """Average pooling of `[B, H, W, ...]` over non-overlapping `size` x `size` windows."""
  b, h, w = x.shape[:3]
  x = x.reshape((b, h // size, size, w // size, size) + x.shape[3:])
  return jnp.mean(x, axis=(2, 4))


def block_unary(sal, size):
  """The saliency of each `size` x `size` block, normalised to sum 1 per image: `[B, n, n]`."""
  pooled = pool(sal, size)
  return pooled / jnp.sum(pooled, axis=(1, 2), keepdims=True)


def neighbour_penalty(first, second, k):
  """Border terms between neighbouring blocks of a grid, from pooled images `[B, n k, n k,
  C]` (k pooled pixels per block side): for the border of block (i, j) with (i + 1, j)
  (`vertical` `[B, n - 1, n]`), the mean absolute difference between the last pooled row
  of `first`'s block and the first of `second`'s, over channels, then over the k pixels
  along it; `horizontal` `[B, n, n - 1]` the same for (i, j) and (i, j + 1)."""
  vertical = jnp.abs(first[:, :-1] - second[:, 1:])[:, k - 1::k]
  horizontal = jnp.abs(first[:, :, :-1] - second[:, :, 1:])[:, :, k - 1::k]
  vertical = jnp.mean(vertical, axis=-1)
  horizontal = jnp.mean(horizontal, axis=-1)
  b, rows, cols = vertical.shape
  vertical = jnp.mean(vertical.reshape(b, rows, cols // k, k), axis=-1)
  b, rows, cols = horizontal.shape
  horizontal = jnp.mean(horizontal.reshape(b, rows // k, k, cols), axis=2)
  return vertical, horizontal


def graph_terms(sal, images, perm, block_num, *, beta, gamma, neigh_size):
  """The graph cut's inputs for grid size `block_num`, as the official code builds them.

  Args:
    sal: saliency `[B, H, W]`.
    images: x `[B, H, W, C]` in [0, 1].
    perm: `[B]` partners.
    block_num: n, blocks per side (static).
    beta, gamma: label and data smoothness (`config.mixup.puzzlemix`); beta is used
      normalised, beta / n / 16.
    neigh_size: pixels pooled for the border terms (at most the block side).

  Returns:
    `(unary_partner [B, n, n], unary_self [B, n, n], vertical [B, n - 1, n], horizontal
    [B, n, n - 1])`: the cost of giving a block to x (x' loses its saliency there) and to
    x', each with the border terms that do not depend on the neighbour's label folded in,
    and the border terms that do.
  """
  size = images.shape[2] // block_num
  neigh_size = min(neigh_size, size)
  beta = beta / block_num / 16
  unary_self = block_unary(sal, size)
  unary_partner = unary_self[perm]
  pooled_self = pool(images.astype(jnp.float32), neigh_size)
  pooled_partner = pooled_self[perm]
  k = size // neigh_size
  # terms[a][b]: the border between a block from a (0: x', 1: x) and its next one from b.
  terms = [[neighbour_penalty(first, second, k) for second in (pooled_partner, pooled_self)]
           for first in (pooled_partner, pooled_self)]
  terms = jax.tree.map(lambda t: beta * gamma * t, terms)
  (v00, h00), (v01, h01) = terms[0]
  (v10, h10), (v11, h11) = terms[1]
  # The official code's order of additions (float32 round-off included).
  unary_partner = unary_partner.at[:, :-1, :].add((v10 + v11) / 2.)
  unary_self = unary_self.at[:, :-1, :].add((v01 + v00) / 2.)
  unary_partner = unary_partner.at[:, 1:, :].add((v01 + v11) / 2.)
  unary_self = unary_self.at[:, 1:, :].add((v10 + v00) / 2.)
  unary_partner = unary_partner.at[:, :, :-1].add((h10 + h11) / 2.)
  unary_self = unary_self.at[:, :, :-1].add((h01 + h00) / 2.)
  unary_partner = unary_partner.at[:, :, 1:].add((h01 + h11) / 2.)
  unary_self = unary_self.at[:, :, 1:].add((h10 + h00) / 2.)
  vertical = (v10 + v01 - v11 - v00) / 2
  horizontal = (h10 + h01 - h11 - h00) / 2
  return unary_partner, unary_self, vertical, horizontal


def label_prior(lam, n_labels, eps=1e-8):
  """-log of the binomial probabilities of the mixing levels 1, ..., 0 of x under lam
  (float64, `[n_labels]`)."""
  lam = float(lam)
  levels = n_labels - 1
  return np.array([-np.log(float(np.prod([lam] * (levels - i) + [1 - lam] * i))
                           * _binomial(levels, i) + eps) for i in range(n_labels)])


def _binomial(n, k):
  return float(np.prod(np.arange(n - k + 1, n + 1)) / np.prod(np.arange(1, k + 1)))


def graph_cut(unary_partner, unary_self, vertical, horizontal, lam, *, block_num, beta, eta,
              n_labels):
  """The mask of one image on the host: alpha-beta swap graph cut of `gco`.

  NumPy in, NumPy out (`[n, n]` float32, the level 1 - label / (n_labels - 1) of x in each
  block), costs scaled to int32 as in the official code; beta normalised as in
  `graph_terms`.
  """
  import gco  # pylint: disable=import-outside-toplevel
  large = 1000 * block_num ** 2
  prior = eta * label_prior(lam, n_labels) / block_num ** 2
  unary = np.stack([(1 - level) * unary_partner + level * unary_self + prior[i]
                    for i, level in enumerate(np.linspace(0, 1, n_labels))], axis=-1)
  unary = (large * unary).astype(np.int32)
  levels = np.arange(n_labels)
  smooth = ((levels[:, None] - levels[None, :]) ** 2 / (n_labels - 1) ** 2).astype(np.float32)
  beta = beta / block_num / 16
  labels = gco.cut_grid_graph(unary, smooth, (large * (vertical + beta)).astype(np.int32),
                              (large * (horizontal + beta)).astype(np.int32),
                              algorithm='swap')
  return (1.0 - labels / (n_labels - 1)).reshape(block_num, block_num).astype(np.float32)


def _graph_cut_batch(unary_partner, unary_self, vertical, horizontal, lam, **settings):
  return np.stack([graph_cut(*(np.asarray(a[i]) for a in (unary_partner, unary_self, vertical,
                                                           horizontal)), lam, **settings)
                   for i in range(unary_partner.shape[0])])


def graph_cut_masks(unary_partner, unary_self, vertical, horizontal, lam, *, block_num,
                    beta, eta, n_labels):
  """`graph_cut` for every image of the batch, called from the device: `[B, n, n]`."""
  host = functools.partial(_graph_cut_batch, block_num=block_num, beta=beta, eta=eta,
                           n_labels=n_labels)
  shape = jax.ShapeDtypeStruct(unary_self.shape, jnp.float32)
  return jax.pure_callback(host, shape, unary_partner, unary_self, vertical, horizontal,
                           lam)


def grid_cost(side):
  """Squared distance between the blocks of a `side` x `side` grid (row-major),
  / (side - 1)^2: `[side^2, side^2]` float32."""
  rows, cols = np.divmod(np.arange(side * side), side)
  cost = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
  return (cost / (side - 1) ** 2).astype(np.float32)


def transport_sources(mask, unary, eps):
  """The official code's discrete transport of blocks: for each destination block (row-major)
  the block of the same image moved there, or -1: `[B, N]` int32, N = side^2.

  Cost `eps C_ij - u_i [m_j > 0]` (C: `grid_cost`, u: the image's block saliency `unary`
  `[B, side, side]`, m: its `mask` `[B, side, side]`). Each of `side` rounds: every block i
  bids for its cheapest destination (the first on ties); a destination goes to the first
  block holding the smallest entry of its column of the official plan x cost, whose other
  entries are zeros (so a destination whose bids are all positive goes to nobody, and a bid
  of 0 wins only above the first block that did not bid); the blocks that lose pay 1 more
  for that destination. The last round's winners move. Written per block, `[B, N, side]`
  per round, instead of the official `[B, N, N]` plan.
  """
  b, side = mask.shape[0], mask.shape[-1]
  n = side * side
  rows = jnp.arange(n)
  cost = (eps * jnp.asarray(grid_cost(side))[None]
          - unary.reshape(b, n, 1) * (mask > 0).astype(jnp.float32).reshape(b, 1, n))
  # Round r has raised at most r entries of a row, each by 1, so a row's cheapest entry is
  # always among its `side` cheapest at the start (first index on ties, as lax.top_k): the
  # rounds run on those candidates, `[B, N, side]`, not on the whole `[B, N, N]` cost.
  negated, candidates = lax.top_k(-cost, side)
  by_destination = jax.vmap(functools.partial(jax.ops.segment_min, num_segments=n))

  def round_(_, carry):
    values, _ = carry
    low = jnp.min(values, axis=-1, keepdims=True)
    # The cheapest destination of each block, the first on ties.
    choice = jnp.min(jnp.where(values == low, candidates, n), axis=-1)  # [B, N]
    bid = low[..., 0]
    best = by_destination(bid, choice)  # Per destination; +inf without bids.
    first_best = by_destination(
        jnp.where(bid == jnp.take_along_axis(best, choice, 1), rows, n), choice)
    # The first block that did not bid for a destination (n: every block did): block 0,
    # but for block 0's choice, the first block that chose otherwise.
    others = choice != choice[:, :1]
    first_other = jnp.where(jnp.any(others, axis=1), jnp.argmax(others, axis=1), n)
    first_zero = jnp.where(rows[None] == choice[:, :1], first_other[:, None], 0)
    taken = (first_best < n) & ((best < 0) | (first_zero >= n)
                                | ((best == 0) & (first_best < first_zero)))
    won = (jnp.take_along_axis(taken, choice, 1)
           & (jnp.take_along_axis(first_best, choice, 1) == rows))
    # The losers pay 1 more for their bid (x + 0.0 == x leaves the other entries).
    values = values + jnp.where((candidates == choice[..., None]) & ~won[..., None], 1.0, 0.0)
    return values, jnp.where(won, choice, n).astype(jnp.int32)

  # Unrolled: in a while loop XLA:CPU recomputed the top-k in every round (7x slower at
  # side 16). The initial destinations are made from the cost so that they vary over
  # devices as the rounds' do.
  unset = candidates[..., 0].astype(jnp.int32)
  destination = lax.fori_loop(0, side, round_, (-negated, unset), unroll=True)[1]
  # Invert: each destination has at most one winner (n: the blocks that move nowhere).
  moves = destination[:, :, None] == rows[None, None, :]  # [B, block, destination]
  return jnp.max(jnp.where(moves, rows[None, :, None], -1), axis=1).astype(jnp.int32)


def blocks(images, size):
  """`[B, H, W, C]` -> `[B, N, size, size, C]`, the blocks in row-major order."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // size, size, w // size, size, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, -1, size, size, c)


def unblock(patches, side):
  """The inverse of `blocks` for a `side` x `side` grid."""
  b, _, size, _, c = patches.shape
  x = patches.reshape(b, side, side, size, size, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, side * size, side * size, c)


def transport(images, sources, size, fill):
  """Moves the `size` x `size` blocks of `images` `[B, H, W, C]`: destination j gets block
  `sources[:, j]` `[B, N]`, or `fill` `[C]` where that is -1."""
  patches = blocks(images, size)
  index = jnp.maximum(sources, 0)[:, :, None, None, None]
  moved = jnp.take_along_axis(patches, index, axis=1)
  moved = jnp.where(sources[:, :, None, None, None] >= 0, moved,
                    jnp.asarray(fill, patches.dtype))
  return unblock(moved, images.shape[1] // size)


def upsample(mask, factor):
  """Nearest-neighbour upsampling of `[B, n, n, ...]` by an integer factor."""
  return jnp.repeat(jnp.repeat(mask, factor, axis=1), factor, axis=2)


def mix_at(block_num, sal, images, perm, lam, *, settings, fill):
  """PuzzleMix with a static grid of `block_num` blocks per side; see `mix`."""
  width = images.shape[2]
  size = width // block_num
  unary_partner, unary_self, vertical, horizontal = graph_terms(
      sal, images, perm, block_num, beta=settings.beta, gamma=settings.gamma,
      neigh_size=settings.neigh_size)
  mask = graph_cut_masks(unary_partner, unary_self, vertical, horizontal, lam,
                         block_num=block_num, beta=settings.beta, eta=settings.eta,
                         n_labels=settings.n_labels)
  partner = images[perm]
  if settings.transport:
    t_size = size if settings.t_size == -1 else min(settings.t_size, size)
    side = width // t_size
    mask = upsample(mask, side // block_num)
    unary = block_unary(sal, t_size)
    images = transport(images, transport_sources(mask, unary, settings.t_eps), t_size, fill)
    partner = transport(partner, transport_sources(1 - mask, unary[perm], settings.t_eps),
                        t_size, fill)
  mask = upsample(mask, width // mask.shape[-1])
  mixed = mask[..., None] * images + (1 - mask[..., None]) * partner
  return mixed.astype(images.dtype), jnp.mean(mask, axis=(1, 2))


def mix(rng, sal, images, perm, lam, *, settings, fill):
  """PuzzleMix of a batch (module docstring).

  Args:
    rng: PRNG key of the grid size, drawn uniformly from `BLOCK_NUMS`.
    sal: saliency s `[B, H, W]` (`saliency`).
    images: x `[B, H, W, C]` in [0, 1], H = W a multiple of 16.
    perm: `[B]` partners.
    lam: scalar, ~ Beta(alpha, alpha) (alpha 1 in the official settings).
    settings: `config.mixup.puzzlemix` (n_labels, beta, gamma, eta, neigh_size, transport,
      t_size, t_eps).
    fill: `[C]`, the colour of a transported block that receives nothing: the dataset mean
      (the normalised zero of the official code).

  Returns:
    `(mixed [B, H, W, C], ratio [B])`: targets `ratio y + (1 - ratio) y'`.
  """
  index = jax.random.randint(rng, (), 0, len(BLOCK_NUMS))
  branches = [functools.partial(mix_at, n, settings=settings, fill=fill) for n in BLOCK_NUMS]
  return lax.switch(index, branches, sal, images, perm, lam)
