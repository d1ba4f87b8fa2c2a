"""Runs the evaluation programs a config lists on a checkpoint (`--mode eval`).

`evaluate(config, workdir)` restores the latest (or a given) checkpoint, runs each program of
`config.eval.programs` (see `PROGRAMS`) on the test split, data parallel over the devices,
and writes
  <workdir>/eval.json          every scalar, e.g. `top1_error`, `ood/uniform/auroc` (percent);
  <workdir>/eval/*.png, *.md   reliability diagram, localization examples, OOD table;
  <workdir>/eval/              TensorBoard events of the same scalars (collection `eval`).

Programs see the model only through `ModelFns`, so `run_programs` runs on any functions and
any batch source (`alignmix_jax.data.eval_batches` here: TensorFlow only for the datasets
its tf.data back end reads).
"""

import functools
import itertools
import json
import os
from typing import Callable, NamedTuple

from absl import logging
import jax

from alignmix_jax import checkpointing
from alignmix_jax import data
from alignmix_jax import metric_logging
from alignmix_jax import models
from alignmix_jax import parallel
from alignmix_jax import validation
from alignmix_jax import workdir as workdir_lib
from alignmix_jax.evaluation import attacks
from alignmix_jax.evaluation import calibration
from alignmix_jax.evaluation import classification
from alignmix_jax.evaluation import localization
from alignmix_jax.evaluation import ood


class ModelFns(NamedTuple):
  """The model as the programs see it.

  logits: `images [B, H, W, 3] in [0, 1] -> logits [B, K]`, BatchNorm in eval mode.
  cam: `images -> [B, h, w, K]` class activation maps (localization only).
  """
  logits: Callable
  cam: Callable


class Output(NamedTuple):
  """Where the programs write and how their figures name the run.

  dir: the folder of figures and tables, `<workdir>/eval`.
  title: the run in figure titles, e.g. 'digits (step 440)' (`run_title`).
  """
  dir: str
  title: str


def run_title(workdir, step=None):
  """'<workdir's base name> (step <step>)', or the base name alone without a step."""
  name = os.path.basename(os.path.normpath(workdir))
  return name if step is None else f'{name} (step {step})'


# Each program: (config, fns, batches_fn, out) -> {scalar name: value}, where
# `batches_fn(dataset_config)` yields the test batches of that dataset config and `out` is
# an `Output`.
def _classification(config, fns, batches_fn, out):
  del out  # No figure.
  return classification.evaluate(fns.logits, batches_fn(config.dataset),
                                 top_k=tuple(config.eval.top_k))


def _attacks(config, fns, batches_fn, out):
  del out  # No figure.
  batches = batches_fn(config.dataset)
  if config.eval.attack_examples:  # The first examples only (a multiple of the batch).
    batches = itertools.islice(batches, config.eval.attack_examples // config.eval.batch_size)
  return attacks.evaluate(fns.logits, batches, fgsm_eps=config.eval.fgsm_eps,
                          pgd_eps=config.eval.pgd_eps, pgd_step=config.eval.pgd_step,
                          pgd_iters=config.eval.pgd_iters, seed=config.seed)


def _calibration(config, fns, batches_fn, out):
  return calibration.evaluate(fns.logits, batches_fn(config.dataset),
                              num_bins=config.eval.calibration_bins,
                              figure_path=os.path.join(out.dir, 'reliability.png'),
                              title=out.title)


def _ood(config, fns, batches_fn, out):
  folders = {name: batches_fn(data.unlabeled_folder(config.dataset, path))
             for name, path in ood.folders(config.eval).items()}
  return ood.evaluate(fns.logits, batches_fn(config.dataset), folders,
                      noise=tuple(config.eval.ood_noise), seed=config.seed,
                      table_path=os.path.join(out.dir, 'ood.md'))


def _localization(config, fns, batches_fn, out):
  return localization.evaluate(fns.logits, fns.cam, batches_fn(config.dataset),
                               threshold=config.eval.cam_threshold,
                               figure_path=os.path.join(out.dir, 'localization.png'))


# The programs of `evaluation.PROGRAMS`.
PROGRAMS = {
    'classification': _classification,
    'attacks': _attacks,
    'calibration': _calibration,
    'ood': _ood,
    'localization': _localization,
}


def run_programs(config, fns, batches_fn, workdir, step=None):
  """Runs `config.eval.programs`; writes `<workdir>/eval.json` and figures under `eval/`.

  Args:
    config: the full config (fields under `config.eval`, the dataset under `config.dataset`).
    fns: the model as `ModelFns`.
    batches_fn: `dataset_config -> iterable of batch dicts` of that dataset's test split.
    workdir: the run's directory.
    step: the evaluated checkpoint's step, named in figure titles (None: not named).

  Returns:
    `{scalar name: value}`, the content of eval.json.
  """
  out = Output(dir=os.path.join(workdir, 'eval'), title=run_title(workdir, step))
  os.makedirs(out.dir, exist_ok=True)
  results = {}
  for name in config.eval.programs:
    scalars = PROGRAMS[name](config, fns, batches_fn, out)
    logging.info('Evaluation %s: %s', name, scalars)
    results.update(scalars)
  path = os.path.join(workdir, 'eval.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:  # Whole or not at all.
    json.dump(results, f, indent=2, sort_keys=True)
  os.replace(path + '.tmp', path)
  return results


# The fields that make the model and the data of a run: `--mode eval` refuses a config whose
# values differ from those the run in the workdir was trained with (its config.json).
RUN_FIELDS = ('dataset.name', 'dataset.num_classes', 'dataset.image_size', 'dataset.mean',
              'dataset.std', 'model.name', 'model.width', 'model.preact_shortcut',
              'model.autoencoder', 'model.latent', 'model.latent_dim',
              'model.feature_resolution')


def _check_the_run(config, workdir):
  """Raises a ValueError when `config` describes another model or dataset than the run in
  `workdir` was trained with, or when `workdir` cannot be written (eval.json goes there)."""
  differences = workdir_lib.config_differences(config, workdir) or {}
  differing = {field: values for field, values in differences.items() if field in RUN_FIELDS}
  if differing:
    raise ValueError(
        f'--mode eval: the run in {workdir} was trained with ' + ', '.join(
            f'{field}={was!r} (this config: {now!r})' for field, (was, now) in
            differing.items()) + f'. Evaluate it with the config it was trained with '
        f'({os.path.join(workdir, workdir_lib.CONFIG)} records it), e.g. the same --config '
        'as its training command.')
  if os.path.isdir(workdir):
    workdir_lib.check_writable(workdir, why='--mode eval writes eval.json and eval/ there')


def evaluate(config, workdir, checkpoint_step=None):
  """Evaluates the latest (or `checkpoint_step`) checkpoint of `workdir`.

  Runs on one process; each batch is sharded over all its devices (data parallel, the
  variables replicated), so `config.eval.batch_size` must be a multiple of the device count.

  Returns:
    `{scalar name: value}`, also written to `<workdir>/eval.json` and logged to TensorBoard
    at the checkpoint's step.

  Raises:
    FileNotFoundError: no checkpoint (at that step) in `workdir`, or a missing OOD folder.
    ValueError: the checkpoint does not fit the config's model, the config is not the one
      the run was trained with (model or dataset, `RUN_FIELDS`), `workdir` cannot be
      written, or a setting cannot run.
  """
  if jax.process_count() > 1:
    raise ValueError(f'--mode eval runs on one process (got {jax.process_count()}): start it '
                     'without --multiprocess or --coordinator_address.')
  validation.validate(config, jax.device_count(), mode='eval')
  _check_the_run(config, workdir)
  mesh = parallel.data_mesh()
  variables, step = checkpointing.restore_variables(workdir, config, mesh, step=checkpoint_step)
  model = models.create_model(config)
  fns = ModelFns(logits=jax.tree_util.Partial(functools.partial(model.apply, train=False),
                                                variables),
                 cam=lambda images: model.apply(variables, images, method='cam'))

  sources = {}

  def batches_fn(dataset_config):
    key = dataset_config.to_json()
    if key not in sources:
      sources[key] = data.eval_batches(dataset_config, mesh,
                                       global_batch_size=config.eval.batch_size)
    return sources[key]

  # Every input is read before any program runs: a missing or unreadable file fails here.
  iter(batches_fn(config.dataset))
  if 'ood' in config.eval.programs:
    for path in ood.folders(config.eval).values():
      iter(batches_fn(data.unlabeled_folder(config.dataset, path)))
  logging.info('Evaluating %s at step %d: %s.', workdir, step, tuple(config.eval.programs))
  results = run_programs(config, fns, batches_fn, workdir, step)
  writer = metric_logging.create_writer(workdir, collection='eval')
  writer.write_scalars(step, results)
  writer.close()
  return results
