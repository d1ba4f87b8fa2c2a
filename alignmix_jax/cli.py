"""Command-line helpers of `main.py`: a clear message for a `--config` that cannot be loaded.

ml_collections reports a missing config file, a file without `get_config`, an unknown
`--config.<field>` or a value of the wrong type with a raw traceback or a misleading
"Unknown command line flag". `config_error(argv, error)` loads the config the way `--config`
does, finds what went wrong and says how to fix it.
"""

import ast
import importlib.util
import os

_FIELDS_HELP = 'configs/default.py lists every field'


def _config_argument(argv):
  """The value of `--config` in `argv` (`file.py` or `file.py:arg`), or None."""
  for index, arg in enumerate(argv):
    if arg == '--config' and index + 1 < len(argv):
      return argv[index + 1]
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


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


def _load(argument):
  """`(config, None)`, or `(None, message)` saying why `--config argument` cannot load."""
  path, _, method = argument.partition(':')
  if not os.path.isfile(path):
    return None, (f'--config {argument}: no such file {path!r} (the configs are in '
                  'configs/, e.g. configs/digits.py).')
  try:
    spec = importlib.util.spec_from_file_location('config_under_test', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as error:  # pylint: disable=broad-except
    return None, f'--config {argument}: {path} does not import: {type(error).__name__}: {error}'
  if not callable(getattr(module, 'get_config', None)):
    return None, (f'--config {argument}: {path} defines no get_config(); a config file '
                  'returns its ConfigDict from get_config() (see configs/).')
  try:
    return (module.get_config(method) if method else module.get_config()), None
  except Exception as error:  # pylint: disable=broad-except
    return None, f'--config {argument}: get_config({method or ""}) failed: {error}'


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
  argument = _config_argument(argv)
  if argument is None:
    return str(error)
  config, message = _load(argument)
  if message:
    return message
  for field, value in _overrides(argv):
    node, parts = config, field.split('.')
    for depth, part in enumerate(parts):
      if not hasattr(node, 'keys') or part not in node.keys():
        where = '.'.join(parts[:depth]) or 'the config'
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '(not a group)'
        return (f'--config.{field}: {where} has no field {part!r} ({_FIELDS_HELP}; '
                f'{where} has: {valid}).')
      node = node[part]
    if not _parses_as(node, value):
      return (f'--config.{field}={value}: this field holds a {type(node).__name__} (now '
              f'{node!r}); give a value of that type.')
  return f'--config {argument}: {str(error).strip().splitlines()[-1]}'
