"""Tests of alignmix_jax.losses against NumPy: the cross-entropy of soft targets and the
reconstruction loss Lr (1) in both reductions. (The reduction's name is checked by
test_validation.py.)"""

import jax.numpy as jnp
import numpy as np
import pytest

from alignmix_jax import losses


def test_reconstruction_loss_reductions():
  rng = np.random.default_rng(0)
  x_hat, images = rng.uniform(size=(2, 2, 3, 4, 3)).astype(np.float32)
  per_image = np.sum((x_hat - images) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(losses.reconstruction_loss(x_hat, images, 'sum'),
                             per_image.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.reconstruction_loss(x_hat, images, 'mean'),
                             per_image.mean() / (3 * 4 * 3), rtol=1e-6)
  # A bfloat16 decoder output is compared in float32.
  low = jnp.asarray(x_hat, jnp.bfloat16)
  expected = np.mean(np.sum((np.asarray(low, np.float32) - images) ** 2, axis=(1, 2, 3)))
  got = losses.reconstruction_loss(low, images, 'sum')
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_cross_entropy_of_soft_targets_is_the_batch_mean_in_float32():
  rng = np.random.default_rng(1)
  logits = rng.normal(scale=3.0, size=(6, 5))
  targets = rng.dirichlet(np.ones(5), size=6)  # Mixed targets: rows sum to 1.
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  expected = np.mean(-np.sum(targets * log_softmax, axis=1))
  got = losses.cross_entropy(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(targets,
                                                                            jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  rounded = np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float64)  # bfloat16 logits.
  shifted = rounded - rounded.max(axis=1, keepdims=True)
  rounded_log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  np.testing.assert_allclose(got, np.mean(-np.sum(targets * rounded_log_softmax, axis=1)),
                             rtol=1e-5)
  np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits, jnp.float32),
                                                  jnp.asarray(targets, jnp.float32)),
                             expected, rtol=1e-5)
  one_hot = np.eye(5)[[0, 3]]  # One-hot targets: -log p of the label.
  np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits[:2], jnp.float32),
                                                  jnp.asarray(one_hot, jnp.float32)),
                             -np.mean(log_softmax[[0, 1], [0, 3]]), rtol=1e-5)


def test_an_unknown_reduction_names_the_valid_ones():
  losses.check_reconstruction_loss('sum')
  losses.check_reconstruction_loss('mean')
  with pytest.raises(ValueError, match="Unknown mixup.reconstruction_loss 'l1'; valid: sum, "
                                       'mean.'):
    losses.check_reconstruction_loss('l1')


def test_softmax_bce_is_pytorchs_bce_loss_of_the_softmax():
  """BCELoss(softmax(logits), t): -mean over [B, K] of t log p + (1 - t) log(1 - p), each
  log clamped at -100 (PyTorch's rule)."""
  rng = np.random.default_rng(2)
  logits = rng.normal(scale=3.0, size=(6, 5))
  targets = rng.dirichlet(np.ones(5), size=6)
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  expected = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  np.testing.assert_allclose(losses.softmax_bce(jnp.asarray(logits, jnp.float32),
                                                jnp.asarray(targets, jnp.float32)),
                             expected, rtol=1e-5)
  # A saturated softmax: p = 1 in float32 for class 0, log(1 - p) clamped at -100.
  saturated = jnp.asarray([[200.0, 0.0, 0.0]])
  got = losses.softmax_bce(saturated, jnp.asarray([[0.0, 1.0, 0.0]]))
  np.testing.assert_allclose(got, (100 + 100 + 0) / 3, rtol=1e-6)
  assert losses.classification_loss(saturated, jnp.asarray([[0.0, 1.0, 0.0]]),
                                    'softmax_bce') == got
  with pytest.raises(ValueError, match="Unknown mixup.classification_loss 'bce'; valid: "
                                       'cross_entropy, softmax_bce.'):
    losses.check_classification_loss('bce')
