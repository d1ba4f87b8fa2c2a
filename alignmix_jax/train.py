"""The training loop: `train_and_evaluate(config, workdir)`.

Init or restore (orbax, `<workdir>/checkpoints`), then the data-parallel train step
(`jax.jit(jax.shard_map(train_step))` over all devices of all processes), run
`steps_per_dispatch` steps at a time (`parallel.shard_map_steps`: dispatches end at every
step that logs, saves or evaluates), train metrics every `log_every_steps`, test top-1 every `eval_every_epochs` (final and best), a
checkpoint every `checkpoint_every_steps`. Metrics go to TensorBoard, the log and
`<workdir>/metrics.jsonl`.

Guarantees (docs/training.md):
  * exact resume: a run restarted from a checkpoint (e.g. after SIGKILL) yields the same
    batches, random draws and metrics at every later step as an uninterrupted run (train
    metrics are averaged over windows that end at multiples of `log_every_steps`, and
    checkpoint steps are such multiples); a checkpoint is saved before the evaluation of its
    step, and a run resumed there evaluates that step again;
  * SIGTERM or a first Ctrl-C (SIGINT): the run goes on to the next multiple of
    `log_every_steps`, saves a checkpoint there and exits cleanly (so its metrics equal an
    uninterrupted run's); a second Ctrl-C stops at once;
  * a non-finite loss, gradient or updated state stops the run with an error; that step is
    never applied, so the checkpoints on disk are the last good ones;
  * one run per workdir (`workdir.Lock`); config.json records the config the run started
    with; damaged checkpoints are skipped (`checkpointing`).
"""

import contextlib
import dataclasses
import functools
import os
import signal
import time

from absl import logging
import jax
import numpy as np
from jax.experimental import multihost_utils

from alignmix_jax import checkpointing
from alignmix_jax import console
from alignmix_jax import data
from alignmix_jax import methods
from alignmix_jax import metric_logging
from alignmix_jax import models
from alignmix_jax import optim
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import train_step as train_step_lib
from alignmix_jax import validation
from alignmix_jax import workdir as workdir_lib
from alignmix_jax.evaluation import classification


class StopSignal:
  """Records SIGTERM (preemption, `kill`) and a first SIGINT (Ctrl-C) so the loop can save
  and leave cleanly; a second SIGINT stops at once (KeyboardInterrupt)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt
    logging.warning('%s received: saving a checkpoint at the next log step and stopping%s.',
                    signal.Signals(signum).name,
                    ' (Ctrl-C again stops at once, without saving)' if signum == signal.SIGINT
                    else '')
    self.requested = True

  def restore(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates it.

  A run that fails before its first training step leaves no files behind: the workdir's
  contents (config.json, metrics, events, checkpoints/) are created once training runs, and
  a workdir this run created is removed again if it stays empty.

  Returns:
    The last scalars: `test/top1` (final), `test/best_top1`, `test/loss`, `test/epoch` and
    `step`.

  Raises:
    ValueError, FileNotFoundError: settings or data that cannot run, a workdir that cannot
      be written; `workdir.WorkdirInUseError`: another run trains in `workdir`;
      FloatingPointError: a non-finite loss, gradient or updated state.
  """
  mesh = parallel.data_mesh()
  validation.validate(config, mesh.size, mode='train')
  created = workdir_lib.prepare(workdir)
  try:
    with workdir_lib.Lock(workdir):
      stop = StopSignal()  # From here on SIGTERM, SIGINT: save at the next log step, leave.
      try:
        return _train(config, workdir, mesh, stop)
      finally:
        stop.restore()
  finally:
    workdir_lib.remove_if_empty(workdir, created)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """When the loop does what, counted in steps."""
  num_steps: int
  steps_per_epoch: int
  log_every: int
  checkpoint_every: int
  eval_every: int
  per_dispatch: int

  @classmethod
  def of(cls, config):
    steps_per_epoch = data.steps_per_epoch(config.dataset, config.batch_size)
    return cls(num_steps=(config.num_train_steps if config.num_train_steps > 0
                          else int(config.num_epochs * steps_per_epoch)),
               steps_per_epoch=steps_per_epoch, log_every=config.log_every_steps,
               checkpoint_every=config.checkpoint_every_steps,
               eval_every=config.eval_every_epochs * steps_per_epoch,
               per_dispatch=parallel.steps_per_dispatch(config.steps_per_dispatch))

  def logs(self, step):
    return step % self.log_every == 0

  def saves(self, step):
    return step % self.checkpoint_every == 0 or step == self.num_steps

  def evaluates(self, step):
    return step % self.eval_every == 0 or step == self.num_steps

  def dispatch(self, done):
    """The number of steps of the dispatch that follows step `done`: `per_dispatch`, or
    fewer so that it ends at the next step that logs, saves or evaluates; then the largest
    power of two that fits, so that a run compiles at most log2(per_dispatch) + 2 programs
    (one when those intervals are multiples of `per_dispatch`). A function of `done`
    alone: a resumed run dispatches as an uninterrupted one."""
    following = min(self.num_steps, *((done // every + 1) * every for every in
                                      (self.log_every, self.checkpoint_every, self.eval_every)))
    count = following - done
    return self.per_dispatch if count >= self.per_dispatch else 1 << (count.bit_length() - 1)


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

  def open(self, start, resumed, reevaluated):
    """Creates the files (once): config.json, the metrics from `start` on (the test line
    at `start` dropped when it is `reevaluated`), the writer, the checkpoints folder."""
    if self.writer is not None:
      return
    if self.checkpoints is None:
      self.checkpoints = checkpointing.Checkpoints(self._workdir,
                                                   keep=self._config.keep_checkpoints)
    workdir_lib.record_config(self._config, self._workdir, resumed)
    metric_logging.truncate_jsonl(self._workdir, start, reevaluated)
    self.writer = metric_logging.create_writer(self._workdir)

  def close(self):
    if self.checkpoints is not None:
      self.checkpoints.wait()
      self.checkpoints.close()
    if self.writer is not None:
      self.writer.close()


class _Tester:
  """Test top-1 and loss of the run's variables (`classification.evaluate`, as `--mode eval`
  measures them), the best top-1 so far and the epoch they were measured at (the x axis of
  learning curves)."""

  def __init__(self, config, model, mesh, best_top1, steps_per_epoch):
    self._batches = data.eval_batches(config.dataset, mesh,
                                      global_batch_size=config.eval.batch_size)
    self._logits = functools.partial(model.apply, train=False)  # One function: one compile.
    self.best_top1 = best_top1
    self._steps_per_epoch = steps_per_epoch

  def __call__(self, variables, step):
    result = classification.evaluate(jax.tree_util.Partial(self._logits, variables),
                                     self._batches, top_k=(1,), with_loss=True)
    top1 = 100.0 - result['top1_error']
    self.best_top1 = max(self.best_top1, top1)
    return {'test/top1': top1, 'test/best_top1': self.best_top1, 'test/loss': result['loss'],
            'test/epoch': step / self._steps_per_epoch}


def _restore_or_init(config, mesh, plan, outputs):
  """`(state, best test top-1 so far)`: the latest checkpoint's, or the initial state (with
  the encoder of `config.model.pretrained`, if given)."""
  state = state_lib.create_train_state(config, mesh, steps_per_epoch=plan.steps_per_epoch)
  if outputs.latest_step() is not None:
    state, progress = outputs.checkpoints.restore(state)
    logging.info('Resumed from step %d in %s.', int(state.step), outputs.checkpoints.directory)
    return state, progress['best_top1']
  if config.model.pretrained:
    state = checkpointing.load_pretrained_encoder(config.model.pretrained, state)
    logging.info('Encoder initialised from %s.', config.model.pretrained)
  return state, 0.0


class _Steps:
  """The data-parallel train step, K steps per call (`parallel.shard_map_steps`):
  `(state, inputs [K, B, ...]) -> (state, metrics [K])`, compiled once per K on first use,
  the compile time left out of the progress rate."""

  def __init__(self, config, model, plan, mesh, feed, progress):
    _, schedules = optim.create_optimizer(config.optimizer, plan.steps_per_epoch)
    step = train_step_lib.make_train_step(config, model, schedules)
    self._steps = parallel.shard_map_steps(feed.wrap(step), mesh, num_replicated=1)
    self._resident, self._progress, self._compiled = feed.resident, progress, {}

  def __call__(self, state, inputs):
    count = jax.tree.leaves(inputs)[0].shape[0]
    if count not in self._compiled:
      jax.block_until_ready(state)  # The running dispatch is training time, not compiling.
      with self._progress.paused():
        self._compiled[count] = self._steps.lower(state, self._resident, inputs).compile()
    return self._compiled[count](state, self._resident, inputs)


def _log(window, done, config, table_modes, outputs, progress):
  """Writes the scalars of the steps in `window` (the metrics `[K]` of each dispatch since
  the last write) at step `done`.

  Raises:
    FloatingPointError: a step of the window had a non-finite loss, gradient or updated
      state (that step left the state as it was, so the checkpoints hold the last good
      states).
  """
  outputs.checkpoints.check()  # A checkpoint save that failed stops the run here.
  stacked = jax.tree.map(lambda *xs: np.concatenate(xs), *jax.device_get(window))
  if stacked['nonfinite'].any():
    bad = done - len(stacked['nonfinite']) + 1 + int(np.argmax(stacked['nonfinite']))
    raise FloatingPointError(
        f'Non-finite loss, gradients or updated weights at step {bad} '
        f'({config.mixup.method}); the run stops. The checkpoints in '
        f'{outputs.checkpoints.directory} hold the last good states (latest: step '
        f'{outputs.checkpoints.latest_step()}). Lower optimizer.learning_rate or check the '
        'data, then restart.')
  scalars = summarize_window(stacked, table_modes)
  scalars.update(progress.report(done, scalars))
  outputs.writer.write_scalars(done, scalars)


def _save(state, step, tester, outputs, progress):
  """Starts saving the checkpoint of `state` (asynchronous) with the best top-1 so far."""
  with progress.paused():
    outputs.checkpoints.save(state, {'best_top1': tester.best_top1})
  logging.info('step %d: saving the checkpoint %s', step,
               os.path.join(outputs.checkpoints.directory, str(step)))


def _evaluate(state, step, tester, outputs, progress):
  """Test top-1 of `state` (at `step`), written; returns the scalars."""
  with progress.paused():
    scalars = tester(state.variables(), step)
  outputs.writer.write_scalars(step, scalars)
  logging.info('step %d: test top-1 %.2f%% (best %.2f%%), test loss %.4f', step,
               scalars['test/top1'], scalars['test/best_top1'], scalars['test/loss'])
  return scalars


def _train(config, workdir, mesh, stop):
  """`train_and_evaluate` once the config is checked, the workdir locked and the stop
  signals handled."""
  started = time.perf_counter()
  plan = _Plan.of(config)
  model = models.create_model(config)
  outputs = _Outputs(config, workdir)
  resumed = outputs.latest_step() is not None
  state, best_top1 = _restore_or_init(config, mesh, plan, outputs)
  start = int(jax.device_get(state.step))
  if start > plan.num_steps:
    raise ValueError(f'The run in {workdir} is at step {start}, past the {plan.num_steps} '
                     'steps of this config (num_train_steps, num_epochs): nothing to train. '
                     'Give more steps to train further; --mode eval evaluates it as it is.')
  logging.info('%s on %s: %d steps (%d per epoch, up to %d per dispatch), batch %d on %d '
               'device(s), workdir %s.', config.mixup.method, config.dataset.name,
               plan.num_steps, plan.steps_per_epoch, plan.per_dispatch, config.batch_size,
               mesh.size, workdir)
  logging.debug('Modes and weights: %s.', methods.table(config))
  feed = data.train_feed(config.dataset, mesh, global_batch_size=config.batch_size,
                         seed=config.seed, start_step=start)
  progress = Progress(start, plan.num_steps, plan.steps_per_epoch)
  train_steps = _Steps(config, model, plan, mesh, feed, progress)
  tester = _Tester(config, model, mesh, best_top1, plan.steps_per_epoch)
  table_modes = methods.table_modes(config)

  done, final, window = start, {}, []
  try:
    if resumed:
      outputs.open(start, resumed, plan.evaluates(start))
      if plan.evaluates(start):  # Saved before its evaluation: evaluated again here.
        final = _evaluate(state, start, tester, outputs, progress)
    inputs = feed.take(plan.dispatch(done)) if done < plan.num_steps else None
    while done < plan.num_steps:
      state, metrics = train_steps(state, inputs)
      outputs.open(start, resumed, False)  # Training runs: from here on the workdir fills.
      window.append(metrics)
      done += len(metrics['loss'])
      if done < plan.num_steps:  # The next inputs, made while the devices run these.
        inputs = feed.take(plan.dispatch(done))
      stopping = plan.logs(done) and _stop_requested(stop)
      if plan.logs(done) or plan.saves(done) or stopping:
        _log(window, done, config, table_modes, outputs, progress)
        window = []
      if plan.saves(done) or stopping:  # Before the evaluation: it can fail, losing nothing.
        _save(state, done, tester, outputs, progress)
      if stopping:
        logging.warning('Stopped at step %d on request; checkpoint saved.', done)
        break
      if plan.evaluates(done):
        final = _evaluate(state, done, tester, outputs, progress)
  finally:
    outputs.close()
  if jax.process_index() == 0 and final:
    logging.info('Done: step %d, test top-1 %.2f%% (best %.2f%%) in %s; %s', done,
                 final['test/top1'], final['test/best_top1'],
                 console.duration(time.perf_counter() - started), workdir)
  return {'step': done, **final}


def _stop_requested(stop):
  """Whether any process was asked to stop. Asked at log steps only, so that the metrics
  windows are an uninterrupted run's."""
  if jax.process_count() == 1:
    return stop.requested
  flags = multihost_utils.process_allgather(np.int32(stop.requested))
  return bool(np.max(flags))
