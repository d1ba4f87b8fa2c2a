"""Tests of alignmix_jax.state: the train state of a config (what `config.seed` initialises,
replicated over a mesh or not), its abstract form (a restore target) and the optimizer it
carries (`steps_per_epoch` places the learning-rate decays), against independent
references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny_config
from alignmix_jax import models
from alignmix_jax import parallel
from alignmix_jax import state as state_lib


def _arrays(state):
  """The state's arrays; `tx` (static) aside."""
  return (state.step, state.params, state.batch_stats, state.opt_state, state.rng)


@pytest.fixture(scope='module')
def tiny_states():
  """`(config, replicated over the 2-device mesh, unreplicated)` of the tiny setting."""
  config = tiny_config.get_config()
  return (config, state_lib.create_train_state(config, parallel.data_mesh()),
          state_lib.create_train_state(config))


def test_the_replicated_state_is_the_unreplicated_one_on_every_device(tiny_states):
  _, replicated, single = tiny_states
  mesh = parallel.data_mesh()
  assert jax.tree.structure(_arrays(replicated)) == jax.tree.structure(_arrays(single))
  for got, want in zip(jax.tree.leaves(_arrays(replicated)), jax.tree.leaves(_arrays(single))):
    assert got.sharding == parallel.replicated(mesh)
    assert len(got.addressable_shards) == mesh.size
    assert got.dtype == want.dtype and got.shape == want.shape
    for shard in got.addressable_shards:
      np.testing.assert_array_equal(shard.data, want)
    assert want.sharding.device_set == {jax.devices()[0]}  # The default device.


def test_the_initial_state_is_the_models_init_from_the_seed(tiny_states):
  config, _, state = tiny_states
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
  init_key, reparam_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  np.testing.assert_array_equal(state.rng, state_key)
  model = models.create_model(config)
  variables = model.init({'params': init_key, 'reparam': reparam_key},
                         jnp.zeros((1, 16, 16, 3)), train=False)
  assert sorted(state.params) == ['classifier', 'decoder', 'encoder', 'latent_encoder']
  for name in ('params', 'batch_stats'):
    expected = variables[name]
    got = getattr(state, name)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # SGD with momentum starts with zero traces, one per parameter.
  traces = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim > 0]
  assert len(traces) == len(jax.tree.leaves(state.params))
  assert all(not np.asarray(trace).any() for trace in traces)
  assert state.variables() == {'params': state.params, 'batch_stats': state.batch_stats}
  other = state_lib.create_train_state(tiny_config.with_overrides(seed=1))
  assert not np.array_equal(jax.tree.leaves(other.params)[0], jax.tree.leaves(state.params)[0])


def test_the_abstract_state_has_the_tree_shapes_and_dtypes_and_computes_nothing(tiny_states):
  config, replicated, _ = tiny_states
  mesh = parallel.data_mesh()
  abstract = state_lib.abstract_train_state(config, mesh)
  assert jax.tree.structure(_arrays(abstract)) == jax.tree.structure(_arrays(replicated))
  for shape, leaf in zip(jax.tree.leaves(_arrays(abstract)),
                         jax.tree.leaves(_arrays(replicated))):
    assert isinstance(shape, jax.ShapeDtypeStruct)
    assert (shape.shape, shape.dtype) == (leaf.shape, leaf.dtype)
    assert shape.sharding == parallel.replicated(mesh)
  wider = state_lib.abstract_train_state(tiny_config.with_overrides(**{'model.width': 8}), mesh)
  assert (wider.params['encoder']['conv1']['kernel'].shape[-1]
          == 2 * abstract.params['encoder']['conv1']['kernel'].shape[-1])


def _torch_sgd(param, grads, rates, momentum, weight_decay):
  """PyTorch's SGD (dampening 0, no Nesterov) in NumPy: the parameter after each step."""
  param, buf, out = np.asarray(param, np.float64), None, []
  for grad, rate in zip(grads, rates):
    d = grad + weight_decay * param
    buf = d if buf is None else momentum * buf + d
    param = param - rate * buf
    out.append(param)
  return out


def _updates(state, grads):
  """The state's optimizer applied to `grads` (one tree per step): the params per step and
  the updates per step."""
  params, opt_state = state.params, state.opt_state
  all_params, all_updates = [], []
  for grad in grads:
    updates, opt_state = state.tx.update(grad, opt_state, params)
    params = optax.apply_updates(params, updates)
    all_params.append(params)
    all_updates.append(updates)
  return all_params, all_updates


def test_steps_per_epoch_places_the_learning_rate_decay_of_the_states_optimizer():
  """decay_epochs=(1,) with 3 steps per epoch: steps 0-2 at the base rate, from step 3 at
  0.1 times it. Plain SGD: the update at step 3 is 0.1 times the one at step 2 for the same
  gradient; with momentum and weight decay: PyTorch's SGD with those rates."""
  plain = tiny_config.with_overrides(**{
      'optimizer.decay_epochs': (1,), 'optimizer.decay_factor': 0.1,
      'optimizer.momentum': 0.0, 'optimizer.weight_decay': 0.0})
  lr = plain.optimizer.learning_rate
  state = state_lib.create_train_state(plain, steps_per_epoch=3)
  grad = jax.tree.map(lambda p: jnp.full_like(p, 0.5), state.params)
  _, updates = _updates(state, [grad] * 5)
  for step, scale in enumerate([1, 1, 1, 0.1, 0.1]):
    for leaf in jax.tree.leaves(updates[step]):
      np.testing.assert_allclose(leaf, -lr * scale * 0.5, rtol=1e-6, err_msg=f'step {step}')
  one_epoch_a_step = state_lib.create_train_state(plain)  # steps_per_epoch=1: decay at 1.
  _, updates = _updates(one_epoch_a_step, [grad] * 2)
  np.testing.assert_allclose(jax.tree.leaves(updates[1])[0], -lr * 0.1 * 0.5, rtol=1e-6)

  config = tiny_config.with_overrides(**{'optimizer.decay_epochs': (1,),
                                         'optimizer.decay_factor': 0.1})
  momentum, weight_decay = config.optimizer.momentum, config.optimizer.weight_decay
  assert (momentum, weight_decay) == (0.9, 1e-4)
  state = state_lib.create_train_state(config, steps_per_epoch=3)
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), state.params)
           for _ in range(5)]
  params, _ = _updates(state, grads)
  rates = [lr if step < 3 else 0.1 * lr for step in range(5)]
  leaves = jax.tree.leaves(state.params)
  for index, leaf in enumerate(leaves):
    expected = _torch_sgd(leaf, [jax.tree.leaves(g)[index] for g in grads], rates, momentum,
                          weight_decay)
    for step in range(5):
      np.testing.assert_allclose(jax.tree.leaves(params[step])[index], expected[step],
                                 rtol=1e-5, atol=1e-6, err_msg=f'leaf {index}, step {step}')
