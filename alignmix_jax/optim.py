"""The paper's optimiser: SGD with momentum and weight decay, step-decayed learning rates.

`config.optimizer` fields (configs/default.py): learning_rate, classifier_learning_rate (the
classifier g gets its own rate when > 0, as in the ImageNet and CUB fine-tuning settings),
momentum, nesterov, weight_decay (added to the gradient of every parameter before momentum,
as PyTorch's SGD does), decay_epochs and decay_factor (the rate is multiplied by the factor
at each of those epochs), warmup_epochs (linear warm-up from 0).
"""

import flax
import optax

CLASSIFIER = 'classifier'  # The top-level parameter collection of g in AlignMixNet.


def learning_rate_schedule(base_rate, optimizer_config, steps_per_epoch):
  """Step-decay schedule in optimizer steps, with an optional linear warm-up."""
  boundaries = {int(epoch * steps_per_epoch): optimizer_config.decay_factor
                for epoch in optimizer_config.decay_epochs}
  decayed = optax.piecewise_constant_schedule(base_rate, boundaries)
  warmup_steps = int(optimizer_config.warmup_epochs * steps_per_epoch)
  if warmup_steps <= 0:
    return decayed
  warmup = optax.linear_schedule(0.0, base_rate, warmup_steps)
  # join_schedules restarts the count at the boundary; the decay epochs are absolute.
  return optax.join_schedules([warmup, lambda count: decayed(count + warmup_steps)],
                              [warmup_steps])


def _sgd(schedule, optimizer_config):
  return optax.chain(
      optax.add_decayed_weights(optimizer_config.weight_decay),
      optax.sgd(schedule, momentum=optimizer_config.momentum or None,
                nesterov=optimizer_config.nesterov))


def create_optimizer(optimizer_config, steps_per_epoch):
  """Returns `(tx, schedules)`: the optax transformation and `{name: schedule}` to log."""
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}: the batch size '
                     'is larger than the training split.')
  schedule = learning_rate_schedule(optimizer_config.learning_rate, optimizer_config,
                                    steps_per_epoch)
  if not optimizer_config.classifier_learning_rate:
    return _sgd(schedule, optimizer_config), {'learning_rate': schedule}
  classifier_schedule = learning_rate_schedule(optimizer_config.classifier_learning_rate,
                                               optimizer_config, steps_per_epoch)

  def labels(params):
    return flax.traverse_util.path_aware_map(
        lambda path, _: CLASSIFIER if path[0] == CLASSIFIER else 'rest', params)

  tx = optax.multi_transform(
      {CLASSIFIER: _sgd(classifier_schedule, optimizer_config),
       'rest': _sgd(schedule, optimizer_config)}, labels)
  return tx, {'learning_rate': schedule, 'classifier_learning_rate': classifier_schedule}
