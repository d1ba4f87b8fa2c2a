"""Every check of a run's settings, in one place: `validate(config, num_devices, mode)`.

The training loop and the evaluation runner call it once, before anything is created,
loaded or compiled, so a setting that cannot run ends the run at once with a ValueError (or
FileNotFoundError) that names the field and the fix. The checks of each part belong to its
module (`methods.check`, `models.create_model`, `alignment.check_settings`,
`losses.check_reconstruction_loss`, `losses.check_classification_loss`,
`puzzlemix.check_settings`, `comixup.check_settings`, `data.backend`, `ood.check_set_names`); this module
calls them all, and holds the checks that span parts (loop counts, batch sizes over the
devices, evaluation programs).
"""

import math
import os

from alignmix_jax import alignment
from alignmix_jax import comixup
from alignmix_jax import data
from alignmix_jax import evaluation
from alignmix_jax import losses
from alignmix_jax import methods
from alignmix_jax import models
from alignmix_jax import modes as modes_lib
from alignmix_jax import puzzlemix
from alignmix_jax.evaluation import ood

MODES = ('train', 'eval')
# Loop fields: (name, what a value means), each an integer >= 1.
_LOOP_FIELDS = (
    ('log_every_steps', 'train metrics are averaged over that many steps'),
    ('checkpoint_every_steps', 'a checkpoint is saved every that many steps'),
    ('eval_every_epochs', 'test top-1 is measured every that many epochs'),
    ('keep_checkpoints', 'that many latest checkpoints are kept; 0 would delete every one'),
)


def validate(config, num_devices, *, mode='train'):
  """Raises a clear error for settings of `config` that cannot run on `num_devices`.

  Args:
    config: the full config.
    num_devices: devices of the run (all processes).
    mode: 'train' (the model, method, step, data and loop settings) or 'eval' (the model,
      the data and the evaluation programs).

  Raises:
    ValueError: a setting that cannot run (the message names the field and the fix).
    FileNotFoundError: an OOD folder that does not exist ('eval').
    ImportError: PuzzleMix without its graph-cut solver (the message names the install).
  """
  if mode not in MODES:
    raise ValueError(f'Unknown validation mode {mode!r}; valid: {", ".join(MODES)}.')
  model = models.create_model(config)  # Unknown names, geometry.
  data.backend(config.dataset)  # Unknown dataset, pipeline or augmentation.
  _check_batch('eval.batch_size', config.eval.batch_size, num_devices)
  if mode == 'train':
    methods.check(config, model.num_stages)
    alignment.check_settings(config.mixup.sinkhorn_eps, config.mixup.sinkhorn_iters)
    losses.check_reconstruction_loss(config.mixup.reconstruction_loss)
    losses.check_classification_loss(config.mixup.classification_loss)
    premixed = {m.layer_op for m in methods.table_modes(config)} & set(modes_lib.PREMIXED)
    if len(premixed) > 1:
      raise ValueError(f'{config.mixup.method} draws both PuzzleMix and Co-Mixup; a method '
                       'may use one of them.')
    if premixed:
      puzzlemix.require_solver()
    if modes_lib.PUZZLEMIX in premixed:
      puzzlemix.check_settings(config.mixup.puzzlemix, config.dataset.image_size)
    if modes_lib.COMIXUP in premixed:
      comixup.check_settings(config.mixup.comixup, config.dataset.image_size,
                             config.batch_size // num_devices)
    if config.mixup.align_latent and (config.model.latent != 'tensor'
                                      or config.model.autoencoder != 'ae'):
      raise ValueError("mixup.align_latent aligns the tensor Z: it needs "
                       "model.latent='tensor' and model.autoencoder='ae'.")
    _check_loop(config)
    _check_optimizer(config.optimizer)
    _check_batch('batch_size', config.batch_size, num_devices)
  else:
    _check_programs(config)


def _check_batch(field, value, num_devices):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{field}={value!r} must be a positive integer.')
  if value % num_devices:
    raise ValueError(f'{field}={value} must be a multiple of the number of devices '
                     f'({num_devices}).')


def _check_optimizer(optimizer):
  for field, low, allow_zero in (('learning_rate', 0.0, False),
                                 ('classifier_learning_rate', 0.0, True),
                                 ('weight_decay', 0.0, True), ('momentum', 0.0, True)):
    value = optimizer[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
        value) or value < low or (value == low and not allow_zero):
      sign = '>= 0' if allow_zero else '> 0'
      raise ValueError(f'optimizer.{field}={value!r} must be a finite number {sign}'
                       + (' (0: the same as learning_rate)' if field ==
                          'classifier_learning_rate' else '') + '.')
  if optimizer.momentum >= 1:
    raise ValueError(f'optimizer.momentum={optimizer.momentum!r} must be below 1 (0.9 in the '
                     'paper).')


def _check_loop(config):
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError(f'num_epochs={config.num_epochs!r} and num_train_steps='
                     f'{config.num_train_steps!r}: the run would train nothing; give '
                     'num_epochs > 0 or num_train_steps > 0.')
  for field, why in _LOOP_FIELDS:
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{field}={value!r} must be an integer >= 1 ({why}).')
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ValueError(
        f'checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple of '
        f'log_every_steps={config.log_every_steps}, so that a resumed run averages its '
        'metrics over the same windows as an uninterrupted one.')
  value = config.steps_per_dispatch
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f'steps_per_dispatch={value!r} must be an integer >= 1 (train steps run '
                     'in one call to the devices), or 0 for the backend\'s default.')


def _check_programs(config):
  """The evaluation settings (`config.eval`) of `--mode eval`."""
  programs = tuple(config.eval.programs)
  unknown = [name for name in programs if name not in evaluation.PROGRAMS]
  if unknown or not programs:
    raise ValueError(f'config.eval.programs must list evaluation programs; unknown: {unknown} '
                     f'(got {programs}); valid: {sorted(evaluation.PROGRAMS)}.')
  num_classes = config.dataset.num_classes
  if 'classification' in programs and not all(1 <= k <= num_classes for k in config.eval.top_k):
    raise ValueError(f'config.eval.top_k = {tuple(config.eval.top_k)} needs 1 <= k <= '
                     f'config.dataset.num_classes = {num_classes}.')
  examples = config.eval.attack_examples
  if examples and (examples < 0 or examples % config.eval.batch_size):
    raise ValueError(f'config.eval.attack_examples = {examples} must be 0 (the whole test '
                     f'split) or a positive multiple of config.eval.batch_size = '
                     f'{config.eval.batch_size}.')
  if 'ood' in programs:
    folders = ood.folders(config.eval)
    ood.check_set_names(tuple(config.eval.ood_noise), tuple(folders))
    for name, path in folders.items():
      if not os.path.isdir(path):
        raise FileNotFoundError(f'OOD folder {name!r}: {path} is not a directory. Put the '
                                f'images there, fix config.eval.ood_folders.{name}, or set '
                                "it to '' (not used).")
      data.split_size(data.unlabeled_folder(config.dataset, path), 'test')  # No images: error.
  if 'localization' in programs:
    if config.model.autoencoder != 'none':
      raise ValueError("The localization program needs CAMs, which the model defines only "
                       "without a decoder: set config.model.autoencoder = 'none' (got "
                       f'{config.model.autoencoder!r}) or drop localization from '
                       'config.eval.programs.')
    if not config.dataset.with_bbox:
      raise ValueError('The localization program needs true boxes: set '
                       'config.dataset.with_bbox = True on a dataset with boxes '
                       '(caltech_birds2011).')
