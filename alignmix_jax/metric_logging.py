"""Metric writers: TensorBoard and logging (clu) plus every scalar as a JSON line.

`<workdir>/metrics.jsonl` gets one line per `write_scalars` call, `{"step": s, name: value,
...}`, so a run can be read back without TensorBoard. Only process 0 writes files.
"""

import json
import os

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

JSONL = 'metrics.jsonl'


class JsonlWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file; every other kind of summary is not written."""

  def __init__(self, path):
    self._path = path
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step, scalars):
    line = {'step': int(step)}
    line.update({name: float(np.asarray(value)) for name, value in scalars.items()})
    self._file.write(json.dumps(line) + '\n')
    self._file.flush()  # On disk before any later checkpoint, even if the run is killed.

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def read_jsonl(workdir):
  """The lines of `<workdir>/metrics.jsonl` as dicts (empty when there is none)."""
  path = os.path.join(workdir, JSONL)
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_jsonl(workdir, last_step):
  """Drops the lines after `last_step`: a resumed run writes them again, identically."""
  path = os.path.join(workdir, JSONL)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  kept = [line for line in read_jsonl(workdir) if line['step'] <= last_step]
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(line) + '\n' for line in kept)


def create_writer(workdir):
  """TensorBoard + logging + JSON lines on process 0; logging only on the others."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(os.path.join(workdir, JSONL))])
