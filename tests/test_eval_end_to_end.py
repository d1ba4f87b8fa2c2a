"""End to end: `python -m main --mode eval` on a short digits run; CUB localization on mock
tfds; the errors that name the path and the fix."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import test_tfdata as cub_mock  # Mocked CUB records (images with white boxes).
from alignmix_jax import checkpointing
from alignmix_jax import configs
from alignmix_jax import data
from alignmix_jax import metric_logging
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import train
from alignmix_jax.evaluation import ood
from alignmix_jax.evaluation import runner
from alignmix_jax.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 1-step vanilla run of a width-4 PreActResNet18 without decoder: the cheapest to train.
CONFIG_FILE = """
from alignmix_jax.configs import digits


def get_config():
  config = digits.get_config()
  config.model.width = 4
  config.model.autoencoder = 'none'
  config.mixup.method = 'vanilla'
  config.batch_size = 16
  config.num_train_steps = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.eval.pgd_iters = 2
  config.eval.ood_folders.noise_png = {folder!r}
  return config
"""


def run_main(*args):
  return subprocess.run([sys.executable, '-m', 'main', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, check=False)


def load_config(config_file):
  """The config of `config_file`, as `--config` loads it."""
  return configs.load(str(config_file))


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  """(config file, workdir) of a finished short digits run, with an OOD image folder."""
  root = tmp_path_factory.mktemp('digits')
  folder = root / 'noise_png'
  folder.mkdir()
  rng = np.random.default_rng(0)
  for index in range(12):
    pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f'{index}.png')
  config_file = root / 'config.py'
  config_file.write_text(CONFIG_FILE.format(folder=str(folder)))
  workdir = root / 'workdir'
  train.train_and_evaluate(load_config(config_file), str(workdir))
  return config_file, workdir


def test_eval_mode_writes_every_key_the_figure_and_the_ood_table(digits_run):
  config_file, workdir = digits_run
  done = run_main(f'--config={config_file}', f'--workdir={workdir}', '--mode=eval')
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((workdir / 'eval.json').read_text())
  sets = ('uniform', 'gaussian', 'noise_png')
  assert sorted(results) == sorted(['top1_error', 'fgsm_error', 'pgd_error', 'ece'] + [
      f'ood/{name}/{metric}' for name in sets for metric in ood.METRICS])
  assert all(0.0 <= value <= 100.0 for value in results.values())
  # 360 test images: the error is a whole number of them, the one training measured too.
  assert results['top1_error'] * 3.6 == pytest.approx(round(results['top1_error'] * 3.6))
  trained = [line for line in metric_logging.read_jsonl(str(workdir)) if 'test/top1' in line]
  assert trained[-1]['step'] == 1
  assert results['top1_error'] == pytest.approx(100.0 - trained[-1]['test/top1'], abs=1e-4)
  assert results['fgsm_error'] >= results['top1_error'] - 1e-9
  assert (workdir / 'eval' / 'reliability.png').stat().st_size > 1000
  rows = [line.split('|') for line in (workdir / 'eval' / 'ood.md').read_text().splitlines()
          if line.startswith('| ')][1:]
  assert [(row[1].strip(), row[2].strip()) for row in rows] == [
      ('uniform', '360'), ('gaussian', '360'), ('noise_png', '12')]
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir / 'eval'))
  assert 'top1_error' in done.stderr  # The scalars are logged too.


def test_eval_errors_name_the_path_and_the_fix(digits_run, tmp_path):
  config_file, workdir = digits_run
  config = load_config(config_file)
  with pytest.raises(FileNotFoundError, match=f'No checkpoint in {tmp_path}.*Train first'):
    runner.evaluate(config, str(tmp_path))
  with pytest.raises(FileNotFoundError, match='No checkpoint for step 2 .* steps \\[1\\]'):
    runner.evaluate(config, str(workdir), checkpoint_step=2)
  config.model.width = 8
  with pytest.raises(ValueError, match=r'was trained with model.width=4 \(this config: 8\)'):
    runner.evaluate(config, str(workdir))
  config.model.width = 4
  missing = str(tmp_path / 'lsun_crop')
  config.eval.ood_folders.lsun = missing
  with pytest.raises(FileNotFoundError, match=f'{missing}.*config.eval.ood_folders.lsun'):
    runner.evaluate(config, str(workdir))


def save_initial_checkpoint(config, workdir):
  """A step-0 checkpoint of `config`'s train state, as training writes it (no step run)."""
  state = state_lib.create_train_state(config, parallel.data_mesh())
  checkpoints = checkpointing.Checkpoints(workdir)
  checkpoints.save(state, {'best_top1': 0.0})
  checkpoints.wait()
  checkpoints.close()


def _cub_config(tmp_path):
  """(data_dir, config) of 4 mocked CUB birds (`cub_mock`) at 32x32."""
  data_dir = cub_mock._prepare_metadata(tmp_path / 'data', 'caltech_birds2011',  # pylint: disable=protected-access
                                        {'train': 4, 'test': 4})
  config = default.get_config()
  config.dataset.update(name='caltech_birds2011', data_dir=data_dir, num_classes=200,
                        train_size=4, test_size=4, image_size=32, augment='cub',
                        with_bbox=True)
  return data_dir, config


def test_cub_localization_on_mock_data(tmp_path):
  data_dir, config = _cub_config(tmp_path)
  config.model.update(width=4, autoencoder='none')
  config.eval.update(batch_size=4, programs=('classification', 'localization'))
  workdir = str(tmp_path / 'workdir')
  save_initial_checkpoint(config, workdir)
  with tfds.testing.mock_data(num_examples=4, data_dir=data_dir,
                              as_dataset_fn=cub_mock._cub_as_dataset):  # pylint: disable=protected-access
    results = runner.evaluate(config, workdir)
  assert sorted(results) == ['loc/gt_known', 'loc/top1', 'top1_error']
  # 4 test birds: every rate is a multiple of 25%, and top-1 localization needs the class.
  assert all(value % 25 == 0 for value in results.values())
  assert results['loc/top1'] <= 100 - results['top1_error']
  assert os.path.getsize(os.path.join(workdir, 'eval', 'localization.png')) > 1000


def test_cub_localization_with_a_known_cam_is_exact(tmp_path):
  """The CUB test split through the data pipeline (mocked records: black images with one
  white box), a CAM that is the image's brightness (so its box is the white box) and a model
  that predicts class 0 for every bird: GT-known localization 100%, top-1 localization 25%
  (only the bird of class 0 also has its class right), top-1 error 75%."""
  data_dir, config = _cub_config(tmp_path)
  config.model.autoencoder = 'none'
  config.eval.update(batch_size=4, programs=('classification', 'localization'))
  mesh = parallel.data_mesh()
  fns = runner.ModelFns(
      logits=lambda images: jnp.zeros((images.shape[0], 200)).at[:, 0].set(1.0),
      cam=lambda images: jnp.repeat(jnp.mean(images, -1, keepdims=True), 200, axis=-1))
  with tfds.testing.mock_data(num_examples=4, data_dir=data_dir,
                              as_dataset_fn=cub_mock._cub_as_dataset):  # pylint: disable=protected-access
    results = runner.run_programs(
        config, fns, lambda dataset: data.eval_batches(dataset, mesh, global_batch_size=4),
        str(tmp_path / 'workdir'))
  assert results == {'top1_error': 75.0, 'loc/top1': 25.0, 'loc/gt_known': 100.0}
