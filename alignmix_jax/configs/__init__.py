"""The settings of the paper, one config file each, shipped with the package.

`--config` (and `load`) takes a setting's name or the path of any config file, followed by
an optional `:method` (a name of `alignmix_jax.methods`):

  python -m alignmix_jax --config digits --workdir DIR              # from any directory
  python -m alignmix_jax --config cifar100_preactresnet18:cutmix --workdir DIR
  python -m main --config configs/digits.py --workdir DIR           # a path (repository root)

  from alignmix_jax import configs
  config = configs.load('digits:vanilla')

A config file defines `get_config()` (or `get_config(method)`) returning an
`ml_collections.ConfigDict` with the fields of `default.py`, the schema.
"""

import importlib.util
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
SCHEMA = 'default'
_METHOD_FIELD = '--config.mixup.method'
NAMES = tuple(sorted(name[:-3] for name in os.listdir(DIRECTORY)
                     if name.endswith('.py') and not name.startswith('_')
                     and name[:-3] != SCHEMA))


def resolve(argument):
  """`name[:method]` or `path[:method]` -> `path[:method]`, the form ml_collections loads.

  Raises:
    FileNotFoundError: neither an existing file nor a setting's name (the message lists
      the names).
  """
  spec, colon, method = argument.partition(':')
  if os.path.isfile(spec):
    return argument
  if spec in NAMES:
    return os.path.join(DIRECTORY, f'{spec}.py') + colon + method
  raise FileNotFoundError(f'--config {argument}: {spec!r} is neither a config file nor a '
                          f'setting; settings: {", ".join(NAMES)} (or give the path of a '
                          'config file).')


def config_argument(argv):
  """`(index of the --config value in argv, its value)`, or `(None, None)`."""
  for index, arg in enumerate(argv):
    if arg == '--config' and index + 1 < len(argv):
      return index + 1, argv[index + 1]
    if arg.startswith('--config='):
      return index, arg.split('=', 1)[1]
  return None, None


def command_line(argv):
  """A command line's `argv` with `--config` resolved to a file (`resolve`), the form
  ml_collections' config flag loads, and `--config.mixup.method=M` turned into the config's
  argument `:M` (so that the method's fields are set, as `digits:M` sets them).

  Raises:
    FileNotFoundError: `--config` names no file and no setting.
    ValueError: two different methods (the config's argument and `--config.mixup.method`).
  """
  argv = list(argv)
  method = None
  for position in reversed(range(len(argv))):
    arg = argv[position]
    if arg == _METHOD_FIELD and position + 1 < len(argv):
      method = argv[position + 1]
      del argv[position:position + 2]
    elif arg.startswith(_METHOD_FIELD + '='):
      method = arg.split('=', 1)[1]
      del argv[position]
  index, argument = config_argument(argv)
  if index is None:
    return argv
  if method is not None:
    spec, _, given = argument.partition(':')
    if given and given != method:
      raise ValueError(f'--config {argument} and {_METHOD_FIELD}={method} name two methods; '
                       'give one.')
    argument = f'{spec}:{method}'
  resolved = resolve(argument)
  argv[index] = (f'--config={resolved}' if argv[index].startswith('--config=')
                 else resolved)
  return argv


def load(argument):
  """The config of `argument` (`resolve`'s forms): its file's `get_config(method)`.

  Raises:
    FileNotFoundError: no such file or setting.
    ValueError: the file does not import, defines no `get_config`, or `get_config` fails
      (e.g. an unknown method); the message names the file and the cause.
  """
  path, _, method = resolve(argument).partition(':')
  try:
    spec = importlib.util.spec_from_file_location('alignmix_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f'--config {argument}: {path} does not import: '
                     f'{type(error).__name__}: {error}') from error
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(f'--config {argument}: {path} defines no get_config(); a config file '
                     'returns its ConfigDict from get_config() (see alignmix_jax/configs/).')
  try:
    config = module.get_config(method) if method else module.get_config()
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f'--config {argument}: get_config({method}) failed: {error}') from error
  check(config, f'--config {argument}')
  return config


def _leaves(node, prefix=''):
  """The dotted names of the leaves of a ConfigDict (OOD folder names excepted: any)."""
  for name, value in node.items():
    field = f'{prefix}{name}'
    if field == 'eval.ood_folders':
      continue
    if hasattr(value, 'items'):
      yield from _leaves(value, field + '.')
    else:
      yield field


def check(config, source):
  """Raises a ValueError when `config` (given by `source`, e.g. '--config FILE') is not an
  `ml_collections.ConfigDict` holding every field of the schema (`default.get_config()`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from alignmix_jax.configs import default  # pylint: disable=g-import-not-at-top
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f'{source}: get_config() returned {type(config).__name__}, not an '
                     'ml_collections.ConfigDict: start from '
                     'alignmix_jax.configs.default.get_config() and set fields on it.')
  missing = []
  for field in _leaves(default.get_config()):
    node = config
    for part in field.split('.'):
      node = node.get(part) if hasattr(node, 'get') else None
      if node is None:
        break
    if node is None:
      missing.append(field)
  if missing:
    raise ValueError(f'{source}: the config lacks the field{"s" if len(missing) > 1 else ""} '
                     f'{", ".join(missing[:6])}{", ..." if len(missing) > 6 else ""}: start '
                     'from alignmix_jax.configs.default.get_config() and set fields on it.')


def override(config, fields):
  """Sets dotted fields, e.g. `{'mixup.alpha': 1.0}`, in `config`; returns it."""
  for field, value in fields.items():
    *groups, leaf = field.split('.')
    node = config
    for group in groups:
      node = node[group]
    node[leaf] = value
  return config
