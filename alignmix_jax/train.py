"""The training loop: `train_and_evaluate(config, workdir)`.

Init or restore (orbax, `<workdir>/checkpoints`), then for each step: the data-parallel
train step (`jax.jit(jax.shard_map(train_step))` over all devices of all processes), train
metrics every `log_every_steps`, test top-1 every `eval_every_epochs` (final and best), a
checkpoint every `checkpoint_every_steps`. Metrics go to TensorBoard, the log and
`<workdir>/metrics.jsonl`.

Guarantees (README, Training):
  * exact resume: a run restarted from a checkpoint (e.g. after SIGKILL) yields the same
    batches, random draws and metrics at every later step as an uninterrupted run (train
    metrics are averaged over windows that end at multiples of `log_every_steps`, and
    checkpoint steps are such multiples); a checkpoint is saved before the evaluation of its
    step, and a run resumed there evaluates that step again;
  * SIGTERM: the run goes on to the next multiple of `log_every_steps`, saves a checkpoint
    there and exits cleanly (so its metrics equal an uninterrupted run's);
  * a non-finite loss or gradient stops the run with an error; the state of that step is
    never applied, so the checkpoints on disk are the last good ones;
  * one run per workdir (`workdir.Lock`); config.json records the config the run started
    with; damaged checkpoints are skipped (`checkpointing`).
"""

import contextlib
import functools
import os
import signal
import time

from absl import logging
import jax
import numpy as np
from jax.experimental import multihost_utils

from alignmix_jax import alignment
from alignmix_jax import checkpointing
from alignmix_jax import console
from alignmix_jax import data
from alignmix_jax import metric_logging
from alignmix_jax import models
from alignmix_jax import modes
from alignmix_jax import optim
from alignmix_jax import parallel
from alignmix_jax import train_step as train_step_lib
from alignmix_jax import workdir as workdir_lib


class StopSignal:
  """Records SIGTERM (preemption, `kill`) so the loop can save and leave cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the next log step and '
                    'stopping.')
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def check_config(config, num_devices):
  """Raises ValueError for settings that cannot run (before anything is compiled)."""
  modes.method_table(config)  # Unknown method or bad mode weights.
  if config.model.name in models.ENCODERS:  # Else create_model names the valid ones.
    modes.check_layers(config, models.ENCODERS[config.model.name].num_stages)
  alignment.check_settings(config.mixup.sinkhorn_eps, config.mixup.sinkhorn_iters)
  data.backend(config.dataset)  # Unknown dataset, pipeline or augmentation.
  for field, why in (('log_every_steps', 'train metrics are averaged over that many steps'),
                     ('checkpoint_every_steps', 'a checkpoint is saved every that many steps'),
                     ('eval_every_epochs', 'test top-1 is measured every that many epochs'),
                     ('keep_checkpoints', 'that many latest checkpoints are kept; 0 would '
                                          'delete every one')):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{field}={value!r} must be an integer >= 1 ({why}).')
  if config.batch_size % num_devices:
    raise ValueError(f'batch_size={config.batch_size} must be a multiple of the number of '
                     f'devices ({num_devices}).')
  if config.eval.batch_size % num_devices:
    raise ValueError(f'eval.batch_size={config.eval.batch_size} must be a multiple of the '
                     f'number of devices ({num_devices}).')
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ValueError(
        f'checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple of '
        f'log_every_steps={config.log_every_steps}, so that a resumed run averages its '
        'metrics over the same windows as an uninterrupted one.')


def summarize_window(metrics, table_modes):
  """Scalars of the steps since the last write, from their stacked per-step metrics.

  `train/loss`, `train/ce` and `train/lam` average all steps; `train/loss_<mode>` and
  `train/mode_fraction/<mode>` split them by the mode drawn (`table_modes`: the
  `modes.Mode`s of the method's table, in order); `train/reconstruction` and `train/kl`
  average the clean steps (they are 0 in mixed ones); `train/sinkhorn_row_error` averages
  the steps that align (each step's largest `|sum_j R_ij - 1|` over the global batch).
  """
  drawn = metrics['mode'].astype(int)
  scalars = {f'train/{name}': float(np.mean(metrics[name])) for name in ('loss', 'ce', 'lam')}
  scalars.update({f'train/{name}': float(metrics[name][-1])
                  for name in metrics if name.endswith('learning_rate')})
  for index, mode in enumerate(table_modes):
    chosen = drawn == index
    scalars[f'train/mode_fraction/{mode.name}'] = float(np.mean(chosen))
    if chosen.any():
      scalars[f'train/loss_{mode.name}'] = float(np.mean(metrics['loss'][chosen]))
      if mode.clean:
        for name in ('reconstruction', 'kl'):
          scalars[f'train/{name}'] = float(np.mean(metrics[name][chosen]))
  aligned = np.isin(drawn, [index for index, mode in enumerate(table_modes) if mode.aligns])
  if aligned.any():
    scalars['train/sinkhorn_row_error'] = float(np.mean(metrics['sinkhorn_row_error'][aligned]))
  return scalars


class Progress:
  """Steps per second and the time left, from the training steps alone: the time spent in
  compiling, evaluations and checkpoints (`paused`) is left out. The rate reported is the
  last window's; the ETA uses the mean rate since the start, so it does not jump."""

  def __init__(self, start, num_steps, steps_per_epoch):
    self._num_steps, self._steps_per_epoch = num_steps, steps_per_epoch
    self._start, self._step, self._time = start, start, time.perf_counter()
    self._paused = self._busy = 0.0

  @contextlib.contextmanager
  def paused(self):
    """Leaves the time spent inside (compiling, evaluation, checkpoint) out of the rate."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - start

  def report(self, step, scalars):
    """Logs the step's line (loss, learning rate, rate, ETA); returns `{'steps_per_sec'}`."""
    now = time.perf_counter()
    seconds = max(now - self._time - self._paused, 1e-9)
    rate = (step - self._step) / seconds
    self._busy += seconds
    mean_rate = (step - self._start) / self._busy
    eta = (self._num_steps - step) / mean_rate if mean_rate > 0 else float('inf')
    learning_rate = scalars.get('train/learning_rate')
    logging.info('step %d/%d (epoch %.1f): loss %.4f%s, %.2f steps/s, ETA %s', step,
                 self._num_steps, step / self._steps_per_epoch, scalars['train/loss'],
                 '' if learning_rate is None else f', lr {learning_rate:.4g}', rate,
                 console.duration(eta))
    self._step, self._time, self._paused = step, now, 0.0
    return {'steps_per_sec': rate}


def evaluate_top1(eval_fn, variables, test_batches):
  """Test top-1 accuracy (%) and mean loss over the whole test split, every example once."""
  totals = None
  for batch in test_batches:
    sums = eval_fn(variables, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = jax.device_get(totals)
  return {'test/top1': 100.0 * (1.0 - float(totals['wrong'] / totals['count'])),
          'test/loss': float(totals['loss_sum'] / totals['count'])}


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates it.

  A run that fails before its first training step leaves no files behind: the workdir's
  contents (config.json, metrics, events, checkpoints/) are created once training runs, and
  a workdir this run created is removed again if it stays empty.

  Returns:
    The last scalars: `test/top1` (final), `test/best_top1`, `test/loss` and `step`.

  Raises:
    ValueError, FileNotFoundError: settings or data that cannot run, a workdir that cannot
      be written; `workdir.WorkdirInUseError`: another run trains in `workdir`;
      FloatingPointError: a non-finite loss or gradient.
  """
  mesh = parallel.data_mesh()
  check_config(config, mesh.size)
  created = workdir_lib.prepare(workdir)
  try:
    with workdir_lib.Lock(workdir):
      stop = StopSignal()  # From here on, SIGTERM means: save at the next log step and leave.
      try:
        return _train(config, workdir, mesh, stop)
      finally:
        stop.restore()
  finally:
    workdir_lib.remove_if_empty(workdir, created)


class _Outputs:
  """The files of a run in its workdir (config.json, metrics.jsonl and events, checkpoints),
  opened by `open()` once training runs, or at once when resuming."""

  def __init__(self, config, workdir):
    self._config, self._workdir = config, workdir
    self.checkpoints = self.writer = None
    if os.path.isdir(checkpointing.checkpoint_dir(workdir)):
      self.checkpoints = checkpointing.Checkpoints(workdir, keep=config.keep_checkpoints)

  def latest_step(self):
    return None if self.checkpoints is None else self.checkpoints.latest_step()

  def open(self, start, resumed):
    if self.writer is not None:
      return
    if self.checkpoints is None:
      self.checkpoints = checkpointing.Checkpoints(self._workdir,
                                                   keep=self._config.keep_checkpoints)
    workdir_lib.record_config(self._config, self._workdir, resumed)
    metric_logging.truncate_jsonl(self._workdir, start)
    self.writer = metric_logging.create_writer(self._workdir)

  def close(self):
    if self.checkpoints is not None:
      self.checkpoints.wait()
      self.checkpoints.close()
    if self.writer is not None:
      self.writer.close()


def _train(config, workdir, mesh, stop):
  """`train_and_evaluate` once the config is checked, the workdir locked and SIGTERM
  handled."""
  started = time.perf_counter()
  model = models.create_model(config)
  steps_per_epoch = data.steps_per_epoch(config.dataset, config.batch_size)
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else int(config.num_epochs * steps_per_epoch))
  eval_every = max(1, int(config.eval_every_epochs * steps_per_epoch))
  tx, schedules = optim.create_optimizer(config.optimizer, steps_per_epoch)
  image_shape = (config.dataset.image_size, config.dataset.image_size, 3)
  init = jax.jit(functools.partial(train_step_lib.create_train_state, model=model, tx=tx,
                                   image_shape=image_shape),
                 out_shardings=parallel.replicated(mesh))
  state = init(jax.random.PRNGKey(config.seed))

  outputs = _Outputs(config, workdir)
  progress = {'best_top1': 0.0}
  resumed = outputs.latest_step() is not None
  if resumed:
    state, progress = outputs.checkpoints.restore(state)
    logging.info('Resumed from step %d in %s.', int(state.step), outputs.checkpoints.directory)
  elif config.model.pretrained:
    state = checkpointing.load_pretrained_encoder(config.model.pretrained, state)
    logging.info('Encoder initialised from %s.', config.model.pretrained)
  start = int(jax.device_get(state.step))
  logging.info('%s on %s: %d steps (%d per epoch), batch %d on %d device(s), workdir %s.',
               config.mixup.method, config.dataset.name, num_steps, steps_per_epoch,
               config.batch_size, mesh.size, workdir)
  logging.debug('Modes and weights: %s.', modes.method_table(config))

  table_modes = modes.table_modes(config)
  feed = data.train_feed(config.dataset, mesh, global_batch_size=config.batch_size,
                         seed=config.seed, start_step=start)
  train_fn = parallel.shard_map_step(
      feed.wrap(train_step_lib.make_train_step(config, model, schedules)), mesh,
      num_replicated=1)
  eval_fn = parallel.shard_map_eval(
      functools.partial(train_step_lib.eval_step, model=model), mesh)
  test_batches = data.eval_batches(config.dataset, mesh,
                                   global_batch_size=config.eval.batch_size)
  progress_meter = Progress(start, num_steps, steps_per_epoch)
  window = []
  last = {'step': start}

  def evaluate(step):
    with progress_meter.paused():
      scalars = evaluate_top1(eval_fn, state.variables(), test_batches)
    progress['best_top1'] = max(progress['best_top1'], scalars['test/top1'])
    scalars['test/best_top1'] = progress['best_top1']
    outputs.writer.write_scalars(step, scalars)
    logging.info('step %d: test top-1 %.2f%% (best %.2f%%), test loss %.4f', step,
                 scalars['test/top1'], scalars['test/best_top1'], scalars['test/loss'])
    last.update(scalars)

  try:
    if resumed:
      outputs.open(start, resumed)
      if start % eval_every == 0 or start == num_steps:
        evaluate(start)  # Saved before its evaluation: that evaluation is done again here.
    for step in range(start, num_steps):
      first = outputs.writer is None  # Its compiling is not training time.
      with progress_meter.paused() if first else contextlib.nullcontext():
        state, metrics = train_fn(state, feed.resident, next(feed))
      outputs.open(start, resumed)  # Training runs: from here on the workdir fills.
      window.append(metrics)
      done = step + 1
      stopping = _stop_requested(stop, done, config.log_every_steps)
      saving = (done % config.checkpoint_every_steps == 0 or done == num_steps or stopping)
      if done % config.log_every_steps == 0 or saving:
        stacked = jax.device_get(jax.tree.map(lambda *xs: np.stack(xs), *window))
        window = []
        if stacked['nonfinite'].any():
          bad = done - len(stacked['nonfinite']) + 1 + int(np.argmax(stacked['nonfinite']))
          raise FloatingPointError(
              f'Non-finite loss or gradients at step {bad} ({config.mixup.method}); the run '
              f'stops. The checkpoints in {outputs.checkpoints.directory} hold the last good '
              f'states (latest: step {outputs.checkpoints.latest_step()}). Lower '
              'optimizer.learning_rate or check the data, then restart.')
        scalars = summarize_window(stacked, table_modes)
        scalars.update(progress_meter.report(done, scalars))
        outputs.writer.write_scalars(done, scalars)
      if saving:  # Before the evaluation: a failing evaluation loses no work.
        with progress_meter.paused():
          outputs.checkpoints.save(state, progress)
        logging.info('step %d: saving the checkpoint %s', done,
                     os.path.join(outputs.checkpoints.directory, str(done)))
      last['step'] = done
      if stopping:
        logging.warning('Stopped at step %d after SIGTERM; checkpoint saved.', done)
        break
      if done % eval_every == 0 or done == num_steps:
        evaluate(done)
  finally:
    outputs.close()
  if jax.process_index() == 0 and 'test/top1' in last:
    logging.info('Done: step %d, test top-1 %.2f%% (best %.2f%%) in %s; %s', last['step'],
                 last['test/top1'], last['test/best_top1'],
                 console.duration(time.perf_counter() - started), workdir)
  return last


def _stop_requested(stop, step, log_every_steps):
  """Whether to stop after `step`: at log steps only (so that the metrics windows are an
  uninterrupted run's), once any process received SIGTERM."""
  if step % log_every_steps:
    return False
  if jax.process_count() == 1:
    return stop.requested
  flags = multihost_utils.process_allgather(np.int32(stop.requested))
  return bool(np.max(flags))
