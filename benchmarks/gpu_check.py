"""Everything the documents quote of an accelerator, in one command (< 9 min on one GPU).

  python -m benchmarks.gpu_check [--fashion_dir DIR] [--epochs 3] [--out FILE]
  python -m benchmarks.gpu_check --tiny --fashion_dir DIR     # CPU smoke test (CI)

Needs JAX (with the accelerator's plugin), this repository's core dependencies and, for the
side-by-side rows, PyTorch (with CUDA on a GPU); no TensorFlow. Prints JSON lines (and
appends them to `--out`), each with a `check` field:

  environment   jax and torch versions, backend, devices, the peak TFLOP/s used for the MFU;
  torch_reference  `benchmarks.torch_reference --device gpu`: the authors' network and
                AlignMix step in PyTorch (eager float32, autocast bfloat16 channels-last,
                torch.compile of that) beside ours (vanilla, the authors' AlignMix, the
                five-mode AlignMix; float32 and bfloat16; the default steps per dispatch)
                at batch 128 and 512, interleaved; then a `ratios` line per batch;
  fashion_mnist a real training run (`fashion_mnist`, width 16, the device-resident data
                back end, the default steps per dispatch) for `--epochs` epochs: test top-1,
                seconds per epoch (training steps only, from the run's steps/s) and the
                whole run's wall time;
  alignment     `benchmarks.alignment` (B=128, C=512, 4x4 and 8x8);
  dispatch      the vanilla and five-mode steps in bfloat16 at 1, 16 and 64 steps per
                dispatch (`--dispatch_counts`): at the largest count the per-step time is
                close to the device's own, so `overhead_share` = 1 - t(largest) / t(1) is
                the share of a single-step dispatch that is host overhead (the profile's
                finding), and `dispatch_speedup` what steps per dispatch buy;
  train_step    `benchmarks.train_throughput` on the CIFAR-100 PreActResNet18 config (width
                64, batch 128, 32x32): every mode alone and the five-mode AlignMix step, in
                float32 and bfloat16, at the default steps per dispatch: compile time,
                images/s, memory, MFU; then a `summary` line per dtype;
  xla_flags     the five-mode bfloat16 step under each XLA_FLAGS variant of `XLA_VARIANTS`
                (command buffers off, autotuning off) against the defaults;
  targets       which targets of the GPU issue hold (`TARGETS`), from the lines above.

`--tiny` shrinks every part (width 8, batch 16, 16x16 for the step rows, a few steps) so
that the whole script runs on a CPU in a few minutes: the CI smoke test. The checks run in
the order above; none starts after `--budget_s` seconds (each left out says so in a
`skipped` line), and `--skip` leaves checks out (a rerun of the ones that failed). Peak
TFLOP/s come from `PEAK_TFLOPS` by device kind (dense, no sparsity; float32 as TF32, which
XLA uses for float32 convolutions on these GPUs by default) or `--peak_tflops`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from alignmix_jax import metric_logging
from alignmix_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODE_ROWS = 'vanilla,clean,input,latent,feature,feature_reversed,alignmix'
# In the order they run: what the GPU issue's targets need first, so that a run that
# reaches `--budget_s` (checks left out, each with a `skipped` line) keeps them.
CHECKS = ('torch_reference', 'fashion_mnist', 'alignment', 'dispatch', 'train_step',
          'xla_flags')
# XLA_FLAGS variants of the `xla_flags` check (name: flags), each against the defaults.
XLA_VARIANTS = {'command_buffers_off': '--xla_gpu_enable_command_buffer=',
                'autotune_off': '--xla_gpu_autotune_level=0'}
# The GPU issue's targets: (name, what holds, the check that tells).
TARGETS = (
    ('five_mode_bf16_step_ms_at_128', '<= 3.5', 'torch_reference'),
    ('ours_alignmix_vs_torch_autocast_bf16', '>= 1.5 at batch 128 and 512', 'torch_reference'),
    ('ours_alignmix_vs_torch_best', '>= 1.0 at batch 128 and 512', 'torch_reference'),
    ('alignment_share_of_feature_step', '<= 0.05', 'alignment, train_step'),
    ('fashion_mnist_epoch_s_training', '<= 1.2', 'fashion_mnist'),
)
# Dense peak TFLOP/s per device kind (substring of jax's device_kind): float32 (TF32), bf16.
PEAK_TFLOPS = {'H200': (494.0, 989.0), 'H100': (494.0, 989.0), 'A100': (156.0, 312.0),
               'L4': (60.0, 121.0), 'TPU v4': (137.0, 275.0), 'TPU v5 lite': (98.0, 197.0),
               'TPU v5p': (229.0, 459.0), 'TPU v6 lite': (459.0, 918.0)}


def emit(record, out):
  line = json.dumps(record)
  print(line, flush=True)
  if out:
    with open(out, 'a', encoding='utf-8') as f:
      f.write(line + '\n')


def run(command, env=None):
  """Runs `python command...` from the repository root; returns its JSON lines."""
  done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                        env=env, check=False)
  if done.returncode:
    sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
    raise SystemExit(f'gpu_check: `python {" ".join(command)}` failed ({done.returncode}).')
  return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]


def environment(args):
  import jax  # pylint: disable=g-import-not-at-top
  kind = jax.devices()[0].device_kind
  peaks = next((p for name, p in PEAK_TFLOPS.items() if name in kind), (0.0, 0.0))
  if args.peak_tflops:
    peaks = tuple(args.peak_tflops)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  return {'check': 'environment', 'jax': jax.__version__, 'torch': torch_version,
          'backend': jax.default_backend(),
          'devices': jax.device_count(), 'device_kind': kind,
          'peak_tflops': {'float32': peaks[0], 'bfloat16': peaks[1]}}


def _step_base(args):
  if args.tiny:
    return ['--config', 'tests/tiny_config.py', '--steps', '3', '--devices', '1']
  return ['--config', 'cifar100_preactresnet18', '--steps', str(args.steps), '--devices', '1']


def torch_reference(args, out):
  """Ours beside PyTorch on the same device (check `torch_reference`)."""
  if args.tiny:  # torch.compile on a CPU takes minutes: its row runs on the GPU only.
    extra = ['--tiny', '--torch', 'eager_fp32,autocast_bf16']
  else:
    extra = ['--device', 'gpu', '--batches', '128,512']
  records = [{'check': 'torch_reference', **record}
             for record in run(['-m', 'benchmarks.torch_reference', *extra])]
  for record in records:
    emit(record, out)
  return records


def train_steps(args, peaks, out):
  """Every mode row in float32 and bfloat16 at the default steps per dispatch."""
  records = []
  for dtype in ('float32', 'bfloat16'):
    for record in run(['-m', 'benchmarks.train_throughput', *_step_base(args), '--rows',
                       MODE_ROWS, '--steps_per_dispatch', '0', f'--config.model.dtype={dtype}',
                       '--peak_tflops', str(peaks[dtype])]):
      records.append({'check': 'train_step', 'dtype': dtype, **record})
      emit(records[-1], out)
  return records


def dispatch(args, out):
  """The vanilla and five-mode bfloat16 steps at each of `--dispatch_counts`, and the share
  of a single-step dispatch that is host overhead."""
  counts = '1,2' if args.tiny else args.dispatch_counts
  records = run(['-m', 'benchmarks.train_throughput', *_step_base(args), '--rows',
                 'vanilla,alignmix', '--steps_per_dispatch', counts,
                 '--config.model.dtype=bfloat16'])
  by_count = {(r['row'], r['steps_per_dispatch']): r['step_ms_mean'] for r in records
              if r['row'] != 'summary'}
  largest = max(count for _, count in by_count)
  records = [{'check': 'dispatch', 'dtype': 'bfloat16', **record} for record in records]
  records[-1]['overhead_share'] = {  # The summary line.
      row: round(1 - by_count[row, largest] / by_count[row, 1], 3)
      for row, count in by_count if count == 1}
  for record in records:
    emit(record, out)
  return records


def xla_flags(args, out):
  """The five-mode bfloat16 step under each variant of `XLA_VARIANTS` and the defaults."""
  records = []
  variants = {} if args.tiny else XLA_VARIANTS  # GPU flags: XLA:CPU refuses them.
  for name, flags in (('default', ''), *variants.items()):
    env = dict(os.environ, XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} {flags}'.strip())
    for record in run(['-m', 'benchmarks.train_throughput', *_step_base(args), '--rows',
                       'alignmix', '--steps_per_dispatch', '0',
                       '--config.model.dtype=bfloat16'], env=env):
      if record['row'] != 'summary':
        records.append({'check': 'xla_flags', 'variant': name, 'xla_flags': flags, **record})
        emit(records[-1], out)
  return records


def alignment(args, out):
  extra = ['--batch', '8', '--channels', '16', '--repeats', '2'] if args.tiny else []
  records = [{'check': 'alignment', **record}
             for record in run(['-m', 'benchmarks.alignment', *extra])]
  for record in records:
    emit(record, out)
  return records


def fashion_mnist(args, out):
  with tempfile.TemporaryDirectory() as workdir:
    overrides = [f'--config.num_epochs={args.epochs}', "--config.optimizer.decay_epochs=()",
                 f'--config.eval_every_epochs={args.epochs}']
    if args.fashion_dir:
      overrides.append(f'--config.dataset.data_dir={args.fashion_dir}')
    overrides += [f'--config.{item}' for item in args.fashion_set]
    if args.tiny:
      overrides += ['--config.model.width=4', '--config.batch_size=16',
                    '--config.num_train_steps=8', '--config.log_every_steps=4',
                    '--config.checkpoint_every_steps=8', '--config.eval.batch_size=100',
                    '--config.mixup.sinkhorn_iters=10']
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'alignmix_jax', '--config', 'fashion_mnist',
                           '--workdir', workdir, *overrides], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    wall_s = time.perf_counter() - start
    if done.returncode:
      sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
      raise SystemExit(f'gpu_check: the Fashion-MNIST run failed ({done.returncode}).')
    lines = metric_logging.read_jsonl(workdir)
    with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
      config = json.load(f)
  rates = sorted(line['steps_per_sec'] for line in lines if 'steps_per_sec' in line)
  test = [line for line in lines if 'test/top1' in line][-1]
  steps_per_epoch = test['step'] / test['test/epoch']
  record = {'check': 'fashion_mnist', 'steps': test['step'], 'epochs': args.epochs,
            'batch': config['batch_size'], 'width': config['model']['width'],
            'steps_per_dispatch': parallel.steps_per_dispatch(config['steps_per_dispatch']),
            'test_top1': round(test['test/top1'], 2),
            'epoch_s_training': round(steps_per_epoch / rates[len(rates) // 2], 2),
            'wall_s': round(wall_s, 1)}
  emit(record, out)
  return [record]


def targets(records):
  """The `targets` line: each target of `TARGETS` with its measured value(s) and whether it
  holds, from the records of the checks that ran (None where its check did not)."""
  ratios = {r['batch']: r for r in records
            if r['check'] == 'torch_reference' and r.get('row') == 'ratios'}
  five_mode = {(r['batch'], r['row']): r['ms'] for r in records
               if r['check'] == 'torch_reference' and r.get('side') == 'ours'}
  feature = next((r['step_ms_mean'] for r in records if r['check'] == 'train_step'
                  and r.get('row') == 'feature' and r['dtype'] == 'float32'), None)
  side4 = next((r['ours_ms'] for r in records if r['check'] == 'alignment'
                and r.get('side') == 4), None)
  epoch = next((r['epoch_s_training'] for r in records if r['check'] == 'fashion_mnist'),
               None)
  values = {
      'five_mode_bf16_step_ms_at_128': five_mode.get((128, 'alignmix_bf16')),
      'ours_alignmix_vs_torch_autocast_bf16': {
          batch: r.get('alignmix_official_bf16_vs_torch_autocast_bf16')
          for batch, r in ratios.items()} or None,
      'ours_alignmix_vs_torch_best': {batch: r.get('alignmix_official_bf16_vs_torch_best')
                                      for batch, r in ratios.items()} or None,
      'alignment_share_of_feature_step': (None if feature is None or side4 is None
                                          else round(side4 / feature, 3)),
      'fashion_mnist_epoch_s_training': epoch,
  }
  limits = {'five_mode_bf16_step_ms_at_128': lambda v: v <= 3.5,
            'ours_alignmix_vs_torch_autocast_bf16': lambda v: all(
                x is not None and x >= 1.5 for x in v.values()),
            'ours_alignmix_vs_torch_best': lambda v: all(
                x is not None and x >= 1.0 for x in v.values()),
            'alignment_share_of_feature_step': lambda v: v <= 0.05,
            'fashion_mnist_epoch_s_training': lambda v: v <= 1.2}
  return {'check': 'targets', 'targets': [
      {'target': name, 'wanted': wanted, 'from': source, 'value': values[name],
       'holds': None if values[name] is None else bool(limits[name](values[name]))}
      for name, wanted, source in TARGETS]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tiny', action='store_true', help='CPU smoke test sizes')
  parser.add_argument('--fashion_dir', default='', help='the four Fashion-MNIST IDX files '
                      '(default: the config\'s, /usr/share/datasets/fashion-mnist)')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--fashion_set', action='append', default=[], metavar='FIELD=VALUE',
                      help='a config override of the Fashion-MNIST run (repeatable)')
  parser.add_argument('--steps', type=int, default=30, help='timed steps per step row')
  parser.add_argument('--dispatch_counts', default='1,16,64',
                      help='steps per dispatch of the dispatch check')
  parser.add_argument('--budget_s', type=float, default=None, help='start no further check '
                      'after this many seconds (checks run in the order of CHECKS; default '
                      '480, none with --tiny)')
  parser.add_argument('--skip', default='', help=f'checks to leave out: {", ".join(CHECKS)}')
  parser.add_argument('--peak_tflops', type=float, nargs=2, default=None,
                      metavar=('FLOAT32', 'BFLOAT16'), help='override PEAK_TFLOPS')
  parser.add_argument('--out', default='', help='also append the JSON lines to this file')
  args = parser.parse_args(argv)
  if args.budget_s is None:
    args.budget_s = float('inf') if args.tiny else 480.0
  skip = set(filter(None, args.skip.split(',')))
  if skip - set(CHECKS):
    parser.error(f'--skip: unknown checks {", ".join(sorted(skip - set(CHECKS)))}; valid: '
                 f'{", ".join(CHECKS)}.')
  start = time.perf_counter()
  env = environment(args)
  emit(env, args.out)
  steps = {'torch_reference': lambda: torch_reference(args, args.out),
           'train_step': lambda: train_steps(args, env['peak_tflops'], args.out),
           'dispatch': lambda: dispatch(args, args.out),
           'xla_flags': lambda: xla_flags(args, args.out),
           'alignment': lambda: alignment(args, args.out),
           'fashion_mnist': lambda: fashion_mnist(args, args.out)}
  records = []
  for check in CHECKS:
    elapsed = time.perf_counter() - start
    if check in skip or elapsed > args.budget_s:
      emit({'check': check, 'skipped': '--skip' if check in skip else
            f'--budget_s {args.budget_s:.0f} reached after {elapsed:.0f} s'}, args.out)
    else:
      records += steps[check]()
  emit(targets(records), args.out)
  emit({'check': 'done', 'wall_s': round(time.perf_counter() - start, 1)}, args.out)

if __name__ == '__main__':
  main()
