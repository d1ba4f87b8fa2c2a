"""Data parallelism: a 1-D device mesh with axis `batch`, and the ways to run a per-device
step on it.

* `shard_map_step` (the default): `jax.jit(jax.shard_map(step))`. The state is a replicated
  global array, the batch a global array sharded over `batch`; works on one or many hosts.
* `shard_map_steps`: the same step K times in one dispatch (`lax.scan` over inputs
  `[K, B, ...]`), the same function as K calls of `shard_map_step`; what the training loop
  runs (`config.steps_per_dispatch`, `steps_per_dispatch`), since a step that is short on
  an accelerator is otherwise bound by the host's per-dispatch overhead.
* `pmap_step`: `jax.pmap(step, axis_name='batch')` on the local devices, for comparison and
  for code that still expects pmap's stacked leading axis (`replicate`, `split_batch`).

All run the same per-device function (`train_step.train_step`).
Host data becomes global arrays with `global_array` (every process holds it whole),
`global_batches` (each process holds its part of every batch) or `global_steps` (each
process holds its part of K stacked batches).
"""

import collections

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'batch'  # The mesh axis of data parallelism, and the collectives' axis name.
STEPS_SPEC = P(None, AXIS)  # Inputs of K steps, `[K, B, ...]`: the batch axis split.

# Train steps per dispatch when `config.steps_per_dispatch` is 0, by backend
# (docs/training.md has the measurements). On the CPU one step (tens to hundreds of ms)
# dwarfs the dispatch; on accelerators a step of a few ms is bound by it.
DEFAULT_STEPS_PER_DISPATCH = {'cpu': 1, 'gpu': 16, 'tpu': 16}


def data_mesh(devices=None):
  """A 1-D mesh over `devices` (default: every device of every process), axis `batch`."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def sharded(mesh):
  return NamedSharding(mesh, P(AXIS))


def shard_map_step(step, mesh, *, donate_state=True, num_replicated=0):
  """jit(shard_map(step)): `(state, *replicated, batch) -> (state, metrics)`.

  The state and `num_replicated` further arguments (e.g. a device-resident dataset,
  `alignmix_jax.data`) are replicated, the batch is sharded over `batch`; both outputs are
  replicated.
  """
  return _jit_shard_map(step, mesh, P(AXIS), donate_state, num_replicated)


def shard_map_steps(step, mesh, *, donate_state=True, num_replicated=0):
  """jit(shard_map(scan(step))): `(state, *replicated, inputs) -> (state, metrics)` for K
  steps in one dispatch.

  `inputs` stacks the batches of K consecutive steps, `[K, B, ...]` (split over `batch` on
  their second axis: `global_steps`); the steps run in order in a `lax.scan` on the
  devices, and each metric comes back stacked, `[K]`. K is the inputs' leading size, so
  each K compiles once. The same function as K calls of `shard_map_step`: the step's
  random draws depend on the state's step counter alone.
  """
  def steps(state, *args):
    replicated, inputs = args[:-1], args[-1]
    return lax.scan(lambda carry, x: step(carry, *replicated, x), state, inputs)
  return _jit_shard_map(steps, mesh, STEPS_SPEC, donate_state, num_replicated)


def _jit_shard_map(step, mesh, batch_spec, donate_state, num_replicated):
  in_specs = (P(),) * (1 + num_replicated) + (batch_spec,)
  mapped = jax.shard_map(step, mesh=mesh, in_specs=in_specs, out_specs=(P(), P()))
  return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


def steps_per_dispatch(value, backend=None):
  """`config.steps_per_dispatch` resolved: `value`, or for 0 the default of `backend`
  (default: JAX's default backend) in `DEFAULT_STEPS_PER_DISPATCH`."""
  if value:
    return int(value)
  backend = backend or jax.default_backend()
  return DEFAULT_STEPS_PER_DISPATCH.get(backend, DEFAULT_STEPS_PER_DISPATCH['gpu'])


def global_array(value, mesh, spec=P()):
  """A host array that every process holds whole -> a global array with `spec` on the mesh
  (replicated by default; `P(AXIS)` splits its first dimension over the devices)."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec),
                                      lambda index: value[index])


def global_batches(batches, mesh, prefetch=2):
  """Per-process numpy batches -> global `jax.Array`s sharded over the mesh axis 'batch'.

  Each process passes its own batches (first dimension b); the global arrays have first
  dimension b * process_count, split over the devices of the 'batch' axis
  (`jax.make_array_from_process_local_data`). `prefetch` batches are transferred ahead of
  the one being used.
  """
  if AXIS not in mesh.axis_names:
    raise ValueError(f"The mesh needs an axis named '{AXIS}' (axes: {mesh.axis_names}).")
  if prefetch < 0:
    raise ValueError(f'prefetch must be >= 0 (got {prefetch}).')
  sharding = sharded(mesh)

  def transferred():
    queue = collections.deque()
    for batch in batches:
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x), batch))
      if len(queue) > prefetch:
        yield queue.popleft()
    yield from queue

  return transferred()


def global_steps(local, mesh):
  """Per-process numpy inputs of K steps, `[K, b, ...]` -> global arrays `[K, b *
  process_count, ...]` split over `batch` on their second axis (for `shard_map_steps`)."""
  sharding = NamedSharding(mesh, STEPS_SPEC)

  def transfer(x):
    x = np.asarray(x)
    shape = (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:])
    return jax.make_array_from_process_local_data(sharding, x, shape)
  return jax.tree.map(transfer, local)


def pmap_step(step, *, donate_state=True):
  """pmap(step, axis_name='batch'): arguments and outputs carry a leading device axis."""
  return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,) if donate_state else ())


def replicate(tree, num_devices=None):
  """Stacks `tree` once per local device: pmap's layout of a replicated value."""
  num_devices = num_devices or jax.local_device_count()
  return jax.tree.map(lambda x: np.stack([np.asarray(x)] * num_devices), tree)


def split_batch(batch, num_devices):
  """`[B, ...]` -> `[num_devices, B / num_devices, ...]` for pmap."""
  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(f'Batch of {x.shape[0]} does not split over {num_devices} devices.')
    return x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])
  return jax.tree.map(split, batch)
