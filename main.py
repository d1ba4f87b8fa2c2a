"""alignmix_jax entry point.

  python -m main --config configs/digits.py --workdir workdirs/digits            # train
  python -m main --config configs/digits.py --workdir workdirs/digits --mode eval
  python -m main --config configs/cifar100_preactresnet18.py --mode summary
  python -m main --config configs/digits.py:cutmix --workdir workdirs/digits_cutmix

The method is the config's argument (`file.py:method`), which also sets its network and
hyperparameters; `--config.mixup.method=...` alone would not, and is refused.
Several processes (TPU VM slices, Slurm): pass `--multiprocess` on every worker, which calls
`jax.distributed.initialize()` (cluster auto-detection), or give the coordinator
explicitly with `--coordinator_address`, `--num_processes` and `--process_id`.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alignmix_jax import cli
from alignmix_jax import console
from alignmix_jax import workdir

MODES = ('train', 'eval', 'summary')

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (`file.py` or `file.py:arg`).',
                                lock_config=True)
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


def initialize_distributed():
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise app.UsageError('--coordinator_address needs --num_processes and --process_id.')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.multiprocess:
    jax.distributed.initialize()


def _usage_problem(argv):
  """What is wrong with the (parsed) command line, or None."""
  if FLAGS.config is None:
    return '--config is required, e.g. --config configs/digits.py.'
  if any(arg.startswith('--config.mixup.method') for arg in argv):
    return ('--config.mixup.method changes the method but not the network and '
            'hyperparameters the config sets for it (a baseline has no decoder and its own '
            'alpha): give it as the config argument instead, e.g. --config '
            'configs/digits.py:cutmix.')
  if FLAGS.checkpoint_step is not None and FLAGS.mode != 'eval':
    return (f'--checkpoint_step is for --mode eval; --mode {FLAGS.mode} resumes from the '
            'latest checkpoint.')
  return None


def parse_flags(argv):
  """absl's flag parsing, with a clear one-line error (exit status 2) for a command line or
  a config that cannot be used."""
  try:
    args = FLAGS(argv)
    problem = _usage_problem(argv)
    if problem is None:
      FLAGS.config.keys()  # Loads the config file and applies the overrides now.
  except Exception as error:  # pylint: disable=broad-except
    # ml_collections raises OSError, AttributeError, flag errors... with tracebacks.
    problem = cli.config_error(argv, error)
  if problem is None:
    return args
  print(f'error: {problem}', file=sys.stderr)
  sys.exit(2)


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
          workdir.WorkdirInUseError) as error:
    logging.debug('%s', error)
    print(f'error: {error}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
