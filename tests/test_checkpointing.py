"""Tests of alignmix_jax.checkpointing: save and restore, restore targets, damaged
checkpoints (fallback, set aside, all damaged), another model's checkpoint, the kept count,
`restore_arrays`, `restore_variables` and the pretrained encoder.

A run that meets damaged checkpoints through the loop is in test_faults.py."""

import gc
import logging as py_logging
import os

import jax
import numpy as np
import pytest

import helpers
import tiny_config
from alignmix_jax import checkpointing
from alignmix_jax import parallel
from alignmix_jax import state as state_lib


@pytest.fixture(scope='module')
def tiny_state():
  """The tiny setting's state (seed 3), replicated over both devices."""
  return helpers.fresh_state(tiny_config.get_config(), seed=3)


def _arrays(tree):
  """A state's arrays (without `tx`, the optimizer object each creation makes anew)."""
  if isinstance(tree, state_lib.TrainState):
    return (tree.step, tree.params, tree.batch_stats, tree.opt_state, tree.rng)
  return tree


def _assert_same(got, want):
  got, want = _arrays(got), _arrays(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_save_and_restore_give_back_the_same_state(tmp_path, tiny_state):
  config = tiny_config.get_config()
  state = tiny_state.replace(step=tiny_state.step + 7)
  checkpoints = checkpointing.Checkpoints(tmp_path)
  checkpoints.save(state, {'best_top1': 12.5})
  checkpoints.wait()
  restored, progress = checkpoints.restore(state)
  checkpoints.close()
  assert progress == {'best_top1': 12.5}
  assert int(restored.step) == 7
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
  variables, step = checkpointing.restore_variables(tmp_path, config)
  assert step == 7
  np.testing.assert_array_equal(jax.tree.leaves(variables['params'])[0],
                                jax.tree.leaves(state.params)[0])
  _assert_same(variables, state.variables())  # Every parameter and statistic.


def test_restore_onto_the_abstract_state_places_it_as_the_target_says(tmp_path, tiny_state):
  """`abstract_train_state` (shapes, dtypes, shardings; no values) is a restore target: the
  restored state has the saved values and the target's replicated sharding on the mesh."""
  helpers.save_states(tmp_path, tiny_state, [4])
  mesh = parallel.data_mesh()
  target = state_lib.abstract_train_state(tiny_config.get_config(), mesh)
  checkpoints = checkpointing.Checkpoints(tmp_path, read_only=True)
  try:
    restored, progress = checkpoints.restore(target)
  finally:
    checkpoints.close()
  assert int(restored.step) == 4 and progress == {'best_top1': 0.0}
  _assert_same(restored.replace(step=tiny_state.step), tiny_state)
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == parallel.replicated(mesh)


def test_the_latest_keep_checkpoints_are_kept_and_steps_are_checked(tmp_path, tiny_state):
  checkpoints = checkpointing.Checkpoints(tmp_path, keep=2)
  for step in (2, 4, 6):
    checkpoints.save(tiny_state.replace(step=tiny_state.step * 0 + step), {'best_top1': step})
  checkpoints.wait()
  assert sorted(checkpoints.manager.all_steps()) == [4, 6] and checkpoints.latest_step() == 6
  checkpoints.close()
  assert sorted(os.listdir(checkpointing.checkpoint_dir(tmp_path))) == ['4', '6']
  checkpoints = checkpointing.Checkpoints(tmp_path, read_only=True)
  try:
    state, progress = checkpoints.restore(tiny_state, step=4)
    assert int(state.step) == 4 and progress == {'best_top1': 4}
    with pytest.raises(FileNotFoundError, match=r'No checkpoint for step 2 .* steps \[4, 6\]'):
      checkpoints.restore(tiny_state, step=2)
  finally:
    checkpoints.close()
  empty = checkpointing.Checkpoints(tmp_path / 'empty', read_only=True)
  try:
    with pytest.raises(FileNotFoundError, match='No checkpoint in .*empty.*Train first'):
      empty.restore(tiny_state)
  finally:
    empty.close()


def test_a_checkpoint_of_another_model_is_an_error_not_damage(tmp_path, tiny_state):
  helpers.save_states(tmp_path, tiny_state, [4])
  wider = tiny_config.with_overrides(**{'model.width': 8})
  with pytest.raises(ValueError, match=r'step 4 .* does not fit the model of this config.*'
                                       r'saved vs .* now'):
    checkpointing.restore_variables(tmp_path, wider)
  assert os.listdir(checkpointing.checkpoint_dir(tmp_path)) == ['4']  # Nothing set aside.


@helpers.orbax_leftovers_ignored
def test_a_damaged_latest_checkpoint_is_skipped_and_set_aside(tmp_path, tiny_state, caplog):
  """Read-only (evaluation): the newest good one is restored, nothing moves. Training: the
  damaged one is moved to damaged_checkpoints/ and its step can be saved again."""
  helpers.save_states(tmp_path, tiny_state, [4, 8])
  helpers.damage(str(tmp_path / 'checkpoints' / '8'), 'garbage')
  with caplog.at_level(py_logging.WARNING):
    variables, step = checkpointing.restore_variables(tmp_path, tiny_config.get_config())
  assert step == 4 and 'step 8' in caplog.text and 'damaged' in caplog.text
  _assert_same(variables, tiny_state.variables())
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '8']  # Read-only: kept.
  checkpoints = checkpointing.Checkpoints(tmp_path)
  try:
    state, _ = checkpoints.restore(tiny_state)
    assert int(state.step) == 4
    assert os.listdir(tmp_path / 'damaged_checkpoints') == ['8']
    assert sorted(checkpoints.manager.all_steps()) == [4]
    checkpoints.save(state.replace(step=state.step * 0 + 8), {'best_top1': 1.0})
    checkpoints.wait()
    assert checkpoints.latest_step() == 8
  finally:
    checkpoints.close()
  gc.collect()


@helpers.orbax_leftovers_ignored
def test_no_restorable_checkpoint_is_a_clear_error(tmp_path, tiny_state):
  helpers.save_states(tmp_path, tiny_state, [4, 8])
  for step in (4, 8):
    helpers.damage(str(tmp_path / 'checkpoints' / str(step)), 'garbage')
  with pytest.raises(ValueError, match=r'can be restored, all are damaged \(step 8: .*step 4'):
    checkpointing.restore_variables(tmp_path, tiny_config.get_config())
  gc.collect()


def test_restore_arrays_gives_the_saved_arrays_whatever_the_config(tmp_path, tiny_state):
  helpers.save_states(tmp_path, tiny_state, [4, 8])
  checkpoints = checkpointing.Checkpoints(tmp_path, read_only=True)
  try:
    latest, at_four = checkpoints.restore_arrays(), checkpoints.restore_arrays(4)
  finally:
    checkpoints.close()
  assert int(latest['step']) == 8 and int(at_four['step']) == 4
  assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(latest))
  for key in ('params', 'batch_stats', 'rng'):
    _assert_same(latest[key], getattr(tiny_state, key))
  with pytest.raises(FileNotFoundError, match='No checkpoint in'):
    checkpointing.Checkpoints(tmp_path / 'none', read_only=True).restore_arrays()


def test_pretrained_encoder_initialises_only_the_encoder(tmp_path):
  source = helpers.fresh_state(tiny_config.get_config(), seed=1)
  checkpoints = checkpointing.Checkpoints(tmp_path)
  checkpoints.save(source, {'best_top1': 0.0})
  checkpoints.wait()
  checkpoints.close()
  target_config = tiny_config.with_overrides(**{'dataset.num_classes': 5})
  fresh = helpers.fresh_state(target_config, seed=2)
  loaded = checkpointing.load_pretrained_encoder(str(tmp_path), fresh)
  for got, saved in zip(jax.tree.leaves(loaded.params['encoder']),
                        jax.tree.leaves(source.params['encoder'])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(saved))
  np.testing.assert_array_equal(loaded.params['classifier']['fc']['kernel'],
                                fresh.params['classifier']['fc']['kernel'])
  _assert_same(loaded.batch_stats['encoder'], source.batch_stats['encoder'])
  for module in ('latent_encoder', 'decoder'):  # Everything else keeps its initialisation.
    _assert_same(loaded.params[module], fresh.params[module])
  # The checkpoints/ folder itself names the same run.
  again = checkpointing.load_pretrained_encoder(str(tmp_path / 'checkpoints'), fresh)
  _assert_same(again.params, loaded.params)
  with pytest.raises(ValueError, match='does not match'):
    checkpointing.load_pretrained_encoder(
        str(tmp_path), helpers.fresh_state(tiny_config.with_overrides(**{'model.width': 8}), 3))
  with pytest.raises(FileNotFoundError, match='no checkpoints'):
    checkpointing.load_pretrained_encoder(str(tmp_path / 'nothing'), fresh)
