"""Tests of alignmix_jax.validation: every check of a run's settings, group by group, each
with the message that names the field and the fix; which checks each mode ('train',
'eval') runs; and that the training loop and the evaluation runner check before they
create, load or compile anything."""

import os

import pytest

import helpers
import tiny_config
from alignmix_jax import methods
from alignmix_jax import train
from alignmix_jax import validation
from alignmix_jax.evaluation import runner

NUM_DEVICES = 2  # As the loop passes: the devices of the run (conftest.py forces two).


def _validate(config, mode='train'):
  validation.validate(config, NUM_DEVICES, mode=mode)


def test_the_tiny_setting_and_an_unknown_validation_mode():
  _validate(tiny_config.get_config(), 'train')
  _validate(tiny_config.get_config(), 'eval')
  with pytest.raises(ValueError, match="Unknown validation mode 'test'; valid: train, eval"):
    validation.validate(tiny_config.get_config(), NUM_DEVICES, mode='test')


# The training settings, one group after the other (mode 'train').

TRAIN_CASES = {
    # The method.
    'unknown_method': ({'mixup.method': 'mixmatch'}, "Unknown method 'mixmatch'"),
    'mode_weights': ({'mixup.mode_weights': (1.0, 1.0)}, 'mixup.mode_weights must be 5'),
    'no_manifold_layers': ({'mixup.method': 'manifold_mixup', 'mixup.manifold_layers': ()},
                           'mixup.manifold_layers is empty'),
    # The model and the data.
    'unknown_model': ({'model.name': 'resnet9'}, 'Unknown model.name'),
    'shortcut': ({'model.preact_shortcut': 'post'}, 'valid: authors, standard'),
    'unknown_dataset': ({'dataset.name': 'svhn'}, 'svhn'),
    'pipeline': ({'dataset.pipeline': 'gpu'},
                 "Unknown config.dataset.pipeline 'gpu'; valid: auto, device, tfdata"),
    # Sinkhorn.
    'sinkhorn_eps': ({'mixup.sinkhorn_eps': 0.0}, 'eps must be a positive number'),
    'sinkhorn_iters': ({'mixup.sinkhorn_iters': 0}, 'num_iters must be an int >= 1'),
    # The reconstruction loss.
    'reconstruction_loss': ({'mixup.reconstruction_loss': 'l1'},
                            "Unknown mixup.reconstruction_loss 'l1'; valid: sum, mean."),
    # align_latent needs the tensor Z of an autoencoder.
    'align_latent_vector': ({'mixup.align_latent': True}, 'align_latent'),
    'align_latent_vae': ({'mixup.align_latent': True, 'model.latent': 'tensor',
                          'model.autoencoder': 'vae'},
                         "mixup.align_latent aligns the tensor Z: it needs "
                         "model.latent='tensor' and model.autoencoder='ae'."),
    # The loop's counts.
    'log_every_bool': ({'log_every_steps': True}, 'log_every_steps=True must be an integer'),
    'keep_bool': ({'keep_checkpoints': False}, 'keep_checkpoints=False must be an integer'),
    'windows': ({'checkpoint_every_steps': 5},
                'checkpoint_every_steps=5 must be a multiple of log_every_steps=2'),
    # Batch sizes over the devices.
    'batch_odd': ({'batch_size': 15}, 'multiple of the number of devices'),
    'batch_zero': ({'batch_size': 0}, 'batch_size=0 must be a positive integer.'),
    'eval_batch_odd': ({'eval.batch_size': 121},
                       'eval.batch_size=121 must be a multiple of the number of devices (2).'),
}


@pytest.mark.parametrize('case', sorted(TRAIN_CASES))
def test_training_settings_that_cannot_run_are_refused_with_the_fix(case):
  fields, message = TRAIN_CASES[case]
  with pytest.raises(ValueError) as error:
    _validate(tiny_config.with_overrides(**fields))
  assert message in str(error.value)


@pytest.mark.parametrize('field, value, message', [
    ('log_every_steps', 0, 'log_every_steps=0 must be an integer >= 1'),
    ('checkpoint_every_steps', 0, 'checkpoint_every_steps=0 must be an integer >= 1'),
    ('eval_every_epochs', 0, 'eval_every_epochs=0 must be an integer >= 1'),
    ('keep_checkpoints', 0, '0 would delete every one'),
])
def test_loop_settings_below_one_are_refused_before_anything_runs(tmp_path, field, value,
                                                                  message):
  config = tiny_config.with_overrides(**{field: value})
  with pytest.raises(ValueError, match=message):
    _validate(config)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('field, value, message', [
    ('mixup.method', 'mixmatch', "Unknown method 'mixmatch'"),
    ('model.name', 'resnet9', 'Unknown model.name'),
    ('dataset.name', 'svhn', 'svhn'),
    ('batch_size', 15, 'multiple of the number of devices'),
    ('mixup.sinkhorn_eps', 0.0, 'eps must be a positive number'),
    ('mixup.sinkhorn_iters', 0, 'num_iters must be an int >= 1'),
    ('model.preact_shortcut', 'post', 'valid: authors, standard'),
])
def test_bad_names_and_settings_fail_fast_with_the_valid_choices(tmp_path, field, value,
                                                                 message):
  config = tiny_config.with_overrides(**{field: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # Before any file.


@pytest.mark.parametrize('model, layers, stages', [('preactresnet18', (0, 5), 4),
                                                    ('wrn16_8', (1, 4), 3)])
def test_a_manifold_layer_the_encoder_lacks_is_refused(tmp_path, model, layers, stages):
  """Mixing the targets after a stage the encoder never calls would train on mixed labels
  of clean images."""
  config = methods.configure(tiny_config.get_config(), 'manifold_mixup')
  config.model.name = model
  config.mixup.manifold_layers = layers
  with pytest.raises(ValueError, match=f'after stage {max(layers)} .* has stages 1 to {stages}'):
    _validate(config)
  with pytest.raises(ValueError, match=f'after stage {max(layers)} .* has stages 1 to {stages}'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  config.mixup.manifold_layers = (0, stages)  # The last stage is fine.
  _validate(config)


def test_the_tensor_latent_of_an_autoencoder_can_be_aligned():
  _validate(tiny_config.with_overrides(**{'mixup.align_latent': True, 'model.latent': 'tensor',
                                          'model.feature_resolution': 4}))


# The evaluation settings (mode 'eval').


def test_runner_rejects_bad_configs_with_the_fix(tmp_path):
  config = helpers.eval_config(tmp_path, ('classification', 'robustness'))
  with pytest.raises(ValueError, match=r"unknown: \['robustness'\].*valid: \['attacks', "
                                       r"'calibration', 'classification', 'localization', 'ood'\]"):
    validation.validate(config, 1, mode='eval')
  config.eval.programs = ('ood',)
  missing = str(tmp_path / 'no_such_folder')
  config.eval.ood_folders.isun = missing
  with pytest.raises(FileNotFoundError, match=f'{missing}.*config.eval.ood_folders.isun'):
    validation.validate(config, 1, mode='eval')
  config.eval.programs = ('localization',)
  config.model.autoencoder = 'ae'
  with pytest.raises(ValueError, match="autoencoder = 'none'"):
    validation.validate(config, 1, mode='eval')
  config.eval.programs = ('classification',)
  config.eval.top_k = (1, 5)
  with pytest.raises(ValueError, match='num_classes = 3'):
    validation.validate(config, 1, mode='eval')


def test_every_program_of_a_good_evaluation_config_passes(tmp_path):
  config = helpers.eval_config(tmp_path, tuple(runner.PROGRAMS))
  config.eval.top_k = (1, 3)
  config.eval.attack_examples = 2 * config.eval.batch_size
  validation.validate(config, NUM_DEVICES, mode='eval')


EVAL_CASES = {
    'no_programs': ({'eval.programs': ()}, 'config.eval.programs must list evaluation '
                                           'programs; unknown: [] (got ())'),
    'top_k_zero': ({'eval.top_k': (0,)}, 'config.eval.top_k = (0,) needs 1 <= k <='),
    'attack_examples': ({'eval.attack_examples': 100},
                        'config.eval.attack_examples = 100 must be 0 (the whole test split) '
                        'or a positive multiple of config.eval.batch_size = 500.'),
    'negative_attack_examples': ({'eval.attack_examples': -500},
                                 'config.eval.attack_examples = -500 must be 0'),
    'noise': ({'eval.ood_noise': ('salt',)},
              "Unknown OOD noise set(s) ['salt'] in config.eval.ood_noise; valid: "
              "['gaussian', 'uniform']."),
    'no_boxes': ({'dataset.with_bbox': False},
                 'The localization program needs true boxes: set config.dataset.with_bbox'),
    'eval_batch_odd': ({'eval.batch_size': 501},
                       'eval.batch_size=501 must be a multiple of the number of devices (2).'),
}


@pytest.mark.parametrize('case', sorted(EVAL_CASES))
def test_evaluation_settings_that_cannot_run_are_refused_with_the_fix(tmp_path, case):
  fields, message = EVAL_CASES[case]
  config = helpers.eval_config(tmp_path, tuple(runner.PROGRAMS))
  config.update_from_flattened_dict(fields)
  with pytest.raises(ValueError) as error:
    _validate(config, 'eval')
  assert message in str(error.value)


def test_an_ood_folder_named_like_a_noise_set_is_refused(tmp_path):
  config = helpers.eval_config(tmp_path, ('ood',))
  config.eval.ood_folders.uniform = config.eval.ood_folders.lsun
  with pytest.raises(ValueError, match=r"OOD folder name\(s\) \['uniform'\] clash with "
                                       'built-in noise sets'):
    _validate(config, 'eval')
  config.eval.ood_noise = ('gaussian',)  # Without that noise set, the name is free.
  _validate(config, 'eval')


def test_an_empty_ood_folder_is_found_before_any_program_runs(tmp_path):
  config = tiny_config.get_config()
  empty = tmp_path / 'lsun'
  os.makedirs(empty)
  config.eval.ood_folders.lsun_crop = str(empty)
  with pytest.raises(FileNotFoundError, match=f'no images in {empty}'):
    validation.validate(config, 1, mode='eval')
  config.eval.programs = ('classification',)  # Not evaluated: not checked.
  validation.validate(config, 1, mode='eval')


# What each mode checks, and the callers.


def test_each_mode_checks_its_own_settings(tmp_path):
  """'train' does not look at the evaluation programs, 'eval' not at the method, the
  alignment, the loop or the training batch."""
  evaluation_only = helpers.eval_config(tmp_path, ('robustness',))
  evaluation_only.model.autoencoder = 'ae'
  evaluation_only.dataset.name = 'digits'
  evaluation_only.dataset.with_bbox = False
  _validate(evaluation_only, 'train')
  with pytest.raises(ValueError, match='robustness'):
    _validate(evaluation_only, 'eval')
  for fields, _ in (TRAIN_CASES['unknown_method'], TRAIN_CASES['sinkhorn_eps'],
                    TRAIN_CASES['reconstruction_loss'], TRAIN_CASES['align_latent_vector'],
                    TRAIN_CASES['windows'], TRAIN_CASES['batch_odd']):
    config = tiny_config.with_overrides(**fields)
    _validate(config, 'eval')  # Not a setting of --mode eval.
    with pytest.raises(ValueError):
      _validate(config, 'train')
  for fields, _ in (TRAIN_CASES['unknown_model'], TRAIN_CASES['unknown_dataset'],
                    TRAIN_CASES['eval_batch_odd']):  # Checked in both modes.
    with pytest.raises(ValueError):
      _validate(tiny_config.with_overrides(**fields), 'eval')


def test_the_runner_checks_before_it_looks_for_a_checkpoint(tmp_path):
  config = helpers.eval_config(tmp_path, ('classification', 'robustness'))
  with pytest.raises(ValueError, match='robustness'):  # Not "No checkpoint in ...".
    runner.evaluate(config, str(tmp_path / 'no_run'))
  assert not os.path.exists(tmp_path / 'no_run')
