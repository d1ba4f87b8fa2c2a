"""Tests of alignmix_jax.metric_logging: the writer (metrics.jsonl and TensorBoard events hold
the same scalars), `read_jsonl` (torn last line, damaged line) and `truncate_jsonl` (what a
resumed run keeps).

A torn metrics line met by a resumed run, end to end, is in test_faults.py."""

import json
import logging as py_logging

import numpy as np
import pytest

import helpers
from alignmix_jax import metric_logging


def _write_lines(workdir, lines):
  (workdir / metric_logging.JSONL).write_text(''.join(json.dumps(line) + '\n'
                                                      for line in lines))


def test_the_writer_appends_json_lines_and_the_same_tensorboard_scalars(tmp_path):
  writer = metric_logging.create_writer(str(tmp_path))
  writer.write_scalars(2, {'train/loss': np.float32(1.5), 'train/lam': 0.25})
  writer.write_scalars(4, {'train/loss': np.array(0.75), 'test/top1': 90})
  writer.close()
  assert metric_logging.read_jsonl(str(tmp_path)) == [
      {'step': 2, 'train/loss': 1.5, 'train/lam': 0.25},
      {'step': 4, 'train/loss': 0.75, 'test/top1': 90.0}]
  assert helpers.tensorboard_scalars(tmp_path) == {
      'train/loss': [(2, 1.5), (4, 0.75)], 'train/lam': [(2, 0.25)], 'test/top1': [(4, 90.0)]}
  again = metric_logging.create_writer(str(tmp_path))  # A resumed run appends.
  again.write_scalars(6, {'train/loss': 0.5})
  again.flush()
  assert [line['step'] for line in metric_logging.read_jsonl(str(tmp_path))] == [2, 4, 6]
  again.close()


def test_a_collection_writer_writes_events_in_its_folder_and_no_json_lines(tmp_path):
  writer = metric_logging.create_writer(str(tmp_path), 'eval')
  writer.write_scalars(440, {'top1_error': 12.5})
  writer.close()
  assert helpers.tensorboard_scalars(tmp_path / 'eval') == {'top1_error': [(440, 12.5)]}
  assert not (tmp_path / metric_logging.JSONL).exists()
  assert metric_logging.read_jsonl(str(tmp_path)) == []  # No file: no lines.


def test_read_jsonl_drops_a_torn_last_line_and_names_a_damaged_one(tmp_path, caplog):
  _write_lines(tmp_path, [{'step': 2, 'train/loss': 1.0}, {'step': 4, 'train/loss': 0.5}])
  with open(tmp_path / metric_logging.JSONL, 'a', encoding='utf-8') as f:
    f.write('{"step": 6, "train/lo')  # Killed while writing.
  with caplog.at_level(py_logging.WARNING):
    lines = metric_logging.read_jsonl(str(tmp_path))
  assert lines == [{'step': 2, 'train/loss': 1.0}, {'step': 4, 'train/loss': 0.5}]
  assert 'Dropping the torn last line' in caplog.text and '"step": 6' in caplog.text
  text = (tmp_path / metric_logging.JSONL).read_text().splitlines()
  (tmp_path / metric_logging.JSONL).write_text('\n'.join([text[0], 'not json', *text[1:]]))
  with pytest.raises(ValueError, match=r'metrics.jsonl, line 2, is not a JSON line'):
    metric_logging.read_jsonl(str(tmp_path))


def test_truncate_keeps_the_lines_before_the_step_and_its_training_lines(tmp_path):
  lines = [{'step': 2, 'train/loss': 1.0}, {'step': 4, 'train/loss': 0.5},
           {'step': 4, 'test/top1': 60.0, 'test/best_top1': 60.0},
           {'step': 6, 'train/loss': 0.25}, {'step': 8, 'train/loss': 0.2},
           {'step': 8, 'test/top1': 70.0}]
  _write_lines(tmp_path, lines)
  metric_logging.truncate_jsonl(str(tmp_path), 4)
  # The resumed run (from step 4) evaluates step 4 again and writes steps 6 and 8 again.
  assert metric_logging.read_jsonl(str(tmp_path)) == lines[:2]
  metric_logging.truncate_jsonl(str(tmp_path), 0)
  assert metric_logging.read_jsonl(str(tmp_path)) == []
  metric_logging.truncate_jsonl(str(tmp_path / 'none'), 4)  # No file: nothing to do.
  assert not (tmp_path / 'none').exists()
