"""The per-device train and eval steps (axis name `batch`) and the train state.

`train_step` is written for one device's share of the batch and communicates only through
collectives over the axis `batch`; `parallel.py` runs it under `jax.jit(jax.shard_map(...))`
(the default) or `jax.pmap`. Per step (Algorithm 1):

  * one mode, drawn from the method's table (`modes.method_table`), and one
    lam ~ Beta(alpha, alpha), both from the replicated state RNG, so every device agrees;
  * one permutation of the device's examples (pairs), from an RNG folded with the device
    index;
  * `lax.switch` on the drawn mode index runs that mode's loss (no host sync);
  * gradients, BatchNorm statistics and metrics averaged over `batch`;
  * a step whose loss or gradients are not finite leaves the state as it was and reports
    `nonfinite = 1`, so a checkpoint never holds a diverged state.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from alignmix_jax import mixup
from alignmix_jax import modes

AXIS = 'batch'


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds: step, parameters, BatchNorm statistics, optimizer state
  and the RNG key (raw uint32 `[2]`) from which every step derives its randomness."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(rng, model, tx, image_shape):
  """Initialises the model (every parameter, decoder included) and the optimizer.

  Args:
    rng: PRNG key.
    model: an `AlignMixNet`.
    tx: the optax transformation (`optim.create_optimizer`).
    image_shape: `(H, W, 3)`.
  """
  init_rng, reparam_rng, state_rng = jax.random.split(rng, 3)
  variables = model.init({'params': init_rng, 'reparam': reparam_rng},
                         jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    rng=state_rng, tx=tx)


def step_settings(config):
  """The static (hashable) settings of the mode functions, from `config.mixup`."""
  return ml_collections.FrozenConfigDict({
      'align': config.mixup.align, 'align_latent': config.mixup.align_latent,
      'sinkhorn_eps': config.mixup.sinkhorn_eps, 'sinkhorn_iters': config.mixup.sinkhorn_iters,
      'reconstruction_weight': config.mixup.reconstruction_weight,
      'kl_weight': config.mixup.kl_weight})


def draw(rng, table, alpha):
  """The mode index, lam and the per-device RNG of the step with key `rng`.

  Shared by all devices: mode ~ the table's probabilities, lam ~ Beta(alpha, alpha).
  """
  mode_rng, lam_rng, device_rng = jax.random.split(rng, 3)
  probabilities = jnp.asarray([weight for _, weight in table], jnp.float32)
  mode = jax.random.categorical(mode_rng, jnp.log(probabilities))
  return mode.astype(jnp.int32), mixup.sample_lam(lam_rng, alpha), device_rng


def _varying(tree):
  """Makes every leaf vary over `batch` (adding a device-dependent zero), so that all
  `lax.switch` branches return the same types under shard_map: a mode that leaves, say,
  the decoder's statistics alone returns them unchanged, hence device-invariant."""
  zero = lax.axis_index(AXIS) * 0
  return jax.tree.map(lambda x: x + zero.astype(x.dtype), tree)


def _all_finite(tree):
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state, batch, *, model, table, settings, alpha, num_classes, schedules):
  """One optimisation step on this device's share of the batch.

  Args:
    state: replicated `TrainState`.
    batch: `{'image': [b, H, W, 3] float32 in [0, 1], 'label': [b] int32, ...}`, b the
      per-device batch.
    model: the `AlignMixNet`.
    table: `((mode, probability), ...)` from `modes.method_table`.
    settings: `step_settings(config)`.
    alpha: lam ~ Beta(alpha, alpha).
    num_classes: K.
    schedules: `{name: schedule}` learning rates to report.

  Returns:
    `(new_state, metrics)`, metrics averaged over the devices: loss, ce, reconstruction, kl,
    lam, mode (index into `table`), nonfinite (0 or 1) and the learning rates.
  """
  images, targets = batch['image'], mixup.one_hot(batch['label'], num_classes)
  mode, lam, device_rng = draw(jax.random.fold_in(state.rng, state.step), table, alpha)
  device_rng = jax.random.fold_in(device_rng, lax.axis_index(AXIS))
  perm_rng, mode_rng, reparam_rng = jax.random.split(device_rng, 3)
  perm = mixup.sample_permutation(perm_rng, images.shape[0])

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}

    def branch(mode_fn):
      def run():
        (loss, aux), updated = model.apply(
            variables, images, targets, lam, perm, mode_rng, settings, method=mode_fn,
            mutable=['batch_stats'], rngs={'reparam': reparam_rng})
        return _varying((loss, (aux, updated['batch_stats'])))
      return run

    return lax.switch(mode, [branch(modes.mode_function(name)) for name, _ in table])

  # Differentiate with respect to a per-device copy of the parameters: the gradient of a
  # device-invariant value under shard_map would already be summed over devices.
  (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      _varying(state.params))
  grads = lax.pmean(grads, AXIS)
  batch_stats = lax.pmean(batch_stats, AXIS)
  loss = lax.pmean(loss, AXIS)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  updated = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  metrics = {'loss': loss, **lax.pmean(aux, AXIS), 'lam': lam, 'mode': mode,
             'nonfinite': 1 - finite.astype(jnp.int32)}
  metrics.update({name: schedule(state.step) for name, schedule in schedules.items()})
  return new_state, metrics


def eval_step(variables, batch, *, model):
  """Counts over the whole (global) batch: `{'correct', 'count', 'loss_sum'}`.

  `batch['mask']` (0 for the padding of the last batch) keeps padded examples out.
  """
  logits = model.apply(variables, batch['image'], train=False)
  mask = batch['mask']
  correct = (jnp.argmax(logits, axis=-1) == batch['label']) * mask
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']) * mask
  return lax.psum({'correct': jnp.sum(correct), 'count': jnp.sum(mask),
                   'loss_sum': jnp.sum(losses)}, AXIS)


def make_train_step(config, model, schedules):
  """`train_step` with the config's static settings bound."""
  table = modes.method_table(config)
  if config.mixup.align_latent and (config.model.latent != 'tensor'
                                    or config.model.autoencoder != 'ae'):
    raise ValueError("mixup.align_latent aligns the tensor Z: it needs model.latent='tensor' "
                     "and model.autoencoder='ae'.")
  return functools.partial(
      train_step, model=model, table=table, settings=step_settings(config),
      alpha=config.mixup.alpha, num_classes=config.dataset.num_classes, schedules=schedules)
