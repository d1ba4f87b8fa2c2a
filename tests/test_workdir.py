"""Tests of alignmix_jax.workdir: `prepare` and `remove_if_empty`, the run lock (held,
refreshed, stale, torn, taken over) and the record of the config (`record_config`).

A second run and a killed run's lock, end to end through `python -m main`, are in
test_faults.py."""

import json
import logging as py_logging
import os
import socket
import subprocess
import sys
import time

import pytest

import tiny_config
from alignmix_jax import train
from alignmix_jax import workdir as workdir_lib


# prepare and remove_if_empty.


def test_prepare_creates_the_folders_and_remove_if_empty_takes_back_only_those(tmp_path):
  target = tmp_path / 'a' / 'b' / 'c'
  created = workdir_lib.prepare(str(target))
  assert created == str(tmp_path / 'a') and target.is_dir()
  assert workdir_lib.prepare(str(target)) is None  # It exists now: nothing created.
  workdir_lib.remove_if_empty(str(target), created)
  assert sorted(os.listdir(tmp_path)) == []  # a/b/c and its parents up to a: gone.

  created = workdir_lib.prepare(str(target))
  (target / 'metrics.jsonl').write_text('{}\n')  # The run wrote something: nothing goes.
  workdir_lib.remove_if_empty(str(target), created)
  assert (target / 'metrics.jsonl').exists()
  (target / 'metrics.jsonl').unlink()
  (tmp_path / 'a' / 'b' / 'other').mkdir()  # A sibling: c goes, b and a stay.
  workdir_lib.remove_if_empty(str(target), created)
  assert not target.exists() and (tmp_path / 'a' / 'b' / 'other').is_dir()
  workdir_lib.remove_if_empty(str(tmp_path / 'a' / 'b' / 'other'), None)  # Existed: kept.
  assert (tmp_path / 'a' / 'b' / 'other').is_dir()


def test_a_workdir_that_is_a_file_or_cannot_be_written(tmp_path, monkeypatch):
  target = tmp_path / 'file'
  target.write_text('')
  with pytest.raises(ValueError, match='is a file, not a folder'):
    workdir_lib.prepare(str(target))
  with pytest.raises(ValueError, match='a part of the path is a file'):
    workdir_lib.prepare(str(target / 'run'))
  config = tiny_config.with_overrides(num_train_steps=4)
  with pytest.raises(ValueError, match='is a file, not a folder'):  # What the loop says.
    train.train_and_evaluate(config, str(target))

  def read_only(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(workdir_lib.tempfile, 'TemporaryFile', read_only)
  with pytest.raises(ValueError, match='cannot be written \\(Permission denied\\)'):
    workdir_lib.prepare(str(tmp_path / 'direct'))
  with pytest.raises(ValueError, match='cannot be written \\(Permission denied\\)'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))


# The lock.


def _write_lock(folder, record):
  path = folder / workdir_lib.LOCK
  path.write_text(record if isinstance(record, str) else json.dumps(record))
  return path


def _age(path, seconds):
  old = time.time() - seconds
  os.utime(path, (old, old))


def test_a_lock_of_another_host_is_refused_until_it_goes_stale(tmp_path):
  path = tmp_path / workdir_lib.LOCK
  path.write_text(json.dumps({'pid': 1, 'host': 'elsewhere', 'since': 'then'}))
  with pytest.raises(workdir_lib.WorkdirInUseError, match='process 1 on host elsewhere'):
    workdir_lib.Lock(str(tmp_path)).acquire()
  old = os.path.getmtime(path) - workdir_lib.STALE_AFTER_S - 10
  os.utime(path, (old, old))  # Not refreshed for longer than STALE_AFTER_S.
  with workdir_lib.Lock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()
  assert not path.exists()


def test_a_lock_of_a_live_process_on_this_host_is_refused_a_dead_ones_taken_over(
    tmp_path, caplog):
  host = socket.gethostname()
  path = _write_lock(tmp_path, {'pid': os.getpid(), 'host': host, 'since': 'now'})
  with pytest.raises(workdir_lib.WorkdirInUseError,
                     match=f'process {os.getpid()} on host {host} \\(since now'):
    workdir_lib.Lock(str(tmp_path)).acquire()
  assert json.loads(path.read_text())['since'] == 'now'  # Left as it was.
  finished = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                            capture_output=True, text=True, check=True)
  dead = int(finished.stdout)
  _write_lock(tmp_path, {'pid': dead, 'host': host, 'since': 'then'})
  with caplog.at_level(py_logging.WARNING):
    lock = workdir_lib.Lock(str(tmp_path)).acquire()
  try:
    assert f'Taking over the stale lock {path} of process {dead} on host {host}' in caplog.text
    record = json.loads(path.read_text())
    assert (record['pid'], record['host']) == (os.getpid(), host)
  finally:
    lock.release()
  assert not path.exists()


def test_a_torn_lock_is_judged_by_its_age(tmp_path):
  path = _write_lock(tmp_path, '{"pid": 12')  # Being written, or torn.
  with pytest.raises(workdir_lib.WorkdirInUseError, match=r'process \? on host \?'):
    workdir_lib.Lock(str(tmp_path)).acquire()
  _age(path, workdir_lib.STALE_AFTER_S + 5)
  with workdir_lib.Lock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()


def test_the_holder_refreshes_the_lock_while_it_runs(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib, 'REFRESH_S', 0.05)
  path = tmp_path / workdir_lib.LOCK
  with workdir_lib.Lock(str(tmp_path)):
    _age(path, 1000)
    deadline = time.time() + 10
    while time.time() - os.path.getmtime(path) > 100 and time.time() < deadline:
      time.sleep(0.02)
    assert time.time() - os.path.getmtime(path) < 100  # Refreshed: not stale to others.
    with pytest.raises(workdir_lib.WorkdirInUseError):
      workdir_lib.Lock(str(tmp_path)).acquire()
  assert not path.exists()


def test_only_process_zero_takes_the_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib.jax, 'process_index', lambda: 1)
  _write_lock(tmp_path, {'pid': os.getpid(), 'host': socket.gethostname(), 'since': 'x'})
  with workdir_lib.Lock(str(tmp_path)):  # The other processes neither check nor write it.
    assert json.loads((tmp_path / workdir_lib.LOCK).read_text())['since'] == 'x'
  assert (tmp_path / workdir_lib.LOCK).exists()


# The record of the config.


def test_record_config_writes_a_new_runs_config_and_reports_a_resumed_runs_changes(
    tmp_path, caplog):
  config = tiny_config.get_config()
  assert workdir_lib.record_config(config, str(tmp_path), resumed=False) == {}
  path = tmp_path / workdir_lib.CONFIG
  recorded = json.loads(path.read_text())
  assert recorded == json.loads(config.to_json_best_effort())
  assert recorded['model']['width'] == 4 and recorded['mixup']['method'] == 'alignmix'
  assert workdir_lib.record_config(config, str(tmp_path), resumed=True) == {}
  changed = tiny_config.with_overrides(**{'model.width': 8, 'mixup.alpha': 1.0})
  with caplog.at_level(py_logging.WARNING):
    differences = workdir_lib.record_config(changed, str(tmp_path), resumed=True)
  assert differences == {'model.width': (4, 8), 'mixup.alpha': (2.0, 1.0)}
  assert 'model.width: 4 -> 8' in caplog.text and 'mixup.alpha: 2.0 -> 1.0' in caplog.text
  assert json.loads(path.read_text()) == recorded  # Kept: the config the run started with.
  path.write_text('{"torn')
  with caplog.at_level(py_logging.WARNING):
    assert workdir_lib.record_config(changed, str(tmp_path), resumed=True) == {}
  assert 'Cannot read' in caplog.text and path.read_text() == '{"torn'  # Kept as it is.
  other = tmp_path / 'resumed_without_record'
  other.mkdir()
  assert workdir_lib.record_config(changed, str(other), resumed=True) == {}
  assert json.loads((other / workdir_lib.CONFIG).read_text())['model']['width'] == 8
