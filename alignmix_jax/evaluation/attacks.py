"""Robustness to adversarial attacks (paper section 4.1, Table 2).

The PuzzleMix protocol: attacks act on `images` `[B, H, W, 3]` in [0, 1] pixel space (the
model normalizes inside), BatchNorm in eval mode (the caller's `logits_fn`), the loss is the
cross-entropy against the true labels. FGSM: one step of size eps, no random start. PGD:
uniform random start in [-eps, eps], then `x += step_size * sign(grad)`, projection onto
the l-inf eps-ball around the clean images and clipping to [0, 1] after every step.

The loss is summed over the batch, so each example's gradient is its own (BatchNorm in eval
mode couples no examples) whatever the batch size.
"""

import jax
import jax.numpy as jnp
import optax
from jax import lax

from alignmix_jax.evaluation import batches as batches_lib
from alignmix_jax.evaluation import classification


def _loss_gradient(logits_fn, images, labels):
  """Gradient of the summed cross-entropy with respect to `images` `[B, H, W, 3]`."""

  def loss(x):
    logits = logits_fn(x).astype(jnp.float32)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  return jax.grad(loss)(images)


def fgsm(logits_fn, images, labels, *, eps):
  """Fast gradient sign method (Goodfellow et al.).

  Args:
    logits_fn: `images -> logits [B, K]`, differentiable.
    images: `[B, H, W, 3]` clean images in [0, 1].
    labels: `[B]` int true classes.
    eps: l-inf radius in pixel units (paper: 8/255).

  Returns:
    `[B, H, W, 3]` adversarial images `clip(x + eps * sign(grad_x CE), 0, 1)`.
  """
  grad = _loss_gradient(logits_fn, images, labels)
  return jnp.clip(images + eps * jnp.sign(grad), 0.0, 1.0)


def pgd(logits_fn, images, labels, key, *, eps, step_size, num_steps):
  """Projected gradient descent (Madry et al.) with a uniform random start.

  Args:
    logits_fn: `images -> logits [B, K]`, differentiable.
    images: `[B, H, W, 3]` clean images in [0, 1].
    labels: `[B]` int true classes.
    key: PRNG key of the random start.
    eps: l-inf radius in pixel units (paper: 4/255).
    step_size: size of each signed-gradient step (paper: 2/255).
    num_steps: number of steps (paper: 20).

  Returns:
    `[B, H, W, 3]` adversarial images, within eps of `images` and inside [0, 1].
  """
  lower = jnp.maximum(images - eps, 0.0)
  upper = jnp.minimum(images + eps, 1.0)
  start = images + jax.random.uniform(key, images.shape, images.dtype, -eps, eps)

  def body(_, x):
    grad = _loss_gradient(logits_fn, x, labels)
    return jnp.clip(x + step_size * jnp.sign(grad), lower, upper)

  return lax.fori_loop(0, num_steps, body, jnp.clip(start, lower, upper))


def wrong_after(attack, logits_fn, images, labels, key, *, fgsm_eps, pgd_eps, pgd_step,
                pgd_iters):
  """`[B]` float32, 1.0 where the top-1 prediction on the `attack`ed images is wrong.

  Args:
    attack: 'clean' (no attack), 'fgsm' or 'pgd'.
    logits_fn, images, labels: as for `fgsm`.
    key: the PGD random start's key (unused otherwise).
    fgsm_eps, pgd_eps, pgd_step, pgd_iters: the attacks' settings.
  """
  if attack == 'fgsm':
    images = fgsm(logits_fn, images, labels, eps=fgsm_eps)
  elif attack == 'pgd':
    images = pgd(logits_fn, images, labels, key, eps=pgd_eps, step_size=pgd_step,
                 num_steps=pgd_iters)
  elif attack != 'clean':
    raise ValueError(f"Unknown attack {attack!r}; valid: clean, fgsm, pgd.")
  return classification.top_k_wrong(logits_fn(images), labels)


def evaluate(logits_fn, batches, *, fgsm_eps, pgd_eps, pgd_step, pgd_iters, seed):
  """Top-1 error under FGSM and under PGD.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode).
    batches: iterable of batch dicts (`image`, `label`, `mask`).
    fgsm_eps: FGSM radius.
    pgd_eps, pgd_step, pgd_iters: PGD radius, step size and number of steps.
    seed: seed of the PGD random starts (batch i uses `fold_in(key(seed), i)`).

  Returns:
    `{'fgsm_error': percent, 'pgd_error': percent}`.
  """
  key = jax.random.key(seed)
  settings = dict(fgsm_eps=fgsm_eps, pgd_eps=pgd_eps, pgd_step=pgd_step, pgd_iters=pgd_iters)

  @jax.jit
  def step(batch):
    return {f'{attack}_error': jnp.sum(batch['mask'] * wrong_after(
        attack, logits_fn, batch['image'], batch['label'], batch['key'], **settings))
            for attack in ('fgsm', 'pgd')}

  keyed = ({**batch, 'key': jax.random.fold_in(key, i)} for i, batch in enumerate(batches))
  wrong, count = batches_lib.sum_over_batches(step, keyed)
  return {name: 100.0 * float(value) / count for name, value in wrong.items()}
