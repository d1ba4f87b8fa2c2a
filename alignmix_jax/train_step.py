"""The per-device train step (axis name `batch`).

`train_step` is written for one device's share of the batch and communicates only through
collectives over the axis `batch`; `parallel.py` runs it under `jax.jit(jax.shard_map(...))`
(the default) or `jax.pmap`. Per step (Algorithm 1):

  * one mode, drawn from the method's table (`methods.table`), and one
    lam ~ Beta(alpha, alpha), both from the replicated state RNG, so every device agrees;
  * one permutation of the device's examples (pairs), from an RNG folded with the device
    index;
  * for PuzzleMix and Co-Mixup, the saliency (one more forward and backward) and their
    mixed images and targets, before the network (`premixed_inputs`); Co-Mixup's clean
    loss (official `clean_lam > 0`) adds its gradients;
  * one pass through the network, x -E-> A -e-> z -g-> logits, with a `lax.switch` on the
    drawn mode index at each mixing point (the stages of E, A, z, the targets) choosing
    among the operations the table's modes need there (`modes`); the decoder runs in clean
    steps only. No host sync; the network is traced once, not once per mode;
  * gradients, BatchNorm statistics and metrics averaged over `batch`;
  * a step whose loss, gradients or updated state (parameters, BatchNorm statistics,
    optimizer state) are not finite leaves the state as it was and reports `nonfinite = 1`,
    so a checkpoint never holds a diverged state."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from alignmix_jax import alignment
from alignmix_jax import comixup
from alignmix_jax import losses
from alignmix_jax import methods
from alignmix_jax import mixup
from alignmix_jax import modes as modes_lib
from alignmix_jax import puzzlemix
from alignmix_jax.parallel import AXIS


def step_settings(config):
  """The static (hashable) settings of the step, from `config.mixup`."""
  return ml_collections.FrozenConfigDict({
      'sinkhorn_eps': config.mixup.sinkhorn_eps, 'sinkhorn_iters': config.mixup.sinkhorn_iters,
      'barycentric_projection': config.mixup.barycentric_projection,
      'reconstruction_weight': config.mixup.reconstruction_weight,
      'reconstruction_loss': config.mixup.reconstruction_loss,
      'classification_loss': config.mixup.classification_loss,
      'kl_weight': config.mixup.kl_weight, 'puzzlemix': config.mixup.puzzlemix,
      'comixup': config.mixup.comixup, 'alpha': config.mixup.alpha})


def draw(rng, table, alpha):
  """The mode index, lam and the per-device RNG of the step with key `rng`.

  Shared by all devices: mode ~ the table's probabilities, lam ~ Beta(alpha, alpha).
  """
  mode_rng, lam_rng, device_rng = jax.random.split(rng, 3)
  probabilities = jnp.asarray([weight for _, weight in table], jnp.float32)
  mode = jax.random.categorical(mode_rng, jnp.log(probabilities))
  return mode.astype(jnp.int32), mixup.sample_lam(lam_rng, alpha), device_rng


def _varying(tree):
  """Makes every leaf vary over `batch` (adds a device-dependent zero). Used for a
  per-device copy of the parameters (so that their gradient is per device, then averaged)
  and for `lax.cond` branches, which must return the same types under shard_map (the
  branch that skips the decoder returns its statistics unchanged, hence invariant)."""
  zero = lax.axis_index(AXIS) * 0
  return jax.tree.map(lambda x: x + zero.astype(x.dtype), tree)


def _all_finite(tree):
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _dispatch(mode, modes, op_of, operations):
  """The operation `op_of(modes[mode])`, chosen on the device among the distinct ones.

  Returns a callable; a `lax.switch` on `mode` when the modes need several operations.
  """
  names = sorted({op_of(m) for m in modes})
  if len(names) == 1:
    return operations[names[0]]
  index = jnp.asarray([names.index(op_of(m)) for m in modes], jnp.int32)[mode]
  return lambda *args: lax.switch(index, [operations[name] for name in names], *args)


def _loss_if(pred, loss_fn, params, inputs, *, skipped):
  """`loss_fn(params, inputs) = (loss, aux)` where `pred`, else `(0, skipped)`, decided on
  the device, with the forward AND backward of `loss_fn` in one `lax.cond`.

  Differentiating through a `lax.cond` around `loss_fn` keeps every activation of `loss_fn`
  as a residual of the cond, zero-filled when `pred` is false: for the decoder, 75 MB per
  step at digits size, and 8x that at width 64, batch 128. Here the cond returns the loss
  and its gradients (the size of `params` and `inputs`), and the backward scales them by the
  loss's cotangent. `aux` gets no gradient.
  """

  def run(params, inputs):
    def taken():
      return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(params, inputs)

    def not_taken():
      return ((jnp.float32(0), skipped), jax.tree.map(jnp.zeros_like, (params, inputs)))

    return lax.cond(pred, lambda: _varying(taken()), lambda: _varying(not_taken()))

  @jax.custom_vjp
  def gated(params, inputs):
    return run(params, inputs)[0]

  def backward(gradients, cotangents):
    loss_cotangent = cotangents[0]
    return jax.tree.map(lambda g: g * loss_cotangent, gradients)

  gated.defvjp(run, backward)
  return gated(params, inputs)


def _operations(lam, perm, box_rng, settings, reverse=False, premixed=None):
  """The operations at a mixing point, on activations `[B, ...]` or pytrees of them.

  Each returns `(h, row_error)`: the mixed activations and `alignment.row_error` of the
  assignments R it solved (0 for the operations that align nothing). `reverse` (a bool, or
  a boolean scalar decided on the device) makes ALIGN (14) instead of (13). `premixed`: the
  `Premixed` inputs whose images PUZZLEMIX and COMIXUP hand in.
  """
  def aligned(h):
    mixed, weights = mixup.aligned_feature_mix(
        lam, h, perm, reverse=reverse, eps=settings.sinkhorn_eps,
        num_iters=settings.sinkhorn_iters, barycentric=settings.barycentric_projection)
    return mixed, alignment.row_error(weights)

  def unaligned(operation):
    # The zero varies over `batch` like the aligned branches' errors (lax.switch types).
    return lambda h: (operation(h), _varying(jnp.float32(0)))

  return {
      modes_lib.KEEP: unaligned(lambda h: h),
      modes_lib.MIXUP: unaligned(lambda h: mixup.mix_with_partner(lam, h, perm)),
      modes_lib.CUTMIX: unaligned(lambda h: mixup.cutmix(box_rng, lam, h, perm)[0]),
      modes_lib.ALIGN: aligned,
      **{op: unaligned(lambda h: h if premixed is None else premixed.images)
         for op in modes_lib.PREMIXED},
  }


def _target_op(mode):
  """How a mode mixes the targets (the same operation names as the activations)."""
  if mode.clean:
    return modes_lib.KEEP
  if mode.layer_op in (modes_lib.CUTMIX, *modes_lib.PREMIXED):
    return mode.layer_op
  return modes_lib.MIXUP


class Premixed(NamedTuple):
  """What a method that mixes before the network (PuzzleMix, Co-Mixup) hands the step.

  images: the mixed x `[B, H, W, C]`, handed in at stage 0; targets: their targets
  `[B, K]`; clean_loss: the loss of the clean pass that gave the saliency, when it trains
  the network too (Co-Mixup's `clean_lam > 0`), else 0; grads: its gradients (or None);
  batch_stats: the BatchNorm statistics after that pass (the state's otherwise).
  """
  images: Any
  targets: Any
  clean_loss: Any
  grads: Any
  batch_stats: Any


def premixed_inputs(params, batch_stats, images, targets, *, mode, modes, lam, perm, rng,
                    model, settings):
  """The `Premixed` inputs of the table's PuzzleMix or Co-Mixup mode, or None when it has
  neither; computed only in steps that draw it (a `lax.cond` otherwise).

  The saliency is the input gradient of the mean cross-entropy of the current network: with
  BatchNorm in eval mode and no gradient into the weights (PuzzleMix, and Co-Mixup with
  `clean_lam = 0`), or, for Co-Mixup with `clean_lam > 0` as its official code, in train
  mode with the loss `2 clean_lam CE / K` whose gradients the step adds to the mixed loss's
  (one backward gives both).
  """
  chosen = [m.layer_op in modes_lib.PREMIXED for m in modes]
  if not any(chosen):
    return None
  op = next(m.layer_op for m in modes if m.layer_op in modes_lib.PREMIXED)
  clean_weight = settings.comixup.clean_lam if op == modes_lib.COMIXUP else 0.0
  num_classes = targets.shape[-1]
  # A per-device copy, as in `train_step` (the custom-VJP convolutions need it).
  params, batch_stats = _varying((params, batch_stats))

  def clean_pass():
    if clean_weight:
      def loss(params, x):
        logits, updated = model.apply({'params': params, 'batch_stats': batch_stats}, x, True,
                                      mutable=['batch_stats'],
                                      rngs={'reparam': jax.random.fold_in(rng, 7)})
        ce = losses.cross_entropy(logits, targets)
        return 2 * clean_weight * ce / num_classes, dict(updated['batch_stats'])

      (value, stats), (grads, input_grad) = jax.value_and_grad(
          loss, argnums=(0, 1), has_aux=True)(params, images)
      return value, grads, stats, input_grad

    def loss(x):
      logits = model.apply({'params': params, 'batch_stats': batch_stats}, x, False)
      return losses.cross_entropy(logits, targets)

    return jnp.float32(0), None, batch_stats, jax.grad(loss)(images)

  def run():
    value, grads, stats, input_grad = clean_pass()
    sal = puzzlemix.saliency(input_grad, model.std)
    if op == modes_lib.PUZZLEMIX:
      mixed, ratio = puzzlemix.mix(rng, sal, images, perm, lam, settings=settings.puzzlemix,
                                   fill=model.mean)
      mixed_targets = mixup.mix_labels(ratio[:, None], targets, perm)
    else:
      mixed, mixed_targets = comixup.mix(rng, sal, images, targets, settings=settings.comixup,
                                         alpha=settings.alpha)
    return Premixed(mixed, mixed_targets, _varying(value), grads, stats)

  if all(chosen):
    return run()
  shapes = jax.eval_shape(run)
  unmixed = Premixed(images, targets, _varying(jnp.float32(0)),
                     None if shapes.grads is None else jax.tree.map(jnp.zeros_like, params),
                     batch_stats)
  return lax.cond(jnp.asarray(chosen)[mode], run, lambda: unmixed)


def mode_loss(params, batch_stats, images, targets, *, mode, lam, perm, box_rng,
              reparam_rng, model, modes, settings, premixed=None):
  """The loss of the drawn `mode` (an index into `modes`) on this device's examples
  (`premixed`: `premixed_inputs`, for PuzzleMix and Co-Mixup).

  Returns:
    `(loss, (aux, batch_stats))`: aux holds ce (the classification loss,
    `settings.classification_loss`), reconstruction and kl (0 outside clean
    steps, and where their weights are 0: then the decoder does not run) and
    sinkhorn_row_error (`alignment.row_error` over this device's pairs in steps that align,
    else 0), batch_stats the updated BatchNorm statistics.
  """
  variables = {'params': params, 'batch_stats': batch_stats}
  operations = _operations(lam, perm, box_rng, settings, premixed=premixed)
  at_stage = {stage: _dispatch(mode, modes, lambda m, k=stage: m.layer_op if m.layer == k
                               else modes_lib.KEEP, operations)
              for stage in {m.layer for m in modes if m.layer is not None}}
  lam_box = mixup.cutmix_box(box_rng, lam, images.shape[1], images.shape[2])[1]
  target_operations = dict(operations, **{modes_lib.CUTMIX: lambda y: (mixup.mix_labels(
      lam_box, y, perm), _varying(jnp.float32(0)))})
  if premixed is not None:
    for op in modes_lib.PREMIXED:
      target_operations[op] = lambda y: (premixed.targets, _varying(jnp.float32(0)))
  targets, _ = _dispatch(mode, modes, _target_op, target_operations)(targets)

  features, updated = model.apply(
      variables, images, True, lambda k, h: at_stage[k](h)[0] if k in at_stage else h,
      method='features', mutable=['batch_stats'])
  directions = sorted({m.reverse for m in modes if m.features_op == modes_lib.ALIGN})
  reverse = (jnp.asarray([m.reverse for m in modes])[mode] if len(directions) > 1
             else bool(directions and directions[0]))
  features, features_error = _dispatch(
      mode, modes, lambda m: m.features_op,
      _operations(lam, perm, box_rng, settings, reverse))(features)
  latent = model.apply(variables, features, True, method='latent')
  mixed_latent, latent_error = _dispatch(mode, modes, lambda m: m.latent_op,
                                         operations)(latent)
  logits = model.apply(variables, mixed_latent, True, method='classify',
                       rngs={'reparam': reparam_rng})
  ce = losses.classification_loss(logits, targets, settings.classification_loss)
  batch_stats = dict(updated['batch_stats'])
  aux = {'ce': ce, 'reconstruction': jnp.float32(0), 'kl': jnp.float32(0),
         'sinkhorn_row_error': jnp.maximum(features_error, latent_error)}
  decoder_loss = settings.reconstruction_weight or (model.autoencoder == 'vae'
                                                 and settings.kl_weight)
  if model.autoencoder == 'none' or not decoder_loss or not any(m.clean for m in modes):
    return ce, (aux, batch_stats)

  clean = jnp.asarray([m.clean for m in modes])[mode]

  def reconstruction(decoder_params, latent):
    x_hat, decoded = model.apply(
        {'params': {'decoder': decoder_params}, 'batch_stats': batch_stats}, latent, True,
        method='decode', mutable=['batch_stats'], rngs={'reparam': reparam_rng})
    return (losses.reconstruction_loss(x_hat, images, settings.reconstruction_loss),
            decoded['batch_stats']['decoder'])

  aux['reconstruction'], batch_stats['decoder'] = _loss_if(
      clean, reconstruction, params['decoder'], latent, skipped=batch_stats['decoder'])
  aux['kl'] = jnp.where(clean, jnp.mean(model.apply(variables, latent, method='kl')), 0.0)
  loss = ce + (settings.reconstruction_weight * aux['reconstruction']
               + settings.kl_weight * aux['kl'])
  return loss, (aux, batch_stats)


def train_step(state, batch, *, model, table, settings, alpha, num_classes, schedules):
  """One optimisation step on this device's share of the batch.

  Args:
    state: replicated `TrainState`.
    batch: `{'image': [b, H, W, 3] float32 in [0, 1], 'label': [b] int32, ...}`, b the
      per-device batch.
    model: the `AlignMixNet`.
    table: `((modes.Mode, probability), ...)`, the method's modes.
    settings: `step_settings(config)`.
    alpha: lam ~ Beta(alpha, alpha).
    num_classes: K.
    schedules: `{name: schedule}` learning rates to report.

  Returns:
    `(new_state, metrics)`, metrics averaged over the devices: loss, ce, reconstruction, kl,
    lam, mode (index into `table`), nonfinite (0 or 1) and the learning rates; and
    sinkhorn_row_error, the largest `|sum_j R_ij - 1|` over every pair of the global batch
    in steps that align (0 in the others).
  """
  images, targets = batch['image'], mixup.one_hot(batch['label'], num_classes)
  mode, lam, device_rng = draw(jax.random.fold_in(state.rng, state.step), table, alpha)
  device_rng = jax.random.fold_in(device_rng, lax.axis_index(AXIS))
  perm_rng, box_rng, reparam_rng = jax.random.split(device_rng, 3)
  perm = mixup.sample_permutation(perm_rng, images.shape[0])
  modes = tuple(m for m, _ in table)
  # The CutMix box and the random draws of PuzzleMix and Co-Mixup share `box_rng`: no mode
  # uses two of them.
  premixed = premixed_inputs(state.params, state.batch_stats, images, targets, mode=mode,
                             modes=modes, lam=lam, perm=perm, rng=box_rng, model=model,
                             settings=settings)
  loss_fn = functools.partial(
      mode_loss, batch_stats=state.batch_stats if premixed is None else premixed.batch_stats,
      images=images, targets=targets, mode=mode, lam=lam, perm=perm, box_rng=box_rng,
      reparam_rng=reparam_rng, model=model, modes=modes, settings=settings,
      premixed=premixed)
  # Differentiate with respect to a per-device copy of the parameters: the gradient of a
  # device-invariant value under shard_map would already be summed over devices.
  (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      _varying(state.params))
  if premixed is not None and premixed.grads is not None:  # Co-Mixup's clean loss.
    loss = loss + premixed.clean_loss
    grads = jax.tree.map(jnp.add, grads, premixed.grads)
  grads = lax.pmean(grads, AXIS)
  batch_stats = lax.pmean(batch_stats, AXIS)
  loss = lax.pmean(loss, AXIS)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  updated = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
  finite = _all_finite((loss, grads, updated.params, updated.batch_stats, updated.opt_state))
  # One conditional, not a `jnp.where` per leaf: XLA would fuse the chain of per-leaf tests
  # that makes `finite` into every one of those, an HLO quadratic in the number of leaves.
  new_state = lax.cond(finite, lambda: updated, lambda: state)
  row_error = lax.pmax(aux.pop('sinkhorn_row_error'), AXIS)
  metrics = {'loss': loss, **lax.pmean(aux, AXIS), 'lam': lam, 'mode': mode,
             'sinkhorn_row_error': row_error, 'nonfinite': 1 - finite.astype(jnp.int32)}
  metrics.update({name: schedule(state.step) for name, schedule in schedules.items()})
  return new_state, metrics


def make_train_step(config, model, schedules):
  """`train_step` with the config's static settings bound (checked by `validation`)."""
  table = tuple(zip(methods.table_modes(config), (p for _, p in methods.table(config))))
  return functools.partial(
      train_step, model=model, table=table, settings=step_settings(config),
      alpha=config.mixup.alpha, num_classes=config.dataset.num_classes, schedules=schedules)
