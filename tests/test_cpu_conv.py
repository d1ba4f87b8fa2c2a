"""The convolution written for XLA:CPU (`models/cpu_conv.py`, `config.model.conv='cpu'`)
against the plain one ('xla'): the same function and gradients, one convolution at a time and
as a whole network; and the forms XLA:CPU compiles it to."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from alignmix_jax import models
from alignmix_jax import state as state_lib
from alignmix_jax.configs import default
from alignmix_jax.models import cpu_conv
from alignmix_jax.models import layers


def test_auto_is_the_cpu_form_on_cpu_and_names_are_checked():
  assert jax.default_backend() == 'cpu'
  assert layers.resolve_conv_impl('auto') == 'cpu'
  assert layers.resolve_conv_impl('xla') == 'xla'
  with pytest.raises(ValueError, match="model.conv='cudnn'; valid: auto, xla, cpu"):
    layers.resolve_conv_impl('cudnn')


def _network(conv, autoencoder):
  config = default.get_config()
  config.dataset.image_size = 32
  config.model.width = 8  # layer1 at 32x32 with 8 channels; the decoder's 16x16 and 32x32.
  config.model.autoencoder = autoencoder
  config.model.conv = conv
  return config, models.create_model(config)


@pytest.mark.parametrize('autoencoder', ['ae', 'none'])
def test_both_forms_of_a_network_are_the_same_function_with_the_same_gradients(autoencoder):
  """The whole PreActResNet18 (with the decoder) in either form: logits, reconstruction and
  every parameter gradient of a train-mode loss agree to float32 round-off."""
  outputs = {}
  for conv in ('xla', 'cpu'):
    config, model = _network(conv, autoencoder)
    variables = state_lib.create_train_state(config).variables()
    x = jax.random.uniform(jax.random.PRNGKey(4), (8, 32, 32, 3))

    def loss(params, model=model, variables=variables, x=x):
      all_variables = {'params': params, 'batch_stats': variables['batch_stats']}
      features, _ = model.apply(all_variables, x, True, method='features',
                                mutable=['batch_stats'])
      latent = model.apply(all_variables, features, True, method='latent')
      value = jnp.sum(jnp.sin(model.apply(all_variables, latent, True, method='classify')))
      if autoencoder != 'none':
        x_hat, _ = model.apply(all_variables, latent, True, method='decode',
                               mutable=['batch_stats'])
        value += jnp.sum(jnp.square(x_hat - x))
      return value

    outputs[conv] = jax.jit(jax.value_and_grad(loss))(variables['params'])
  (value_xla, grads_xla), (value_cpu, grads_cpu) = outputs['xla'], outputs['cpu']
  np.testing.assert_allclose(value_cpu, value_xla, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_cpu), jax.tree.leaves(grads_xla)):
    scale = float(np.abs(b).max()) or 1.0
    np.testing.assert_allclose(a, b, atol=1e-4 * scale)


@pytest.mark.parametrize('kernel_size,stride,side', [(3, 1, 8), (3, 2, 8), (1, 2, 8), (7, 2, 9),
                                                     (3, 2, 7), (1, 1, 5)])
def test_conv_gradients_equal_lax(kernel_size, stride, side):
  """The CPU form writes its gradients itself (canonical form); they are lax's."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, side, side, 4))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (kernel_size, kernel_size, 4, 5))
  pad = ((kernel_size - 1) // 2,) * 2
  strides, padding = (stride, stride), (pad, pad)

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

  expected = jax.grad(loss(lambda x, k: cpu_conv._nhwc_conv(x, k, strides, padding)),  # pylint: disable=protected-access
                      (0, 1))(x, kernel)
  got = jax.grad(loss(lambda x, k: cpu_conv._canonical_gradient_conv(x, k, strides, padding)),  # pylint: disable=protected-access
                 (0, 1))(x, kernel)
  for a, b in zip(got, expected):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('batch,stride,expected_pieces', [(32, 1, 4), (20, 2, 2), (7, 1, 1)])
def test_conv_in_batch_pieces_equals_lax(batch, stride, expected_pieces):
  """Large CPU convolutions run in batch pieces (`_batch_pieces`): the output and both
  gradients are lax's, and the compiled step holds one convolution per piece."""
  x = jax.random.normal(jax.random.PRNGKey(2), (batch, 16, 16, 64))
  kernel = 0.05 * jax.random.normal(jax.random.PRNGKey(3), (3, 3, 64, 64))
  strides, padding = (stride, stride), ((1, 1), (1, 1))
  assert cpu_conv._batch_pieces(x, kernel) == expected_pieces  # pylint: disable=protected-access

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

  lax_conv = lambda x, k: cpu_conv._nhwc_conv(x, k, strides, padding)  # pylint: disable=protected-access
  ours = lambda x, k: cpu_conv._canonical_gradient_conv(x, k, strides, padding)  # pylint: disable=protected-access
  np.testing.assert_allclose(ours(x, kernel), lax_conv(x, kernel), rtol=1e-5, atol=1e-5)
  expected = jax.grad(loss(lax_conv), (0, 1))(x, kernel)
  step = jax.jit(jax.grad(loss(ours), (0, 1)))
  for a, b in zip(step(x, kernel), expected):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # Forward, input gradient and kernel gradient: one convolution each per piece.
  text = step.lower(x, kernel).compile().as_text()
  assert len(re.findall(r'= f32\[[^\]]*\]\S* (?:convolution|fusion)\([^\n]*conv_general_dilated',
                        text)) >= 3 * expected_pieces


def test_conv_gradients_inside_lax_cond_are_canonical_on_cpu():
  """XLA:CPU's fast convolutions need the form b01f_01io->b01f, which it makes itself only
  outside control flow; the train step's decoder runs under `lax.cond`."""

  class TwoConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = layers.conv(x, 8, 3, name='a', dtype=jnp.float32, impl='cpu', strides=2)
      return layers.conv(x, 8, 1, name='b', dtype=jnp.float32, impl='cpu')

  model, x = TwoConvs(), jnp.ones((4, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(0), x)
  grad = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))
  step = jax.jit(lambda p, pred: lax.cond(pred, grad, lambda p: p, p))
  text = step.lower(params, True).compile().as_text()
  assert set(re.findall(r'dim_labels=(\S+?),', text)) == {'b01f_01io->b01f'}
