"""The figures of the documents (`benchmarks/figures/`): every block is what the figures
scripts render, the bands a fresh run is checked against hold what they claim, and (marked
slow: `.ci/run` runs it after the default suite) a fresh digits run of the current code falls
within the bands the README quotes.
"""

import numpy as np
import pytest

from benchmarks.figures import cli
from benchmarks.figures import documents
from benchmarks.figures import render
from benchmarks.figures import sections
from benchmarks.figures import spread


def test_every_figure_in_the_documents_is_the_figures_scripts():
  quoted = documents.quoted()
  rendered = render.render(cli.load_figures())
  assert set(quoted) == set(rendered), 'a block without figures, or figures unquoted'
  for name, text in rendered.items():
    path, body = quoted[name]
    assert body == text, (
        f'The block {name!r} of {path} differs from docs/figures.json: run `python -m '
        'benchmarks.figures --render`, never edit the numbers by hand.')


def test_figure_blocks_are_rewritten_in_place():
  text = ('a <!-- figures: x -->1<!-- /figures: x --> b\n<!-- figures: t -->\nold\n'
          '<!-- /figures: t -->\n<!-- figures: keep -->k<!-- /figures: keep -->')
  out = documents.write_blocks(text, {'x': '2', 't': '| new |\n| --- |'})
  assert out == ('a <!-- figures: x -->2<!-- /figures: x --> b\n<!-- figures: t -->\n| new |\n'
                 '| --- |\n<!-- /figures: t -->\n<!-- figures: keep -->k<!-- /figures: keep -->')
  assert documents.read_blocks(out) == {'x': '2', 't': '| new |\n| --- |', 'keep': 'k'}


def test_a_block_lives_in_one_document(tmp_path, monkeypatch):
  for name in ('README.md', 'other.md'):
    (tmp_path / name).write_text('<!-- figures: x -->1<!-- /figures: x -->\n')
  monkeypatch.setattr(documents, 'paths',
                      lambda: [str(tmp_path / 'README.md'), str(tmp_path / 'other.md')])
  with pytest.raises(ValueError, match="block 'x' is in .*README.md and in .*other.md"):
    documents.quoted()


@pytest.mark.parametrize('seeds', [3, 5])
def test_the_band_is_a_prediction_interval_of_one_more_run(seeds):
  """Draw `seeds` quoted runs and one fresh run of the same normal distribution, many times:
  the fresh run falls outside the band in about 1 - PREDICTION of the draws."""
  rng = np.random.default_rng(seeds)
  trials = 400_000
  draws = rng.normal(5.0, 0.3, (trials, seeds + 1))
  quoted, fresh = draws[:, :seeds], draws[:, seeds]
  half = spread.band_factor(seeds) * quoted.std(axis=1, ddof=1)
  outside = np.mean(np.abs(fresh - quoted.mean(axis=1)) > half)
  expected = 1 - spread.PREDICTION
  assert 0.75 * expected < outside < 1.35 * expected, outside


def test_summary_band_and_its_floor():
  summary = spread.Summary.of([99.0, 99.5, 100.0])
  assert (summary.mean, summary.low, summary.high, summary.n) == (99.5, 99.0, 100.0, 3)
  assert summary.std == pytest.approx(0.5)
  assert summary.text() == '99.50 +- 0.50' and summary.range_text() == '99.00 to 100.00'
  low, high = spread.band(summary, floor=0.1)
  assert high - 99.5 == pytest.approx(spread.band_factor(3) * 0.5)
  agreeing = spread.Summary.of([99.44, 99.44])
  assert spread.band(agreeing, floor=0.28) == pytest.approx((99.16, 99.72))
  assert spread.band(agreeing, floor=0.7, limits=(0, 100)) == pytest.approx((98.74, 100.0))
  with pytest.raises(ValueError, match='at least 2 seeds'):
    spread.band(spread.Summary.of([1.0]), floor=0.1)


def _digits_run(seed, top1, fgsm):
  return {'seed': seed, 'top1': top1, 'best_top1': 99.7, 'row_error_range': [2.0, 3.0],
          'eval': {'top1_error': 100 - top1, 'fgsm_error': fgsm, 'pgd_error': 12.0,
                   'ece': 4.5}}


def test_check_passes_a_run_within_the_band_and_fails_one_outside():
  quoted = {'digits': {'runs': [_digits_run(s, 99.4 + 0.1 * s, 30.0 + s) for s in range(5)]}}
  inside = {'digits': {'runs': [_digits_run(7, 99.5, 31.5)]}}
  lines, ok = cli.check(quoted, inside)
  assert ok and len(lines) == len(sections.CHECKS['digits'])
  broken = {'digits': {'runs': [_digits_run(7, 95.0, 31.5)]}}  # Accuracy collapsed.
  lines, ok = cli.check(quoted, broken)
  assert not ok
  assert [line.split(':')[0] for line in lines if line.startswith('OUT')] == [
      'OUT  final test top-1 (%)', 'OUT  eval top1_error (%)']


def test_exact_blocks_must_match_digit_for_digit():
  counts = {'cifar10_preactresnet18': 11, 'cifar100_preactresnet18': 12, 'cifar10_wrn16_8': 13}
  quoted = {'summary': counts}
  assert cli.check(quoted, {'summary': dict(counts)})[1]
  assert not cli.check(quoted, {'summary': dict(counts, cifar10_wrn16_8=14)})[1]


@pytest.mark.slow
def test_a_fresh_digits_run_falls_within_the_quoted_bands(capsys):
  """`python -m benchmarks.figures --check digits`: the first README command (1 CPU device,
  XLA's optimisations on) for one seed, evaluated, against the README's bands."""
  quoted = cli.load_figures()['digits']['runs']
  assert len(quoted) >= 3  # The bands come from several seeds.
  assert min(run['top1'] for run in quoted) >= 95.0  # The offline default learns.
  assert all(run['steps'] == 20 * 22 for run in quoted)  # 20 epochs of 22 steps.
  code = cli.main(['--check', 'digits'])
  output = capsys.readouterr().out
  assert code == 0, output[-3000:]
  assert output.count('ok  ') == len(sections.CHECKS['digits'])
