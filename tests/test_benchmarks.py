"""Smoke tests of the benchmark scripts at a tiny size: they run and print their records.
Nothing here asserts on time."""

import argparse
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import compare_methods
from benchmarks.figures import render
from benchmarks.figures import sections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(module, *args):
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]


def test_train_throughput_prints_every_row_and_the_ratios(tmp_path):
  rows = ['vanilla', 'clean', 'alignmix']
  records = _records('benchmarks.train_throughput', '--config', 'tests/tiny_config.py',
                     '--steps', '2', '--rows', ','.join(rows), '--steps_per_dispatch', '1,2',
                     '--pipeline_steps', '2', '--pipelines', 'device,tfdata',
                     '--profile_dir', str(tmp_path), '--compile_repeats', '2',
                     '--config.mixup.sinkhorn_iters=5')
  assert [(r['row'], r['steps_per_dispatch']) for r in records[:6]] == [
      (row, count) for row in rows for count in (1, 2)]
  by_row = {r['row']: r for r in records[::-1]}  # The rows at one step per dispatch.
  assert list(by_row)[::-1] == rows + ['pipeline_device', 'pipeline_tfdata', 'summary']
  for record in records[:6]:
    # The subprocess inherits conftest's XLA_FLAGS: as many CPU devices as this process.
    assert record['batch'] == 16 and record['width'] == 4
    assert record['devices'] == jax.device_count() == 2
    assert record['images_per_s'] > 0 and record['compile_s'] > 0
    assert record['compile_repeats'] == 2
    assert record['step_ms_median'] > 0 and record['step_memory_bytes'] > 0
    # At least 3 dispatches each; the per-mode times only where a dispatch is one step.
    assert record['steps'] == 3 * record['steps_per_dispatch']
    assert bool(record['step_ms_by_mode']) == (record['steps_per_dispatch'] == 1)
  assert by_row['vanilla']['modes'] == ['clean'] and by_row['clean']['modes'] == ['clean']
  assert len(by_row['alignmix']['modes']) == 5
  # The decoder runs in the clean row only: its step needs more memory than vanilla's.
  assert by_row['clean']['step_memory_bytes'] > by_row['vanilla']['step_memory_bytes']
  for pipeline in (by_row['pipeline_device'], by_row['pipeline_tfdata']):
    assert pipeline['dataset'] == 'digits' and pipeline['train_size'] == 1437
    assert pipeline['images_per_s'] > 0 and pipeline['pipeline_only_images_per_s'] > 0
  assert list(tmp_path.glob('**/*.xplane.pb'))  # The profiler trace of the timed steps.
  summary = by_row['summary']
  assert summary['steps_per_dispatch'] == 1 and summary['five_mode_over_vanilla'] > 0
  assert sorted(summary['dispatch_speedup']) == sorted(rows)
  for row in rows:
    one, two = (r for r in records[:6] if r['row'] == row)
    assert summary['dispatch_speedup'][row] == {
        '2': round(one['step_ms_mean'] / two['step_ms_mean'], 3)}
    assert two['tflops_per_s'] > 0  # FLOPs of one step, whatever the count.
  assert summary['five_mode_compile_over_vanilla'] == round(
      by_row['alignmix']['compile_s'] / by_row['vanilla']['compile_s'], 3)


def test_train_throughput_rejects_an_unknown_row():
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.train_throughput', '--config', 'tests/tiny_config.py',
       '--rows', 'mixmatch'], cwd=REPO, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode != 0 and "Unknown row 'mixmatch'" in result.stderr


def test_eval_throughput_prints_clean_fgsm_and_pgd():
  records = _records('benchmarks.eval_throughput', '--config', 'tests/tiny_config.py',
                     '--steps', '2', '--config.eval.batch_size=32', '--config.eval.pgd_iters=3')
  assert [r['program'] for r in records] == ['clean', 'fgsm', 'pgd']
  assert all(r['images_per_s'] > 0 and r['batch'] == 32 for r in records)
  assert records[2]['pgd_iters'] == 3


def test_alignment_benchmark_prints_one_line_per_side():
  records = _records('benchmarks.alignment', '--batch', '4', '--channels', '8', '--sides', '2,4',
                     '--iters', '5', '--repeats', '2')
  assert [r['side'] for r in records] == [2, 4]
  assert all(r['ours_ms'] > 0 and r['ours_compile_s'] > 0 for r in records)
  # OTT-JAX's rows only where it is installed; the authors' only with --authors_dir.
  has_ott = importlib.util.find_spec('ott') is not None
  assert all(('ott_log_domain_ms' in r) == has_ott and 'authors_ms' not in r for r in records)


def _small_fashion_mnist(root, train=64, test=100):
  """Four gzipped IDX files of random 28x28 images and labels."""
  rng = np.random.default_rng(0)
  for prefix, count in (('train', train), ('t10k', test)):
    for kind, shape in (('images-idx3', (count, 28, 28)), ('labels-idx1', (count,))):
      values = rng.integers(0, 10 if kind.startswith('labels') else 256, shape, dtype=np.uint8)
      header = bytes([0, 0, 8, values.ndim]) + b''.join(n.to_bytes(4, 'big') for n in shape)
      with gzip.open(os.path.join(root, f'{prefix}-{kind}-ubyte.gz'), 'wb') as f:
        f.write(header + values.tobytes())
  return str(root)


def test_gpu_check_runs_end_to_end_at_a_tiny_size(tmp_path):
  data = _small_fashion_mnist(tmp_path)
  out = tmp_path / 'gpu_check.jsonl'
  records = _records('benchmarks.gpu_check', '--tiny', '--fashion_dir', data, '--epochs', '1',
                     '--fashion_set', 'dataset.train_size=64', '--fashion_set',
                     'dataset.test_size=100', '--out', str(out))
  by_check = {}
  for record in records:
    by_check.setdefault(record['check'], []).append(record)
  assert list(by_check) == ['environment', 'torch_reference', 'fashion_mnist', 'alignment',
                            'dispatch', 'train_step', 'xla_flags', 'targets', 'done']
  assert by_check['environment'][0]['backend'] == 'cpu'
  # Ours beside PyTorch: every row of both sides for both steps, then the ratios.
  side_by_side = by_check['torch_reference']
  assert [(r['side'], r['row'], r['step']) for r in side_by_side[:-1]] == [
      ('torch', 'eager_fp32', 'vanilla'), ('torch', 'eager_fp32', 'alignmix'),
      ('torch', 'autocast_bf16', 'vanilla'), ('torch', 'autocast_bf16', 'alignmix'),
      ('ours', 'vanilla_fp32', 'vanilla'), ('ours', 'vanilla_bf16', 'vanilla'),
      ('ours', 'alignmix_official_fp32', 'alignmix_official'),
      ('ours', 'alignmix_official_bf16', 'alignmix_official'),
      ('ours', 'alignmix_fp32', 'alignmix'), ('ours', 'alignmix_bf16', 'alignmix')]
  assert all(r['ms'] > 0 and r['batch'] == 16 and r['width'] == 8 for r in side_by_side[:-1])
  ratios = side_by_side[-1]
  ms = {(r['row'], r['step']): r['ms'] for r in side_by_side[:-1]}
  best = min(('eager_fp32', 'autocast_bf16'), key=lambda row: ms[row, 'alignmix'])
  assert ratios['torch_best_alignmix'] == best
  assert ratios['alignmix_bf16_vs_torch_autocast_bf16'] == round(
      ms['autocast_bf16', 'alignmix'] / ms['alignmix_bf16', 'alignmix'], 3)
  assert ratios['vanilla_fp32_vs_torch_best'] > 0
  steps = by_check['train_step']
  rows = ['vanilla', 'clean', 'input', 'latent', 'feature', 'feature_reversed', 'alignmix']
  for dtype in ('float32', 'bfloat16'):
    got = [r for r in steps if r['dtype'] == dtype]
    assert [r['row'] for r in got] == rows + ['summary']
    assert all(r['devices'] == 1 and r['images_per_s'] > 0 for r in got[:-1])
    assert all(r['steps_per_dispatch'] == 1 for r in got)  # The CPU's default.
    assert got[-1]['feature_over_vanilla'] > 0 and got[-1]['five_mode_over_vanilla'] > 0
  dispatch = by_check['dispatch']
  assert [(r['row'], r['steps_per_dispatch']) for r in dispatch] == [
      ('vanilla', 1), ('vanilla', 2), ('alignmix', 1), ('alignmix', 2), ('summary', 1)]
  by_count = {(r['row'], r['steps_per_dispatch']): r['step_ms_mean'] for r in dispatch[:-1]}
  assert dispatch[-1]['overhead_share'] == {
      row: round(1 - by_count[row, 2] / by_count[row, 1], 3) for row in ('vanilla', 'alignmix')}
  assert [r['variant'] for r in by_check['xla_flags']] == ['default']
  assert [r['side'] for r in by_check['alignment']] == [4, 8]
  fashion = by_check['fashion_mnist'][0]
  assert fashion['steps'] == 8 and 0 <= fashion['test_top1'] <= 100
  assert fashion['epoch_s_training'] > 0 and fashion['steps_per_dispatch'] == 1
  # Each target with its value from the lines above; the five-mode row is at batch 16 here.
  targets = {t['target']: t for t in by_check['targets'][0]['targets']}
  assert targets['five_mode_bf16_step_ms_at_128']['value'] is None
  assert targets['fashion_mnist_epoch_s_training']['value'] == fashion['epoch_s_training']
  assert targets['ours_alignmix_vs_torch_autocast_bf16']['value'] == {
      '16': ratios['alignmix_official_bf16_vs_torch_autocast_bf16']}
  assert targets['fashion_mnist_epoch_s_training']['holds'] == (
      fashion['epoch_s_training'] <= 1.2)
  with open(out, encoding='utf-8') as f:  # The same lines, appended to --out.
    assert [json.loads(line) for line in f] == records
  # The documents' gpu block, rendered from --out, holds every part.
  text = render.render({'gpu': sections.run_gpu(argparse.Namespace(gpu_jsonl=str(out)), [])})
  text = text['gpu']
  assert f'| ours | alignmix_bf16 | alignmix | {ms["alignmix_bf16", "alignmix"]:.2f} ms |' in text
  assert f'| alignmix | 2 | {by_count["alignmix", 2]:.2f} ms |' in text
  assert '| bfloat16 | feature_reversed |' in text
  assert 'Targets of the GPU issue: five_mode_bf16_step_ms_at_128 <= 3.5: not measured' in text


def test_compare_methods_writes_the_table_and_restarts_where_it_stopped(tmp_path):
  """The GPU-window budget at CI size: two runs at once, then the table, its reading and the
  figures; a second command runs nothing again."""
  args = ['--out', str(tmp_path), '--config', 'digits', '--budget', 'gpu_window', '--tiny',
          '--rows', 'vanilla,alignmix', '--parallel', '2']
  result = subprocess.run([sys.executable, '-m', 'benchmarks.compare_methods', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  with open(tmp_path / 'results.json', encoding='utf-8') as f:
    results = json.load(f)
  records = results['records']
  assert [(r['row'], r['seed']) for r in records] == [
      ('vanilla', 0), ('alignmix', 0), ('vanilla', 1), ('alignmix', 1)]
  assert results['parallel'] == 2 and results['overrides']['model.width'] == '4'
  for record in records:
    with open(os.path.join(record['workdir'], 'eval.json'), encoding='utf-8') as f:
      assert json.load(f)['top1_error'] == record['top1_error']
    assert 'ood/sklearn_digits/auroc' in record and 'pgd_error' in record
    # One evaluation, at the last of 6 steps: 6 batches of 16 of the 1437 training images.
    assert record['curve'] == [[pytest.approx(6 / 89), 100.0 - record['top1_error']]]
  table = (tmp_path / 'results.md').read_text()
  assert '| AlignMix/AE |' in table and '| Baseline |' in table and '+-' in table
  assert '- AlignMix/AE vs Baseline: top-1 error ' in table
  for name in ('reliability_best_worst.png', 'figure3_interpolations.png',
               'learning_curves.png'):
    assert (tmp_path / name).stat().st_size > 1000
  again = subprocess.run([sys.executable, '-m', 'benchmarks.compare_methods', *args], cwd=REPO,
                         capture_output=True, text=True, timeout=900, check=False)
  assert 'compare_methods: alignmix seed 1: train' in result.stdout
  assert again.returncode == 0 and 'seed 0: train' not in again.stdout  # Nothing run again.
  assert 'seed 1: train' not in again.stdout
  assert (tmp_path / 'results.md').read_text() == table


def _seed_records(values):
  """Records of `{row: [top-1 error per seed]}`, the other reading metrics fixed."""
  return [{'row': row, 'seed': seed, 'top1_error': error, 'pgd_error': 50.0, 'ece': 1.0,
           'ood/sklearn_digits/auroc': 90.0 + seed}
          for row, errors in values.items() for seed, error in enumerate(errors)]


def test_the_reading_says_better_or_worse_only_beyond_the_seed_spread():
  records = _seed_records({'vanilla': [10.0, 12.0], 'input_mixup': [14.0, 16.0],
                      'alignmix': [10.5, 11.5]})
  lines = compare_methods.reading(records).splitlines()
  # Stds: 1.414 (vanilla, input mixup), 0.707 (AlignMix/AE); equal metrics: 0 +- spread.
  within = 'PGD error +0.00 (within the spread), ECE +0.00 (within the spread), digits ' \
           'AuROC +0.00 (within the spread).'
  assert lines == [
      f'- Input mixup vs Baseline: top-1 error +4.00 (worse), {within}',
      f'- AlignMix/AE vs Baseline: top-1 error +0.00 (within the spread), {within}',
      f'- AlignMix/AE vs Input mixup: top-1 error -4.00 (better), {within}',
      '',
      'AlignMix/AE, beyond the seed spread:',
      '- top-1 error: better than *Input mixup*; within the spread of *Baseline*; worse than '
      'none.',
      *(f'- {metric}: better than none; within the spread of *Baseline*, *Input mixup*; worse '
        'than none.' for metric in ('PGD error', 'ECE', 'digits AuROC'))]
  # 4.0 against 1.414 + 0.707: beyond; 2.0 is not.
  near = _seed_records({'vanilla': [10.0, 12.0], 'alignmix': [8.5, 9.5]})
  assert 'top-1 error -2.00 (within the spread)' in compare_methods.reading(near)
  one_seed = _seed_records({'vanilla': [10.0], 'alignmix': [5.0]})
  assert 'top-1 error -5.00 (within the spread)' in compare_methods.reading(one_seed)


def test_learning_curves_plot_each_row(tmp_path):
  records = [{'row': row, 'seed': seed, 'curve': [[10.0 * e, 50.0 + e + seed] for e in (1, 2, 3)]}
             for row in ('vanilla', 'alignmix') for seed in (0, 1)]
  records.append({'row': 'cutmix', 'seed': 0, 'curve': []})  # A run from before test/epoch.
  path = compare_methods.learning_curves(records, str(tmp_path), 'test')
  assert path == str(tmp_path / 'learning_curves.png') and os.path.getsize(path) > 10_000


def _fake_runs(monkeypatch, calls):
  """compare_methods' subprocesses replaced: training writes a test line, evaluation an
  eval.json (what `python -m alignmix_jax` writes), each call recorded."""
  def fake_run(command, cwd, env, check):
    del cwd, env, check
    workdir = command[command.index('--workdir') + 1]
    os.makedirs(workdir, exist_ok=True)
    calls.append('eval' if '--mode' in command else 'train')
    if '--mode' in command:
      with open(os.path.join(workdir, 'eval.json'), 'w', encoding='utf-8') as f:
        json.dump({'top1_error': 12.5}, f)
    else:
      with open(os.path.join(workdir, 'metrics.jsonl'), 'w', encoding='utf-8') as f:
        f.write(json.dumps({'step': 6, 'test/top1': 90.0, 'test/best_top1': 91.0}) + '\n')
    return subprocess.CompletedProcess(command, 0)

  monkeypatch.setattr(compare_methods.subprocess, 'run', fake_run)


def test_compare_methods_restarts_where_a_kill_left_it(tmp_path, monkeypatch):
  calls = []
  _fake_runs(monkeypatch, calls)
  out, near_ood = str(tmp_path), str(tmp_path / 'ood')
  run = lambda overrides: compare_methods.run_one('digits', 'vanilla', 0, overrides, out,
                                                  near_ood)
  record = run({'num_train_steps': '6'})
  assert calls == ['train', 'eval'] and record['minutes'] >= 0
  assert record['best_top1_error'] == 9.0 and record['top1_error'] == 12.5
  assert run({'num_train_steps': '6'}) == record and calls == ['train', 'eval']  # Done.
  # Killed after eval.json was written, before its time was: the evaluation runs again.
  status = tmp_path / 'runs' / 'vanilla_seed0' / 'compare_run.json'
  recorded = json.loads(status.read_text())
  del recorded['eval_seconds']
  status.write_text(json.dumps(recorded))
  assert run({'num_train_steps': '6'})['top1_error'] == 12.5
  assert calls == ['train', 'eval', 'eval']
  # Other overrides for the same runs: refused, nothing run.
  with pytest.raises(SystemExit, match=r"was run with digits:vanilla and the overrides .*'6'"
                                       r".*give another --out"):
    run({'num_train_steps': '7'})
  assert calls == ['train', 'eval', 'eval']


def test_parallel_runs_each_take_a_share_of_the_accelerator_memory(monkeypatch):
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  environment = compare_methods._environment  # pylint: disable=protected-access
  assert environment(4)['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.225'
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in environment(1)
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.1')  # The user's: kept.
  assert environment(4)['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.1'


@pytest.mark.parametrize('args, message', [
    (['--rows', 'vanilla,mixup'], r"unknown rows \['mixup'\]; valid: vanilla,"),
    (['--seeds', '0,one'], r"--seeds '0,one' is not a comma-separated list of integers"),
    (['--parallel', '-1'], r'--parallel -1 must be at least 1'),
])
def test_compare_methods_refuses_bad_arguments_before_running(tmp_path, capsys, args,
                                                             message):
  with pytest.raises(SystemExit):
    compare_methods.main(['--out', str(tmp_path), *args])
  assert re.search(message, capsys.readouterr().err)
  assert not os.listdir(tmp_path)  # Nothing written.


def test_the_near_ood_folder_is_written_whole(tmp_path):
  folder = tmp_path / 'ood'
  os.makedirs(folder)
  for index in range(330):  # What a killed write left.
    (folder / f'{index:04d}.png').write_bytes(b'')
  compare_methods.write_near_ood(str(folder), 8)
  names = sorted(os.listdir(folder))
  assert len(names) == 1797 and not os.path.exists(str(folder) + '.partial')
  assert all((folder / name).stat().st_size > 0 for name in names[:330])
