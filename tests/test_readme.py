"""The README and docs/*.md as a user reads them: every code block runs as written (the
figures they quote are checked by `tests/test_figures.py`).

Python blocks run as they stand. Shell commands run as cheap stand-ins that still check
everything the command line says: `python -m alignmix_jax ...` and `python -m main ...` with
`--mode summary` (the setting or config file, the method and every override are loaded and
the network built), `launch/*.sh ...` with `--dry-run`, `python -m benchmarks.<script> ...`
with `--help` (their runs are tested at a tiny size in `tests/test_benchmarks.py` and
`tests/test_figures.py`). The set-up commands (venv, pip) are what `.ci/run` runs; the
digits training of the first command is rerun and checked against the README's bands by the
slow test of `tests/test_figures.py`.
"""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r'^```(\w+)\n(.*?)^```$', re.S | re.M)


def _read(path):
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    return f.read()


def _readme():
  return _read('README.md')


def _documents():
  """README.md, then docs/*.md in name order (paths relative to the repository)."""
  docs = sorted(os.path.relpath(path, REPO)
                for path in glob.glob(os.path.join(REPO, 'docs', '*.md')))
  return ['README.md', *docs]


def _blocks(language, documents=None):
  """`[(document, body)]` of the `language` code blocks of `documents` (default: all)."""
  return [(document, body) for document in (documents or _documents())
          for lang, body in FENCE.findall(_read(document)) if lang == language]


def _commands(documents=None):
  """`[(document, command)]`: every shell command of the bash blocks, `&&` chains split."""
  out = []
  for document, body in _blocks('bash', documents):
    for line in body.splitlines():
      if line.strip() and not line.lstrip().startswith('#'):
        out.extend((document, part.strip()) for part in line.split('&&'))
  return out


def _readme_commands():
  return [command for _, command in _commands(['README.md'])]


# A benchmark on absl flags (whose `--help` exits with status 1): its module imported (the
# flags defined), its command line parsed as the script parses it, and its config loaded.
_PARSE_ABSL_FLAGS = (
    'import importlib, sys\n'
    'from absl import flags\n'
    'from alignmix_jax import configs\n'
    'importlib.import_module(sys.argv[1])\n'
    'flags.FLAGS(configs.command_line(sys.argv[1:]))\n'
    'flags.FLAGS.config.keys()\n')


def _uses_absl(module):
  path = os.path.join(REPO, *module.split('.')) + '.py'
  return os.path.isfile(path) and 'from absl import app' in _read(path)


def _stand_in(command):
  """The cheap command that checks `command` (a list), or None for set-up commands."""
  words = shlex.split(command)
  if words[:3] == ['python3', '-m', 'venv'] or words[0] in ('.', 'source') or words[:2] == [
      'pip', 'install']:
    return None
  if words[:3] == ['python', '-m', 'pytest']:
    return None
  if words[:3] in (['python', '-m', 'main'], ['python', '-m', 'alignmix_jax']):
    kept, skip = [], False
    for word in words[3:]:
      if skip:
        skip = False
        continue
      if word in ('--mode', '--workdir', '--checkpoint_step'):
        skip = True
        continue
      if word.split('=', 1)[0] in ('--mode', '--workdir', '--checkpoint_step'):
        continue
      kept.append(word)
    return [sys.executable, '-m', words[2], *kept, '--mode', 'summary']
  if words[0].startswith('launch/') and words[0].endswith('.sh'):
    # First: after `--` it would be passed on to the program.
    return [os.path.join(REPO, words[0]), '--dry-run', *words[1:]]
  if words[:2] == ['python', '-m'] and words[2].startswith('benchmarks.'):
    if _uses_absl(words[2]):  # Its flags parsed and its config loaded, nothing run.
      return [sys.executable, '-c', _PARSE_ABSL_FLAGS, words[2], *words[3:]]
    return [sys.executable, '-m', words[2], '--help']  # Long runs: tested in test_benchmarks.
  raise AssertionError(f'No rule to test the command {command!r} of a document: add one to '
                       'tests/test_readme.py (or make it an inline command).')


def test_the_readme_has_the_commands_a_user_needs():
  commands = _readme_commands()
  assert any(c == 'python -m alignmix_jax --config digits --workdir workdirs/digits'
             for c in commands)
  assert any(c.startswith('python -m alignmix_jax') and '--mode eval' in c for c in commands)
  assert any(c.startswith('launch/') for c in commands)
  assert _blocks('python', ['README.md']), 'the library example'


def test_ci_runs_the_readme_test_command():
  tests = [c for c in _readme_commands() if c.startswith('python -m pytest')]
  assert tests, 'the README gives its test command'
  with open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8') as f:
    ci = f.read()
  for command in tests:
    assert command in ci
  assert 'python -m pytest -m slow tests' in ci


_PYTHON_BLOCKS = _blocks('python')


@pytest.mark.parametrize('document,block', _PYTHON_BLOCKS,
                         ids=[f'{d}:{[b for b, _ in _PYTHON_BLOCKS[:i]].count(d)}'
                              for i, (d, _) in enumerate(_PYTHON_BLOCKS)])
def test_python_blocks_run_as_written(document, block, tmp_path):
  result = subprocess.run([sys.executable, '-c', block], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, f'{document}: ' + result.stderr[-3000:]


_SHELL_COMMANDS = [(d, c) for d, c in _commands() if _stand_in(c) is not None]


@pytest.mark.parametrize('document,command', _SHELL_COMMANDS,
                         ids=[f'{d}: {c}' for d, c in _SHELL_COMMANDS])
def test_shell_commands_run(document, command):
  result = subprocess.run(_stand_in(command), cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, f'{document}: ' + (result.stdout + result.stderr)[-3000:]
