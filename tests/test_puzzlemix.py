"""PuzzleMix against a NumPy reference of the official code (snu-mllab/PuzzleMix,
`mixup.py`: `mixup_graph`, `neigh_penalty`, `graphcut_multi`, `mask_transport`,
`transport_image`), written here as that code computes: NCHW, normalised images, PyTorch's
first-index argmin, the graph cut by `gco` called directly."""

import sys

import gco
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import tiny_config
from alignmix_jax import configs
from alignmix_jax import methods
from alignmix_jax import mixup
from alignmix_jax import parallel
from alignmix_jax import puzzlemix
from alignmix_jax import validation

MEAN = np.array([0.3, 0.4, 0.5], np.float32)
STD = np.array([0.2, 0.25, 0.3], np.float32)
SETTINGS = configs.load('digits').mixup.puzzlemix  # The official CIFAR-100 settings.


# The reference, NCHW, on normalised images.

def _pool(x, k):
  """F.avg_pool2d over the last two axes, kernel = stride = k (or (kh, kw))."""
  kh, kw = (k, k) if isinstance(k, int) else k
  *lead, h, w = x.shape
  return x.reshape(*lead, h // kh, kh, w // kw, kw).mean(axis=(-3, -1))


def ref_neigh_penalty(input1, input2, k):
  pw_x = input1[:, :, :-1, :] - input2[:, :, 1:, :]
  pw_y = input1[:, :, :, :-1] - input2[:, :, :, 1:]
  pw_x = pw_x[:, :, k - 1::k, :]
  pw_y = pw_y[:, :, :, k - 1::k]
  return _pool(np.abs(pw_x).mean(1), (1, k)), _pool(np.abs(pw_y).mean(1), (k, 1))


def ref_graph_terms(grad, input1, indices, block_num, beta, gamma, neigh_size, mean=MEAN,
                    std=STD):
  """`mixup_graph` up to the graph cut; grad: the saliency [B, H, W]; input1 normalised
  with `mean` and `std`."""
  batch_size, width = input1.shape[0], input1.shape[-1]
  block_size = width // block_num
  neigh_size = min(neigh_size, block_size)
  beta = beta / block_num / 16
  grad1_pool = _pool(grad, block_size)
  unary1 = grad1_pool / grad1_pool.reshape(batch_size, -1).sum(1).reshape(batch_size, 1, 1)
  unary2 = unary1[indices]
  input1_pool = _pool(input1 * std[:, None, None] + mean[:, None, None], neigh_size)
  input2_pool = input1_pool[indices]
  k = block_size // neigh_size
  pw_x = np.zeros([batch_size, 2, 2, block_num - 1, block_num], np.float32)
  pw_y = np.zeros([batch_size, 2, 2, block_num, block_num - 1], np.float32)
  for a, first in enumerate((input2_pool, input1_pool)):
    for b, second in enumerate((input2_pool, input1_pool)):
      pw_x[:, a, b], pw_y[:, a, b] = ref_neigh_penalty(first, second, k)
  pw_x = np.float32(beta * gamma) * pw_x
  pw_y = np.float32(beta * gamma) * pw_y
  unary1, unary2 = unary1.copy(), unary2.copy()
  unary2[:, :-1, :] += (pw_x[:, 1, 0] + pw_x[:, 1, 1]) / 2.
  unary1[:, :-1, :] += (pw_x[:, 0, 1] + pw_x[:, 0, 0]) / 2.
  unary2[:, 1:, :] += (pw_x[:, 0, 1] + pw_x[:, 1, 1]) / 2.
  unary1[:, 1:, :] += (pw_x[:, 1, 0] + pw_x[:, 0, 0]) / 2.
  unary2[:, :, :-1] += (pw_y[:, 1, 0] + pw_y[:, 1, 1]) / 2.
  unary1[:, :, :-1] += (pw_y[:, 0, 1] + pw_y[:, 0, 0]) / 2.
  unary2[:, :, 1:] += (pw_y[:, 0, 1] + pw_y[:, 1, 1]) / 2.
  unary1[:, :, 1:] += (pw_y[:, 1, 0] + pw_y[:, 0, 0]) / 2.
  pw_x = (pw_x[:, 1, 0] + pw_x[:, 0, 1] - pw_x[:, 1, 1] - pw_x[:, 0, 0]) / 2
  pw_y = (pw_y[:, 1, 0] + pw_y[:, 0, 1] - pw_y[:, 1, 1] - pw_y[:, 0, 0]) / 2
  return unary2, unary1, pw_x, pw_y  # As passed to graphcut_multi: the partner's first.


def ref_graphcut_multi(unary1, unary2, pw_x, pw_y, alpha, beta, eta, n_labels, eps=1e-8):
  """`graphcut_multi`; float32 arithmetic as NumPy 1's casting gave it."""
  block_num = unary1.shape[0]
  large_val = 1000 * block_num ** 2
  priors = {2: [alpha + eps, 1 - alpha + eps],
            3: [alpha ** 2 + eps, 2 * alpha * (1 - alpha) + eps, (1 - alpha) ** 2 + eps],
            4: [alpha ** 3 + eps, 3 * alpha ** 2 * (1 - alpha) + eps,
                3 * alpha * (1 - alpha) ** 2 + eps, (1 - alpha) ** 3 + eps]}
  prior = eta * -np.log(np.array(priors[n_labels])) / block_num ** 2
  unary_cost = (large_val * np.stack(
      [np.float32(1 - lam) * unary1 + np.float32(lam) * unary2 + np.float32(prior[i])
       for i, lam in enumerate(np.linspace(0, 1, n_labels))], axis=-1)).astype(np.int32)
  pairwise_cost = np.zeros([n_labels, n_labels], np.float32)
  for i in range(n_labels):
    for j in range(n_labels):
      pairwise_cost[i, j] = (i - j) ** 2 / (n_labels - 1) ** 2
  pw_x = (large_val * (pw_x + np.float32(beta))).astype(np.int32)
  pw_y = (large_val * (pw_y + np.float32(beta))).astype(np.int32)
  labels = 1.0 - gco.cut_grid_graph(unary_cost, pairwise_cost, pw_x, pw_y,
                                    algorithm='swap') / (n_labels - 1)
  return labels.reshape(block_num, block_num)  # float64; `mixup_graph` makes it float32.


def ref_cost_matrix(width):
  cost = np.zeros([width ** 2, width ** 2], np.float32)
  for m_i in range(width ** 2):
    for m_j in range(width ** 2):
      cost[m_i, m_j] = abs(m_i // width - m_j // width) ** 2 + abs(m_i % width - m_j % width) ** 2
  return cost / (width - 1) ** 2


def ref_mask_transport(mask, grad_pool, eps):
  block_num = mask.shape[-1]
  n = block_num ** 2
  z = (mask > 0).astype(np.float32)
  cost = (np.float32(eps) * ref_cost_matrix(block_num)[None]
          - grad_pool.reshape(-1, n, 1) * z.reshape(-1, 1, n))
  for _ in range(block_num):
    plan = np.zeros_like(cost)
    np.put_along_axis(plan, cost.argmin(-1)[..., None], 1, axis=-1)
    col_best = (plan * cost).argmin(-2)
    plan_win = np.zeros_like(cost)
    np.put_along_axis(plan_win, col_best[:, None, :], 1, axis=-2)
    plan_win *= plan
    cost += (1 - plan_win) * plan
  return plan_win


def ref_transport_image(img, plan, block_num, block_size):
  """Destination j = sum_i plan[i, j] patch_i, NCHW."""
  b, c = img.shape[:2]
  patches = img.reshape(b, c, block_num, block_size, block_num, block_size)
  patches = patches.transpose(0, 1, 2, 4, 3, 5).reshape(b, c, block_num ** 2, -1)
  moved = np.einsum('bij,bcip->bcjp', plan, patches)
  moved = moved.reshape(b, c, block_num, block_num, block_size, block_size)
  return moved.transpose(0, 1, 2, 4, 3, 5).reshape(img.shape)


def _nearest(mask, size):
  factor = size // mask.shape[-1]
  return mask.repeat(factor, axis=-2).repeat(factor, axis=-1)


def ref_mixup_graph(input1, grad, indices, block_num, lam, settings, mean=MEAN, std=STD):
  """`mixup_graph` (transport per `settings`): (mixed normalised NCHW, ratio)."""
  batch_size, width = input1.shape[0], input1.shape[-1]
  block_size = width // block_num
  terms = ref_graph_terms(grad, input1, indices, block_num, settings.beta, settings.gamma,
                          settings.neigh_size, mean, std)
  mask = np.stack([ref_graphcut_multi(*(t[i] for t in terms), lam,
                                      settings.beta / block_num / 16, settings.eta,
                                      settings.n_labels) for i in range(batch_size)])
  mask = mask.astype(np.float32)[:, None]
  input2 = input1[indices]
  if settings.transport:
    t_size = min(settings.t_size, block_size)
    if t_size == -1:
      t_block_num, t_size = block_num, block_size
    else:
      t_block_num = width // t_size
      mask = _nearest(mask, t_block_num)
    grad_pool = _pool(grad, t_size)
    unary1 = grad_pool / grad_pool.reshape(batch_size, -1).sum(1).reshape(batch_size, 1, 1)
    input1 = ref_transport_image(input1, ref_mask_transport(mask, unary1, settings.t_eps),
                                 t_block_num, t_size)
    input2 = ref_transport_image(input2, ref_mask_transport(1 - mask, unary1[indices],
                                                            settings.t_eps),
                                 t_block_num, t_size)
  mask = _nearest(mask, width)
  return mask * input1 + (1 - mask) * input2, mask.reshape(batch_size, -1).mean(-1)


# Fixed inputs: a smooth saliency (so that the graph cut has structure) and images.

def _inputs(batch=6, size=32, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  yy, xx = np.mgrid[:size, :size] / size
  centres = rng.uniform(size=(batch, 2, 1, 1))
  sal = (np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * 8)
         + 0.1 * rng.uniform(size=(batch, size, size))).astype(np.float32)
  perm = rng.permutation(batch)
  return images, sal, perm


def _nchw(images):
  return ((images - MEAN) / STD).transpose(0, 3, 1, 2)


def test_saliency_is_the_channel_rms_of_the_gradient_wrt_the_normalised_input():
  images, _, _ = _inputs()
  weights = np.random.default_rng(1).normal(size=images.shape[1:]).astype(np.float32)

  def loss(x):  # A loss of the normalised input x_n: mean_b sum w x_n^2.
    normalised = (x - MEAN) / STD
    return jnp.mean(jnp.sum(weights * normalised ** 2, axis=(1, 2, 3)))

  normalised = (images - MEAN) / STD
  expected = np.sqrt(np.mean((2 * weights * normalised / len(images)) ** 2, axis=-1))
  got = puzzlemix.saliency(jax.grad(loss)(images), STD)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('block_num', puzzlemix.BLOCK_NUMS)
def test_unary_and_pairwise_terms_are_the_official_ones(block_num):
  images, sal, perm = _inputs()
  expected = ref_graph_terms(sal, _nchw(images), perm, block_num, 1.2, 0.5, 4)
  got = puzzlemix.graph_terms(sal, images, perm, block_num, beta=1.2, gamma=0.5,
                              neigh_size=4)
  for name, e, g in zip(('unary_partner', 'unary_self', 'vertical', 'horizontal'), expected,
                        got):
    assert g.shape == e.shape, name
    np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7, err_msg=name)
  # The border terms are not trivial: x and x' differ across borders.
  assert np.abs(expected[2]).max() > 0 and np.abs(expected[3]).max() > 0


@pytest.mark.parametrize('n_labels', (2, 3, 4))
@pytest.mark.parametrize('block_num', (4, 8))
def test_the_labelling_is_the_solvers_on_the_official_problem(block_num, n_labels):
  images, sal, perm = _inputs()
  terms = ref_graph_terms(sal, _nchw(images), perm, block_num, 1.2, 0.5, 4)
  levels = set()
  for lam in (0.2, 0.5, 0.7):
    for i in range(len(images)):
      args = [t[i] for t in terms]
      expected = ref_graphcut_multi(*args, lam, 1.2 / block_num / 16, 0.2, n_labels)
      got = puzzlemix.graph_cut(*args, np.float32(lam), block_num=block_num, beta=1.2,
                                eta=0.2, n_labels=n_labels)
      np.testing.assert_array_equal(got, expected.astype(np.float32))
      levels.update(np.unique(got).tolist())
  assert len(levels) >= 2  # The problems are not all solved by one label.


def test_the_prior_is_minus_log_of_the_binomial_levels():
  np.testing.assert_allclose(puzzlemix.label_prior(0.3, 3),
                             -np.log([0.09 + 1e-8, 0.42 + 1e-8, 0.49 + 1e-8]), rtol=1e-12)
  np.testing.assert_allclose(puzzlemix.label_prior(0.3, 4),
                             -np.log([0.027 + 1e-8, 0.189 + 1e-8, 0.441 + 1e-8, 0.343 + 1e-8]),
                             rtol=1e-10)


def test_the_device_masks_are_the_host_labelling_per_image():
  images, sal, perm = _inputs()
  terms = puzzlemix.graph_terms(sal, images, perm, 8, beta=1.2, gamma=0.5, neigh_size=4)
  got = jax.jit(lambda *t: puzzlemix.graph_cut_masks(*t, block_num=8, beta=1.2, eta=0.2,
                                                     n_labels=3))(*terms, jnp.float32(0.4))
  for i in range(len(images)):
    expected = ref_graphcut_multi(*(np.asarray(t[i]) for t in terms), 0.4, 1.2 / 8 / 16, 0.2, 3)
    np.testing.assert_array_equal(got[i], expected.astype(np.float32))


@pytest.mark.parametrize('side', (2, 4, 8, 16))
def test_the_transport_loop_is_the_official_one(side):
  rng = np.random.default_rng(side)
  masks = rng.choice([0.0, 0.5, 1.0], size=(5, side, side)).astype(np.float32)
  unary = rng.uniform(size=(5, side, side)).astype(np.float32)
  unary /= unary.sum(axis=(1, 2), keepdims=True)
  for eps in (0.8, 0.01, 0.0):
    expected = ref_mask_transport(masks[:, None], unary, eps)
    sources = np.asarray(jax.jit(puzzlemix.transport_sources, static_argnums=2)(masks, unary,
                                                                               eps))
    np.testing.assert_array_equal(_plan(sources), expected)
    assert expected.sum(1).max() <= 1 and expected.sum(2).max() <= 1  # At most one each way.
    assert 0 < (sources >= 0).mean() < 1  # Some blocks move, some destinations stay empty.
  np.testing.assert_array_equal(puzzlemix.grid_cost(side), ref_cost_matrix(side))


def _plan(sources):
  """The official plan [B, N, N] (plan[i, j] = 1: block i moves to j) of `sources`."""
  b, n = sources.shape
  plan = np.zeros((b, n, n), np.float32)
  for k, j in zip(*np.nonzero(sources >= 0)):
    plan[k, sources[k, j], j] = 1
  return plan


def test_moved_blocks_are_the_official_transport_with_empty_blocks_the_mean():
  images, _, _ = _inputs(batch=3, size=16)
  rng = np.random.default_rng(3)
  plan = np.zeros((3, 16, 16), np.float32)
  for b in range(3):  # Some destinations receive nothing.
    sources = rng.permutation(16)[:11]
    plan[b, sources, rng.permutation(16)[:11]] = 1
  expected = ref_transport_image(_nchw(images), plan, 4, 4)
  sources = np.where(plan.sum(1) > 0, plan.argmax(1), -1)
  np.testing.assert_array_equal(_plan(sources), plan)
  got = puzzlemix.transport(images, jnp.asarray(sources), 4, MEAN)
  np.testing.assert_allclose(_nchw(np.asarray(got)), expected, atol=1e-5)


@pytest.mark.parametrize('transport', (True, False))
@pytest.mark.parametrize('block_num', puzzlemix.BLOCK_NUMS)
def test_mixed_images_and_label_weights_are_the_official_ones(block_num, transport):
  images, sal, perm = _inputs()
  settings = configs.override(SETTINGS.copy_and_resolve_references(),
                              {'transport': transport})
  lam = np.float32(0.35)
  expected, ratio = ref_mixup_graph(_nchw(images), sal, perm, block_num, lam, settings)
  mixed, got_ratio = jax.jit(lambda s, x, p, l: puzzlemix.mix_at(
      block_num, s, x, p, l, settings=settings, fill=MEAN))(sal, images, perm, lam)
  np.testing.assert_allclose(_nchw(np.asarray(mixed)), expected, atol=2e-5)
  np.testing.assert_allclose(got_ratio, ratio, rtol=1e-6)
  assert 0 < ratio.mean() < 1  # Both images contribute.
  targets = mixup.mix_labels(got_ratio[:, None], mixup.one_hot(np.arange(6) % 4, 4), perm)
  np.testing.assert_allclose(np.sum(targets, axis=1), 1, rtol=1e-6)


def test_the_grid_size_is_drawn_uniformly_from_the_official_sizes():
  images, sal, perm = _inputs(batch=2)
  settings = SETTINGS.copy_and_resolve_references()
  calls = []
  original = puzzlemix.mix_at

  def spy(block_num, *args, **kwargs):
    calls.append(block_num)
    return original(block_num, *args, **kwargs)

  # Trace once per size; which one runs is decided by the key.
  sizes = []
  for seed in range(40):
    index = jax.random.randint(jax.random.key(seed), (), 0, len(puzzlemix.BLOCK_NUMS))
    sizes.append(puzzlemix.BLOCK_NUMS[int(index)])
  assert set(sizes) == set(puzzlemix.BLOCK_NUMS)
  puzzlemix.mix_at = spy
  try:
    mixed, ratio = puzzlemix.mix(jax.random.key(3), sal, images, perm, np.float32(0.5),
                                 settings=settings, fill=MEAN)
  finally:
    puzzlemix.mix_at = original
  assert calls == list(puzzlemix.BLOCK_NUMS)
  expected, expected_ratio = ref_mixup_graph(_nchw(images), sal, perm, sizes[3],
                                             np.float32(0.5), settings)
  np.testing.assert_allclose(_nchw(np.asarray(mixed)), expected, atol=2e-5)
  np.testing.assert_allclose(ratio, expected_ratio, rtol=1e-6)


def test_a_missing_solver_is_named_with_its_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, 'gco', None)
  config = methods.configure(tiny_config.get_config(), 'puzzlemix')
  with pytest.raises(ImportError, match=r"gco-wrapper.*pip install 'alignmix-jax\[baselines\]'"):
    validation.validate(config, 2)
  validation.validate(tiny_config.get_config(), 2)  # Other methods do not need it.


@pytest.mark.parametrize('fields, message', [
    ({'dataset.image_size': 24}, 'dataset.image_size=24 must be a multiple of 16'),
    ({'mixup.puzzlemix.t_size': 3}, r'mixup.puzzlemix.t_size=3 must divide every block side'),
    ({'mixup.puzzlemix.neigh_size': 0}, 'neigh_size=0 must be a positive integer'),
    ({'mixup.puzzlemix.n_labels': 5}, 'n_labels=5 must be 2, 3 or 4'),
    ({'mixup.puzzlemix.eta': -1.0}, 'eta=-1.0 must be >= 0'),
])
def test_settings_that_cannot_run_are_refused(fields, message):
  config = configs.override(methods.configure(tiny_config.get_config(), 'puzzlemix'), fields)
  with pytest.raises(ValueError, match=message):
    validation.validate(config, 2)


@pytest.mark.parametrize('method', ('alignmix', 'cutmix', 'puzzlemix', 'comixup'))
def test_only_puzzlemix_and_comixup_tables_trace_the_saliency_and_the_graph_cut(method):
  """The other methods' steps are the same programs as before PuzzleMix existed: no host
  callback, no extra gradient."""
  config = methods.configure(tiny_config.get_config(), method)
  _, state, step = helpers.setup_step(config)
  run = parallel.shard_map_step(step, parallel.data_mesh(), donate_state=False)
  text = str(jax.make_jaxpr(run)(state, helpers.batch(config)))
  assert ('pure_callback' in text) == (method in ('puzzlemix', 'comixup'))

