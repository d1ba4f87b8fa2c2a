"""Smoke tests of the benchmark scripts at a tiny size: they run and print their records.
Nothing here asserts on time."""

import json
import os
import subprocess
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(module, *args):
  result = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]


def test_train_throughput_prints_every_row_and_the_ratios(tmp_path):
  rows = ['vanilla', 'clean', 'alignmix']
  records = _records('benchmarks.train_throughput', '--config', 'tests/tiny_config.py',
                     '--steps', '2', '--rows', ','.join(rows), '--pipeline_steps', '2',
                     '--pipelines', 'device,tfdata', '--profile_dir', str(tmp_path),
                     '--config.mixup.sinkhorn_iters=5')
  by_row = {r['row']: r for r in records}
  assert list(by_row) == rows + ['pipeline_device', 'pipeline_tfdata', 'summary']
  for row in rows:
    record = by_row[row]
    # The subprocess inherits conftest's XLA_FLAGS: as many CPU devices as this process.
    assert record['batch'] == 16 and record['width'] == 4
    assert record['devices'] == jax.device_count() == 2
    assert record['images_per_s'] > 0 and record['compile_s'] > 0
    assert record['step_ms_median'] > 0 and record['step_memory_bytes'] > 0
  assert by_row['vanilla']['modes'] == ['clean'] and by_row['clean']['modes'] == ['clean']
  assert len(by_row['alignmix']['modes']) == 5
  # The decoder runs in the clean row only: its step needs more memory than vanilla's.
  assert by_row['clean']['step_memory_bytes'] > by_row['vanilla']['step_memory_bytes']
  for pipeline in (by_row['pipeline_device'], by_row['pipeline_tfdata']):
    assert pipeline['dataset'] == 'digits' and pipeline['train_size'] == 1437
    assert pipeline['images_per_s'] > 0 and pipeline['pipeline_only_images_per_s'] > 0
  assert list(tmp_path.glob('**/*.xplane.pb'))  # The profiler trace of the timed steps.
  summary = by_row['summary']
  assert summary['five_mode_over_vanilla'] > 0


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
  assert all(r['ms_per_batch'] > 0 for r in records)
