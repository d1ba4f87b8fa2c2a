"""The README as a user reads it: every code block runs as written, and every figure it
quotes is the one `benchmarks/figures.py` wrote from a run of the current code.

Python blocks run as they stand. Shell commands run as cheap stand-ins that still check
everything the command line says: `python -m main ...` with `--mode summary` (the config
file, the method and every override are loaded and the network built), `launch/*.sh ...`
with `--dry-run`, `python -m benchmarks.figures|compare_methods ...` with `--help` (their
runs are tested at a tiny size in `tests/test_benchmarks.py` and `tests/test_figures.py`). The set-up commands
(venv, pip) are what `.ci/run` runs; the digits training of the first command is rerun
and checked against the README by the slow test of `tests/test_figures.py`.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from benchmarks import figures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r'^```(\w+)\n(.*?)^```$', re.S | re.M)


def _readme():
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    return f.read()


def _blocks(language):
  return [body for lang, body in FENCE.findall(_readme()) if lang == language]


def _commands():
  """Every shell command of the README's bash blocks, `&&` chains split."""
  out = []
  for body in _blocks('bash'):
    for line in body.splitlines():
      if line.strip() and not line.lstrip().startswith('#'):
        out.extend(part.strip() for part in line.split('&&'))
  return out


def _stand_in(command):
  """The cheap command that checks `command` (a list), or None for set-up commands."""
  words = shlex.split(command)
  if words[:3] == ['python3', '-m', 'venv'] or words[0] in ('.', 'source') or words[:2] == [
      'pip', 'install']:
    return None
  if words[:3] == ['python', '-m', 'pytest']:
    return None
  if words[:3] == ['python', '-m', 'main']:
    kept, skip = [], False
    for word in words[3:]:
      if skip:
        skip = False
        continue
      if word in ('--mode', '--workdir'):
        skip = True
        continue
      kept.append(word)
    return [sys.executable, '-m', 'main', *kept, '--mode', 'summary']
  if words[0].startswith('launch/') and words[0].endswith('.sh'):
    return [os.path.join(REPO, words[0]), *words[1:], '--dry-run']
  if words[:3] in (['python', '-m', 'benchmarks.figures'],
                   ['python', '-m', 'benchmarks.compare_methods']):
    return [sys.executable, '-m', words[2], '--help']  # Long runs: tested in test_benchmarks.
  raise AssertionError(f'No rule to test the README command {command!r}: add one to '
                       'tests/test_readme.py (or make it an inline command).')


def test_the_readme_has_the_commands_a_user_needs():
  commands = _commands()
  assert any('python -m main --config configs/digits.py --workdir workdirs/digits' == c
             for c in commands)
  assert any(c.startswith('python -m main') and '--mode eval' in c for c in commands)
  assert any(c.startswith('launch/') for c in commands)
  assert _blocks('python'), 'the library example'


def test_ci_runs_the_readme_test_command():
  tests = [c for c in _commands() if c.startswith('python -m pytest')]
  assert tests, 'the README gives its test command'
  with open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8') as f:
    ci = f.read()
  for command in tests:
    assert command in ci
  assert 'python -m pytest -m slow tests' in ci


@pytest.mark.parametrize('index', range(len(_blocks('python'))))
def test_python_blocks_run_as_written(index, tmp_path):
  result = subprocess.run([sys.executable, '-c', _blocks('python')[index]], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('command', [c for c in _commands() if _stand_in(c) is not None])
def test_shell_commands_run(command):
  result = subprocess.run(_stand_in(command), cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_every_figure_in_the_readme_is_the_figures_scripts():
  quoted = figures.read_blocks(_readme())
  rendered = figures.render(figures.load_figures())
  assert set(quoted) == set(rendered), 'a README block without figures, or figures unquoted'
  for name, text in rendered.items():
    assert quoted[name] == text, (
        f'README block {name!r} differs from docs/figures.json: run `python -m '
        'benchmarks.figures --render`, never edit the numbers by hand.')


def test_figure_blocks_are_rewritten_in_place():
  text = ('a <!-- figures: x -->1<!-- /figures: x --> b\n<!-- figures: t -->\nold\n'
          '<!-- /figures: t -->\n<!-- figures: keep -->k<!-- /figures: keep -->')
  out = figures.write_blocks(text, {'x': '2', 't': '| new |\n| --- |'})
  assert out == ('a <!-- figures: x -->2<!-- /figures: x --> b\n<!-- figures: t -->\n| new |\n'
                 '| --- |\n<!-- /figures: t -->\n<!-- figures: keep -->k<!-- /figures: keep -->')
  assert figures.read_blocks(out) == {'x': '2', 't': '| new |\n| --- |', 'keep': 'k'}
