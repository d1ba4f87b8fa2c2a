"""Tests of the training loop (`alignmix_jax.train`), mostly through `python -m main`: exact
resume after SIGKILL, non-finite losses, two processes, the metrics windows, the console.

The checkpoint files are tested in test_checkpointing.py, the settings' checks in
test_validation.py, the faults of a run (locks, SIGTERM, damaged files) in test_faults.py."""

import json
import re
import signal
import socket

import jax
import numpy as np
import pytest

import helpers
import tiny_config
from alignmix_jax import checkpointing
from alignmix_jax import methods
from alignmix_jax import train

def test_exact_resume_after_sigkill(tmp_path):
  steps = ['num_train_steps=40', 'checkpoint_every_steps=4']
  code, output = helpers.finish(helpers.main(tmp_path / 'reference', *steps,
                                             extra=['--verbosity', '1']))
  assert code == 0, output[-3000:]
  assert 'orbax' in output and 'train/mode_fraction' in output  # Everything at verbosity 1.
  killed = helpers.main(tmp_path / 'resumed', *steps)
  helpers.wait_for(tmp_path / 'resumed' / 'checkpoints' / '4', killed)
  killed.send_signal(signal.SIGKILL)
  assert helpers.finish(killed)[0] == -signal.SIGKILL
  code, output = helpers.finish(helpers.main(tmp_path / 'resumed', *steps))
  assert code == 0, output[-3000:]
  assert 'Resumed from step' in output
  expected, got = helpers.scalars(tmp_path / 'reference'), helpers.scalars(tmp_path / 'resumed')
  assert max(step for step, _ in expected) == 40
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  # The rate is multiplied by 1e12 at epoch 0.5 (step 44): the run blows up after the
  # checkpoints at steps 4 to 44.
  blowing_up = ('optimizer.decay_epochs=(0.5,)', 'optimizer.decay_factor=1e12')
  code, output = helpers.finish(helpers.main(tmp_path / 'run', 'num_train_steps=200',
                                             *blowing_up))
  assert code == 1, output[-3000:]
  bad = int(output.split('Non-finite loss, gradients or updated weights at step ')[1].split()[0])
  assert bad > 44
  saved = checkpointing.Checkpoints(tmp_path / 'run', read_only=True)
  last = saved.latest_step()
  assert last == (bad - 1) // 4 * 4  # The last checkpoint step before the bad one.
  kept = saved.restore_arrays(last)
  saved.close()
  # Exactly the state a run stopped at that step has: parameters, BatchNorm statistics,
  # optimizer state, RNG and step.
  code, output = helpers.finish(helpers.main(tmp_path / 'reference', f'num_train_steps={last}',
                                             *blowing_up))
  assert code == 0, output[-3000:]
  reference = checkpointing.Checkpoints(tmp_path / 'reference', read_only=True)
  expected = reference.restore_arrays(last)
  reference.close()
  assert jax.tree.structure(kept) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(kept), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(kept))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep_like_one_process_with_two_devices(tmp_path):
  steps = ['num_train_steps=8']
  address = f'127.0.0.1:{_free_port()}'
  workers = [helpers.main(tmp_path / 'two', *steps, devices=1,
                          extra=('--coordinator_address', address, '--num_processes', '2',
                                 '--process_id', str(i)))
             for i in range(2)]
  single = helpers.main(tmp_path / 'one', *steps, 'dataset.num_shards=2', devices=2)
  for process in workers + [single]:
    code, output = helpers.finish(process)
    assert code == 0, output[-3000:]
  expected, got = helpers.scalars(tmp_path / 'one'), helpers.scalars(tmp_path / 'two')
  assert got.keys() == expected.keys() and len(got) > 10
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  saved = checkpointing.Checkpoints(tmp_path / 'two', read_only=True)
  assert saved.latest_step() == 8  # Both processes saved the final checkpoint together.
  saved.close()


def test_window_summary_splits_by_mode_and_averages_the_row_error_of_aligning_steps():
  table_modes = methods.table_modes(tiny_config.get_config())  # The five modes.
  names = [mode.name for mode in table_modes]
  drawn = [names.index(n) for n in ('clean', 'feature', 'feature_reversed', 'input')]
  metrics = {'mode': np.array(drawn), 'loss': np.array([1.0, 2.0, 3.0, 4.0]),
             'ce': np.array([0.5, 2.0, 3.0, 4.0]), 'lam': np.array([0.1, 0.2, 0.3, 0.4]),
             'reconstruction': np.array([0.25, 0.0, 0.0, 0.0]), 'kl': np.zeros(4),
             'sinkhorn_row_error': np.array([0.0, 0.5, 0.7, 0.0]),
             'learning_rate': np.array([0.1, 0.1, 0.1, 0.05])}
  scalars = train.summarize_window(metrics, table_modes)
  assert scalars['train/loss'] == 2.5 and scalars['train/learning_rate'] == 0.05
  assert scalars['train/loss_feature_reversed'] == 3.0 and 'train/loss_latent' not in scalars
  assert scalars['train/mode_fraction/feature'] == 0.25
  assert scalars['train/reconstruction'] == 0.25
  np.testing.assert_allclose(scalars['train/sinkhorn_row_error'], 0.6)  # Mean of 0.5, 0.7.
  unaligned = {**metrics, 'mode': np.array([drawn[0], drawn[3], drawn[3], drawn[0]])}
  assert 'train/sinkhorn_row_error' not in train.summarize_window(unaligned, table_modes)


def test_config_json_and_metrics_are_written_and_the_console_is_quiet(tmp_path):
  code, output = helpers.finish(helpers.main(tmp_path, 'num_train_steps=4'))
  assert code == 0, output[-3000:]
  lines = output.strip().splitlines()
  # Our lines only: no orbax internals, no backend probing (libtpu), no scalar dumps.
  for noise in ('orbax', 'libtpu', 'Closing', 'checkpoint_manager', 'train/mode_fraction'):
    assert noise not in output, noise
  steps = [line for line in lines if re.search(
      r'^\d\d:\d\d:\d\d step \d/4 \(epoch [\d.]+\): loss [\d.]+, lr [\d.e-]+, '
      r'[\d.]+ steps/s, ETA \d+s$', line)]
  assert [line.split()[2] for line in steps] == ['2/4', '4/4']  # log_every_steps = 2.
  assert sum('saving the checkpoint' in line for line in lines) == 1  # Step 4, the last.
  assert sum(' step 4: test top-1' in line for line in lines) == 1
  assert 'Done: step 4, test top-1' in lines[-1]
  assert len(lines) <= 8, output
  with open(tmp_path / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['mixup']['method'] == 'alignmix'
  names = {name for _, name in helpers.scalars(tmp_path)}
  assert {'train/loss', 'train/ce', 'train/learning_rate', 'test/top1', 'test/best_top1',
          'train/mode_fraction/clean'} <= names


def test_dispatches_end_at_every_log_checkpoint_and_evaluation_step():
  # Logs every 5 steps, saves every 10, evaluates every 14 (2 epochs of 7) and at 30.
  plan = train._Plan(num_steps=30, steps_per_epoch=7, log_every=5, checkpoint_every=10,
                     eval_every=14, per_dispatch=4)  # pylint: disable=protected-access
  counts, done = [], 0
  while done < plan.num_steps:
    counts.append(plan.dispatch(done))
    done += counts[-1]
  # 4 where it fits, else the largest power of two that ends at or before the next
  # boundary (5, 10, 14, 15, 20, 25, 28, 30): at most 4 distinct programs.
  assert counts == [4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 2, 1, 2]
  ends = set(np.cumsum(counts))
  assert {5, 10, 14, 15, 20, 25, 28, 30} <= ends
  resumed = train._Plan(**{**plan.__dict__})  # pylint: disable=protected-access
  assert [resumed.dispatch(step) for step in (20, 24, 25)] == [4, 1, 2]  # As uninterrupted.
  one = train._Plan(**{**plan.__dict__, 'per_dispatch': 1})  # pylint: disable=protected-access
  assert all(one.dispatch(step) == 1 for step in range(30))


def test_steps_per_dispatch_changes_nothing_but_the_dispatches(tmp_path):
  """The five-mode step, 3 steps per dispatch (dispatches of 3, 3, 2 up to the checkpoint
  at 8, then 3, 3) against one: the same metrics and checkpoints, bit for bit."""
  fields = ('num_train_steps=14', 'log_every_steps=8', 'checkpoint_every_steps=8')
  for count in (1, 3):
    code, output = helpers.finish(helpers.main(tmp_path / str(count), *fields,
                                               f'steps_per_dispatch={count}'))
    assert code == 0, output[-3000:]
  one, three = helpers.scalars(tmp_path / '1'), helpers.scalars(tmp_path / '3')
  assert {step for step, _ in one} == {8, 14}
  values = {key: value for key, value in one.items() if key[1] != 'steps_per_sec'}
  assert values == {key: three[key] for key in values}
  for step in (8, 14):
    arrays = []
    for count in (1, 3):
      saved = checkpointing.Checkpoints(tmp_path / str(count), read_only=True)
      arrays.append(jax.tree.leaves(saved.restore_arrays(step)))
      saved.close()
    for a, b in zip(*arrays, strict=True):
      np.testing.assert_array_equal(a, b)
