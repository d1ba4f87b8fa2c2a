"""Metric writers without TensorFlow: the log, TensorBoard event files and metrics.jsonl.

`create_writer(workdir)` returns a `Writer` whose `write_scalars(step, scalars)` logs one
line (at `--verbosity 1`; the training loop prints its own short line), adds the scalars to
TensorBoard event files in `workdir` (tensorboardX, which needs no TensorFlow) and appends
`{"step": s, name: value, ...}` to `<workdir>/metrics.jsonl`, so a run can be read back
without TensorBoard. Only process 0 writes files; the others log.
"""

import json
import os

from absl import logging
import jax
import numpy as np

JSONL = 'metrics.jsonl'


class Writer:
  """Scalars to the log and, on process 0, to TensorBoard and (optionally) metrics.jsonl.

  Args:
    logdir: the folder of the TensorBoard event files.
    jsonl_path: where to append the JSON lines (None: none).
  """

  def __init__(self, logdir, jsonl_path=None):
    self._summary, self._jsonl = None, None
    if jsonl_path:
      _check_not_a_folder(jsonl_path)
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._summary = SummaryWriter(logdir, flush_secs=30)
      if jsonl_path:
        self._jsonl = open(jsonl_path, 'a', encoding='utf-8')

  def write_scalars(self, step, scalars):
    values = {name: float(np.asarray(value)) for name, value in scalars.items()}
    logging.debug('[%d] %s', step, ', '.join(f'{name} = {value:.6g}'
                                            for name, value in sorted(values.items())))
    if self._summary is not None:
      for name, value in values.items():
        self._summary.add_scalar(name, value, global_step=int(step))
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
      self._jsonl.flush()  # On disk before any later checkpoint, even if the run is killed.

  def flush(self):
    if self._summary is not None:
      self._summary.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self):
    if self._summary is not None:
      self._summary.close()
    if self._jsonl is not None:
      self._jsonl.close()


def _check_not_a_folder(path):
  if os.path.isdir(path):
    raise ValueError(f'{path} is a folder, not the metrics file a run appends its scalars '
                     'to: move it away.')


def read_jsonl(workdir):
  """The lines of `<workdir>/metrics.jsonl` as dicts (empty when there is none).

  A torn last line (a run killed while writing it) is dropped with a warning; a damaged
  line elsewhere is an error that names the file and the line.
  """
  path = os.path.join(workdir, JSONL)
  if not os.path.exists(path):
    return []
  _check_not_a_folder(path)
  with open(path, encoding='utf-8') as f:
    lines = [line for line in f.read().split('\n') if line.strip()]
  out = []
  for number, line in enumerate(lines, 1):
    try:
      out.append(json.loads(line))
    except ValueError as error:
      if number == len(lines):
        logging.warning('Dropping the torn last line of %s (%s): %r', path, error, line[:80])
        break
      raise ValueError(f'{path}, line {number}, is not a JSON line ({error}); fix or delete '
                       'that line.') from error
  return out


def truncate_jsonl(workdir, last_step, reevaluated=True):
  """Keeps the lines up to `last_step`: a resumed run writes the later ones again,
  identically. Its test line at `last_step` goes too when `reevaluated` (the resumed run
  evaluates that step again, see `train`)."""
  path = os.path.join(workdir, JSONL)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  kept = [line for line in read_jsonl(workdir) if line['step'] < last_step
          or (line['step'] == last_step and not (
              reevaluated and any(name.startswith('test/') for name in line)))]
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(line) + '\n' for line in kept)
  os.replace(path + '.tmp', path)


def create_writer(workdir, collection=None):
  """The training writer (events in `workdir`, metrics.jsonl), or with `collection` the
  writer of `<workdir>/<collection>/` events alone (e.g. 'eval')."""
  if collection:
    return Writer(os.path.join(workdir, collection))
  return Writer(workdir, os.path.join(workdir, JSONL))
