"""Everything the documents quote of an accelerator, in one command (< 8 min on one GPU).

  python -m benchmarks.gpu_check [--fashion_dir DIR] [--epochs 3] [--out FILE]
  python -m benchmarks.gpu_check --tiny --fashion_dir DIR     # CPU smoke test (CI)

Needs JAX (with the accelerator's plugin) and this repository's core dependencies; no
TensorFlow. Prints JSON lines (and appends them to `--out`), each with a `check` field:

  environment   jax version, backend, devices, the peak TFLOP/s used for the MFU;
  train_step    `benchmarks.train_throughput` on the CIFAR-100 PreActResNet18 config (width
                64, batch 128, 32x32): every mode alone and the five-mode AlignMix step, in
                float32 and bfloat16: compile time, images/s, memory, MFU; then a
                `summary` line per dtype with the feature/vanilla and five-mode/vanilla ratios;
  alignment     `benchmarks.alignment` (B=128, C=512, 4x4 and 8x8);
  fashion_mnist a real training run (`fashion_mnist`, the device-resident data
                back end) for `--epochs` epochs: test top-1, seconds per epoch (training
                steps only, from the run's steps/s) and the whole run's wall time.

`--tiny` shrinks every part (width 8, batch 16, 16x16 digits for the step rows, a few
steps) so that the whole script runs on a CPU in a minute or two: the CI smoke test.
Peak TFLOP/s come from `PEAK_TFLOPS` by device kind (dense, no sparsity; float32 as
TF32, which XLA uses for float32 convolutions on these GPUs by default) or `--peak_tflops`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from alignmix_jax import metric_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODE_ROWS = 'vanilla,clean,input,latent,feature,feature_reversed,alignmix'
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
  return {'check': 'environment', 'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': jax.device_count(), 'device_kind': kind,
          'peak_tflops': {'float32': peaks[0], 'bfloat16': peaks[1]}}


def train_steps(args, peaks, out):
  if args.tiny:
    base = ['--config', 'tests/tiny_config.py', '--steps', '3']
  else:
    base = ['--config', 'cifar100_preactresnet18', '--steps', str(args.steps)]
  for dtype in ('float32', 'bfloat16'):
    records = run(['-m', 'benchmarks.train_throughput', *base, '--devices', '1', '--rows',
                   MODE_ROWS, f'--config.model.dtype={dtype}',
                   '--peak_tflops', str(peaks[dtype])])
    for record in records:
      emit({'check': 'train_step', 'dtype': dtype, **record}, out)


def alignment(args, out):
  extra = ['--batch', '8', '--channels', '16', '--repeats', '2'] if args.tiny else []
  for record in run(['-m', 'benchmarks.alignment', *extra]):
    emit({'check': 'alignment', **record}, out)


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
  steps_per_epoch = config['dataset']['train_size'] // config['batch_size']
  test = [line for line in lines if 'test/top1' in line][-1]
  emit({'check': 'fashion_mnist', 'steps': test['step'], 'epochs': args.epochs,
        'batch': config['batch_size'], 'width': config['model']['width'],
        'test_top1': round(test['test/top1'], 2),
        'epoch_s_training': round(steps_per_epoch / rates[len(rates) // 2], 1),
        'wall_s': round(wall_s, 1)}, out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--tiny', action='store_true', help='CPU smoke test sizes')
  parser.add_argument('--fashion_dir', default='', help='the four Fashion-MNIST IDX files '
                      '(default: the config\'s, /usr/share/datasets/fashion-mnist)')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--fashion_set', action='append', default=[], metavar='FIELD=VALUE',
                      help='a config override of the Fashion-MNIST run (repeatable)')
  parser.add_argument('--steps', type=int, default=30, help='timed steps per step row')
  parser.add_argument('--peak_tflops', type=float, nargs=2, default=None,
                      metavar=('FLOAT32', 'BFLOAT16'), help='override PEAK_TFLOPS')
  parser.add_argument('--out', default='', help='also append the JSON lines to this file')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  env = environment(args)
  emit(env, args.out)
  train_steps(args, env['peak_tflops'], args.out)
  alignment(args, args.out)
  fashion_mnist(args, args.out)
  emit({'check': 'done', 'wall_s': round(time.perf_counter() - start, 1)}, args.out)


if __name__ == '__main__':
  main()
