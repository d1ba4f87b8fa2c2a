"""Orbax checkpoints of the train state under `<workdir>/checkpoints/<step>/`.

Each checkpoint holds two items: `state` (the `TrainState` pytree: step, params,
batch_stats, opt_state, rng) and `progress` (JSON: the best test top-1 so far). Saves are
asynchronous; the last N are kept.

Restoring the latest checkpoint falls back to the newest one that restores when newer ones
are damaged (truncated or missing files), with a warning naming them; a training run moves
them aside to `<workdir>/damaged_checkpoints/<step>` so that it can save those steps again.
A checkpoint of another model (its shapes differ from the config's) is an error, not damage.
"""

import os
import shutil

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import workdir as workdir_lib


def checkpoint_dir(workdir):
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def _shapes(tree):
  """`{key path (names as str): shape}` of a pytree of arrays or their metadata."""
  def name(key):
    for attribute in ('key', 'name', 'idx'):
      if hasattr(key, attribute):
        return str(getattr(key, attribute))
    return str(key)
  return {tuple(name(key) for key in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class SaveError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions, a file in the way): the run
  stops, since it could not be resumed from where it is."""


class Checkpoints:
  """A `CheckpointManager` for one workdir: save, latest step, restore.

  Saves are asynchronous: a save that fails raises `SaveError` at the next call of `save`,
  `check` or `wait`, whichever comes first (the training loop calls `check` at every log
  step).
  """

  def __init__(self, workdir, *, keep=3, read_only=False):
    self.workdir = os.path.abspath(workdir)
    self.directory = checkpoint_dir(workdir)
    self._keep, self._read_only = keep, read_only
    self._saving = None  # The step of the last save started.
    if not read_only:
      if os.path.exists(self.directory) and not os.path.isdir(self.directory):
        raise ValueError(f'{self.directory} is a file, not the folder of the checkpoints: '
                         'move it away.')
      os.makedirs(self.directory, exist_ok=True)
      workdir_lib.check_writable(self.directory, why='the checkpoints go there')
    self.manager = self._manager()

  def _manager(self):
    return ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'progress': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            # Read-only managers keep and save nothing (orbax warns unless told so).
            max_to_keep=None if self._read_only else self._keep,
            save_interval_steps=0 if self._read_only else 1,
            enable_async_checkpointing=True,
            create=not self._read_only, read_only=self._read_only))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, state, progress):
    """Starts an asynchronous save of `state` at its step (all processes must call it).

    Raises:
      SaveError: this save, or an earlier one, failed.
    """
    self.check()
    step = int(jax.device_get(state.step))
    needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state)) * 1.1 + 2**20
    free = shutil.disk_usage(self.directory).free
    if free < needed:  # Refused before orbax writes half a checkpoint into a full disk.
      raise SaveError(
          f'Saving the checkpoint of step {step} to {self.directory} needs about '
          f'{needed / 2**20:.1f} MiB and that disk has {free / 2**20:.1f} MiB free. The run '
          'stops; the checkpoints saved before are intact. Free space on that disk, then '
          'rerun the same command to resume.')
    self._saving = step
    self._failing(self.manager.save, step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)))

  def check(self):
    """Raises `SaveError` if the last asynchronous save failed."""
    self._failing(self.manager.check_for_errors)

  def _failing(self, call, *args, **kwargs):
    """`call(*args, **kwargs)`, its error (a save's) raised as one `SaveError`."""
    try:
      return call(*args, **kwargs)
    except Exception as error:  # pylint: disable=broad-except
      # orbax surfaces OS, tensorstore and value errors, wrapped in its own at times.
      cause = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
      raise SaveError(
          f'Saving a checkpoint to {self.directory} failed (the latest save started: step '
          f'{self._saving}): {type(error).__name__}: {cause[:300]}. The run stops; the '
          'checkpoints saved before are intact. Free space on that disk or make the folder '
          'writable, then rerun the same command to resume.') from error

  def restore(self, target, step=None):
    """Restores `(state, progress)` at `step` (default: the newest checkpoint that restores)
    onto `target`'s shapes, dtypes and shardings.

    Raises:
      FileNotFoundError: no checkpoint (at `step`) in the directory.
      ValueError: the checkpoint does not fit `target` (another model or config), or no
        checkpoint restores (every one is damaged).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if step is None and not steps:
      raise FileNotFoundError(
          f'No checkpoint in {self.directory}. Train first with `python -m alignmix_jax --config '
          '<setting> --workdir <workdir>` (same workdir), or point --workdir at a run.')
    if step is not None and step not in steps:
      raise FileNotFoundError(f'No checkpoint for step {step} in {self.directory}; it has '
                              f'steps {sorted(steps)}.')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    damaged = []
    for candidate in steps if step is None else [step]:
      self._check_fits(candidate, abstract)
      try:
        restored = self.manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        # Damaged files surface as tensorstore, OS or value errors, whatever orbax wraps.
        logging.warning('The checkpoint at step %d in %s is damaged and cannot be '
                        'restored: %s', candidate, self.directory, str(error).splitlines()[0])
        damaged.append((candidate, error))
        continue
      if damaged:
        logging.warning('Restored step %d, the newest checkpoint that restores; damaged: %s.',
                        candidate, [s for s, _ in damaged])
        self._set_aside([s for s, _ in damaged])
      return restored['state'], dict(restored['progress'])
    listed = '; '.join(f'step {s}: {str(e).splitlines()[0][:200]}' for s, e in damaged)
    raise ValueError(
        f'No checkpoint in {self.directory} can be restored, all are damaged ({listed}). '
        'Delete them (or the folder) to start again, or restore a copy.')

  def restore_arrays(self, step=None):
    """The saved state of `step` (default: the latest) as it was saved, a dict of NumPy
    arrays, whatever the current config (e.g. another run's encoder to fine-tune)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    # NumPy targets: restored on the host, whatever devices the run that saved it had.
    metadata = self.manager.item_metadata(step)['state']
    target = jax.tree.map(lambda leaf: np.empty(leaf.shape, leaf.dtype), metadata)
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']

  def _check_fits(self, step, abstract):
    """Raises a ValueError when the checkpoint's arrays have other shapes than `abstract`'s
    (another model or config); unreadable metadata is left to the restore (damage)."""
    try:
      saved = _shapes(self.manager.item_metadata(step)['state'])
    except Exception:  # pylint: disable=broad-except
      return
    if not saved:  # No array metadata (e.g. _METADATA lost): damage, not another model.
      return
    expected = _shapes(abstract)
    if saved != expected:
      differing = sorted(set(saved) ^ set(expected)) + sorted(
          k for k in set(saved) & set(expected) if saved[k] != expected[k])
      raise ValueError(
          f'The checkpoint at step {step} in {self.directory} does not fit the model of this '
          'config (different model, width, autoencoder, latent, number of classes or '
          'optimizer?): e.g. ' + ', '.join(
              f'{"/".join(k)} {saved.get(k)} saved vs {expected.get(k)} now'
              for k in differing[:3]) + '. Use the config the run was trained with, or a new '
          '--workdir.')

  def _set_aside(self, steps):
    """Moves damaged checkpoints to `<workdir>/damaged_checkpoints/` (training only), so
    that the run can save those steps again."""
    if self._read_only:
      return
    self.manager.close()
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, 'damaged_checkpoints')
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        if os.path.exists(target):
          shutil.rmtree(target)
        shutil.move(os.path.join(self.directory, str(step)), target)
        logging.warning('Moved the damaged checkpoint of step %d to %s.', step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('damaged checkpoints set aside')
    self.manager = self._manager()

  def wait(self):
    """Waits for the saves in progress; raises `SaveError` if one failed."""
    self._failing(self.manager.wait_until_finished)

  def close(self):
    self.manager.close()


def restore_variables(workdir, config, mesh=None, step=None):
  """`({'params', 'batch_stats'}, step)` of the latest (or given) checkpoint in `workdir`,
  replicated over `mesh` (default: every device).

  Raises FileNotFoundError (no checkpoint) or ValueError (it does not fit the config).
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  target = state_lib.abstract_train_state(config, mesh)
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    state, _ = checkpoints.restore(target, step)
  finally:
    checkpoints.close()
  return state.variables(), int(state.step)


def load_pretrained_encoder(path, state):
  """`state` with the encoder E (parameters and BatchNorm statistics) of the latest
  checkpoint under `path` (a workdir or its checkpoints/ folder), e.g. an ImageNet run,
  for fine-tuning; everything else keeps its fresh initialisation.

  Raises:
    FileNotFoundError: no checkpoint under `path`.
    ValueError: that run's encoder differs from this config's (name, width, strides).
  """
  workdir = path
  if os.path.basename(os.path.normpath(path)) == 'checkpoints':
    workdir = os.path.dirname(os.path.normpath(path))
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'model.pretrained: no checkpoints in {directory}; give the '
                            'workdir of a finished run with the same encoder.')
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    step = checkpoints.latest_step()
    if step is None:
      raise FileNotFoundError(f'model.pretrained: no checkpoint in {directory}.')
    saved = checkpoints.restore_arrays(step)
  finally:
    checkpoints.close()
  encoder = {'params': saved['params'].get('encoder'),
             'batch_stats': saved.get('batch_stats', {}).get('encoder')}
  current = {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}
  shapes = jax.tree.map(np.shape, current)
  if encoder['params'] is None or jax.tree.map(np.shape, encoder) != shapes:
    raise ValueError(f'model.pretrained: the encoder saved in {directory} (step {step}) does '
                     'not match this config\'s encoder (model.name, model.width); pretrain '
                     'with the same encoder.')
  loaded = jax.tree.map(lambda new, old: jax.device_put(new.astype(old.dtype), old.sharding),
                        encoder, current)
  return state.replace(params={**state.params, 'encoder': loaded['params']},
                       batch_stats={**state.batch_stats, 'encoder': loaded['batch_stats']})
