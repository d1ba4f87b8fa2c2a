"""Co-Mixup against a NumPy transcription of the official code (snu-mllab/Co-Mixup:
`match.py` `get_onehot_matrix`, `graphcut_wrapper`, `graphcut_multi`, `resolve_label`,
`obj_fn`, `mix_input`; `mixup.py` `mixup_process`; `main.py` the compatibility), written as
that code computes, its random draws (initial labels, Dirichlet prior) given."""

import gco
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import tiny_config
from alignmix_jax import comixup
from alignmix_jax import configs
from alignmix_jax import methods
from alignmix_jax import validation

SETTINGS = configs.load('digits').mixup.comixup  # The official CIFAR-100 settings.


# The reference.

def ref_obj_fn(cost_matrix, mask_onehot, beta, gamma):
  n_output, height, width, n_input = mask_onehot.shape
  mask_idx_sum = mask_onehot.reshape(n_output, height * width, n_input).sum(1)
  loss = 0
  loss += np.sum(cost_matrix.transpose(1, 2, 0)[None] * mask_onehot)
  loss += beta / 2 * (((mask_onehot[:, :-1, :, :] - mask_onehot[:, 1:, :, :]) ** 2).sum()
                      + ((mask_onehot[:, :, :-1, :] - mask_onehot[:, :, 1:, :]) ** 2).sum())
  loss += gamma * (np.sum(mask_idx_sum.sum(0) ** 2) - np.sum(mask_idx_sum ** 2))
  return loss


def ref_resolve_label(assigned_label_total):
  add_cost = np.zeros_like(assigned_label_total)
  dist = np.minimum(np.abs(assigned_label_total[:, None] - assigned_label_total[None]).sum(-1),
                    1.0)
  coincide = np.triu(1. - dist, 1)
  for i1, i2 in np.argwhere(coincide):
    nonzeros = np.flatnonzero(assigned_label_total[i1])
    if len(nonzeros) == 1:
      continue
    add_cost[i1][nonzeros[0]] = 1.
    add_cost[i2][nonzeros[1]] = 1.
  return add_cost


def ref_graphcut_multi(cost, beta=1, n_label=0, add_idx=None):
  height, width, n_input = cost.shape
  unary = np.ascontiguousarray(cost)
  pairwise = (np.ones((n_input, n_input), np.float32) - np.eye(n_input, dtype=np.float32))
  if n_label == 2:
    pairwise[-1, :-1][add_idx] = 0.25
    pairwise[:-1, -1][add_idx] = 0.25
  elif n_label == 3:
    pairwise[-3:, :-3][:, add_idx] = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25],
                                               [1, 0.25, 0.25]])
    pairwise[:-3, -3:][add_idx, :] = np.array([[0.25, 0.25, 1], [0.25, 1, 0.25],
                                               [1, 0.25, 0.25]])
  cost_v = beta * np.ones((height - 1, width), np.float32)
  cost_h = beta * np.ones((height, width - 1), np.float32)
  return gco.cut_grid_graph(unary, pairwise, cost_v, cost_h, algorithm='swap')


def ref_graphcut_wrapper(cost_penalty, label_count, n_input, height, width, beta, iter_idx):
  assigned_label = label_count > 0
  n_label = int(assigned_label.sum()) if iter_idx > 0 else 0
  if n_label == 2:
    cost_add = cost_penalty[:, :, assigned_label].mean(-1, keepdims=True) - np.float32(5e-4)
    cost_penalty = np.concatenate([cost_penalty, cost_add], -1)
    mask_idx = ref_graphcut_multi(cost_penalty, beta=beta, n_label=2, add_idx=assigned_label)
    onehot = np.eye(n_input + 1, dtype=np.float32)[mask_idx].reshape(height, width, -1)
    idx_matrix = np.zeros([1, 1, n_input], np.float32)
    idx_matrix[:, :, assigned_label] = 0.5
    return onehot[:, :, :n_input] + onehot[:, :, n_input:] * idx_matrix
  if n_label >= 3:
    soft_label = np.array([[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], np.float32)
    indices = np.argsort(-label_count, kind='stable')[:3]  # torch.topk(k=3); ties: first.
    assigned_label = np.zeros_like(assigned_label)
    assigned_label[indices] = True
    cost_add = cost_penalty[:, :, assigned_label] @ soft_label - np.float32(5e-4)
    cost_penalty = np.concatenate([cost_penalty, cost_add], -1)
    mask_idx = ref_graphcut_multi(cost_penalty, beta=beta, n_label=3, add_idx=assigned_label)
    onehot = np.eye(n_input + 3, dtype=np.float32)[mask_idx].reshape(height, width, -1)
    idx_matrix = np.zeros([3, n_input], np.float32)
    idx_matrix[:, assigned_label] = soft_label
    return onehot[:, :, :n_input] + onehot[:, :, n_input:] @ idx_matrix
  mask_idx = ref_graphcut_multi(cost_penalty, beta=beta)
  return np.eye(n_input, dtype=np.float32)[mask_idx].reshape(height, width, n_input)


def ref_get_onehot_matrix(cost_matrix, A, n_output, alpha, init, beta=0.32, gamma=1., eta=0.05,
                          thres=0.84, thres_type='hard', set_resolve=True, niter=3):
  """`get_onehot_matrix`, its Dirichlet draw `alpha` and initial labels `init` given."""
  cost_matrix = cost_matrix.copy()
  n_input, height, width = cost_matrix.shape
  thres = thres * height * width
  beta = beta / height / width
  gamma = gamma / height / width
  eta = eta / height / width
  add_cost = None
  cost_matrix -= np.float32(eta) * np.log(alpha.reshape(n_input, 1, 1) + np.float32(1e-8))
  mask_onehot = np.eye(n_input, dtype=np.float32)[init.reshape(-1)].reshape(
      n_output, height, width, n_input)
  # The objective in float64 (the official: float32 on the GPU), for the stopping test.
  loss_prev = ref_obj_fn(cost_matrix.astype(np.float64), mask_onehot.astype(np.float64), beta,
                         gamma)
  penalty = np.eye(n_input, dtype=np.float32)[init.reshape(-1)].sum(0).reshape(-1, 1, 1)
  for iter_idx in range(niter):
    for i in range(n_output):
      label_count = mask_onehot[i].reshape([height * width, n_input]).sum(0)
      penalty -= label_count.reshape(-1, 1, 1)
      if thres_type == 'hard':
        modular_penalty = (2 * gamma * ((A @ penalty.squeeze() > thres).astype(np.float32)
                                        * A @ penalty.squeeze())).reshape(-1, 1, 1)
      else:
        modular_penalty = (2 * gamma * ((A @ penalty.squeeze() > thres).astype(np.float32)
                                        * (A @ penalty.squeeze() - thres))).reshape(-1, 1, 1)
      if add_cost is not None:
        cost_penalty = (cost_matrix + modular_penalty
                        + gamma * add_cost[i].reshape(-1, 1, 1)).transpose(1, 2, 0)
      else:
        cost_penalty = (cost_matrix + modular_penalty).transpose(1, 2, 0)
      mask_onehot[i] = ref_graphcut_wrapper(cost_penalty.astype(np.float32), label_count,
                                            n_input, height, width, beta, iter_idx)
      penalty += mask_onehot[i].reshape([height * width, n_input]).sum(0).reshape(-1, 1, 1)
    if iter_idx == niter - 2 and set_resolve:
      assigned_label_total = (mask_onehot.reshape(n_output, -1, n_input).sum(1) > 0).astype(
          np.float32)
      add_cost = ref_resolve_label(assigned_label_total)
    loss = ref_obj_fn(cost_matrix.astype(np.float64), mask_onehot.astype(np.float64), beta,
                      gamma)
    if abs(loss_prev - loss) / abs(loss) < 1e-6:
      break
    loss_prev = loss
  return mask_onehot


def ref_compatibility(sc):
  """main.py: the L1 distance of the most salient 8 x 8 windows (stride 1)."""
  b, h, w = sc.shape
  z = np.stack([[[sc[k, i:i + 8, j:j + 8].mean() for j in range(w - 7)] for i in range(h - 7)]
                for k in range(b)])
  z_idx_1d = z.reshape(b, -1).argmax(1)
  z_idx_2d = np.stack([z_idx_1d // z.shape[-1], z_idx_1d % z.shape[-1]], 1).astype(np.float32)
  return np.abs(z_idx_2d[:, None] - z_idx_2d[None]).sum(-1)


def ref_mix_input(mask_onehot, input_sp, target_reweighted):
  """`mix_input`: NHWC images here (the official is NCHW; the mix is per pixel)."""
  n_output, height, width, n_input = mask_onehot.shape
  factor = input_sp.shape[1] // height
  mask_im = mask_onehot.repeat(factor, 1).repeat(factor, 2)
  output = np.sum(mask_im[..., None] * input_sp.transpose(1, 2, 0, 3)[None], axis=3)
  mask_target = mask_onehot @ target_reweighted
  target = mask_target.reshape(n_output, height * width, -1).sum(-2)
  return output, target / target.sum(-1, keepdims=True)


def ref_mixup_process(images, targets, sal, key, settings, alpha):
  """`mixup_process` over a batch of NHWC images, in groups of `settings.part`, with the
  draws of `comixup.mix_at`'s RNG contract (group k: `split(fold_in(key, k + 2))` gives the
  initial labels' and the prior's keys)."""
  distance = ref_compatibility(sal)
  side = settings.block_num
  block = images.shape[1] // side
  outputs, mixed_targets = [], []
  for k, start in enumerate(range(0, len(images), settings.part)):
    part = slice(start, start + settings.part)
    n = len(images[part])
    sc = sal[part].reshape(n, side, block, side, block).mean((2, 4))
    cost = -(sc / sc.reshape(n, -1).sum(1).reshape(n, 1, 1))
    a_dist = distance[part, part]
    compat = (1 - settings.omega) * np.eye(n) + settings.omega * (a_dist / a_dist.sum() * n)
    init_key, prior_key = jax.random.split(jax.random.fold_in(key, k + 2))
    prior = np.asarray(jax.random.dirichlet(prior_key, jnp.full((n,), alpha)))
    init = np.asarray(jax.random.randint(init_key, (n, side, side), 0, n))
    masks = ref_get_onehot_matrix(cost.astype(np.float32), compat.astype(np.float32), n, prior,
                                  init, beta=settings.beta, gamma=settings.gamma,
                                  eta=settings.eta, thres=settings.thres,
                                  thres_type=settings.thres_type,
                                  set_resolve=settings.set_resolve, niter=settings.niter)
    output, target = ref_mix_input(masks, images[part], targets[part])
    outputs.append(output)
    mixed_targets.append(target)
  return np.concatenate(outputs), np.concatenate(mixed_targets)


def _problem(n=6, side=4, seed=0):
  rng = np.random.default_rng(seed)
  sal = np.exp(rng.normal(size=(n, side, side))).astype(np.float32)  # A few salient blocks.
  cost = -sal / sal.sum((1, 2), keepdims=True)
  distance = rng.integers(0, 20, size=(n, n)).astype(np.float32)
  distance = np.triu(distance, 1) + np.triu(distance, 1).T
  compat = ((1 - 0.05) * np.eye(n) + 0.05 * distance / distance.sum() * n).astype(np.float32)
  prior = rng.dirichlet(np.full(n, 2.0)).astype(np.float32)
  init = rng.integers(0, n, size=(n, side, side))
  return cost, compat, prior, init


@pytest.mark.parametrize('thres_type', comixup.THRES_TYPES)
@pytest.mark.parametrize('seed', range(4))
def test_the_labelling_is_the_official_one(seed, thres_type):
  cost, compat, prior, init = _problem(seed=seed)
  kwargs = dict(beta=0.32, gamma=1.0, eta=0.05, thres=0.83 if seed % 2 else 0.6,
                thres_type=thres_type, set_resolve=True, niter=4)
  expected = ref_get_onehot_matrix(cost, compat, len(cost), prior, init, **kwargs)
  got = comixup.labelling(cost, compat, prior, init, **kwargs)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_allclose(got.sum(-1), 1)  # Each block's weights sum to 1.


def test_the_problems_reach_the_mixed_labels_and_the_resolve_step():
  """The fixed problems above exercise the even mixes of two and of three inputs."""
  levels, most = set(), 0
  for seed in range(4):
    cost, compat, prior, init = _problem(seed=seed)
    masks = comixup.labelling(cost, compat, prior, init, beta=0.32, gamma=1.0, eta=0.05,
                              thres=0.83, thres_type='hard', set_resolve=True, niter=4)
    levels.update(np.unique(masks).tolist())
    used = (masks.reshape(len(masks), -1, masks.shape[-1]).sum(1) > 0).sum(1)
    most = max(most, used.max())
  assert most >= 3 and 0.5 in levels  # Outputs of three inputs: the three-way mixes.
  used = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
  np.testing.assert_array_equal(comixup._resolve(used), ref_resolve_label(used))  # pylint: disable=protected-access
  assert comixup._resolve(used)[:2].sum() == 2  # pylint: disable=protected-access


def test_compatibility_is_the_l1_distance_of_the_most_salient_windows():
  rng = np.random.default_rng(4)
  sal = rng.uniform(size=(5, 16, 16)).astype(np.float32)
  np.testing.assert_array_equal(comixup.compatibility(sal), ref_compatibility(sal))


def test_the_mix_is_the_official_mix_input():
  rng = np.random.default_rng(5)
  images = rng.uniform(size=(6, 16, 16, 3)).astype(np.float32)
  targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]
  cost, compat, prior, init = _problem(seed=1)
  masks = comixup.labelling(cost, compat, prior, init, beta=0.32, gamma=1.0, eta=0.05,
                            thres=0.83, thres_type='hard', set_resolve=True, niter=4)
  expected, expected_targets = ref_mix_input(masks, images, targets)
  up = comixup.puzzlemix.upsample(jnp.asarray(masks), 4)
  got = jnp.einsum('ohwi,ihwc->ohwc', up, images, precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  mixed = masks.reshape(6, -1, 6).sum(1) @ targets
  np.testing.assert_allclose(mixed / mixed.sum(-1, keepdims=True), expected_targets, rtol=1e-6)


@pytest.mark.parametrize('batch', (6, 26))
def test_a_batch_is_mixed_group_by_group_as_the_official_code(batch):
  """`mix` on a batch in groups of `part` (26 = 20 + 6): images and targets as the official
  `mixup_process` with the same draws (`ref_mixup_process`)."""
  rng = np.random.default_rng(batch)
  images = rng.uniform(size=(batch, 16, 16, 3)).astype(np.float32)
  targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
  sal = rng.gamma(2.0, size=(batch, 16, 16)).astype(np.float32)
  key = jax.random.key(batch)
  mixed, mixed_targets = jax.jit(lambda *a: comixup.mix(*a, settings=SETTINGS, alpha=2.0))(
      key, sal, images, targets)
  expected, expected_targets = ref_mixup_process(images, targets, sal, key, SETTINGS, 2.0)
  np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed_targets, expected_targets, rtol=1e-5)
  np.testing.assert_allclose(np.sum(mixed_targets, 1), 1, rtol=1e-6)
  assert np.abs(mixed - images).max() > 0.1  # The outputs are mixes, not the inputs.


@pytest.mark.parametrize('fields, message', [
    ({'mixup.comixup.part': 1}, r'mixup.comixup.part=1 must be an integer >= 2'),
    ({'mixup.comixup.part': 5}, 'leave a group of 1'),
    ({'mixup.comixup.block_num': 3}, 'a 3 x 3 grid needs dataset.image_size=16'),
    ({'mixup.comixup.thres_type': 'sharp'}, "thres_type='sharp'; valid: hard, soft"),
    ({'mixup.comixup.niter': 0}, 'niter=0 must be an integer >= 1'),
    ({'mixup.comixup.gamma': -1.0}, 'gamma=-1.0 must be >= 0'),
])
def test_settings_that_cannot_run_are_refused(fields, message):
  config = configs.override(methods.configure(tiny_config.get_config(), 'comixup'), fields)
  with pytest.raises(ValueError, match=message):
    validation.validate(config, 1)  # Tiny: 16 examples on one device.

def test_an_even_mix_wins_a_tie_by_its_discount():
  """Two used inputs of about equal cost: their even mix costs 5e-4 less than their mean,
  so every block takes it rather than the cheaper input (the official `graphcut_wrapper`)."""
  cost = np.zeros((2, 2, 3), np.float32)
  cost[..., 0] = -0.25
  cost[..., 1] = -0.2499
  counts = np.array([2.0, 2.0, 0.0], np.float32)
  expected = ref_graphcut_wrapper(cost, counts, 3, 2, 2, 0.02, iter_idx=1)
  got = comixup._label_output(cost, counts, 0.02, mixing=True)  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(got, np.broadcast_to([0.5, 0.5, 0.0], (2, 2, 3)))


def test_a_method_drawing_both_puzzlemix_and_comixup_is_refused(monkeypatch):
  both = methods.Method('both_test_only', 'Both', 'PuzzleMix and Co-Mixup',
                        lambda config: (('puzzlemix', 1.0), ('comixup', 1.0)))
  monkeypatch.setitem(methods._REGISTRY, both.name, both)  # pylint: disable=protected-access
  config = methods.configure(tiny_config.get_config(), both.name)
  with pytest.raises(ValueError, match='both_test_only draws both PuzzleMix and Co-Mixup'):
    validation.validate(config, 2)

