"""Tests of the per-device train step: modes, RNG draws, the losses of every method and
ablation against their formulas, the on-device dispatch, non-finite steps, and the plain
('xla') and CPU forms of the convolutions taking the same steps. (shard_map vs pmap:
test_parallel.py; the method tables: test_methods.py; the settings: test_validation.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

import authors_numpy
import helpers
import test_comixup
import test_mixup
import test_puzzlemix
import tiny_config
from alignmix_jax import configs
from alignmix_jax import methods
from alignmix_jax import models
from alignmix_jax import modes
from alignmix_jax import parallel
from alignmix_jax import puzzlemix
from alignmix_jax import train_step as train_step_lib

NUM_DEVICES = helpers.NUM_DEVICES


def _run(config, steps):
  """`steps` shard_map steps on one fixed batch; returns (model, run, states, metrics)."""
  model, state, step_fn = helpers.setup_step(config)
  mesh = parallel.data_mesh()
  assert mesh.size == NUM_DEVICES
  state = jax.device_put(state, parallel.replicated(mesh))
  batch = jax.device_put(helpers.batch(config), parallel.sharded(mesh))
  run = parallel.shard_map_step(step_fn, mesh, donate_state=False)
  states, history = [state], []
  for _ in range(steps):
    state, metrics = run(state, batch)
    states.append(state)
    history.append(jax.device_get(metrics))
  return model, run, states, history


@pytest.fixture(scope='module')
def five_mode_run():
  """30 steps of AlignMix (all five modes) on one batch; a large alpha keeps lam near 1/2,
  so losses change by learning rather than by the draw."""
  config = tiny_config.with_overrides(**{'mixup.alpha': 200.0})
  return config, *_run(config, steps=30)


def test_each_of_the_five_modes_is_finite_and_falls(five_mode_run):
  config, _, _, _, history = five_mode_run
  names = [name for name, _ in methods.table(config)]
  assert all(np.isfinite(m['loss']) and m['nonfinite'] == 0 for m in history)
  for index, name in enumerate(names):
    losses = [m['loss'] for m in history if int(m['mode']) == index]
    assert len(losses) >= 2, (name, losses)
    assert losses[-1] < 0.8 * losses[0], (name, losses)


def test_the_plain_convolutions_take_the_same_steps(five_mode_run):
  """`model.conv='xla'` (the plain graph GPUs and TPUs run) and 'cpu' (the form XLA:CPU runs
  fast, what 'auto' picks here) take the same five-mode steps: the same draws, metrics,
  parameters, BatchNorm statistics and optimizer state, to float32 round-off."""
  config, model, _, states, history = five_mode_run
  plain = configs.override(config.copy_and_resolve_references(), {'model.conv': 'xla'})
  assert (model.conv_impl, model.encoder.conv_impl) == ('cpu', 'cpu')
  plain_model = models.create_model(plain)
  assert (plain_model.conv_impl, plain_model.encoder.conv_impl) == ('xla', 'xla')
  steps = 6
  _, _, plain_states, plain_history = _run(plain, steps=steps)
  names = [name for name, _ in methods.table(config)]
  drawn = {names[int(m['mode'])] for m in history[:steps]}
  assert 'clean' in drawn and len(drawn) >= 3, drawn  # The decoder and mixed modes ran.
  for step, (cpu, xla) in enumerate(zip(history[:steps], plain_history)):
    assert int(cpu['mode']) == int(xla['mode']) and float(cpu['lam']) == float(xla['lam'])
    for key in ('loss', 'ce', 'reconstruction', 'sinkhorn_row_error'):
      np.testing.assert_allclose(xla[key], cpu[key], rtol=2e-5, atol=1e-6,
                                 err_msg=f'{key}, step {step}')
  for step, (cpu, xla) in enumerate(zip(states[:steps + 1], plain_states)):
    assert int(cpu.step) == int(xla.step) == step
    np.testing.assert_array_equal(cpu.rng, xla.rng)
    for a, b in zip(jax.tree.leaves((cpu.params, cpu.batch_stats, cpu.opt_state)),
                    jax.tree.leaves((xla.params, xla.batch_stats, xla.opt_state))):
      scale = float(np.abs(a).max()) or 1.0
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale, err_msg=f'step {step}')


def _expected_loss(config, model, variables, images, labels, name, lam, perm, box_rng,
                   reparam_rng):
  """One device's loss of mode `name`, written out with plain formulas (Algorithm 1; the
  aligned modes as the authors' code, `authors_numpy`; CutMix as its `rand_bbox`; the KL of
  a VAE in closed form), and the largest row error of its assignments R (0 for modes that
  do not align): `(loss, row_error)`. The model is applied piece by piece
  (`features`, `latent`, `classify`, `decode`), the mixing done here."""
  y = np.eye(config.dataset.num_classes, dtype=np.float32)[labels]
  y_mixed = lam * y + (1 - lam) * y[perm]
  iters, align = config.mixup.sinkhorn_iters, config.mixup.align

  def apply(*args, **kwargs):
    return model.apply(variables, *args, **kwargs)

  def features(x, hook=None):
    return apply(x, True, hook, method='features', mutable=['batch_stats'])[0]

  def latent(a):
    return apply(a, True, method='latent')

  def classify(z):
    return apply(z, True, method='classify', rngs={'reparam': reparam_rng})

  def ce(logits, targets):  # The classification loss: cross-entropy, or PyTorch's BCELoss.
    if config.mixup.classification_loss == 'softmax_bce':
      logits = np.asarray(logits, np.float64)
      p = np.exp(logits - logits.max(1, keepdims=True))
      p /= p.sum(1, keepdims=True)
      return float(-np.mean(targets * np.maximum(np.log(p), -100)
                            + (1 - targets) * np.maximum(np.log(1 - p), -100)))
    return float(np.mean(-np.sum(targets * jax.nn.log_softmax(logits), axis=-1)))

  def mix(a, b):
    return jax.tree.map(lambda u, v: lam * np.asarray(u) + (1 - lam) * np.asarray(v), a, b)

  def partner(tree):
    return jax.tree.map(lambda u: np.asarray(u)[perm], tree)

  def row_error(tensors):
    return max(np.abs(authors_numpy.alignments(tensors[i], tensors[j], iters=iters)[2]
                      .sum(1) - 1).max() for i, j in enumerate(perm))

  if name == 'clean':
    z = latent(features(images))
    loss = ce(classify(z), y)
    if config.model.autoencoder == 'none' or not (config.mixup.reconstruction_weight or (
        config.model.autoencoder == 'vae' and config.mixup.kl_weight)):
      return loss, 0.0
    x_hat = apply(z, True, method='decode', mutable=['batch_stats'],
                  rngs={'reparam': reparam_rng})[0]
    squared = (np.asarray(x_hat, np.float64) - images) ** 2
    reconstruction = float(np.mean(np.sum(squared, axis=(1, 2, 3))
                                   if config.mixup.reconstruction_loss == 'sum'
                                   else squared))
    loss += config.mixup.reconstruction_weight * reconstruction
    if config.model.autoencoder == 'vae':  # KL(N(mean, exp(logvar)) || N(0, I)) per example.
      mean, logvar = (np.asarray(z[k], np.float64).reshape(len(images), -1)
                      for k in ('mean', 'logvar'))
      kl = 0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar, axis=1)
      loss += config.mixup.kl_weight * float(np.mean(kl))
    return loss, 0.0
  if name == 'input':
    return ce(classify(latent(features(mix(images, images[perm])))), y_mixed), 0.0
  if name == 'cutmix':
    mask, lam_box = test_mixup.rand_bbox(box_rng, lam, images.shape[1], images.shape[2])
    pasted = images * (1 - mask) + images[perm] * mask
    return ce(classify(latent(features(pasted))), lam_box * y + (1 - lam_box) * y[perm]), 0.0
  if name == 'puzzlemix':  # The official code's mixup_graph (`test_puzzlemix`).
    mean, std = (np.asarray(v, np.float32) for v in (config.dataset.mean, config.dataset.std))

    def clean_loss(x):  # BatchNorm in eval mode; the gradient is the normalised input's.
      return jnp.mean(-jnp.sum(y * jax.nn.log_softmax(model.apply(variables, x, False)), -1))

    grad = np.asarray(jax.grad(clean_loss)(images)) * std
    sal = np.sqrt(np.mean(grad ** 2, axis=-1))
    block_num = puzzlemix.BLOCK_NUMS[int(jax.random.randint(box_rng, (), 0, 4))]
    mixed, ratio = test_puzzlemix.ref_mixup_graph(
        ((images - mean) / std).transpose(0, 3, 1, 2), sal, perm, block_num, np.float32(lam),
        config.mixup.puzzlemix, mean, std)
    mixed = mixed.transpose(0, 2, 3, 1) * std + mean
    targets = ratio[:, None] * y + (1 - ratio[:, None]) * y[perm]
    return ce(classify(latent(features(jnp.asarray(mixed, jnp.float32)))), targets), 0.0
  if name == 'comixup':  # The official code's clean pass and mixup_process.
    settings = config.mixup.comixup
    std = np.asarray(config.dataset.std, np.float32)
    k = config.dataset.num_classes

    def clean_loss(x):  # Train mode; its gradient also trains (clean_lam > 0).
      logits = classify(latent(features(x)))
      return 2 * settings.clean_lam * jnp.mean(-jnp.sum(y * jax.nn.log_softmax(logits), -1)) / k

    clean, grad = jax.value_and_grad(clean_loss)(images)
    sal = np.sqrt(np.mean((np.asarray(grad) * std) ** 2, axis=-1))
    mixed, targets = test_comixup.ref_mixup_process(images, y, sal, box_rng, settings,
                                                    config.mixup.alpha)
    return float(clean) + ce(classify(latent(features(jnp.asarray(mixed, jnp.float32)))),
                             targets), 0.0
  if name.startswith('layer'):  # Manifold mixup after stage k.
    stage = int(name[5:])
    hook = lambda k, h: mix(h, np.asarray(h)[perm]) if k == stage else h  # pylint: disable=unnecessary-lambda-assignment
    return ce(classify(latent(features(images, hook))), y_mixed), 0.0
  if name == 'latent':
    z = latent(features(images))
    if config.mixup.align_latent:  # (13) on the tensor Z.
      z = np.asarray(z)
      mixed = authors_numpy.aligned_mixup(z, perm, lam, False, iters=iters)
      return ce(classify(jnp.asarray(mixed, jnp.float32)), y_mixed), row_error(z)
    return ce(classify(jax.tree.map(jnp.asarray, mix(z, partner(z)))), y_mixed), 0.0
  assert name in ('feature', 'feature_reversed')  # (13), (14)
  a = np.asarray(features(images), np.float64)
  if not align:  # Both directions are plain feature mixup.
    return ce(classify(latent(jnp.asarray(mix(a, a[perm]), jnp.float32))), y_mixed), 0.0
  mixed = authors_numpy.aligned_mixup(a, perm, lam, name == 'feature_reversed', iters=iters,
                                      barycentric=config.mixup.barycentric_projection)
  return ce(classify(latent(jnp.asarray(mixed, jnp.float32))), y_mixed), row_error(a)


def _draw(rng, step, table, alpha):
  """The step's draw, from its RNG contract: `fold_in(rng, step)` split in three keys for the
  mode (categorical over the table's probabilities), lam (Beta(alpha, alpha), 1 when alpha
  is 0) and the devices."""
  mode_key, lam_key, device_key = jax.random.split(jax.random.fold_in(rng, step), 3)
  mode = jax.random.categorical(mode_key, jnp.log(jnp.asarray([p for _, p in table])))
  lam = jax.random.beta(lam_key, alpha, alpha) if alpha > 0 else 1.0
  return int(mode), float(lam), device_key


def _reference_loss(config, model, state, batch):
  """The step's draw and loss recomputed outside the step, device by device."""
  table = methods.table(config)
  mode, lam, device_rng = _draw(state.rng, state.step, table, config.mixup.alpha)
  shards = jax.tree.map(lambda x: np.split(x, NUM_DEVICES), batch)
  variables = jax.device_get(state.variables())
  losses, row_errors = [], []
  for device in range(NUM_DEVICES):
    perm_rng, box_rng, reparam_rng = jax.random.split(jax.random.fold_in(device_rng, device),
                                                      3)
    images = shards['image'][device]
    perm = np.asarray(jax.random.permutation(perm_rng, images.shape[0]))
    loss, row_error = _expected_loss(config, model, variables, images,
                                     shards['label'][device], table[mode][0], lam, perm,
                                     box_rng, reparam_rng)
    losses.append(loss)
    row_errors.append(row_error)
  return mode, lam, float(np.mean(losses)), max(row_errors)


def _ablation(method='alignmix', **fields):
  return lambda: configs.override(methods.configure(tiny_config.get_config(), method),
                                     fields)


_FEATURES = (0.0, 0.0, 0.0, 1.0, 1.0)  # The two feature modes.
ABLATIONS = {  # Table 5's variants, bfloat16, and the baselines' tables.
    'vae': _ablation(**{'model.autoencoder': 'vae', 'mixup.mode_weights': (1.0, 0, 1.0, 0, 0)}),
    'tensor_latent_aligned': _ablation(**{
        'model.latent': 'tensor', 'mixup.align_latent': True, 'model.feature_resolution': 4,
        'mixup.mode_weights': (0, 0, 1.0, 0, 0)}),
    'unaligned': _ablation(**{'mixup.align': False, 'mixup.mode_weights': _FEATURES}),
    'features_pooled_1x1': _ablation(**{'model.feature_resolution': 1,
                                        'mixup.mode_weights': _FEATURES}),
    'features_4x4_last_stride_removed': _ablation(**{'model.feature_resolution': 4,
                                                     'mixup.mode_weights': _FEATURES}),
    'bfloat16': _ablation(**{'model.dtype': 'bfloat16'}),
    'alignmix_official': _ablation('alignmix_official'),
    'input_mixup': _ablation('input_mixup'),
    'manifold_mixup': _ablation('manifold_mixup'),
    'cutmix': _ablation('cutmix'),
    'puzzlemix': _ablation('puzzlemix'),
    'comixup': _ablation('comixup', **{'mixup.comixup.part': 4}),  # 8 per device: 4 + 4.
}


@pytest.mark.parametrize('name', sorted(ABLATIONS))
def test_ablations_and_baselines_take_the_step_their_formulas_give(name):
  """A few steps of each variant: the drawn mode, lam and loss (and the plan's row error)
  equal the recomputation from the RNG contract and the formulas (`_expected_loss`)."""
  config = ABLATIONS[name]()
  model, _, states, history = _run(config, steps=4)
  batch = helpers.batch(config)
  tolerance = 3e-2 if name == 'bfloat16' else 2e-4
  for state, metrics in zip(states, history):
    mode, lam, loss, row_error = _reference_loss(config, model, state, batch)
    assert int(metrics['mode']) == mode
    np.testing.assert_allclose(metrics['lam'], lam, rtol=1e-6)
    np.testing.assert_allclose(metrics['loss'], loss, rtol=tolerance)
    np.testing.assert_allclose(metrics['sinkhorn_row_error'], row_error,
                               rtol=10 * tolerance, atol=1e-5)
  assert np.isfinite([m['loss'] for m in history]).all()


def test_the_step_applies_the_mode_and_lam_the_rng_drew(five_mode_run):
  config, model, _, states, history = five_mode_run
  batch = helpers.batch(config)
  drawn = []
  for state, metrics in zip(states[:8], history[:8]):
    mode, lam, loss, row_error = _reference_loss(config, model, state, batch)
    assert int(metrics['mode']) == mode
    np.testing.assert_allclose(metrics['lam'], lam, rtol=1e-6)
    np.testing.assert_allclose(metrics['loss'], loss, rtol=2e-4)
    np.testing.assert_allclose(metrics['sinkhorn_row_error'], row_error, rtol=1e-3, atol=1e-5)
    drawn.append(mode)
  assert len(set(drawn)) >= 3, drawn  # The draw really varies between steps.


@pytest.mark.parametrize('barycentric', [False, True])
def test_feature_steps_are_the_authors_alignment_and_report_its_row_error(barycentric):
  """(13) and (14) through the step, one plan per pair (the authors' loop, at the tiny
  config's 10 iterations), with or without the barycentric projection; the metric is the
  plan's largest row error."""
  config = tiny_config.with_overrides(**{
      'mixup.mode_weights': (0, 0, 0, 1.0, 1.0),
      'mixup.barycentric_projection': barycentric})
  model, run, states, history = _run(config, steps=4)
  batch = helpers.batch(config)
  names = set()
  for state, metrics in zip(states, history):
    mode, lam, loss, row_error = _reference_loss(config, model, state, batch)
    assert int(metrics['mode']) == mode
    np.testing.assert_allclose(metrics['loss'], loss, rtol=2e-4)
    np.testing.assert_allclose(metrics['sinkhorn_row_error'], row_error, rtol=1e-3)
    names.add(mode)
  assert names == {0, 1}  # Both directions ran.
  # Even this width-4 network's features (2x2 A): the iterations leave rows of R off by
  # far more than round-off.
  assert min(m['sinkhorn_row_error'] for m in history) > 1e-3


def test_reconstruction_is_reported_and_falls_in_clean_steps(five_mode_run):
  config, _, _, _, history = five_mode_run
  names = [name for name, _ in methods.table(config)]
  for metrics in history:
    clean = names[int(metrics['mode'])] == 'clean'
    assert (metrics['reconstruction'] > 0) == clean
  reconstruction = [m['reconstruction'] for m in history if m['reconstruction'] > 0]
  assert reconstruction[-1] < reconstruction[0]  # The decoder learns too.


def test_a_nonfinite_step_leaves_the_state_unchanged(five_mode_run):
  config, _, run, states, _ = five_mode_run
  mesh = parallel.data_mesh()
  batch = helpers.batch(config)
  batch['image'][0, 0, 0, 0] = np.nan
  state = states[-1]
  new_state, metrics = run(state, jax.device_put(batch, parallel.sharded(mesh)))
  assert int(metrics['nonfinite']) == 1
  assert int(new_state.step) == int(state.step)
  for new, old in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(new, old)


def test_a_step_whose_updated_weights_are_not_finite_leaves_the_state_unchanged(
    five_mode_run):
  """Finite loss and gradients, but an optimizer state that makes the update infinite (as a
  learning rate of 1e38 would): nothing of the step is applied."""
  config, _, run, states, _ = five_mode_run
  mesh = parallel.data_mesh()
  state = states[-1]
  state = state.replace(opt_state=jax.tree.map(
      lambda x: x + np.inf if jnp.issubdtype(x.dtype, jnp.floating) else x, state.opt_state))
  new_state, metrics = run(state, jax.device_put(helpers.batch(config),
                                                 parallel.sharded(mesh)))
  assert np.isfinite(float(metrics['loss']))
  assert int(metrics['nonfinite']) == 1
  assert int(new_state.step) == int(state.step)
  for new, old in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(new, old)


def test_the_mode_draw_follows_the_table_probabilities():
  table = (('a', 0.5), ('b', 0.25), ('c', 0.25))
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  drawn = jax.vmap(lambda k: train_step_lib.draw(k, table, 2.0)[0])(keys)
  np.testing.assert_allclose(np.bincount(np.asarray(drawn)) / 4000, [0.5, 0.25, 0.25],
                             atol=0.03)
  assert jnp.issubdtype(drawn.dtype, jnp.integer)


def test_the_drawn_mode_equals_the_step_of_that_mode_alone():
  """The on-device dispatch (a `lax.switch` at each mixing point, the decoder under
  `lax.cond`) takes the same step as a table holding only the drawn mode."""
  config = tiny_config.get_config()
  _, state, step_fn = helpers.setup_step(config)
  mesh = parallel.data_mesh()
  batch = jax.device_put(helpers.batch(config, seed=2), parallel.sharded(mesh))
  run = parallel.shard_map_step(step_fn, mesh, donate_state=False)
  names = [name for name, _ in methods.table(config)]
  alone_runs = {}  # Mode name -> the step of a table holding that mode only.
  current = jax.device_put(state, parallel.replicated(mesh))
  for _ in range(12):
    updated, metrics = run(current, batch)
    name = names[int(metrics['mode'])]
    if name not in alone_runs:
      alone = tiny_config.with_overrides(**{
          'mixup.mode_weights': tuple(float(n == name) for n in modes.FIVE_MODES)})
      alone_runs[name] = parallel.shard_map_step(helpers.setup_step(alone)[2], mesh, donate_state=False)
    expected, expected_metrics = alone_runs[name](current, batch)
    for key in ('loss', 'ce', 'reconstruction', 'lam'):
      np.testing.assert_allclose(metrics[key], expected_metrics[key], rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves((updated.params, updated.batch_stats)),
                    jax.tree.leaves((expected.params, expected.batch_stats))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    current = updated
  assert 'clean' in alone_runs and len(alone_runs) >= 3, alone_runs  # Decoder ran, and not.


def test_loss_if_gives_the_loss_and_gradients_of_the_taken_branch_only():
  """`_loss_if` (the decoder's gated forward and backward) against plain autodiff, with a
  pytree input (the VAE's latent is `{'mean', 'logvar'}`)."""
  mesh = parallel.data_mesh()
  params = {'w': jnp.arange(6.0).reshape(2, 3) / 10}
  inputs = {'mean': jnp.ones((4, 2)), 'logvar': jnp.full((4, 2), 0.5)}

  def loss_fn(params, inputs):
    h = jnp.tanh((inputs['mean'] + jnp.exp(inputs['logvar'])) @ params['w'])
    return jnp.mean(h**2), jnp.sum(h, axis=0)

  def outer(params, inputs, pred):
    """A loss around the gated one, so the cotangent reaching it is not 1."""
    loss, aux = train_step_lib._loss_if(pred, loss_fn, params, inputs,  # pylint: disable=protected-access
                                        skipped=jnp.full((3,), -1.0))
    return 3.0 * loss + jnp.sum(params['w']), aux

  def per_device(pred):
    (value, aux), grads = jax.value_and_grad(outer, argnums=(0, 1), has_aux=True)(
        train_step_lib._varying(params), train_step_lib._varying(inputs), pred)  # pylint: disable=protected-access
    return lax.pmean((value, aux, grads), parallel.AXIS)

  run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(), out_specs=P()))
  for pred in (True, False):
    value, aux, grads = run(jnp.asarray(pred))

    def expected_outer(params, inputs, pred=pred):
      loss, aux = loss_fn(params, inputs) if pred else (0.0, jnp.full((3,), -1.0))
      return 3.0 * loss + jnp.sum(params['w']), aux

    (expected_value, expected_aux), expected_grads = jax.value_and_grad(
        expected_outer, argnums=(0, 1), has_aux=True)(params, inputs)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_allclose(aux, expected_aux, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_table_mixing_comixup_with_clean_steps_takes_the_steps_their_formulas_give(
    monkeypatch):
  """Co-Mixup beside another mode: its pass runs under a `lax.cond` only in the steps that
  draw it; each step's loss is the formulas'."""
  mixed = methods.Method('clean_and_comixup_test_only', 'Clean + Co-Mixup', 'both',
                         lambda config: (('clean', 1.0), ('comixup', 1.0)),
                         methods.get('comixup').fields)
  monkeypatch.setitem(methods._REGISTRY, mixed.name, mixed)  # pylint: disable=protected-access
  config = configs.override(methods.configure(tiny_config.get_config(), mixed.name),
                            {'mixup.comixup.part': 4})
  model, _, states, history = _run(config, steps=6)
  batch = helpers.batch(config)
  assert {int(m['mode']) for m in history} == {0, 1}
  for state, metrics in zip(states, history):
    mode, _, loss, _ = _reference_loss(config, model, state, batch)
    assert int(metrics['mode']) == mode
    np.testing.assert_allclose(metrics['loss'], loss, rtol=2e-4)
