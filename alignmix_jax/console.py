"""What a run prints: our own lines, short, and the libraries' only when asked for.

At the default verbosity (`--verbosity 0`, absl's INFO) the console holds this package's
INFO lines (one per log step, evaluations, checkpoint saves, the final summary) as
`HH:MM:SS message`, and warnings and errors from anywhere. The libraries' INFO chatter
(orbax's checkpoint internals, jax's backend probing, TensorFlow's C++ notices) and the
full scalar dumps of `metric_logging` appear with `--verbosity 1` or more, in absl's
usual format.
"""

import logging as std_logging
import os

from absl import logging

_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_ours(record):
  """Whether a log record comes from this package."""
  return os.path.abspath(record.pathname).startswith(_OURS)


# Library records that say nothing to a user at the default verbosity: orbax's, on every
# checkpoint opened to read, and its thread's traceback when a save fails (the run reports
# that failure itself, in one line: `checkpointing.SaveError`).
_EXPECTED_WARNINGS = ('Given directory is read only',)
_EXPECTED_ERRORS = ('_SignalingThread.run() raised an exception',)


class _QuietFilter(std_logging.Filter):
  """Keeps our records and other modules' warnings and errors (but `_EXPECTED_WARNINGS`)."""

  def filter(self, record):
    if is_ours(record):
      return True
    message = str(record.msg)
    return (record.levelno >= std_logging.WARNING
            and not message.startswith(_EXPECTED_WARNINGS)
            and not any(text in message for text in _EXPECTED_ERRORS))


class _ShortFormatter(std_logging.Formatter):
  """`HH:MM:SS message`, with the level named for warnings and errors."""

  def __init__(self):
    super().__init__('%(asctime)s %(message)s', datefmt='%H:%M:%S')

  def format(self, record):
    text = super().format(record)
    if record.levelno >= std_logging.WARNING:
      stamp, _, message = text.partition(' ')
      text = f'{stamp} {record.levelname}: {message}'
    return text


def configure(verbosity):
  """Sets up the console for absl `verbosity` (0: quiet, as described above)."""
  if verbosity >= 1:
    return
  # TensorFlow's C++ notices (oneDNN, CPU features) when the tf.data back end imports it.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietFilter) for f in handler.filters):
    handler.addFilter(_QuietFilter())
  handler.setFormatter(_ShortFormatter())


def duration(seconds):
  """`1h02m`, `3m05s` or `42s`."""
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'
