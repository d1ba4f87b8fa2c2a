"""Fault injection: the faults a user can cause during a run lose no work and end in a clear
message, end to end (the training loop, or `python -m main` on tests/tiny_config.py).

Each test breaks one thing (an image, a second run, a signal, a checkpoint or metrics file
on disk) and checks what the README's guarantees promise, calling the module that handles
the fault directly too (`workdir.Lock`, `workdir.record_config`, `checkpointing`,
`metric_logging.read_jsonl`). The pieces alone are tested in test_workdir.py,
test_checkpointing.py, test_metric_logging.py, test_validation.py and test_cli.py.
"""

import gc
import json
import re
import logging as py_logging
import os
import signal
import socket
import time

import jax
import numpy as np
import pytest
from PIL import Image

import helpers
import tiny_config
from alignmix_jax import checkpointing
from alignmix_jax import metric_logging
from alignmix_jax import train
from alignmix_jax import workdir as workdir_lib
from alignmix_jax.data import arrays
from alignmix_jax.evaluation import classification
from alignmix_jax.evaluation import runner

FAST = {'num_train_steps': 8, 'log_every_steps': 2, 'checkpoint_every_steps': 4,
        'eval.pgd_iters': 2}


def _config(**fields):
  return tiny_config.with_overrides(**{**{k: v for k, v in FAST.items()}, **fields})


def _latest(workdir):
  saved = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    return saved.latest_step(), sorted(saved.manager.all_steps())
  finally:
    saved.close()


# Unreadable images: named before training starts, or skipped on request.


def _image_folder(root, bad=None):
  """train/ and test/ with 2 classes of 8 and 4 PNGs; `bad`: a random-bytes .jpg there."""
  rng = np.random.default_rng(0)
  for split, count in (('train', 8), ('test', 4)):
    for label in ('a', 'b'):
      os.makedirs(os.path.join(root, split, label))
      for index in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            os.path.join(root, split, label, f'{index}.png'))
  if bad:
    with open(os.path.join(root, bad), 'wb') as f:
      f.write(os.urandom(200))
  return str(root)


def _folder_config(root, **fields):
  return _config(**{'dataset.name': 'image_folder', 'dataset.data_dir': root,
                    'dataset.num_classes': 2, 'dataset.train_size': 16,
                    'dataset.test_size': 8, 'eval.batch_size': 8, 'batch_size': 8, **fields})


def test_an_unreadable_test_image_is_named_before_training(tmp_path):
  root = _image_folder(tmp_path / 'data', bad='test/a/broken.jpg')
  message = (r'Cannot decode the image .*test/a/broken.jpg \(image_folder, test split\).*'
             'skip_unreadable=True')
  with pytest.raises(ValueError, match=message):  # The loader...
    arrays.load(_folder_config(root).dataset, 'test')
  with pytest.raises(ValueError, match=message):  # ... and the loop, before training.
    train.train_and_evaluate(_folder_config(root), str(tmp_path / 'new' / 'run'))
  assert not os.path.exists(tmp_path / 'new')  # No files, no folders it made.
  os.makedirs(tmp_path / 'existing')
  with pytest.raises(ValueError, match='Cannot decode'):
    train.train_and_evaluate(_folder_config(root), str(tmp_path / 'existing'))
  assert not os.listdir(tmp_path / 'existing')  # Kept, and as empty as it was.


def test_skip_unreadable_leaves_the_image_out_with_a_count(tmp_path, caplog):
  root = _image_folder(tmp_path / 'data', bad='train/b/broken.jpg')
  config = _folder_config(root, **{'dataset.skip_unreadable': True})
  with caplog.at_level(py_logging.WARNING):
    data = arrays.load(config.dataset, 'train')
  assert len(data['label']) == 16 and list(np.bincount(data['label'])) == [8, 8]
  assert 'Left out 1 unreadable images of image_folder (train split)' in caplog.text
  assert 'broken.jpg' in caplog.text
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert _latest(tmp_path / 'run')[0] == 8


def test_the_checkpoint_is_saved_before_the_evaluation_that_fails(tmp_path, monkeypatch):
  """An evaluation that fails (here: an injected error at the final step) leaves the
  checkpoint of its step on disk; the resumed run evaluates that step again, once."""
  config = _config()
  calls = []

  def failing(*args, **kwargs):
    calls.append((args, kwargs))
    raise OSError('injected: the test data went away')

  monkeypatch.setattr(classification, 'evaluate', failing)
  with pytest.raises(OSError, match='injected'):
    train.train_and_evaluate(config, str(tmp_path))
  assert _latest(tmp_path)[0] == 8
  monkeypatch.undo()
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 8 and 'test/top1' in result
  evaluations = [line for line in metric_logging.read_jsonl(str(tmp_path))
                 if 'test/top1' in line]
  assert [line['step'] for line in evaluations] == [8]


# One run per workdir.


def test_a_second_run_on_a_workdir_fails_at_once_and_a_killed_runs_lock_is_taken_over(
    tmp_path):
  first = helpers.main(tmp_path, 'num_train_steps=100000', 'checkpoint_every_steps=1000')
  helpers.wait_for(tmp_path / metric_logging.JSONL, first)
  holder = f'process {first.pid} on host {socket.gethostname()}'
  with pytest.raises(workdir_lib.WorkdirInUseError, match=holder):  # The lock itself...
    workdir_lib.Lock(str(tmp_path)).acquire()
  second = helpers.main(tmp_path, 'num_train_steps=4')  # ... and a second run.
  code, output = helpers.finish(second)
  assert code == 1, output[-3000:]
  assert 'Another run trains in this workdir' in output
  assert holder in output
  first.send_signal(signal.SIGKILL)
  helpers.finish(first)
  assert os.path.exists(tmp_path / workdir_lib.LOCK)  # Left behind by the killed run...
  assert json.loads((tmp_path / workdir_lib.LOCK).read_text())['pid'] == first.pid
  code, output = helpers.finish(helpers.main(tmp_path, 'num_train_steps=4'))
  assert code == 0, output[-3000:]  # ... and taken over: its process is gone.
  assert 'Taking over the stale lock' in output
  assert not os.path.exists(tmp_path / workdir_lib.LOCK)  # Released at the end.


# The record of the config.


def test_config_json_keeps_the_config_the_run_started_with(tmp_path, caplog):
  train.train_and_evaluate(_config(num_train_steps=4), str(tmp_path))
  recorded = (tmp_path / 'config.json').read_text()
  assert json.loads(recorded)['model']['width'] == 4
  with pytest.raises(ValueError, match='does not fit the model'):
    train.train_and_evaluate(_config(**{'model.width': 8}), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == recorded  # A failed resume changes nothing.
  with caplog.at_level(py_logging.WARNING):
    train.train_and_evaluate(_config(num_train_steps=8), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == recorded
  assert 'num_train_steps: 4 -> 8' in caplog.text
  # What the loop reported, as `record_config` finds it (the file is kept again).
  differences = workdir_lib.record_config(_config(num_train_steps=8), str(tmp_path),
                                          resumed=True)
  assert differences == {'num_train_steps': (4, 8)}
  assert (tmp_path / 'config.json').read_text() == recorded


# Checkpoints and metrics files damaged on disk.


@helpers.orbax_leftovers_ignored
@pytest.mark.parametrize('how', ['truncated', 'garbage', 'no_metadata'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, how, caplog):
  reference = tmp_path / 'reference'
  train.train_and_evaluate(_config(num_train_steps=12), str(reference))
  run = tmp_path / 'run'
  train.train_and_evaluate(_config(), str(run))  # Checkpoints at 4 and 8.
  helpers.damage(str(run / 'checkpoints' / '8'), how)
  config = tiny_config.get_config()
  with caplog.at_level(py_logging.WARNING):
    variables, step = checkpointing.restore_variables(run, config)  # --mode eval.
  assert step == 4 and 'step 8' in caplog.text and 'damaged' in caplog.text
  train.train_and_evaluate(_config(num_train_steps=12), str(run))  # Resumes from 4.
  assert os.path.isdir(run / 'damaged_checkpoints' / '8')  # Set aside, not deleted.
  assert _latest(run) == (12, [4, 8, 12])
  expected, got = helpers.scalars(reference), helpers.scalars(run)
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
  del variables
  gc.collect()


def test_a_torn_last_metrics_line_is_dropped(tmp_path, caplog):
  reference = tmp_path / 'reference'
  train.train_and_evaluate(_config(), str(reference))
  run = tmp_path / 'run'
  train.train_and_evaluate(_config(num_train_steps=4), str(run))
  with open(run / metric_logging.JSONL, 'a', encoding='utf-8') as f:
    f.write('{"step": 6, "train/lo')  # Killed while writing.
  with caplog.at_level(py_logging.WARNING):
    read = metric_logging.read_jsonl(str(run))  # What the resumed run reads back.
  assert [line['step'] for line in read] == [2, 4, 4]  # Train lines, then the test line.
  assert 'torn last line' in caplog.text
  caplog.clear()
  with caplog.at_level(py_logging.WARNING):
    train.train_and_evaluate(_config(), str(run))
  assert 'torn last line' in caplog.text
  first_run_end = {(4, name) for name in ('test/top1', 'test/best_top1', 'test/loss',
                                              'test/epoch')}
  assert helpers.scalars(run).keys() == helpers.scalars(reference).keys() | first_run_end
  with open(run / metric_logging.JSONL, 'r+', encoding='utf-8') as f:
    lines = f.readlines()
    f.seek(0)
    f.writelines(lines[:1] + ['not json\n'] + lines[1:])
  with pytest.raises(ValueError, match=r'metrics.jsonl, line 2, is not a JSON line'):
    metric_logging.read_jsonl(str(run))


def test_sigterm_between_log_steps_stops_at_the_next_one_and_resumes_exactly(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)
  stop = train.StopSignal()  # What the loop installs: SIGTERM is recorded, not fatal.
  try:
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 10
    while not stop.requested and time.time() < deadline:
      time.sleep(0.01)
    assert stop.requested
  finally:
    stop.restore()
  assert signal.getsignal(signal.SIGTERM) is previous
  steps = ['num_train_steps=100', 'log_every_steps=10', 'checkpoint_every_steps=50']
  code, output = helpers.finish(helpers.main(tmp_path / 'reference', *steps))
  assert code == 0, output[-3000:]
  process = helpers.main(tmp_path / 'run', *steps)
  helpers.wait_for(tmp_path / 'run' / metric_logging.JSONL, process)
  process.send_signal(signal.SIGTERM)
  code, output = helpers.finish(process)
  assert code == 0, output[-3000:]
  stopped, _ = _latest(tmp_path / 'run')
  assert 'SIGTERM' in output
  assert stopped is not None and stopped % 10 == 0 and stopped < 100, stopped
  code, output = helpers.finish(helpers.main(tmp_path / 'run', *steps))
  assert code == 0, output[-3000:]
  expected, got = helpers.scalars(tmp_path / 'reference'), helpers.scalars(tmp_path / 'run')
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key




# Lost or wrong work (issue 25).


def test_weights_that_an_update_makes_non_finite_are_never_saved(tmp_path):
  """A learning rate of 1e38 diverges within a few steps: the run stops at the step whose
  loss, gradients or update is not finite, and every checkpoint on disk holds finite
  weights of earlier steps (the step itself: `test_train_step`)."""
  config = _config(**{'optimizer.learning_rate': 1e38, 'num_train_steps': 4,
                      'log_every_steps': 1, 'checkpoint_every_steps': 1})
  with pytest.raises(FloatingPointError, match=r'Non-finite loss, gradients or updated weights '
                                               r'at step (\d+)') as error:
    train.train_and_evaluate(config, str(tmp_path))
  bad = int(re.search(r'at step (\d+)', str(error.value)).group(1))
  latest, steps = _latest(tmp_path)
  assert all(step < bad for step in steps)
  if latest is not None:
    saved = checkpointing.Checkpoints(str(tmp_path), read_only=True)
    try:
      arrays_saved = saved.restore_arrays(latest)
    finally:
      saved.close()
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(arrays_saved)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def test_a_flat_image_folder_is_refused_with_the_layout(tmp_path):
  """Images without class subfolders would train on label -1 (loss 0, top-1 of chance)."""
  root = tmp_path / 'data'
  for split, count in (('train', 16), ('test', 8)):
    os.makedirs(root / split)
    for index in range(count):
      Image.fromarray(np.full((16, 16, 3), index, np.uint8)).save(root / split / f'{index}.png')
  with pytest.raises(ValueError, match=r'holds images \(16, .*\) but no class subfolders'):
    train.train_and_evaluate(_folder_config(str(root)), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
  root = tmp_path / 'data'
  values = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
  for label in ('a', 'b'):
    os.makedirs(root / 'test' / label)
    Image.fromarray(values).save(root / 'test' / label / 'grey16.png')
  assert Image.open(root / 'test' / 'a' / 'grey16.png').mode == 'I;16'
  config = _folder_config(str(root)).dataset
  image = arrays.load(config, 'test')['image'][0]
  np.testing.assert_array_equal(image[..., 0], np.arange(256).reshape(16, 16))  # v * 255 / 65535.
  assert (image[..., 0] == image[..., 2]).all()


def test_eval_with_another_runs_config_is_refused(tmp_path):
  """A digits run evaluated with another dataset or model would report 100% error."""
  config = _config()
  train.train_and_evaluate(config, str(tmp_path))
  other = _config(**{'dataset.num_classes': 7, 'model.width': 8})
  with pytest.raises(ValueError, match=r"trained with dataset.num_classes=10 \(this config: 7\), "
                                       r"model.width=4 \(this config: 8\)"):
    runner.evaluate(other, str(tmp_path))
  assert not os.path.exists(tmp_path / 'eval.json')
  runner.evaluate(_config(**{'eval.programs': ('classification',)}), str(tmp_path))  # Its own.


def test_a_live_process_keeps_its_lock_however_old(tmp_path):
  """A run suspended (Ctrl-Z) past the refresh window keeps its lock on its host."""
  lock = workdir_lib.Lock(str(tmp_path))
  with open(lock.path, 'w', encoding='utf-8') as f:
    json.dump({'pid': os.getpid(), 'host': socket.gethostname(), 'since': 'long ago'}, f)
  old = time.time() - 10 * workdir_lib.STALE_AFTER_S
  os.utime(lock.path, (old, old))
  with pytest.raises(workdir_lib.WorkdirInUseError, match=f'held by process {os.getpid()}'):
    workdir_lib.Lock(str(tmp_path)).acquire()


def test_a_checkpoints_file_stops_the_run_at_once_with_one_line(tmp_path):
  (tmp_path / 'checkpoints').write_text('not a folder')
  code, output = helpers.finish(helpers.main(tmp_path, 'num_train_steps=8'), timeout=120)
  assert code == 1
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  assert errors == [f'error: {tmp_path / "checkpoints"} is a file, not the folder of the '
                    'checkpoints: move it away.'], output[-2000:]
  assert 'Traceback' not in output


@pytest.mark.parametrize('when', ['starting', 'writing'])
def test_a_failed_checkpoint_save_stops_the_run_naming_the_path_and_cause(tmp_path, monkeypatch,
                                                                          when):
  """Disk full while a save starts, or in the asynchronous write after it: the run stops at
  the save or at the next log step, with the path and the cause."""
  manager = checkpointing.ocp.CheckpointManager
  full = OSError(28, 'No space left on device')

  def failing(*args, **kwargs):
    raise full

  if when == 'starting':
    monkeypatch.setattr(manager, 'save', failing)
  else:
    original = manager.check_for_errors
    saves = []

    def after_a_save(self):
      if saves:
        raise full
      return original(self)

    real_save = manager.save
    monkeypatch.setattr(manager, 'save', lambda self, *a, **k: saves.append(real_save(
        self, *a, **k)))
    monkeypatch.setattr(manager, 'check_for_errors', after_a_save)
  start = time.time()
  with pytest.raises(checkpointing.SaveError, match=(
      f'Saving a checkpoint to {tmp_path / "checkpoints"} failed \\(the latest save '
      r'started: step 4\): OSError: \[Errno 28\] No space left on device')):
    train.train_and_evaluate(_config(), str(tmp_path))
  assert time.time() - start < 120
  logged = sorted({step for step, _ in helpers.scalars(tmp_path)})
  assert logged == [2, 4]  # Stopped at the save (4), or at the log step after it (6).


def test_a_disk_without_room_for_a_checkpoint_stops_the_run_before_writing(tmp_path,
                                                                            monkeypatch):
  disk_usage = checkpointing.shutil.disk_usage
  monkeypatch.setattr(checkpointing.shutil, 'disk_usage',
                      lambda path: disk_usage(path)._replace(free=2**19))  # 0.5 MiB free.
  with pytest.raises(checkpointing.SaveError, match=(
      f'Saving the checkpoint of step 4 to {tmp_path / "checkpoints"} needs about '
      r'[\d.]+ MiB and that disk has 0.5 MiB free')):
    train.train_and_evaluate(_config(), str(tmp_path))
  assert os.listdir(tmp_path / 'checkpoints') == []  # Nothing half-written.


@pytest.mark.parametrize('steps', [4, 12])
def test_a_finished_run_rerun_with_other_steps_keeps_its_results(tmp_path, steps):
  """More steps: the final test line of the first run stays and the new end is evaluated;
  fewer: a clear error, the files untouched."""
  config = _config()
  train.train_and_evaluate(config, str(tmp_path))
  before = (tmp_path / metric_logging.JSONL).read_text()
  tests = lambda: [line['step'] for line in metric_logging.read_jsonl(str(tmp_path))
                   if 'test/top1' in line]
  assert tests() == [8]
  rerun = _config(num_train_steps=steps)
  if steps < 8:
    with pytest.raises(ValueError, match=f'is at step 8, past the {steps} steps'):
      train.train_and_evaluate(rerun, str(tmp_path))
    assert (tmp_path / metric_logging.JSONL).read_text() == before
  else:
    result = train.train_and_evaluate(rerun, str(tmp_path))
    assert result['step'] == 12 and tests() == [8, 12]


# One clear line instead of a traceback (issue 25).


def _one_line(code, output, expected):
  assert code in (1, 2), output[-2000:]
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and expected in errors[0], output[-2000:]
  assert 'Traceback' not in output, output[-2000:]


def test_a_metrics_file_that_is_a_folder_is_named(tmp_path):
  os.makedirs(tmp_path / metric_logging.JSONL)
  _one_line(*helpers.finish(helpers.main(tmp_path)), f'{tmp_path / metric_logging.JSONL} is a '
                                                      'folder, not the metrics file')


def test_a_lock_that_is_a_folder_is_named(tmp_path):
  os.makedirs(tmp_path / workdir_lib.LOCK)
  _one_line(*helpers.finish(helpers.main(tmp_path)), 'run.lock is a folder, not a lock file')


def test_eval_on_a_workdir_it_cannot_write_is_one_line(tmp_path, monkeypatch):
  config = _config(**{'eval.programs': ('classification',)})
  train.train_and_evaluate(config, str(tmp_path))

  def read_only(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(workdir_lib.tempfile, 'TemporaryFile', read_only)
  with pytest.raises(ValueError, match=r'cannot be written \(Permission denied\): --mode eval '
                                       'writes eval.json'):
    runner.evaluate(config, str(tmp_path))


def test_an_image_over_pillows_limit_is_named_or_skipped(tmp_path, monkeypatch, caplog):
  root = _image_folder(tmp_path / 'data')
  big = os.path.join(root, 'train', 'a', 'big.png')
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 64 * 64 // 4)  # big.png is a "bomb".
  config = _folder_config(root, **{'dataset.train_size': 17})
  with pytest.raises(ValueError, match=f'Cannot decode the image {big}'):
    arrays.load(config.dataset, 'train')
  config.dataset.skip_unreadable = True
  with caplog.at_level(py_logging.WARNING):
    assert len(arrays.load(config.dataset, 'train')['label']) == 16
  assert 'Left out 1 unreadable images' in caplog.text


def test_fewer_readable_images_than_a_batch_is_one_error(tmp_path):
  root = _image_folder(tmp_path / 'data')
  for index in range(4):
    with open(os.path.join(root, 'train', 'a', f'{index}.png'), 'wb') as f:
      f.write(os.urandom(100))
  config = _folder_config(root, **{'batch_size': 16, 'dataset.skip_unreadable': True})
  with pytest.raises(ValueError, match='holds 12 readable images .* fewer than the global '
                                       'batch size 16'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('body, expected', [
    ('def get_config():\n  return {"seed": 0}\n', 'get_config() returned dict, not an '
     'ml_collections.ConfigDict'),
    ('def get_config():\n  return None\n', 'get_config() returned None'),
    ('from alignmix_jax.configs import default\n\ndef get_config():\n  config = '
     'default.get_config()\n  del config.eval\n  return config\n', 'the config lacks the '
     'fields eval.'),
])
def test_a_config_file_that_returns_no_config_is_named(tmp_path, body, expected):
  path = tmp_path / 'my_config.py'
  path.write_text(body)
  code, _, stderr = helpers.cli('--config', str(path), '--workdir', str(tmp_path / 'run'))
  _one_line(code, stderr, expected)
  assert not os.path.exists(tmp_path / 'run')


def test_a_group_given_a_dict_on_the_command_line_is_one_line(tmp_path):
  code, _, stderr = helpers.cli(*helpers.TINY, "--config.model={'width': 4}", '--workdir',
                                str(tmp_path / 'run'))
  _one_line(code, stderr, '--config.model')


def test_ctrl_c_saves_at_the_next_log_step_and_a_second_one_stops_at_once(tmp_path):
  steps = ['num_train_steps=100', 'log_every_steps=10', 'checkpoint_every_steps=50']
  process = helpers.main(tmp_path / 'run', *steps)
  helpers.wait_for(tmp_path / 'run' / metric_logging.JSONL, process)
  process.send_signal(signal.SIGINT)
  code, output = helpers.finish(process)
  assert code == 0 and 'SIGINT received' in output, output[-3000:]
  stopped, _ = _latest(tmp_path / 'run')
  assert stopped is not None and stopped % 10 == 0 and stopped < 100
  process = helpers.main(tmp_path / 'again', *steps)
  helpers.wait_for(tmp_path / 'again' / metric_logging.JSONL, process)
  process.send_signal(signal.SIGINT)
  time.sleep(0.2)
  process.send_signal(signal.SIGINT)
  code, output = helpers.finish(process)
  _one_line(code if code != 130 else 1, output, 'interrupted (a second Ctrl-C)')
  assert code == 130


# Silent settings that train nothing or the wrong thing (issue 25).


@pytest.mark.parametrize('fields, message', [
    ({'num_epochs': 0}, 'the run would train nothing'),
    ({'optimizer.learning_rate': -0.1}, 'optimizer.learning_rate=-0.1 must be a finite number '
                                        '> 0'),
    ({'optimizer.learning_rate': float('nan')}, 'optimizer.learning_rate=nan'),
])
def test_settings_that_would_train_nothing_or_diverge_are_refused(tmp_path, fields, message):
  config = tiny_config.with_overrides(**{'num_train_steps': -1, **fields})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
