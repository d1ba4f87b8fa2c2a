"""Tests of alignmix_jax.optim against PyTorch's SGD and MultiStepLR, written out in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignmix_jax import optim
from alignmix_jax.configs import default


def _optimizer_config(**fields):
  config = default.get_config().optimizer
  config.update(fields)
  return config


def _torch_rate(step, base, steps_per_epoch, milestones, factor, warmup_epochs=0):
  """PyTorch's MultiStepLR over epochs (x factor from each milestone on), stepped per
  iteration, after a linear warm-up from 0 over `warmup_epochs` epochs."""
  warmup = warmup_epochs * steps_per_epoch
  if step < warmup:
    return base * step / warmup
  return base * factor ** sum(step >= m * steps_per_epoch for m in milestones)


def _torch_sgd(params, grads, rates, momentum, weight_decay, nesterov):
  """`torch.optim.SGD` (dampening 0): d = g + wd p; buf = d, then momentum buf + d;
  step = d + momentum buf (nesterov) or buf; p -= lr step. Returns the params per step."""
  params, buf, out = params.copy(), None, []
  for grad, rate in zip(grads, rates):
    d = grad + weight_decay * params
    buf = d if buf is None else momentum * buf + d
    params = params - rate * ((d + momentum * buf) if nesterov else buf)
    out.append(params)
  return out


@pytest.mark.parametrize('warmup_epochs', [0, 1])
def test_schedule_is_multistep_lr_per_iteration(warmup_epochs):
  config = _optimizer_config(learning_rate=0.1, decay_epochs=(1.5, 3), decay_factor=0.1,
                             warmup_epochs=warmup_epochs)
  schedule = optim.learning_rate_schedule(0.1, config, steps_per_epoch=4)
  for step in range(16):
    expected = _torch_rate(step, 0.1, 4, (1.5, 3), 0.1, warmup_epochs)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6, atol=1e-9,
                               err_msg=f'step {step}')
  # The decay boundaries: 0.1 up to step 5, 0.01 from 6 (epoch 1.5), 0.001 from 12.
  assert [round(float(schedule(s)), 6) for s in (5, 6, 11, 12)] == [0.1, 0.01, 0.01, 0.001]


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_steps_equal_torch_sgd_with_decay_before_momentum(nesterov):
  rng = np.random.default_rng(0)
  encoder = rng.normal(size=(3, 2))
  classifier = rng.normal(size=(2,))
  grads = [{'encoder': rng.normal(size=(3, 2)), 'classifier': rng.normal(size=(2,))}
           for _ in range(6)]
  config = _optimizer_config(learning_rate=0.1, classifier_learning_rate=0.5, momentum=0.9,
                             weight_decay=1e-2, nesterov=nesterov, decay_epochs=(1,),
                             decay_factor=0.1)
  tx, schedules = optim.create_optimizer(config, steps_per_epoch=3)
  assert sorted(schedules) == ['classifier_learning_rate', 'learning_rate']
  params = {'encoder': jnp.asarray(encoder), 'classifier': jnp.asarray(classifier)}
  state = tx.init(params)
  ours = []
  for grad in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grad), state, params)
    params = optax.apply_updates(params, updates)
    ours.append(jax.device_get(params))
  for name, base in (('encoder', 0.1), ('classifier', 0.5)):
    rates = [_torch_rate(step, base, 3, (1,), 0.1) for step in range(6)]
    expected = _torch_sgd({'encoder': encoder, 'classifier': classifier}[name],
                          [g[name] for g in grads], rates, 0.9, 1e-2, nesterov)
    for step, (got, want) in enumerate(zip(ours, expected)):
      np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name}, step {step}')


def test_no_momentum_is_plain_sgd_and_a_bad_epoch_size_is_refused():
  config = _optimizer_config(learning_rate=0.2, momentum=0.0, weight_decay=0.0,
                             decay_epochs=())
  tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
  params = {'encoder': jnp.ones(3)}
  updates, _ = tx.update({'encoder': jnp.full(3, 2.0)}, tx.init(params), params)
  np.testing.assert_allclose(updates['encoder'], -0.4)
  with pytest.raises(ValueError, match='steps_per_epoch must be >= 1'):
    optim.create_optimizer(config, steps_per_epoch=0)
