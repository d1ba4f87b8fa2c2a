"""Tests of alignmix_jax.parallel: the 1-D `batch` mesh, global arrays and batches, and the
two ways to run a per-device step on it (shard_map and pmap), against NumPy and each other.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

import helpers
import tiny_config
from alignmix_jax import methods
from alignmix_jax import parallel

NUM_DEVICES = helpers.NUM_DEVICES


def test_the_mesh_has_one_axis_batch_over_every_device():
  mesh = parallel.data_mesh()
  assert parallel.AXIS == 'batch' and mesh.axis_names == ('batch',)
  assert mesh.size == NUM_DEVICES == jax.device_count()
  assert list(mesh.devices) == jax.devices()
  one = parallel.data_mesh(jax.devices()[1:])
  assert one.size == 1 and list(one.devices) == [jax.devices()[1]]
  assert parallel.replicated(mesh).spec == P() and parallel.sharded(mesh).spec == P('batch')
  assert parallel.replicated(mesh).mesh == mesh == parallel.sharded(mesh).mesh


def test_global_array_is_whole_on_every_device_or_split_along_the_first_axis():
  mesh = parallel.data_mesh()
  value = np.arange(24, dtype=np.float32).reshape(4, 6)
  whole = parallel.global_array(value, mesh)
  assert whole.sharding.spec == P() and len(whole.addressable_shards) == NUM_DEVICES
  for shard in whole.addressable_shards:
    np.testing.assert_array_equal(shard.data, value)
  split = parallel.global_array(value, mesh, P(parallel.AXIS))
  np.testing.assert_array_equal(np.asarray(split), value)
  shards = sorted(split.addressable_shards, key=lambda shard: shard.index[0].start)
  assert [shard.device for shard in shards] == jax.devices()  # In the mesh's order.
  for device, shard in enumerate(shards):
    np.testing.assert_array_equal(shard.data, value[2 * device:2 * device + 2])


def test_global_batches_assembles_sharded_arrays_in_order():
  mesh = jax.make_mesh((jax.device_count(),), ('batch',))
  local = [{'image': np.full((2 * jax.local_device_count(), 3), step, np.float32),
            'label': np.arange(2 * jax.local_device_count(), dtype=np.int32)}
           for step in range(5)]
  result = list(parallel.global_batches(iter(local), mesh, prefetch=2))
  assert [np.asarray(batch['image'])[0, 0] for batch in result] == [0, 1, 2, 3, 4]
  assert result[0]['image'].shape == (2 * jax.device_count(), 3)
  assert result[0]['label'].sharding.spec == jax.sharding.PartitionSpec('batch')
  assert np.array_equal(np.asarray(result[3]['label']), local[3]['label'])
  with pytest.raises(ValueError, match="axis named 'batch'"):
    parallel.global_batches(iter(local), jax.make_mesh((1,), ('data',)))


def test_global_batches_transfers_prefetch_batches_ahead():
  """With `prefetch` k, batch i is handed out once batch i + k has been taken from the host
  iterator (and put on the devices); none when k is 0."""
  mesh = parallel.data_mesh()
  taken = []

  def host_batches():
    for step in range(4):
      taken.append(step)
      yield {'x': np.full((NUM_DEVICES,), step, np.float32)}

  for prefetch in (0, 2):
    taken.clear()
    seen = []
    for batch in parallel.global_batches(host_batches(), mesh, prefetch=prefetch):
      seen.append((int(np.asarray(batch['x'])[0]), len(taken)))
    assert seen == [(step, min(step + 1 + prefetch, 4)) for step in range(4)], prefetch
  with pytest.raises(ValueError, match='prefetch must be >= 0'):
    parallel.global_batches(host_batches(), mesh, prefetch=-1)


def _sum_step(state, resident, batch):
  """A per-device step: the state plus the global batch's sum and the resident's; metrics
  replicated by collectives (the per-device batch size, device 1's first value)."""
  total = lax.psum(jnp.sum(batch), parallel.AXIS)
  metrics = {'local_rows': lax.pmax(jnp.float32(batch.shape[0]), parallel.AXIS),
             'second_device_first': lax.psum(
                 jnp.where(lax.axis_index(parallel.AXIS) == 1, batch[0, 0], 0.0),
                 parallel.AXIS)}
  return state + total + jnp.sum(resident), metrics


def test_shard_map_step_replicates_the_state_and_splits_the_batch():
  mesh = parallel.data_mesh()
  host_batch = np.arange(16, dtype=np.float32).reshape(8, 2)
  resident = np.array([0.5, 1.5], np.float32)
  run = parallel.shard_map_step(_sum_step, mesh, num_replicated=1)
  state = parallel.global_array(np.float32(1.0), mesh)
  batch = parallel.global_array(host_batch, mesh, P(parallel.AXIS))
  new_state, metrics = run(state, parallel.global_array(resident, mesh), batch)
  assert float(new_state) == 1.0 + host_batch.sum() + resident.sum()
  assert new_state.sharding.spec == P()  # Replicated outputs.
  assert float(metrics['local_rows']) == 8 / NUM_DEVICES  # Each device: its half.
  assert float(metrics['second_device_first']) == host_batch[8 // NUM_DEVICES, 0]
  assert state.is_deleted()  # The state is donated by default ...
  kept = parallel.global_array(np.float32(1.0), mesh)
  parallel.shard_map_step(_sum_step, mesh, donate_state=False, num_replicated=1)(
      kept, parallel.global_array(resident, mesh), batch)
  assert not kept.is_deleted() and float(kept) == 1.0  # ... unless told not to.


def test_global_steps_stack_k_batches_split_along_the_batch_axis():
  mesh = parallel.data_mesh()
  local = {'x': np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)}  # K=3 steps, B=4.
  inputs = parallel.global_steps(local, mesh)
  assert inputs['x'].shape == (3, 4, 2) and inputs['x'].sharding.spec == parallel.STEPS_SPEC
  np.testing.assert_array_equal(np.asarray(inputs['x']), local['x'])
  for shard in inputs['x'].addressable_shards:  # Every step's rows, split over devices.
    device = jax.devices().index(shard.device)
    rows = slice(device * 4 // NUM_DEVICES, (device + 1) * 4 // NUM_DEVICES)
    np.testing.assert_array_equal(shard.data, local['x'][:, rows])


def test_shard_map_steps_runs_the_steps_in_order_and_stacks_their_metrics():
  mesh = parallel.data_mesh()
  host = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3, 8, 2)
  resident = parallel.global_array(np.array([0.5, 1.5], np.float32), mesh)
  run = parallel.shard_map_steps(
      lambda state, res, batch: _sum_step(state * 2, res, batch), mesh, num_replicated=1)
  state, metrics = run(parallel.global_array(np.float32(1.0), mesh), resident,
                       parallel.global_steps(host, mesh))
  expected = 1.0
  for batch in host:  # In order: the state doubles before each step's sum is added.
    expected = expected * 2 + batch.sum() + 2.0
  assert float(state) == expected and state.sharding.spec == P()
  np.testing.assert_array_equal(metrics['local_rows'], [8 / NUM_DEVICES] * 3)
  np.testing.assert_array_equal(metrics['second_device_first'], host[:, 8 // NUM_DEVICES, 0])


@pytest.mark.parametrize('method', ['alignmix', 'puzzlemix', 'comixup'])
def test_shard_map_steps_runs_k_steps_in_one_dispatch_as_k_single_steps(method):
  """The five-mode step with the autoencoder (and PuzzleMix and Co-Mixup, whose graph cuts
  are host callbacks), 6 steps over 2 devices: one dispatch of 4 and one of 2 give the states and
  metrics of 6 single steps, bit for bit."""
  config = methods.configure(tiny_config.get_config(), method)
  _, state, step_fn = helpers.setup_step(config)
  mesh = parallel.data_mesh()
  host = [helpers.batch(config, seed=seed) for seed in range(6)]
  single = parallel.shard_map_step(step_fn, mesh, donate_state=False)
  steps = parallel.shard_map_steps(lambda s, _, b: step_fn(s, b), mesh, donate_state=False,
                                   num_replicated=1)
  one_state = jax.device_put(state, parallel.replicated(mesh))
  one_metrics = []
  for batch in host:
    one_state, metrics = single(one_state, jax.device_put(batch, parallel.sharded(mesh)))
    one_metrics.append(jax.device_get(metrics))
  k_state = jax.device_put(state, parallel.replicated(mesh))
  k_metrics = []
  for chunk in (host[:4], host[4:]):
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *chunk)
    k_state, metrics = steps(k_state, (), parallel.global_steps(stacked, mesh))
    k_metrics.append(jax.device_get(metrics))
  k_metrics = jax.tree.map(lambda *xs: np.concatenate(xs), *k_metrics)
  if method == 'alignmix':
    assert len(set(int(m['mode']) for m in one_metrics)) > 1  # Several modes were drawn.
  for name in one_metrics[0]:
    np.testing.assert_array_equal(k_metrics[name], [m[name] for m in one_metrics], name)
  for one, k in zip(jax.tree.leaves(jax.device_get(one_state)),
                    jax.tree.leaves(jax.device_get(k_state)), strict=True):
    np.testing.assert_array_equal(one, k)


def test_steps_per_dispatch_resolves_zero_by_backend():
  assert parallel.steps_per_dispatch(5) == 5
  assert parallel.steps_per_dispatch(0) == parallel.DEFAULT_STEPS_PER_DISPATCH['cpu'] == 1
  assert parallel.steps_per_dispatch(0, 'gpu') == parallel.DEFAULT_STEPS_PER_DISPATCH['gpu']
  assert parallel.steps_per_dispatch(0, 'tpu') == parallel.DEFAULT_STEPS_PER_DISPATCH['tpu']


def test_pmap_layout_replicate_and_split_batch():
  tree = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': np.int32(4)}
  stacked = parallel.replicate(tree)
  assert stacked['w'].shape == (NUM_DEVICES, 2, 3) and stacked['step'].shape == (NUM_DEVICES,)
  for device in range(NUM_DEVICES):
    np.testing.assert_array_equal(stacked['w'][device], tree['w'])
  assert parallel.replicate(tree, 3)['w'].shape == (3, 2, 3)
  batch = {'image': np.arange(24, dtype=np.float32).reshape(6, 2, 2), 'label': np.arange(6)}
  split = parallel.split_batch(batch, 2)
  np.testing.assert_array_equal(split['image'][1], batch['image'][3:])  # Device 1: rows 3-5.
  np.testing.assert_array_equal(split['label'], [[0, 1, 2], [3, 4, 5]])
  with pytest.raises(ValueError, match='Batch of 6 does not split over 4 devices'):
    parallel.split_batch(batch, 4)
  state, metrics = parallel.pmap_step(lambda s, b: _sum_step(s, jnp.zeros(()), b))(
      parallel.replicate(np.float32(1.0)), parallel.split_batch(np.ones((4, 1), np.float32),
                                                                 NUM_DEVICES))
  np.testing.assert_array_equal(state, [5.0] * NUM_DEVICES)  # 1 + the 4 ones, on each device.
  np.testing.assert_array_equal(metrics['local_rows'], [2.0] * NUM_DEVICES)


@pytest.mark.parametrize('method, weights', [
    ('alignmix', (0, 0, 0, 1.0, 0)), ('alignmix', (1.0, 0, 0, 0, 0)), ('alignmix', (1.0,) * 5),
    ('puzzlemix', ()), ('comixup', ())],
    ids=['feature', 'clean_with_decoder', 'five_modes', 'puzzlemix', 'comixup'])
def test_shard_map_and_pmap_run_the_same_step(method, weights):
  config = methods.configure(tiny_config.get_config(), method)
  if weights:
    config.mixup.mode_weights = weights
  _, state, step_fn = helpers.setup_step(config)
  batch = helpers.batch(config, seed=1)
  mesh = parallel.data_mesh()
  sharded_run = parallel.shard_map_step(step_fn, mesh, donate_state=False)
  pmapped_run = parallel.pmap_step(step_fn, donate_state=False)

  s_state = jax.device_put(state, parallel.replicated(mesh))
  s_batch = jax.device_put(batch, parallel.sharded(mesh))
  p_state = parallel.replicate(state)
  p_batch = parallel.split_batch(batch, NUM_DEVICES)
  for _ in range(3):
    s_state, s_metrics = sharded_run(s_state, s_batch)
    p_state, p_metrics = pmapped_run(p_state, p_batch)
    for name in ('loss', 'ce', 'lam', 'mode'):
      np.testing.assert_allclose(p_metrics[name][0], s_metrics[name], rtol=1e-5)
      np.testing.assert_allclose(p_metrics[name][1], s_metrics[name], rtol=1e-5)
  s_leaves = jax.tree.leaves((s_state.params, s_state.batch_stats))
  p_leaves = jax.tree.leaves((p_state.params, p_state.batch_stats))
  assert int(s_state.step) == 3 and int(p_state.step[0]) == 3
  for s_leaf, p_leaf in zip(s_leaves, p_leaves):
    np.testing.assert_allclose(p_leaf[0], s_leaf, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(p_leaf[0], p_leaf[1])
