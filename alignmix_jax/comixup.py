"""Co-Mixup (Kim, Choo, Jeong and Song, ICLR 2021), as the official code computes it.

x = `images` `[B, H, W, 3]` in [0, 1] (H = W), y = `targets` `[B, K]`. The batch is cut
into groups of `part` consecutive examples (the last may be smaller); each group of n
inputs gives n outputs, each a patchwork of the group's inputs on an m x m grid of blocks:

1. Saliency s `[B, H, W]`: the square root of the channel mean of the squared input gradient
   of the clean loss (the train step computes it; with the official `clean_lam > 0` that
   loss also trains the network).
2. Compatibility (`compatibility`): each input's most salient 8 x 8 window; the L1 distance
   between the windows of two inputs, normalised over the group, mixed into the identity
   with weight omega.
3. The labelling (`labelling`, on the host): each output block takes one input (or, after
   the first round, an even mix of two of the inputs the output already uses). It
   minimises the blocks' lost saliency, a Dirichlet(alpha) prior, beta label smoothness and
   a gamma penalty on inputs used by several outputs beyond `thres` of an output, by
   `niter` rounds of one alpha-beta swap graph cut per output (`gco-wrapper`) on the
   penalty of the other outputs, then a step that makes identical outputs differ.
4. `mix`: output o = sum_i m_oi x_i (masks upsampled to the image), its target the mean over
   its blocks of sum_i m_oi y_i.

Everything but the labelling runs on the device, inside the jitted step; the labelling is a
`jax.pure_callback` into NumPy and `gco`, its random draws (the initial labels and the
Dirichlet prior) made on the device. Mixing [0, 1] images is the official mix of normalised
ones: the masks of a block sum to 1.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from alignmix_jax import puzzlemix

THRES_TYPES = ('hard', 'soft')
# The official code's even mixes of three inputs two at a time, and its discount of 5e-4 on
# a mixed label's cost.
_PAIRS = np.array([[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], np.float32)
_MIXED_DISCOUNT = 5e-4


def check_settings(settings, image_size, device_batch):
  """Raises a ValueError for `config.mixup.comixup` settings that cannot run on
  `image_size` images and `device_batch` examples per device."""
  block_nums = puzzlemix.BLOCK_NUMS if settings.block_num == -1 else (settings.block_num,)
  if not isinstance(settings.block_num, int) or (
      settings.block_num < 1 and settings.block_num != -1):
    raise ValueError(f'mixup.comixup.block_num={settings.block_num!r} must be a positive '
                     'integer, or -1 (drawn from 2, 4, 8, 16 per step).')
  for n in block_nums:
    if image_size % n:
      raise ValueError(f'mixup.comixup.block_num: a {n} x {n} grid needs '
                       f'dataset.image_size={image_size} to be a multiple of {n}.')
  if image_size < 8:
    raise ValueError('Co-Mixup places an 8 x 8 window on the saliency: dataset.image_size '
                     f'must be at least 8 (got {image_size}).')
  if not isinstance(settings.part, int) or settings.part < 2:
    raise ValueError(f'mixup.comixup.part={settings.part!r} must be an integer >= 2 (inputs '
                     'mixed together).')
  if device_batch % settings.part == 1:
    raise ValueError(f'Co-Mixup mixes groups of mixup.comixup.part={settings.part} examples '
                     f'of each device; the {device_batch} per device leave a group of 1: '
                     'change batch_size or part.')
  if settings.thres_type not in THRES_TYPES:
    raise ValueError(f'mixup.comixup.thres_type={settings.thres_type!r}; valid: '
                     f'{", ".join(THRES_TYPES)}.')
  if not isinstance(settings.niter, int) or settings.niter < 1:
    raise ValueError(f'mixup.comixup.niter={settings.niter!r} must be an integer >= 1.')
  for field in ('beta', 'gamma', 'eta', 'omega', 'clean_lam'):
    if not settings[field] >= 0:
      raise ValueError(f'mixup.comixup.{field}={settings[field]!r} must be >= 0.')


def groups(batch, part):
  """The `(start, size)` of each group of `part` consecutive examples of a batch."""
  return tuple((start, min(part, batch - start)) for start in range(0, batch, part))


def compatibility(sal):
  """The L1 distance `[B, B]` between the (row, column) of each image's most salient 8 x 8
  window (stride 1; the first on ties) of the saliency `sal` `[B, H, W]`."""
  windows = jax.lax.reduce_window(sal, 0.0, jax.lax.add, (1, 8, 8), (1, 1, 1), 'VALID') / 64
  side = windows.shape[-1]
  best = jnp.argmax(windows.reshape(sal.shape[0], -1), axis=1)
  where = jnp.stack([best // side, best % side], axis=1).astype(jnp.float32)
  return jnp.sum(jnp.abs(where[:, None] - where[None]), axis=-1)


def _one_hot(index, n):
  return np.eye(n, dtype=np.float32)[index]


def objective(cost, masks, beta, gamma):
  """The labelling's objective without the threshold (float64): the cost of the blocks'
  labels, beta/2 times the squared label changes between neighbours, and gamma times the
  pairs of outputs sharing an input's blocks. `cost` `[n, h, w]`, `masks` `[o, h, w, n]`."""
  masks = masks.astype(np.float64)
  per_input = masks.reshape(masks.shape[0], -1, masks.shape[-1]).sum(1)
  return (np.sum(cost.transpose(1, 2, 0)[None] * masks)
          + beta / 2 * (np.sum((masks[:, :-1] - masks[:, 1:]) ** 2)
                        + np.sum((masks[:, :, :-1] - masks[:, :, 1:]) ** 2))
          + gamma * (np.sum(per_input.sum(0) ** 2) - np.sum(per_input ** 2)))


def _cut(unary, beta, mixed=None):
  """`gco`'s alpha-beta swap labelling of the `[h, w, labels]` costs; labels are the n
  inputs and, with `mixed` (a boolean `[n]` of the inputs mixed in `len(_PAIRS)` or 1 extra
  labels), the mixes of those."""
  import gco  # pylint: disable=import-outside-toplevel
  height, width, labels = unary.shape
  smooth = np.ones((labels, labels), np.float32) - np.eye(labels, dtype=np.float32)
  if mixed is not None:
    extra = labels - len(mixed)
    n = len(mixed)
    if extra == 1:  # An even mix of the two inputs costs 1/4 against either.
      smooth[n, np.flatnonzero(mixed)] = 0.25
      smooth[np.flatnonzero(mixed), n] = 0.25
    else:
      near = np.where(_PAIRS > 0, 0.25, 1.0).astype(np.float32)
      smooth[n:, np.flatnonzero(mixed)] = near
      smooth[np.flatnonzero(mixed), n:] = near
  edges_v = beta * np.ones((height - 1, width), np.float32)
  edges_h = beta * np.ones((height, width - 1), np.float32)
  return gco.cut_grid_graph(np.ascontiguousarray(unary), smooth, edges_v, edges_h,
                            algorithm='swap').reshape(height, width)


def _label_output(cost, counts, beta, mixing):
  """One output's masks `[h, w, n]` from its costs `[h, w, n]` and its current count of
  blocks per input `[n]`: inputs only in the first round; then, if it uses two inputs, their
  even mix too, and if it uses three or more, the even mixes of its three most used (the
  first on equal counts)."""
  n = cost.shape[-1]
  used = np.flatnonzero(counts > 0)
  if not mixing or len(used) < 2:
    return _one_hot(_cut(cost, beta), n)
  if len(used) == 2:
    mixed = np.zeros(n, bool)
    mixed[used] = True
    weights = np.zeros((1, n), np.float32)
    weights[0, used] = 0.5
    extra = cost[:, :, mixed].mean(-1, keepdims=True) - np.float32(_MIXED_DISCOUNT)
  else:
    top = np.sort(np.argsort(-counts, kind='stable')[:3])
    mixed = np.zeros(n, bool)
    mixed[top] = True
    weights = np.zeros((3, n), np.float32)
    weights[:, mixed] = _PAIRS
    extra = cost[:, :, mixed] @ _PAIRS - np.float32(_MIXED_DISCOUNT)
  labels = _cut(np.concatenate([cost, extra], -1), beta, mixed)
  return np.concatenate([np.eye(n, dtype=np.float32), weights])[labels]


def _resolve(used):
  """Extra costs `[o, n]` that split outputs using the same inputs: of each such pair, the
  first gets 1 on its first input, the second 1 on its second."""
  add = np.zeros(used.shape, np.float32)
  same = np.minimum(np.abs(used[:, None] - used[None]).sum(-1), 1.0)
  for first, second in zip(*np.nonzero(np.triu(1.0 - same, k=1))):
    inputs = np.flatnonzero(used[first])
    if len(inputs) > 1:
      add[first, inputs[0]] = 1.0
      add[second, inputs[1]] = 1.0
  return add


def labelling(cost, compat, prior, init, *, beta, gamma, eta, thres, thres_type, set_resolve,
              niter):
  """The official `get_onehot_matrix`: the masks `[o, h, w, n]` of the o = n outputs of a
  group, NumPy on the host.

  Args:
    cost: `[n, h, w]` float32, minus each input's block saliency normalised to sum 1.
    compat: A `[n, n]` float32, the inputs' compatibility (`group_compatibility`).
    prior: `[n]`, a Dirichlet(alpha) draw: -eta log(prior) is added to each input's cost.
    init: `[o, h, w]` int, the initial labels.
    beta, gamma, eta, thres: the official m_beta, m_gamma, m_eta, m_thres (normalised here
      by the h w blocks).
    thres_type: 'hard' or 'soft'.
    set_resolve: split identical outputs after round niter - 1.
    niter: rounds over the outputs (the official m_niter).
  """
  cost = np.asarray(cost, np.float32)
  compat = np.asarray(compat, np.float32)
  n, height, width = cost.shape
  blocks = height * width
  thres, beta, gamma, eta = thres * blocks, beta / blocks, gamma / blocks, eta / blocks
  cost = cost - np.float32(eta) * np.log(np.asarray(prior, np.float32) + np.float32(1e-8))[
      :, None, None]
  masks = _one_hot(np.asarray(init).reshape(len(init), height, width), n)
  loss_before = objective(cost, masks, beta, gamma)
  totals = masks.reshape(len(masks), -1, n).sum((0, 1))  # Blocks per input, all outputs.
  add = None
  for round_ in range(niter):
    for o in range(len(masks)):
      counts = masks[o].reshape(-1, n).sum(0)
      others = totals - counts
      shared = compat @ others
      over = (shared > thres).astype(np.float32)
      # The official hard threshold reads `(A p > thres) * A @ p`, i.e. ((over * A) @ p):
      # each input's penalty sums the others' use of the inputs over the threshold.
      penalty = 2 * gamma * ((over * compat) @ others if thres_type == 'hard'
                             else over * (shared - thres))
      unary = cost + penalty[:, None, None].astype(np.float32)
      if add is not None:
        unary = unary + np.float32(gamma) * add[o][:, None, None]
      masks[o] = _label_output(unary.transpose(1, 2, 0), counts, beta, round_ > 0)
      totals = others + masks[o].reshape(-1, n).sum(0)
    if round_ == niter - 2 and set_resolve:
      add = _resolve((masks.reshape(len(masks), -1, n).sum(1) > 0).astype(np.float32))
    loss = objective(cost, masks, beta, gamma)
    with np.errstate(divide='ignore', invalid='ignore'):
      if abs(loss_before - loss) / abs(loss) < 1e-6:
        break
    loss_before = loss
  return masks


def group_compatibility(distance):
  """A of a group from the L1 distances `[n, n]` of its inputs' windows, before omega:
  the distances normalised to sum n."""
  total = jnp.sum(distance)
  # All windows in one place: the official code divides by zero (NaN); here A is the identity.
  return jnp.where(total > 0, distance / jnp.where(total > 0, total, 1) * distance.shape[0],
                   0.0)


def mix(rng, sal, images, targets, *, settings, alpha):
  """Co-Mixup of a batch (module docstring).

  Args:
    rng: PRNG key of the grid size (block_num -1), the initial labels and the priors.
    sal: saliency s `[B, H, W]`.
    images: x `[B, H, W, C]` in [0, 1].
    targets: y `[B, K]`.
    settings: `config.mixup.comixup`.
    alpha: the Dirichlet prior's concentration (`config.mixup.alpha`, 2 in the official
      settings).

  Returns:
    `(mixed images [B, H, W, C], mixed targets [B, K])`.
  """
  if settings.block_num == -1:
    index = jax.random.randint(jax.random.fold_in(rng, 1), (), 0, len(puzzlemix.BLOCK_NUMS))
    branches = [functools.partial(mix_at, n, settings=settings, alpha=alpha)
                for n in puzzlemix.BLOCK_NUMS]
    return jax.lax.switch(index, branches, rng, sal, images, targets)
  return mix_at(settings.block_num, rng, sal, images, targets, settings=settings, alpha=alpha)


def mix_at(block_num, rng, sal, images, targets, *, settings, alpha):
  """Co-Mixup with a static `block_num` x `block_num` grid; see `mix`."""
  width = images.shape[2]
  pooled = puzzlemix.pool(sal, width // block_num)
  distance = compatibility(sal)
  host = functools.partial(
      labelling, beta=settings.beta, gamma=settings.gamma, eta=settings.eta,
      thres=settings.thres, thres_type=settings.thres_type, set_resolve=settings.set_resolve,
      niter=settings.niter)
  outputs, mixed_targets = [], []
  for k, (start, n) in enumerate(groups(images.shape[0], settings.part)):
    init_rng, prior_rng = jax.random.split(jax.random.fold_in(rng, k + 2))
    part = pooled[start:start + n]
    cost = -part / jnp.sum(part, axis=(1, 2), keepdims=True)
    compat = ((1 - settings.omega) * jnp.eye(n)
              + settings.omega * group_compatibility(distance[start:start + n,
                                                              start:start + n]))
    prior = jax.random.dirichlet(prior_rng, jnp.full((n,), alpha, jnp.float32))
    init = jax.random.randint(init_rng, (n, block_num, block_num), 0, n)
    masks = jax.pure_callback(
        host, jax.ShapeDtypeStruct((n, block_num, block_num, n), jnp.float32),
        jax.lax.stop_gradient(cost), compat, prior, init)
    up = puzzlemix.upsample(masks, width // block_num)  # [o, H, W, n]
    outputs.append(jnp.einsum('ohwi,ihwc->ohwc', up, images[start:start + n],
                              precision=jax.lax.Precision.HIGHEST))
    mixed = jnp.sum(masks.reshape(n, -1, n), axis=1) @ targets[start:start + n]
    mixed_targets.append(mixed / jnp.sum(mixed, axis=-1, keepdims=True))
  return (jnp.concatenate(outputs).astype(images.dtype), jnp.concatenate(mixed_targets))
