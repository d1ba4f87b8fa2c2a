"""The train state: what a checkpoint holds, and the one place that creates it.

  state = state_lib.create_train_state(config, mesh, steps_per_epoch=390)
  shapes = state_lib.abstract_train_state(config, mesh)   # a restore target, no compute

The model (`models.create_model(config)`) and the optimizer (`optim.create_optimizer`)
come from the config; the RNG from `config.seed`. Every caller (the training loop,
checkpoint restore, evaluation, the benchmarks, the tests) builds its state here.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from alignmix_jax import models
from alignmix_jax import optim
from alignmix_jax import parallel


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds: step, parameters, BatchNorm statistics, optimizer state
  and the RNG key (raw uint32 `[2]`) from which every step derives its randomness; `tx`,
  the optax transformation, is static."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


def image_shape(config):
  """`(H, W, 3)` of the images the model of `config` takes."""
  return (config.dataset.image_size, config.dataset.image_size, 3)


def initial_state(rng, model, tx, shape):
  """The state at step 0 (traceable): every parameter initialised (decoder included) from
  `rng`, the optimizer state of `tx`. `shape` is `(H, W, 3)`."""
  init_rng, reparam_rng, state_rng = jax.random.split(rng, 3)
  variables = model.init({'params': init_rng, 'reparam': reparam_rng},
                         jnp.zeros((1, *shape), jnp.float32), train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    rng=state_rng, tx=tx)


def _initializer(config, steps_per_epoch):
  model = models.create_model(config)
  tx, _ = optim.create_optimizer(config.optimizer, steps_per_epoch)
  return lambda rng: initial_state(rng, model, tx, image_shape(config))


def create_train_state(config, mesh=None, *, steps_per_epoch=1):
  """The initial state of `config` (`config.seed`), replicated over `mesh` (None: on the
  default device).

  `steps_per_epoch` places the learning-rate decays (`config.optimizer.decay_epochs`) of
  the state's optimizer; the loop passes the dataset's, anything else may leave it at 1.
  """
  init = _initializer(config, steps_per_epoch)
  shardings = None if mesh is None else parallel.replicated(mesh)
  return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed))


def abstract_train_state(config, mesh):
  """The shapes, dtypes and shardings (replicated over `mesh`) of `config`'s train state,
  computing nothing: the target of a checkpoint restore."""
  shapes = jax.eval_shape(_initializer(config, 1), jax.random.PRNGKey(0))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      shapes)
