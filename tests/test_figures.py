"""The README's digits figures against a fresh run of the current code (marked slow:
`.ci/run` runs it after the default suite).

`python -m benchmarks.figures --check digits` trains `configs/digits.py` as the README's
first command does (1 CPU device, XLA's optimisations on), evaluates it with `--mode eval`
and compares the accuracy and every evaluation figure with what the README quotes. The
run is deterministic on a given machine type.
"""

import pytest

from benchmarks import figures


@pytest.mark.slow
def test_the_readme_digits_figures_match_a_fresh_run(capsys):
  code = figures.main(['--check', 'digits'])
  output = capsys.readouterr().out
  assert code == 0, output[-3000:]
  quoted = figures.load_figures()['digits']
  assert quoted['top1'] >= 95.0  # And the offline default still learns.
  assert quoted['steps'] == 20 * 22  # 20 epochs of 22 steps.
