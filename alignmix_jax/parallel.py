"""Data parallelism: a 1-D device mesh with axis `batch`, and the two ways to run a
per-device step on it.

* `shard_map_step` (the default): `jax.jit(jax.shard_map(step))`. The state is a replicated
  global array, the batch a global array sharded over `batch`; works on one or many hosts.
* `pmap_step`: `jax.pmap(step, axis_name='batch')` on the local devices, for comparison and
  for code that still expects pmap's stacked leading axis (`replicate`, `split_batch`).

Both run the same per-device function (`train_step.train_step`, `train_step.eval_step`).
"""

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alignmix_jax.train_step import AXIS


def data_mesh(devices=None):
  """A 1-D mesh over `devices` (default: every device of every process), axis `batch`."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def sharded(mesh):
  return NamedSharding(mesh, P(AXIS))


def shard_map_step(step, mesh, *, donate_state=True):
  """jit(shard_map(step)): `(state replicated, batch sharded) -> (state, metrics)`, both
  outputs replicated."""
  mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


def shard_map_eval(step, mesh):
  """jit(shard_map(eval step)): `(variables replicated, batch sharded) -> replicated sums`."""
  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P()))


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
