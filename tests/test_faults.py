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
import logging as py_logging
import os
import signal
import socket
import time

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
  assert helpers.scalars(run).keys() == helpers.scalars(reference).keys()
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


