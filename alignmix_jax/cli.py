"""The command line: `python -m alignmix_jax` (from anywhere) or `python -m main` (from the
repository root).

  python -m alignmix_jax --config digits --workdir workdirs/digits            # train
  python -m alignmix_jax --config digits --workdir workdirs/digits --mode eval
  python -m alignmix_jax --config cifar100_preactresnet18 --mode summary
  python -m alignmix_jax --config digits:cutmix --workdir workdirs/digits_cutmix
  python -m main --config configs/digits.py --workdir workdirs/digits       # a config path

`--config` takes a setting's name or a config file's path, with the method as its argument
(`digits:cutmix`, `alignmix_jax.configs`), which also sets the method's network and
hyperparameters; `--config.mixup.method=cutmix` means the same. `--config.<field>=<value>`
overrides any field. Several processes (TPU VM slices, Slurm): pass `--multiprocess` on
every worker, which calls `jax.distributed.initialize()` (cluster auto-detection), or give
the coordinator explicitly with `--coordinator_address`, `--num_processes` and
`--process_id`.

Whatever cannot be used (a config that does not load, an unknown field, a value of the
wrong type, a setting that cannot run) ends in one line on stderr saying what to fix: exit
status 2 for the command line, 1 for the run.
"""

import ast
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alignmix_jax import configs
from alignmix_jax import console
from alignmix_jax import workdir

MODES = ('train', 'eval', 'summary')
_FIELDS_HELP = 'alignmix_jax/configs/default.py lists every field'

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'A setting (`digits`, `digits:cutmix`) or a '
                                'config file (`file.py[:method]`).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and evaluation.')
flags.DEFINE_enum('mode', 'train', MODES, 'What to run.')
flags.DEFINE_integer('checkpoint_step', None, '--mode eval: the step to evaluate '
                     '(default: the latest checkpoint).')
flags.DEFINE_bool('multiprocess', False, 'Call jax.distributed.initialize() with cluster '
                  'auto-detection (TPU VM slices, Slurm).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for a manual '
                    'multi-process launch.')
flags.DEFINE_integer('num_processes', None, 'Number of processes of a manual launch.')
flags.DEFINE_integer('process_id', None, 'This process in a manual launch (0-based).')


def _overrides(argv):
  """`[(dotted field, value text)]` of the `--config.<field>=<value>` arguments."""
  out = []
  for index, arg in enumerate(argv):
    if arg.startswith('--config.'):
      field, has_value, value = arg[len('--config.'):].partition('=')
      if not has_value and index + 1 < len(argv):
        value = argv[index + 1]
      out.append((field, value))
  return out


def _parses_as(current, text):
  """Whether `text` can replace a field whose value is `current` (its type)."""
  try:
    if isinstance(current, bool):
      return text.lower() in ('true', 'false', '1', '0')
    if isinstance(current, int):
      int(text)
    elif isinstance(current, float):
      float(text)
    elif isinstance(current, (tuple, list)):
      return isinstance(ast.literal_eval(text), (tuple, list))
  except (ValueError, SyntaxError):
    return False
  return True


def config_error(argv, error):
  """A one-paragraph explanation of why parsing `argv` raised `error`, with the fix."""
  _, argument = configs.config_argument(argv)
  if argument is None:
    return str(error)
  try:
    config = configs.load(argument)
  except (FileNotFoundError, ValueError) as load_error:
    return str(load_error)
  for field, value in _overrides(argv):
    node, parts = config, field.split('.')
    for depth, part in enumerate(parts):
      if not hasattr(node, 'keys') or part not in node.keys():
        where = '.'.join(parts[:depth]) or 'the config'
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(not a group)'
        return (f'--config.{field}: {where} has no field {part!r} ({_FIELDS_HELP}; '
                f'{where} has: {valid}).')
      node = node[part]
    if hasattr(node, 'keys'):
      example = sorted(node.keys())[0]
      return (f'--config.{field}={value}: {field} is a group of fields, set one at a time, '
              f'e.g. --config.{field}.{example}=... ({field} has: '
              f'{", ".join(sorted(node.keys()))}).')
    if not _parses_as(node, value):
      return (f'--config.{field}={value}: this field holds a {type(node).__name__} (now '
              f'{node!r}); give a value of that type.')
  message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
  return message if message.startswith('--config') else f'--config {argument}: {message}'


def _usage_problem(argv):
  """What is wrong with the (parsed) command line and its config, or None."""
  _, argument = configs.config_argument(argv)
  if FLAGS.config is None:
    if argument is not None:
      return (f'--config {argument}: get_config() returned None, not an '
              'ml_collections.ConfigDict: return the config.')
    return '--config is required, e.g. --config digits.'
  configs.check(FLAGS.config, f'--config {argument}')
  if FLAGS.checkpoint_step is not None and FLAGS.mode != 'eval':
    return (f'--checkpoint_step is for --mode eval; --mode {FLAGS.mode} resumes from the '
            'latest checkpoint.')
  return None


def parse_flags(argv):
  """absl's flag parsing, with a clear one-line error (exit status 2) for a command line or
  a config that cannot be used."""
  try:
    argv = configs.command_line(argv)
  except (FileNotFoundError, ValueError) as error:
    problem = str(error)
  else:
    try:
      args = FLAGS(argv)
      problem = _usage_problem(argv)
    except Exception as error:  # pylint: disable=broad-except
      # ml_collections raises OSError, AttributeError, flag errors... with tracebacks.
      problem = config_error(argv, error)
  if problem is None:
    return args
  print(f'error: {problem}', file=sys.stderr)
  sys.exit(2)


def initialize_distributed():
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise app.UsageError('--coordinator_address needs --num_processes and --process_id.')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.multiprocess:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.configure(FLAGS.verbosity)
  config = FLAGS.config
  if FLAGS.mode == 'summary':
    from alignmix_jax.models import summary  # pylint: disable=g-import-not-at-top
    print(summary.summarize(config))
    return
  if not FLAGS.workdir:
    raise app.UsageError(f'--mode {FLAGS.mode} needs --workdir.')
  initialize_distributed()
  from alignmix_jax import checkpointing  # pylint: disable=g-import-not-at-top (orbax)
  logging.info('Process %d of %d, devices: %d x %s', jax.process_index(), jax.process_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  try:
    if '://' in FLAGS.workdir:
      raise ValueError(
          f'--workdir {FLAGS.workdir}: checkpoints, metrics and evaluation outputs are written '
          'with local file operations, so a bucket path would become a local folder. Give a '
          'local path, or for several hosts a shared filesystem they all mount (NFS, '
          'Filestore, gcsfuse).')
    if FLAGS.mode == 'train':
      from alignmix_jax import train  # pylint: disable=g-import-not-at-top
      train.train_and_evaluate(config, FLAGS.workdir)
    else:
      from alignmix_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
      runner.evaluate(config, FLAGS.workdir, checkpoint_step=FLAGS.checkpoint_step)
  except (ValueError, FileNotFoundError, FloatingPointError, ImportError,
          workdir.WorkdirInUseError, checkpointing.SaveError) as error:
    logging.debug('%s', error)
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print('error: interrupted (a second Ctrl-C): stopped without saving; the checkpoints in '
          'the workdir are intact, and the same command resumes from the latest.',
          file=sys.stderr)
    sys.exit(130)


def run():
  """Parses the command line and runs `main`."""
  app.run(main, flags_parser=parse_flags)
