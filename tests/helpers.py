"""Helpers shared by several test modules (not tests themselves).

* Runs of the command line in a subprocess: `main` (`python -m main` on the tiny setting),
  `finish`, `wait_for`, `cli` (any arguments, exit status and stderr).
* What a run wrote: `scalars` (metrics.jsonl), `tensorboard_scalars` (event files).
* Train steps on synthetic batches: `setup_step`, `batch`.
* Checkpoints: `fresh_state`, `save_states`, `damage`.
"""

import glob
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import conftest
from alignmix_jax import checkpointing
from alignmix_jax import metric_logging
from alignmix_jax import models
from alignmix_jax import optim
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import train_step as train_step_lib
from alignmix_jax.configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config', os.path.join(REPO, 'tests', 'tiny_config.py')]
TIMING = ('steps_per_sec', 'uptime')  # Wall-clock figures differ between runs.
NUM_DEVICES = 2  # conftest.py forces two CPU devices.


# Runs of the command line.


def main(workdir, *overrides, devices=2, extra=(), **popen):
  """`python -m main` on tests/tiny_config.py in `workdir` with `--config.<override>`s,
  started (a `Popen`, stdout and stderr together)."""
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=(
      f'{conftest.FAST_COMPILE} --xla_force_host_platform_device_count={devices}'))
  args = [sys.executable, '-m', 'main', *TINY, '--workdir', str(workdir), *extra,
          *(f'--config.{o}' for o in overrides)]
  return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen)


def finish(process, timeout=600):
  """`(exit status, output)` of a process `main` started, once it ends."""
  output, _ = process.communicate(timeout=timeout)
  return process.returncode, output


def wait_for(path, process, timeout=600):
  """Waits until `path` exists and is not empty, while `process` runs."""
  start = time.time()
  while not os.path.exists(path) or not os.path.getsize(path):
    assert process.poll() is None, process.communicate()[0][-3000:]
    assert time.time() - start < timeout, f'{path} never appeared'
    time.sleep(0.05)


def cli(*args, module='main', cwd=REPO, env=None):
  """`python -m <module> *args` run to the end: `(exit status, stdout, stderr)`."""
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False, env=env)
  return result.returncode, result.stdout, result.stderr


# What a run wrote.


def scalars(workdir):
  """metrics.jsonl without the timing figures, as {(step, name): value}."""
  return {(line['step'], name): value for line in metric_logging.read_jsonl(str(workdir))
          for name, value in line.items() if name != 'step' and name not in TIMING}


def tensorboard_scalars(logdir):
  """{tag: [(step, value)]} read back from the TensorBoard event files in `logdir`."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(str(logdir))
  accumulator.Reload()
  return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()['scalars']}


# Train steps.


def setup_step(config, steps_per_epoch=10):
  """`(model, initial state, per-device train step)` of `config`."""
  model = models.create_model(config)
  _, schedules = optim.create_optimizer(config.optimizer, steps_per_epoch=steps_per_epoch)
  state = state_lib.create_train_state(config, steps_per_epoch=steps_per_epoch)
  return model, state, train_step_lib.make_train_step(config, model, schedules)


def batch(config, seed=0):
  """A synthetic global batch of `config.batch_size` uniform images, labels and mask 1."""
  rng = np.random.default_rng(seed)
  size = config.dataset.image_size
  return {'image': rng.uniform(size=(config.batch_size, size, size, 3)).astype(np.float32),
          'label': rng.integers(0, 10, config.batch_size).astype(np.int32),
          'mask': np.ones(config.batch_size, np.float32)}


# Checkpoints.


def fresh_state(config, seed, mesh=None):
  """The initial state of `config` with `seed`, replicated over `mesh` (default: all)."""
  config = config.copy_and_resolve_references()
  config.seed = seed
  return state_lib.create_train_state(config, mesh or parallel.data_mesh(),
                                      steps_per_epoch=10)


def save_states(workdir, state, steps, progress=None):
  """Saves `state` as the checkpoint of each of `steps` in `workdir` (as training does)."""
  checkpoints = checkpointing.Checkpoints(workdir)
  for step in steps:
    checkpoints.save(state.replace(step=state.step * 0 + step), progress or {'best_top1': 0.0})
  checkpoints.wait()
  checkpoints.close()


# A restore of a damaged checkpoint leaves orbax's reads of its other arrays as coroutines
# never awaited; the tests that damage checkpoints collect them (gc.collect()) and ignore
# what Python reports about them.
orbax_leftovers_ignored = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def damage(step_dir, how):
  """Damages the checkpoint in `step_dir`: 'truncated' (its largest data file cut in half),
  'garbage' (every data file overwritten) or 'no_metadata' (_METADATA removed)."""
  if how == 'truncated':
    data = max(glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd', '*')),
               key=os.path.getsize)
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 2)
  elif how == 'garbage':
    for data in glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd', '*')):
      with open(data, 'wb') as f:
        f.write(os.urandom(500))
  else:
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def eval_config(tmp_path, programs):
  """A default config of 3 classes with boxes and one OOD folder holding an image."""
  config = default.get_config()
  config.dataset.name = 'caltech_birds2011'  # Boxes.
  config.dataset.num_classes = 3
  config.model.autoencoder = 'none'
  config.dataset.with_bbox = True
  config.eval.programs = programs
  folder = tmp_path / 'lsun'
  folder.mkdir(exist_ok=True)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / 'one.png')  # Not empty.
  config.eval.ood_folders.lsun = str(folder)
  return config
