"""Train-step throughput of every mode and method, on synthetic data already on the device.

  python -m benchmarks.train_throughput [--config digits] [--devices N]
      [--steps 20] [--rows vanilla,clean,input,...] [--steps_per_dispatch 1,16]
      [--compile_repeats 1] [--pipeline_steps 0] [--peak_tflops 0]
      [--config.model.width=64 --config.batch_size=128 --config.model.dtype=bfloat16 ...]

One JSON line per row, then a `summary` line with ratios measured in this run (same model
and batch):
  feature_over_vanilla        the feature-mode (aligned A, (13)) step over the vanilla step;
  five_mode_over_vanilla      the full five-mode AlignMix step (a mode drawn per step, mean
                              over `--steps` draws) over the vanilla step;
  mean_of_modes_over_vanilla  the mean of the five single-mode steps over the vanilla step;
  five_mode_compile_over_vanilla  the five-mode step's compile time over the vanilla step's;
  puzzlemix_over_baseline     the PuzzleMix step (mean over its drawn grid sizes) over the
                              Baseline method's step (`vanilla_baseline`, the same network);
  comixup_over_baseline       the Co-Mixup step over the same;
  dispatch_speedup            per row, the step time at the first `--steps_per_dispatch`
                              count over the step time at each count (> 1: faster).
The ratios above the last use the rows at the first count.

Rows. Mode rows use the config's network (AlignMix/AE by default) with a one-mode table:
  vanilla            clean mode, cross-entropy only (the decoder does not run);
  clean              clean mode with the reconstruction loss (decoder forward and backward);
  input, latent, feature, feature_reversed: the mode alone;
  alignmix           the five modes drawn on the device (the paper's method).
Method rows, one per registered method but alignmix (`alignmix_jax.methods`; the vanilla
method as `vanilla_baseline`), use each method's own config (the fields it sets: no
decoder), as a user would run them.

Each row runs at every count K of `--steps_per_dispatch`: K train steps per call to the
devices (`parallel.shard_map_steps`, as the training loop runs them), so the per-step time
at large K is the devices' time without the host's dispatch overhead. Every (row, K) is
compiled (`--compile_repeats` times, taking turns: the compile time is the median), then
they take turns, one dispatch each, until each has run about `--steps` steps (at least 3
dispatches; drift in the machine's speed affects all alike). Each record: compile time
(lower + compile), the median, mean, 10th and 90th percentile step time (a dispatch's time
over K) after one warm-up dispatch, with K = 1 the median per drawn mode, images/s (from the mean), the compiled step's memory (XLA's memory analysis),
the device's peak memory so far (where the backend reports it) and the FLOPs XLA counts
per step (with `--peak_tflops`, the model FLOPs utilisation).
`--profile_dir DIR` traces the timed steps (jax.profiler). `--pipeline_steps N` adds a
`pipeline_<back end>` row per back end of `--pipelines` (device, tfdata; default: the one
the config selects): the alignmix step fed by the real data of the config's dataset, the
pipeline alone (its batches made and on the devices), and the time of one epoch.
CPU devices: set `XLA_FLAGS=--xla_force_host_platform_device_count=N` before running.
"""

import contextlib
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from alignmix_jax import configs
from alignmix_jax import data
from alignmix_jax import methods
from alignmix_jax import models
from alignmix_jax import modes
from alignmix_jax import optim
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import train_step as train_step_lib

MODE_ROWS = ('vanilla', 'clean') + modes.FIVE_MODES[1:] + ('alignmix',)
# Every registered method but alignmix (the mode row of that name); the vanilla method as
# `vanilla_baseline` (the mode row `vanilla` keeps the decoder's parameters).
METHOD_ROWS = {('vanilla_baseline' if name == 'vanilla' else name): name
               for name in methods.names() if name != 'alignmix'}
DEFAULT_ROWS = MODE_ROWS + tuple(METHOD_ROWS)

config_flags.DEFINE_config_file('config', configs.resolve('digits'), 'A setting or config '
                                'file, as for main.py; override fields with '
                                '--config.<field>=<value>.')
flags.DEFINE_integer('devices', 0, 'Use the first N devices (0: all).')
flags.DEFINE_integer('steps', 20, 'Timed steps per row and count (at least 3 dispatches).')
flags.DEFINE_list('steps_per_dispatch', ['1'], 'Train steps per dispatch, K: every row is '
                  "measured at each count given (0: the backend's default).")
flags.DEFINE_list('rows', list(DEFAULT_ROWS), 'Rows to measure.')
flags.DEFINE_integer('pipeline_steps', 0, 'Steps of the `pipeline_<back end>` rows (0: none).')
flags.DEFINE_list('pipelines', [], 'Back ends of the pipeline rows: device, tfdata (default: '
                  'the one the config selects).')
flags.DEFINE_string('profile_dir', '', 'Write a jax.profiler trace of the timed steps '
                    'there (open with TensorBoard or xprof).')
flags.DEFINE_integer('compile_repeats', 1, 'Compile every row this many times (the rows '
                     'taking turns) and report the median compile time.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak TFLOP/s of one device at this dtype (for MFU).')
FLAGS = flags.FLAGS


def row_config(config, row):
  """The config of one benchmark row (see the module docstring)."""
  config = config.copy_and_resolve_references()
  if row in METHOD_ROWS:
    return methods.configure(config, METHOD_ROWS[row])
  if row not in MODE_ROWS:
    raise ValueError(f'Unknown row {row!r}; valid: {", ".join(DEFAULT_ROWS)}.')
  config = methods.configure(config, 'alignmix')
  if row == 'alignmix':
    return config
  name = 'clean' if row == 'vanilla' else row
  weights = tuple(float(mode == name) for mode in modes.FIVE_MODES)
  fields = {'mixup.mode_weights': weights}
  if row == 'vanilla':
    fields.update({'mixup.reconstruction_weight': 0.0, 'mixup.kl_weight': 0.0})
  return configs.override(config, fields)


def synthetic_steps(config, mesh, count=1, seed=0):
  """The inputs of `count` steps: uniform images `[K, B, H, W, 3]`, random labels and a mask
  of ones (the input pipeline's batch structure), split over the mesh (`global_steps`)."""
  size = config.dataset.image_size
  rng = np.random.default_rng(seed)
  shape = (count, config.batch_size)
  steps = {'image': rng.uniform(size=(*shape, size, size, 3)).astype(np.float32),
           'label': rng.integers(0, config.dataset.num_classes, shape, dtype=np.int32),
           'mask': np.ones(shape, np.float32)}
  return parallel.global_steps(steps, mesh)


def _steps_per_epoch(config):
  """Steps per epoch of the config's training split (the decays of its schedule; at least
  one: a row's batch may exceed a small split)."""
  return max(1, data.split_size(config.dataset, 'train') // config.batch_size)


def build(config, mesh, count=1):
  """`(compiled step, initial state, synthetic inputs, compile seconds)` for `config`: the
  step run `count` times per dispatch, `(state, inputs [K, B, ...]) -> (state, metrics
  [K])`."""
  state = state_lib.create_train_state(config, mesh, steps_per_epoch=_steps_per_epoch(config))
  inputs = synthetic_steps(config, mesh, count)
  compiled, seconds = compile_step(config, mesh, state, inputs)
  return compiled, state, inputs, seconds


def compile_step(config, mesh, state, inputs):
  """`(compiled step, seconds)`: the step of `config`, as many steps per dispatch as
  `inputs` stack, built, traced, lowered and compiled from scratch (a new function each
  call, so nothing of an earlier compile is reused)."""
  _, schedules = optim.create_optimizer(config.optimizer, _steps_per_epoch(config))
  step = train_step_lib.make_train_step(config, models.create_model(config), schedules)
  steps = parallel.shard_map_steps(lambda state, batch: step(state, batch), mesh)
  start = time.perf_counter()
  compiled = steps.lower(state, inputs).compile()
  return compiled, time.perf_counter() - start


class Timer:
  """A compiled K-step function, its state and inputs (`next_inputs()`), and the time per
  step (a dispatch's time over K) and the drawn modes of each timed dispatch."""

  def __init__(self, compiled, state, next_inputs):
    self.compiled, self.state, self.next_inputs = compiled, state, next_inputs
    self.times, self.drawn = [], []
    self.state, metrics = compiled(state, next_inputs())  # Warm-up.
    jax.block_until_ready(metrics)
    self.count = len(metrics['mode'])

  def step(self):
    inputs = self.next_inputs()
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, inputs)
    jax.block_until_ready((self.state, metrics))
    self.times.append((time.perf_counter() - start) / self.count)
    self.drawn.append([int(mode) for mode in metrics['mode']])


def device_peak_bytes():
  """Peak bytes in use on device 0 so far, or None where the backend does not say (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def step_memory_bytes(compiled):
  """Arguments + outputs + temporaries of the compiled step, per device (XLA's analysis)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def step_flops(compiled):
  """FLOPs of one step on one device as XLA counts them, or None."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and 'flops' in cost else None


def measure(config, rows, mesh, num_steps, peak_tflops, profile_dir='', compile_repeats=1,
            counts=(1,)):
  """One JSON-able record per row and count of steps per dispatch (`counts`). Every (row,
  count) is compiled first (`compile_repeats` times, taking turns; its compile time is the
  median); then they take turns, one dispatch each, until each has run about `num_steps`
  steps (at least 3 dispatches), so that a drift in the machine's speed (other processes,
  clocks) affects every row alike and the ratios stay comparable."""
  built, compile_times = [], {}
  for row in rows:
    row_cfg = row_config(config, row)
    for count in counts:
      compiled, state, inputs, compile_s = build(row_cfg, mesh, count)
      compile_times[row, count] = [compile_s]
      built.append((row, count, row_cfg, compiled, state, inputs))
  for _ in range(compile_repeats - 1):
    for row, count, row_cfg, _, state, inputs in built:
      compile_times[row, count].append(compile_step(row_cfg, mesh, state, inputs)[1])
  built = [(row, row_cfg, compiled, statistics.median(compile_times[row, count]),
            Timer(compiled, state, lambda inputs=inputs: inputs))
           for row, count, row_cfg, compiled, state, inputs in built]
  with (jax.profiler.trace(profile_dir) if profile_dir else contextlib.nullcontext()):
    for turn in range(max(3, round(num_steps / min(counts)))):
      for *_, timer in built:
        if turn < max(3, round(num_steps / timer.count)):
          timer.step()
  return [_record(*entry, mesh=mesh, peak_tflops=peak_tflops, repeats=compile_repeats)
          for entry in built]


def _significant(value, digits=4):
  """`value` to `digits` significant figures: a small step's TFLOP/s stays nonzero."""
  return float(f'{value:.{digits}g}')


def _record(row, config, compiled, compile_s, timer, *, mesh, peak_tflops, repeats):
  times, count = timer.times, timer.count
  mean_s, median_s = statistics.fmean(times), statistics.median(times)
  names = [name for name, _ in methods.table(config)]
  flops = step_flops(compiled)
  flops = None if flops is None else flops / count  # XLA counts the whole dispatch.
  by_mode = {}
  if count == 1:  # A dispatch's time belongs to one mode.
    drawn = [modes_drawn[0] for modes_drawn in timer.drawn]
    by_mode = {names[i]: round(1e3 * statistics.median(
        t for t, d in zip(times, drawn) if d == i), 2) for i in sorted(set(drawn))}
  record = {
      'benchmark': 'train_throughput', 'row': row, 'method': config.mixup.method,
      'modes': names, 'autoencoder': config.model.autoencoder, 'model': config.model.name,
      'width': config.model.width, 'image_size': config.dataset.image_size,
      'batch': config.batch_size, 'devices': mesh.size, 'dtype': config.model.dtype,
      'steps_per_dispatch': count, 'steps': len(times) * count,
      'compile_s': round(compile_s, 2), 'compile_repeats': repeats,
      'step_ms_median': round(1e3 * median_s, 2), 'step_ms_mean': round(1e3 * mean_s, 2),
      'step_ms_p10': round(1e3 * float(np.percentile(times, 10)), 2),
      'step_ms_p90': round(1e3 * float(np.percentile(times, 90)), 2),
      'step_ms_by_mode': by_mode,
      'images_per_s': round(config.batch_size / mean_s, 1),
      'step_memory_bytes': step_memory_bytes(compiled),
      'device_peak_bytes': device_peak_bytes(),
      'tflops_per_s': None if flops is None else _significant(mesh.size * flops / mean_s / 1e12),
      'device': jax.devices()[0].device_kind,
  }
  if peak_tflops and flops is not None:
    record['mfu'] = _significant(flops / mean_s / 1e12 / peak_tflops)
  return record


def measure_pipeline(config, mesh, num_steps, pipeline, count=1):
  """The alignmix step fed by the real input pipeline of `config.dataset` through the
  `pipeline` back end ('device' or 'tfdata'), `count` steps per dispatch, and the pipeline
  alone."""
  config = row_config(config, 'alignmix')
  config.dataset.pipeline = pipeline
  steps_per_epoch = data.steps_per_epoch(config.dataset, config.batch_size)
  _, schedules = optim.create_optimizer(config.optimizer, steps_per_epoch)
  state = state_lib.create_train_state(config, mesh, steps_per_epoch=steps_per_epoch)
  feed = data.train_feed(config.dataset, mesh, global_batch_size=config.batch_size,
                         seed=config.seed)
  # The pipeline alone: the batches as the step would see them, made and on the devices.
  materialize = jax.jit(jax.vmap(jax.shard_map(
      feed.batch, mesh=mesh, in_specs=(P(), P(parallel.AXIS)), out_specs=P(parallel.AXIS)),
      in_axes=(None, 0)))
  dispatches = max(1, num_steps // count)
  jax.block_until_ready(materialize(feed.resident, feed.take(count)))
  start = time.perf_counter()
  for _ in range(dispatches):
    jax.block_until_ready(materialize(feed.resident, feed.take(count)))
  pipeline_s = (time.perf_counter() - start) / (dispatches * count)
  steps = parallel.shard_map_steps(
      feed.wrap(train_step_lib.make_train_step(config, models.create_model(config), schedules)),
      mesh, num_replicated=1)
  timer = Timer(lambda state, inputs: steps(state, feed.resident, inputs), state,
                lambda: feed.take(count))
  for _ in range(dispatches):
    timer.step()
  mean_s = statistics.fmean(timer.times)
  return {
      'benchmark': 'train_throughput', 'row': f'pipeline_{pipeline}',
      'dataset': config.dataset.name, 'batch': config.batch_size, 'devices': mesh.size,
      'dtype': config.model.dtype, 'steps_per_dispatch': count, 'steps': dispatches * count,
      'step_ms_mean': round(1e3 * mean_s, 2),
      'images_per_s': round(config.batch_size / mean_s, 1),
      'pipeline_only_images_per_s': round(config.batch_size / pipeline_s, 1),
      'epoch_s': round(steps_per_epoch * mean_s, 1),
      'train_size': data.split_size(config.dataset, 'train'), 'device': jax.devices()[0].device_kind,
  }


def summary(records):
  """The step-time ratios (and the mean of the single modes) and the compile-time ratio of
  the five-mode step over the vanilla step, where measured, at the first count of steps per
  dispatch; each row's speed-up from that count to the others."""
  first = records[0]['steps_per_dispatch'] if records else 1
  ms = {r['row']: r for r in records if r['steps_per_dispatch'] == first}
  out = {'benchmark': 'train_throughput', 'row': 'summary', 'steps_per_dispatch': first}
  speedup = {}
  for record in records:
    if record['steps_per_dispatch'] != first and record['row'] in ms:
      speedup.setdefault(record['row'], {})[str(record['steps_per_dispatch'])] = round(
          ms[record['row']]['step_ms_mean'] / record['step_ms_mean'], 3)
  if speedup:
    out['dispatch_speedup'] = speedup

  def ratio(numerator):
    return round(numerator / ms['vanilla']['step_ms_median'], 3)

  if 'vanilla' in ms and 'feature' in ms:
    out['feature_over_vanilla'] = ratio(ms['feature']['step_ms_median'])
  if 'vanilla' in ms and 'alignmix' in ms:
    out['five_mode_over_vanilla'] = ratio(ms['alignmix']['step_ms_mean'])
    out['five_mode_compile_over_vanilla'] = round(
        ms['alignmix']['compile_s'] / ms['vanilla']['compile_s'], 3)
  for name in ('puzzlemix', 'comixup'):
    if 'vanilla_baseline' in ms and name in ms:
      out[f'{name}_over_baseline'] = round(
          ms[name]['step_ms_mean'] / ms['vanilla_baseline']['step_ms_mean'], 3)
  if 'vanilla' in ms and all(m in ms for m in modes.FIVE_MODES):
    out['mean_of_modes_over_vanilla'] = ratio(
        statistics.fmean(ms[m]['step_ms_median'] for m in modes.FIVE_MODES))
  return out


def main(argv):
  del argv
  config = FLAGS.config
  devices = jax.devices()[:FLAGS.devices] if FLAGS.devices else jax.devices()
  mesh = parallel.data_mesh(devices)
  for row in FLAGS.rows:
    row_config(config, row)  # Unknown rows fail before anything is compiled.
  counts = [parallel.steps_per_dispatch(int(count)) for count in FLAGS.steps_per_dispatch]
  if not counts or min(counts) < 1:
    raise app.UsageError(f'--steps_per_dispatch={",".join(FLAGS.steps_per_dispatch)}: give '
                         "counts >= 1 (0: the backend's default), e.g. 1,16.")
  records = measure(config, FLAGS.rows, mesh, FLAGS.steps, FLAGS.peak_tflops,
                    FLAGS.profile_dir, FLAGS.compile_repeats, counts)
  for record in records:
    print(json.dumps(record), flush=True)
  if FLAGS.pipeline_steps:
    for pipeline in FLAGS.pipelines or [data.backend(config.dataset)]:
      print(json.dumps(measure_pipeline(config, mesh, FLAGS.pipeline_steps, pipeline,
                                        counts[0])), flush=True)
  print(json.dumps(summary(records)), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: FLAGS(configs.command_line(argv)))
