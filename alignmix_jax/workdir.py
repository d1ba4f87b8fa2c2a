"""A training run's workdir: checked before use, locked while a run trains in it, and the
record of the config the run was trained with.

  prepare(workdir)         creates it, or a clear error when it is a file or not writable;
  remove_if_empty(...)     removes what `prepare` created if a run left it empty;
  Lock(workdir)            `<workdir>/run.lock` on process 0 while a run trains: a second run
                           on the same workdir fails at once, saying which process holds it;
  record_config(...)       `<workdir>/config.json`: written by the run that starts the
                           workdir, kept by the runs that resume it (a differing config is
                           reported, field by field).

A lock whose process is gone is taken over with a warning. On the same host that is when its
process id no longer exists: a live process keeps its lock however old (a run suspended
with Ctrl-Z keeps it). A lock of another host is taken to be gone when it has not been
refreshed for `STALE_AFTER_S` seconds (its holder refreshes it every `REFRESH_S` seconds
while it runs), so a run killed on another node of a cluster can be restarted elsewhere; a
run suspended on another host for longer than that loses its lock.
"""

import json
import os
import socket
import tempfile
import threading
import time

from absl import logging
import jax

LOCK = 'run.lock'
CONFIG = 'config.json'
REFRESH_S = 30.0
STALE_AFTER_S = 180.0


class WorkdirInUseError(RuntimeError):
  """Another run trains in this workdir."""


def prepare(workdir):
  """Creates `workdir` (and its parents) and checks that this process can write there.

  Returns:
    The outermost folder this call created (None when `workdir` existed), for
    `remove_if_empty`.

  Raises:
    ValueError: `workdir` (or a parent) is a file, or it cannot be written.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir} is a file, not a folder: give a folder (it is '
                     'created if it does not exist).')
  created, parent = None, os.path.abspath(workdir)
  while not os.path.exists(parent):
    created, parent = parent, os.path.dirname(parent)
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as error:
    raise ValueError(f'--workdir {workdir}: a part of the path is a file ({error}).') from error
  except OSError as error:
    raise ValueError(f'--workdir {workdir} cannot be created ({error.strerror}): give a '
                     'folder this user can write, or fix its permissions.') from error
  check_writable(workdir)
  return created


def check_writable(folder, why=''):
  """Raises a ValueError naming `folder` and the cause when this process cannot create a
  file in it (`why`: what the run writes there)."""
  try:
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as error:
    raise ValueError(f'--workdir {folder} cannot be written ({error.strerror})'
                     + (f': {why}' if why else '') + '; give a folder this user can write, '
                     'or fix its permissions.') from error


def remove_if_empty(workdir, created):
  """Removes `workdir` and its parents up to `created` (from `prepare`) while they are
  empty: a run that failed before training leaves no folders it made."""
  if created is None or jax.process_index() != 0:
    return
  folder = os.path.abspath(workdir)
  while True:
    try:
      os.rmdir(folder)  # Only if empty.
    except OSError:
      return
    if folder == created:
      return
    folder = os.path.dirname(folder)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


class Lock:
  """The exclusive lock of a workdir, held by process 0 of a run (a context manager)."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, LOCK)
    self._owner = jax.process_index() == 0
    self._stop = threading.Event()
    self._thread = None

  def _holder(self):
    """The recorded holder `{'pid', 'host', 'since'}` and the lock's age in seconds."""
    try:
      age = time.time() - os.path.getmtime(self.path)
      with open(self.path, encoding='utf-8') as f:
        return json.load(f), age
    except FileNotFoundError:
      return None, 0.0
    except (OSError, ValueError):
      return {}, age  # Being written, or torn: judged by its age alone.

  def _stale(self, holder, age):
    """Whether the lock's holder is gone: its process on this host, else by the lock's age."""
    if holder.get('host') == socket.gethostname() and 'pid' in holder:
      return not _alive(holder['pid'])
    return age > STALE_AFTER_S

  def acquire(self):
    if not self._owner:
      return self
    if os.path.isdir(self.path):
      raise ValueError(f'{self.path} is a folder, not a lock file: remove it (a run keeps its '
                       'lock in that file while it trains).')
    record = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                         'since': time.strftime('%Y-%m-%d %H:%M:%S')})
    for _ in range(3):
      try:
        descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder, age = self._holder()
        if holder is None:
          continue  # Released meanwhile.
        if not self._stale(holder, age):
          raise WorkdirInUseError(
              f'Another run trains in this workdir: {self.path} is held by process '
              f'{holder.get("pid", "?")} on host {holder.get("host", "?")} (since '
              f'{holder.get("since", "?")}, refreshed {age:.0f} s ago). Wait for it to end, '
              'use another --workdir, or, if that run is gone, delete the lock (it is also '
              f'taken over by itself once {STALE_AFTER_S:.0f} s old).')
        logging.warning('Taking over the stale lock %s of process %s on host %s (%.0f s '
                        'old).', self.path, holder.get('pid', '?'), holder.get('host', '?'),
                        age)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(descriptor, 'w', encoding='utf-8') as f:
        f.write(record)
      self._thread = threading.Thread(target=self._refresh, daemon=True)
      self._thread.start()
      return self
    raise WorkdirInUseError(f'Could not take the lock {self.path}: other processes keep '
                            'taking it. Is another run starting in this workdir?')

  def _refresh(self):
    while not self._stop.wait(REFRESH_S):
      try:
        os.utime(self.path)
      except OSError:
        return

  def release(self):
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _flat(tree, prefix=''):
  out = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{name}.'))
    else:
      out[f'{prefix}{name}'] = value
  return out


def config_differences(config, workdir):
  """`{dotted field: (recorded, now)}` where `config` differs from `<workdir>/config.json`,
  the config the run in `workdir` started with; None when there is no readable record (a
  warning says why when the file exists)."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      recorded = json.load(f)
  except (OSError, ValueError) as error:
    logging.warning('Cannot read %s (%s).', path, error)
    return None
  old, new = _flat(recorded), _flat(json.loads(config.to_json_best_effort()))
  return {field: (old.get(field), new.get(field)) for field in sorted(set(old) | set(new))
          if old.get(field) != new.get(field)}


def record_config(config, workdir, resumed):
  """Writes `<workdir>/config.json` for a new run; on a resumed run keeps the file and
  logs a warning listing the fields that differ from it (process 0 only).

  Returns:
    The differing fields, `{field: (recorded, now)}` (empty for a new run).
  """
  if jax.process_index() != 0:
    return {}
  path = os.path.join(workdir, CONFIG)
  if resumed and os.path.exists(path):
    differences = config_differences(config, workdir) or {}
    if differences:
      logging.warning('Resuming with a config that differs from the one this run started with '
                      '(%s is kept): %s', path, '; '.join(
                          f'{field}: {was!r} -> {now!r}' for field, (was, now) in
                          differences.items()))
    return differences
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
  os.replace(path + '.tmp', path)
  return {}
