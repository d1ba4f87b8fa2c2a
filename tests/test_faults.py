"""Fault injection: every fault a user can cause loses no work and ends in a clear message.

Each test breaks one thing (a file, a second run, a signal, a command line) and checks what
the README's guarantees promise. `M` below is `python -m main` on tests/tiny_config.py.
"""

import glob
import json
import logging as py_logging
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tiny_config
from test_train_loop import _finish  # pylint: disable=g-bad-import-order
from test_train_loop import _main
from test_train_loop import _scalars
from test_train_loop import _wait_for
from alignmix_jax import checkpointing
from alignmix_jax import data as alignmix_data
from alignmix_jax import methods
from alignmix_jax import metric_logging
from alignmix_jax import train
from alignmix_jax import validation
from alignmix_jax import workdir as workdir_lib
from alignmix_jax.data import arrays
from alignmix_jax.data import catalog
from alignmix_jax.evaluation import classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {'num_train_steps': 8, 'log_every_steps': 2, 'checkpoint_every_steps': 4,
        'eval.pgd_iters': 2}


def _config(**fields):
  return tiny_config.with_overrides(**{**{k: v for k, v in FAST.items()}, **fields})


def _latest(workdir):
  saved = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    return saved.latest_step(), sorted(saved.manager.all_steps())
  finally:
    saved.close()


# Unreadable images: named before training starts, or skipped on request.


def _image_folder(root, bad=None):
  """train/ and test/ with 2 classes of 8 and 4 PNGs; `bad`: a random-bytes .jpg there."""
  rng = np.random.default_rng(0)
  for split, count in (('train', 8), ('test', 4)):
    for label in ('a', 'b'):
      os.makedirs(os.path.join(root, split, label))
      for index in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            os.path.join(root, split, label, f'{index}.png'))
  if bad:
    with open(os.path.join(root, bad), 'wb') as f:
      f.write(os.urandom(200))
  return str(root)


def _folder_config(root, **fields):
  return _config(**{'dataset.name': 'image_folder', 'dataset.data_dir': root,
                    'dataset.num_classes': 2, 'dataset.train_size': 16,
                    'dataset.test_size': 8, 'eval.batch_size': 8, 'batch_size': 8, **fields})


def test_an_unreadable_test_image_is_named_before_training(tmp_path):
  root = _image_folder(tmp_path / 'data', bad='test/a/broken.jpg')
  with pytest.raises(ValueError, match=r'Cannot decode the image .*test/a/broken.jpg '
                                       r"\(image_folder, test split\).*skip_unreadable=True"):
    train.train_and_evaluate(_folder_config(root), str(tmp_path / 'new' / 'run'))
  assert not os.path.exists(tmp_path / 'new')  # No files, no folders it made.
  os.makedirs(tmp_path / 'existing')
  with pytest.raises(ValueError, match='Cannot decode'):
    train.train_and_evaluate(_folder_config(root), str(tmp_path / 'existing'))
  assert not os.listdir(tmp_path / 'existing')  # Kept, and as empty as it was.


def test_skip_unreadable_leaves_the_image_out_with_a_count(tmp_path, caplog):
  root = _image_folder(tmp_path / 'data', bad='train/b/broken.jpg')
  config = _folder_config(root, **{'dataset.skip_unreadable': True})
  with caplog.at_level(py_logging.WARNING):
    data = arrays.load(config.dataset, 'train')
  assert len(data['label']) == 16 and list(np.bincount(data['label'])) == [8, 8]
  assert 'Left out 1 unreadable images of image_folder (train split)' in caplog.text
  assert 'broken.jpg' in caplog.text
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert _latest(tmp_path / 'run')[0] == 8


def test_a_missing_tiny_imagenet_val_file_is_named(tmp_path):
  root = tmp_path / 'tiny'
  rng = np.random.default_rng(0)
  for wnid in ('n01', 'n02'):
    os.makedirs(root / 'train' / wnid / 'images')
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        root / 'train' / wnid / 'images' / f'{wnid}_0.png')
  os.makedirs(root / 'val' / 'images')
  (root / 'val' / 'val_annotations.txt').write_text('gone.png\tn01\t0\t0\t1\t1\n')
  (root / 'train' / 'stray.txt').write_text('not a class')  # A stray file in train/.
  config = tiny_config.get_config().dataset
  config.update(name='tiny_imagenet', data_dir=str(root), image_size=8, num_classes=2,
                train_size=2, test_split='val', test_size=1)
  paths, labels = catalog.tiny_imagenet_files(config, 'train')  # The stray file is no class.
  assert labels == [0, 1] and all(path.endswith('.png') for path in paths)
  with pytest.raises(ValueError, match=r'Cannot decode the image .*val/images/gone.png'):
    arrays.load(config, 'test')


def test_a_one_bit_bmp_is_decoded(tmp_path):
  folder = tmp_path / 'ood'
  os.makedirs(folder)
  bits = np.zeros((8, 8), bool)
  bits[2:6, 2:6] = True
  Image.fromarray(bits).convert('1').save(folder / 'mask.bmp')
  config = tiny_config.get_config().dataset
  config.update(name='image_folder', data_dir=str(folder), image_size=8)
  image = arrays.load(config, 'test')['image'][0]
  assert image[3, 3].tolist() == [255, 255, 255] and image[0, 0].tolist() == [0, 0, 0]


def test_the_checkpoint_is_saved_before_the_evaluation_that_fails(tmp_path, monkeypatch):
  """An evaluation that fails (here: an injected error at the final step) leaves the
  checkpoint of its step on disk; the resumed run evaluates that step again, once."""
  config = _config()
  calls = []

  def failing(*args, **kwargs):
    calls.append((args, kwargs))
    raise OSError('injected: the test data went away')

  monkeypatch.setattr(classification, 'evaluate', failing)
  with pytest.raises(OSError, match='injected'):
    train.train_and_evaluate(config, str(tmp_path))
  assert _latest(tmp_path)[0] == 8
  monkeypatch.undo()
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 8 and 'test/top1' in result
  evaluations = [line for line in metric_logging.read_jsonl(str(tmp_path))
                 if 'test/top1' in line]
  assert [line['step'] for line in evaluations] == [8]


# One run per workdir.


def test_a_second_run_on_a_workdir_fails_at_once_and_a_killed_runs_lock_is_taken_over(
    tmp_path):
  first = _main(tmp_path, 'num_train_steps=100000', 'checkpoint_every_steps=1000')
  _wait_for(tmp_path / metric_logging.JSONL, first)
  second = _main(tmp_path, 'num_train_steps=4')
  code, output = _finish(second)
  assert code == 1, output[-3000:]
  assert 'Another run trains in this workdir' in output
  assert f'process {first.pid} on host {socket.gethostname()}' in output
  first.send_signal(signal.SIGKILL)
  _finish(first)
  assert os.path.exists(tmp_path / workdir_lib.LOCK)  # Left behind by the killed run...
  code, output = _finish(_main(tmp_path, 'num_train_steps=4'))
  assert code == 0, output[-3000:]  # ... and taken over: its process is gone.
  assert 'Taking over the stale lock' in output
  assert not os.path.exists(tmp_path / workdir_lib.LOCK)  # Released at the end.


def test_a_lock_of_another_host_is_refused_until_it_goes_stale(tmp_path):
  path = tmp_path / workdir_lib.LOCK
  path.write_text(json.dumps({'pid': 1, 'host': 'elsewhere', 'since': 'then'}))
  with pytest.raises(workdir_lib.WorkdirInUseError, match='process 1 on host elsewhere'):
    workdir_lib.Lock(str(tmp_path)).acquire()
  old = os.path.getmtime(path) - workdir_lib.STALE_AFTER_S - 10
  os.utime(path, (old, old))  # Not refreshed for longer than STALE_AFTER_S.
  with workdir_lib.Lock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()
  assert not path.exists()


# The record of the config.


def test_config_json_keeps_the_config_the_run_started_with(tmp_path, caplog):
  train.train_and_evaluate(_config(num_train_steps=4), str(tmp_path))
  recorded = (tmp_path / 'config.json').read_text()
  assert json.loads(recorded)['model']['width'] == 4
  with pytest.raises(ValueError, match='does not fit the model'):
    train.train_and_evaluate(_config(**{'model.width': 8}), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == recorded  # A failed resume changes nothing.
  with caplog.at_level(py_logging.WARNING):
    train.train_and_evaluate(_config(num_train_steps=8), str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == recorded
  assert 'num_train_steps: 4 -> 8' in caplog.text


# Checkpoints and metrics files damaged on disk.


def _damage(step_dir, how):
  if how == 'truncated':
    data = max(glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd', '*')),
               key=os.path.getsize)
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 2)
  elif how == 'garbage':
    for data in glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd', '*')):
      with open(data, 'wb') as f:
        f.write(os.urandom(500))
  else:
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))


@pytest.mark.parametrize('how', ['truncated', 'garbage', 'no_metadata'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, how, caplog):
  reference = tmp_path / 'reference'
  train.train_and_evaluate(_config(num_train_steps=12), str(reference))
  run = tmp_path / 'run'
  train.train_and_evaluate(_config(), str(run))  # Checkpoints at 4 and 8.
  _damage(str(run / 'checkpoints' / '8'), how)
  config = tiny_config.get_config()
  with caplog.at_level(py_logging.WARNING):
    variables, step = checkpointing.restore_variables(run, config)  # --mode eval.
  assert step == 4 and 'step 8' in caplog.text and 'damaged' in caplog.text
  train.train_and_evaluate(_config(num_train_steps=12), str(run))  # Resumes from 4.
  assert os.path.isdir(run / 'damaged_checkpoints' / '8')  # Set aside, not deleted.
  assert _latest(run) == (12, [4, 8, 12])
  expected, got = _scalars(reference), _scalars(run)
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
  del variables


def test_no_restorable_checkpoint_is_a_clear_error(tmp_path):
  train.train_and_evaluate(_config(), str(tmp_path))
  for step in (4, 8):
    _damage(str(tmp_path / 'checkpoints' / str(step)), 'garbage')
  with pytest.raises(ValueError, match=r'can be restored, all are damaged \(step 8: .*step 4'):
    checkpointing.restore_variables(tmp_path, tiny_config.get_config())


def test_a_torn_last_metrics_line_is_dropped(tmp_path, caplog):
  reference = tmp_path / 'reference'
  train.train_and_evaluate(_config(), str(reference))
  run = tmp_path / 'run'
  train.train_and_evaluate(_config(num_train_steps=4), str(run))
  with open(run / metric_logging.JSONL, 'a', encoding='utf-8') as f:
    f.write('{"step": 6, "train/lo')  # Killed while writing.
  with caplog.at_level(py_logging.WARNING):
    train.train_and_evaluate(_config(), str(run))
  assert 'torn last line' in caplog.text
  assert _scalars(run).keys() == _scalars(reference).keys()
  with open(run / metric_logging.JSONL, 'r+', encoding='utf-8') as f:
    lines = f.readlines()
    f.seek(0)
    f.writelines(lines[:1] + ['not json\n'] + lines[1:])
  with pytest.raises(ValueError, match=r'metrics.jsonl, line 2, is not a JSON line'):
    metric_logging.read_jsonl(str(run))


def test_sigterm_between_log_steps_stops_at_the_next_one_and_resumes_exactly(tmp_path):
  steps = ['num_train_steps=100', 'log_every_steps=10', 'checkpoint_every_steps=50']
  code, output = _finish(_main(tmp_path / 'reference', *steps))
  assert code == 0, output[-3000:]
  process = _main(tmp_path / 'run', *steps)
  _wait_for(tmp_path / 'run' / metric_logging.JSONL, process)
  process.send_signal(signal.SIGTERM)
  code, output = _finish(process)
  assert code == 0, output[-3000:]
  stopped, _ = _latest(tmp_path / 'run')
  assert 'SIGTERM' in output
  assert stopped is not None and stopped % 10 == 0 and stopped < 100, stopped
  code, output = _finish(_main(tmp_path / 'run', *steps))
  assert code == 0, output[-3000:]
  expected, got = _scalars(tmp_path / 'reference'), _scalars(tmp_path / 'run')
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


# Clear errors for settings and command lines.


@pytest.mark.parametrize('field, value, message', [
    ('log_every_steps', 0, 'log_every_steps=0 must be an integer >= 1'),
    ('checkpoint_every_steps', 0, 'checkpoint_every_steps=0 must be an integer >= 1'),
    ('eval_every_epochs', 0, 'eval_every_epochs=0 must be an integer >= 1'),
    ('keep_checkpoints', 0, '0 would delete every one'),
])
def test_loop_settings_below_one_are_refused_before_anything_runs(tmp_path, field, value,
                                                                  message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_config(**{field: value}), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_a_workdir_that_is_a_file_or_cannot_be_written(tmp_path, monkeypatch):
  target = tmp_path / 'file'
  target.write_text('')
  with pytest.raises(ValueError, match='is a file, not a folder'):
    train.train_and_evaluate(_config(), str(target))

  def read_only(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(workdir_lib.tempfile, 'TemporaryFile', read_only)
  with pytest.raises(ValueError, match='cannot be written \\(Permission denied\\)'):
    train.train_and_evaluate(_config(), str(tmp_path / 'run'))


def _cli(tmp_path, *args):
  result = subprocess.run([sys.executable, '-m', 'main', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
  return result.returncode, result.stderr


@pytest.mark.parametrize('args, message', [
    (['--config', 'configs/nope.py'], "'configs/nope.py' is neither a config file nor a setting"),
    (['--config', 'alignmix_jax/alignment.py'], 'defines no get_config()'),
    (['--config', 'configs/digits.py', '--config.bogus=1'], "the config has no field 'bogus'"),
    (['--config', 'configs/digits.py', '--config.batch_size=abc'],
     'this field holds a int'),
    (['--config', 'configs/digits.py:vanilla', '--config.mixup.method=cutmix'],
     'name two methods'),
    (['--config', 'configs/digits.py', '--checkpoint_step=4'],
     '--checkpoint_step is for --mode eval'),
])
def test_bad_command_lines_end_in_one_clear_line(tmp_path, args, message):
  code, stderr = _cli(tmp_path, *args, '--workdir', str(tmp_path / 'run'))
  assert code == 2
  assert message in stderr and 'Traceback' not in stderr
  assert not os.path.exists(tmp_path / 'run')


def test_the_readme_ood_folder_override_works(tmp_path):
  code, stderr = _cli(tmp_path, '--config', 'configs/digits.py', '--mode', 'summary',
                      '--config.eval.ood_folders.lsun_crop=/data/LSUN')
  assert code == 0, stderr[-2000:]


def test_an_empty_ood_folder_is_found_before_any_program_runs(tmp_path):
  config = tiny_config.get_config()
  empty = tmp_path / 'lsun'
  os.makedirs(empty)
  config.eval.ood_folders.lsun_crop = str(empty)
  with pytest.raises(FileNotFoundError, match=f'no images in {empty}'):
    validation.validate(config, 1, mode='eval')


@pytest.mark.parametrize('model, layers, stages', [('preactresnet18', (0, 5), 4),
                                                    ('wrn16_8', (1, 4), 3)])
def test_a_manifold_layer_the_encoder_lacks_is_refused(tmp_path, model, layers, stages):
  """Mixing the targets after a stage the encoder never calls would train on mixed labels
  of clean images."""
  config = methods.configure(tiny_config.get_config(), 'manifold_mixup')
  config.model.name = model
  config.mixup.manifold_layers = layers
  with pytest.raises(ValueError, match=f'after stage {max(layers)} .* has stages 1 to {stages}'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_ood_folders_in_the_odin_layout_are_read_unlabeled(tmp_path):
  """The ODIN archives unpack to one subfolder (LSUN_resize/LSUN_resize/*.jpg): every image
  below the folder is an OOD image, none a class."""
  inner = tmp_path / 'LSUN_resize' / 'LSUN_resize'
  os.makedirs(inner)
  rng = np.random.default_rng(0)
  for index in range(5):
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        inner / f'{index}.jpg')
  config = tiny_config.get_config()
  config.eval.ood_folders.lsun_resize = str(tmp_path / 'LSUN_resize')
  validation.validate(config, 1, mode='eval')
  data = arrays.load(alignmix_data.unlabeled_folder(config.dataset,
                                                    config.eval.ood_folders.lsun_resize), 'test')
  assert data['image'].shape == (5, 16, 16, 3) and (data['label'] == -1).all()
