"""The mixup modes of a mini-batch and the methods that draw among them.

A mode is a function `(model, images, targets, lam, perm, rng, settings) -> (loss, aux)`
run through `model.apply(..., method=...)`, so it can call the model's pieces (E =
`features`, e = `latent`, g = `classify`, D = `decode`) and mix in between (paper (3)-(7)):

  clean              x -> A -> z -> logits, x_hat: cross-entropy + reconstruction (1)
                     (+ KL for the VAE); cross-entropy only without a decoder.
  input              mix x, then E, e, g (4) (input mixup; manifold mixup at layer 0).
  latent             E, e, then mix z (6).
  feature            E, align A' onto A and mix (13) (plain mixup of A if not `align`).
  feature_reversed   E, align A onto A' and mix (14).
  layer1, layer2...  manifold mixup after residual stage k of E.
  cutmix             paste a box of x' into x, lam from the box area.

Mixed modes use cross-entropy against the mixed targets only (7). Every mode returns the
same `aux` structure so that `lax.switch` can choose among them on the device.

A method (`config.mixup.method`) is a table of (mode, probability): `method_table(config)`.
"""

import functools

import jax.numpy as jnp
import optax

from alignmix_jax import mixup

FIVE_MODES = ('clean', 'input', 'latent', 'feature', 'feature_reversed')
METHODS = ('alignmix', 'alignmix_official', 'vanilla', 'input_mixup', 'manifold_mixup',
           'cutmix')


def cross_entropy(logits, targets):
  """Mean softmax cross-entropy against soft targets `[B, K]`."""
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def _aux(ce, reconstruction=0.0, kl=0.0):
  return {'ce': ce, 'reconstruction': jnp.float32(reconstruction), 'kl': jnp.float32(kl)}


def clean(model, images, targets, lam, perm, rng, settings):
  """No mixup: cross-entropy, plus reconstruction (and KL) when there is a decoder."""
  del lam, perm, rng
  latent = model.latent(model.features(images, True), True)
  ce = cross_entropy(model.classify(latent, True), targets)
  if model.autoencoder == 'none':
    return ce, _aux(ce)
  reconstruction = jnp.mean(jnp.square(model.decode(latent, True) - images))
  kl = jnp.mean(model.kl(latent))
  loss = (ce + settings.reconstruction_weight * reconstruction + settings.kl_weight * kl)
  return loss, _aux(ce, reconstruction, kl)


def input_mix(model, images, targets, lam, perm, rng, settings):
  """Input mixup (4): classify mix_lam(x, x')."""
  del rng, settings
  logits = model(mixup.mix_with_partner(lam, images, perm), True)
  ce = cross_entropy(logits, mixup.mix_labels(lam, targets, perm))
  return ce, _aux(ce)


def latent_mix(model, images, targets, lam, perm, rng, settings):
  """Latent mixup (6): classify mix_lam(z, z'); a tensor Z is aligned first if asked."""
  del rng
  latent = model.latent(model.features(images, True), True)
  if settings.align_latent:
    mixed, first, second = mixup.aligned_feature_mix(
        lam, latent, perm, eps=settings.sinkhorn_eps, num_iters=settings.sinkhorn_iters)
    mixed_targets = mixup.mixed_targets(lam, targets, first, second)
  else:
    mixed = mixup.mix_with_partner(lam, latent, perm)
    mixed_targets = mixup.mix_labels(lam, targets, perm)
  ce = cross_entropy(model.classify(mixed, True), mixed_targets)
  return ce, _aux(ce)


def feature_mix(model, images, targets, lam, perm, rng, settings, *, reverse):
  """Feature mixup of A: aligned (13) / (14) when `settings.align`, else plain mixup."""
  del rng
  features = model.features(images, True)
  if settings.align:
    mixed, first, second = mixup.aligned_feature_mix(
        lam, features, perm, reverse=reverse, eps=settings.sinkhorn_eps,
        num_iters=settings.sinkhorn_iters)
  else:
    identity = jnp.arange(features.shape[0], dtype=perm.dtype)
    first, second = (perm, identity) if reverse else (identity, perm)
    mixed = mixup.mix(lam, mixup.partner_of(features, first),
                      mixup.partner_of(features, second))
  logits = model.classify(model.latent(mixed, True), True)
  ce = cross_entropy(logits, mixup.mixed_targets(lam, targets, first, second))
  return ce, _aux(ce)


def manifold_mix(model, images, targets, lam, perm, rng, settings, *, layer):
  """Manifold mixup after residual stage `layer` of E."""
  del rng, settings
  features = model.features(images, True, mix_layer=layer,
                            mix_fn=mixup.manifold_mix_fn(lam, perm))
  logits = model.classify(model.latent(features, True), True)
  ce = cross_entropy(logits, mixup.mix_labels(lam, targets, perm))
  return ce, _aux(ce)


def cutmix(model, images, targets, lam, perm, rng, settings):
  """CutMix: one box per batch, lam recomputed from its clipped area."""
  del settings
  mixed, lam_box = mixup.cutmix(rng, lam, images, perm)
  ce = cross_entropy(model(mixed, True), mixup.mix_labels(lam_box, targets, perm))
  return ce, _aux(ce)


def mode_function(name):
  """The mode function called `name` (see the module docstring)."""
  fixed = {'clean': clean, 'input': input_mix, 'latent': latent_mix, 'cutmix': cutmix,
           'feature': functools.partial(feature_mix, reverse=False),
           'feature_reversed': functools.partial(feature_mix, reverse=True)}
  if name in fixed:
    return fixed[name]
  if name.startswith('layer') and name[5:].isdigit():
    return functools.partial(manifold_mix, layer=int(name[5:]))
  raise ValueError(f'Unknown mode {name!r}; valid: {", ".join(fixed)}, layer<k>.')


def method_table(config):
  """`((mode, probability), ...)` of `config.mixup.method`, zero-probability modes dropped.

  alignmix:           the five modes with `config.mixup.mode_weights` (paper: uniform).
  alignmix_official:  the authors' code: input 1/2, feature 1/4, feature_reversed 1/4.
  vanilla:            clean only (the Baseline; no decoder in its configs).
  input_mixup:        input only.
  manifold_mixup:     uniform over `config.mixup.manifold_layers` (0 = input).
  cutmix:             cutmix only.
  """
  method = config.mixup.method
  if method == 'alignmix':
    weights = tuple(config.mixup.mode_weights)
    if len(weights) != len(FIVE_MODES) or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError(f'mixup.mode_weights must be {len(FIVE_MODES)} non-negative weights '
                       f'for {", ".join(FIVE_MODES)} with a positive sum; got {weights}.')
    table = tuple(zip(FIVE_MODES, weights))
  elif method == 'alignmix_official':
    table = (('input', 0.5), ('feature', 0.25), ('feature_reversed', 0.25))
  elif method == 'vanilla':
    table = (('clean', 1.0),)
  elif method == 'input_mixup':
    table = (('input', 1.0),)
  elif method == 'manifold_mixup':
    layers = tuple(config.mixup.manifold_layers)
    if not layers:
      raise ValueError('mixup.manifold_layers is empty; give e.g. (0, 1, 2).')
    table = tuple(('input' if k == 0 else f'layer{k}', 1.0) for k in layers)
  elif method == 'cutmix':
    table = (('cutmix', 1.0),)
  else:
    raise ValueError(f'Unknown mixup.method {method!r}; valid: {", ".join(METHODS)}.')
  table = tuple((mode, weight) for mode, weight in table if weight > 0)
  total = sum(weight for _, weight in table)
  return tuple((mode, weight / total) for mode, weight in table)
