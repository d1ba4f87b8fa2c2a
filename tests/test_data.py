"""Tests of alignmix_jax.data without TensorFlow: the in-memory loaders (IDX, CIFAR binary
archives, folders, written here), the device-resident back end, the entry point, and
training and evaluation through `python -m main` where TensorFlow cannot be imported."""

import functools
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from PIL import Image

import helpers
import tiny_config
from alignmix_jax import data
from alignmix_jax import metric_logging
from alignmix_jax import parallel
from alignmix_jax import validation
from alignmix_jax.configs import default
from alignmix_jax.data import arrays
from alignmix_jax.data import catalog
from alignmix_jax.data import device


def _config(**fields):
  config = default.get_config().dataset
  config.update(fields)
  return config


# Fashion-MNIST: IDX files written here.


def _idx(array):
  """`array` (uint8) as IDX bytes: magic 0x00000800 + ndim, big-endian sizes, the values."""
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      int(n).to_bytes(4, 'big') for n in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _fashion_dir(root, counts=(12, 5), gz=True):
  """Four IDX files (gzipped or not) of random 28x28 images; returns (dir, {split: data})."""
  rng = np.random.default_rng(0)
  splits = {}
  for split, prefix, count in (('train', 'train', counts[0]), ('test', 't10k', counts[1])):
    images = rng.integers(1, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    for kind, values in (('images-idx3', images), ('labels-idx1', labels)):
      name = os.path.join(root, f'{prefix}-{kind}-ubyte' + ('.gz' if gz else ''))
      with (gzip.open if gz else open)(name, 'wb') as f:
        f.write(_idx(values))
    splits[split] = (images, labels)
  return str(root), splits


def _fashion_config(data_dir, counts=(12, 5), **fields):
  return _config(name='fashion_mnist', data_dir=data_dir, train_size=counts[0],
                 test_size=counts[1], augment='crop_flip', **fields)


@pytest.mark.parametrize('gz', [True, False])
def test_fashion_mnist_reads_the_idx_files_padded_to_32_in_rgb(tmp_path, gz):
  root, expected = _fashion_dir(tmp_path, gz=gz)
  for split in ('train', 'test'):
    loaded = arrays.load(_fashion_config(root), split)
    images, labels = expected[split]
    assert loaded['image'].shape == (len(labels), 32, 32, 3)
    assert loaded['image'].dtype == np.uint8 and loaded['label'].dtype == np.int32
    np.testing.assert_array_equal(loaded['label'], labels)
    for channel in range(3):  # Grey repeated, the 28x28 image in the middle, zeros around.
      np.testing.assert_array_equal(loaded['image'][:, 2:30, 2:30, channel], images)
    assert not loaded['image'][:, :2].any() and not loaded['image'][:, 30:].any()
    assert not loaded['image'][:, :, :2].any() and not loaded['image'][:, :, 30:].any()


def test_fashion_mnist_errors_name_the_file_and_the_fix(tmp_path):
  root, _ = _fashion_dir(tmp_path)
  os.remove(os.path.join(root, 't10k-labels-idx1-ubyte.gz'))
  with pytest.raises(FileNotFoundError, match='t10k-labels-idx1-ubyte.*apt-get install '
                     'dataset-fashion-mnist.*zalandoresearch'):
    arrays.load(_fashion_config(root), 'test')
  with open(os.path.join(root, 't10k-labels-idx1-ubyte'), 'wb') as f:
    f.write(_idx(np.zeros((4, 28, 28), np.uint8)))  # Images where labels belong.
  with pytest.raises(ValueError, match='t10k-labels-idx1-ubyte is not an IDX file of '
                     '1-dimensional'):
    arrays.load(_fashion_config(root), 'test')
  with gzip.open(os.path.join(root, 'train-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(_idx(np.zeros((12, 28, 28), np.uint8))[:-10])  # Truncated.
  with pytest.raises(ValueError, match='train-images-idx3-ubyte.gz: the header says .* '
                     'truncated'):
    arrays.load(_fashion_config(root), 'train')
  with pytest.raises(ValueError, match='set config.dataset.data_dir'):
    arrays.load(_fashion_config(''), 'train')
  os.makedirs(tmp_path / 'sizes')
  root, _ = _fashion_dir(tmp_path / 'sizes')
  with pytest.raises(ValueError, match='config.dataset.train_size = 60000'):
    arrays.load(_fashion_config(root, counts=(60_000, 5)), 'train')
  with open(os.path.join(root, 't10k-images-idx3-ubyte'), 'wb') as f:  # MNIST-like, 10x10.
    f.write(_idx(np.zeros((5, 10, 10), np.uint8)))
  os.remove(os.path.join(root, 't10k-images-idx3-ubyte.gz'))
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte holds 10x10 images; "
                                       "Fashion-MNIST's are 28x28"):
    arrays.load(_fashion_config(root), 'test')


# CIFAR: the binary archives, written here.


def _original_indices(loaded, images):
  """The index in the IDX file of each loaded (padded, RGB) image: images are random, so
  each matches one."""
  return [int(np.flatnonzero((images == image[2:30, 2:30, 0]).all(axis=(1, 2)))[0])
          for image in loaded['image']]


def test_train_examples_is_a_class_balanced_subset_fixed_by_subset_seed_alone(tmp_path):
  root, expected = _fashion_dir(tmp_path, counts=(200, 5))
  images, labels = expected['train']
  config = _fashion_config(root, counts=(200, 5), train_examples=30)
  loaded = arrays.load(config, 'train')
  indices = _original_indices(loaded, images)
  assert len(set(indices)) == 30 and indices == sorted(indices)  # Distinct, in file order.
  np.testing.assert_array_equal(loaded['label'], labels[indices])
  assert np.bincount(loaded['label'], minlength=10).tolist() == [3] * 10
  assert len(arrays.load(config, 'test')['label']) == 5  # The test split stays whole.
  assert catalog.split_size(config, 'train') == 30
  assert catalog.steps_per_epoch(config, 8) == 3
  # The same images whatever the run's seed (every method and seed trains on them) ...
  mesh = parallel.data_mesh()
  for seed in (0, 1):
    feed = data.train_feed(config, mesh, global_batch_size=10, seed=seed)
    np.testing.assert_array_equal(jax.device_get(feed.resident['image']), loaded['image'])
  # ... and others for another subset_seed; 0 keeps every example.
  other = _original_indices(arrays.load(_fashion_config(
      root, counts=(200, 5), train_examples=30, subset_seed=1), 'train'), images)
  assert other != indices and len(set(other)) == 30
  whole = arrays.load(_fashion_config(root, counts=(200, 5)), 'train')
  np.testing.assert_array_equal(whole['label'], labels)


@pytest.mark.parametrize('fields, message', [
    ({'train_examples': 25}, r'train_examples = 25 must be 0 .* or a positive multiple of '
                             r'config.dataset.num_classes = 10'),
    ({'train_examples': -10}, r'train_examples = -10 must be 0'),
    ({'train_examples': 300}, r'train_examples = 300 is more than the 200 examples of the '
                              r'train split: set it to at most config.dataset.train_size'),
    ({'train_examples': 200}, r'takes 20 examples of each class, but class 3 of fashion_mnist '
                              r'has 16: lower train_examples to at most 160'),
])
def test_train_examples_errors_name_the_fix(tmp_path, fields, message):
  root, _ = _fashion_dir(tmp_path, counts=(200, 5))
  with pytest.raises(ValueError, match=message):
    arrays.load(_fashion_config(root, counts=(200, 5), **fields), 'train')


def test_train_examples_of_a_streamed_dataset_is_refused():
  config = _config(name='imagenet2012', num_classes=1000, train_examples=1000)
  with pytest.raises(ValueError, match=r'subsets the datasets held in memory .*not the '
                                       r'streamed imagenet2012: set it to 0'):
    catalog.split_size(config, 'train')


def _cifar_records(count, label_bytes, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 100 if label_bytes == 2 else 10, (count, label_bytes), dtype=np.uint8)
  chw = images.transpose(0, 3, 1, 2).reshape(count, -1)  # Red plane, green, blue; row-major.
  return np.concatenate([labels, chw], axis=1).tobytes(), images, labels[:, -1]


def _cifar_archive(root, name, unpacked=False):
  """A small binary CIFAR archive (or its unpacked folder) in `root`: (train, test) data."""
  if name == 'cifar10':
    archive, folder, label_bytes = 'cifar-10-binary.tar.gz', 'cifar-10-batches-bin', 1
    members = {f'data_batch_{i}.bin': 2 for i in range(1, 6)} | {'test_batch.bin': 3}
  else:
    archive, folder, label_bytes = 'cifar-100-binary.tar.gz', 'cifar-100-binary', 2
    members = {'train.bin': 10, 'test.bin': 3}
  train, test = [], []
  files = {}
  for seed, (member, count) in enumerate(members.items()):
    payload, images, labels = _cifar_records(count, label_bytes, seed)
    files[member] = payload
    (test if member.startswith('test') else train).append((images, labels))
  if unpacked:
    os.makedirs(os.path.join(root, folder))
    for member, payload in files.items():
      with open(os.path.join(root, folder, member), 'wb') as f:
        f.write(payload)
  else:
    with tarfile.open(os.path.join(root, archive), 'w:gz') as tar:
      for member, payload in files.items():
        info = tarfile.TarInfo(f'{folder}/{member}')
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

  def joined(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

  return joined(train), joined(test)


@pytest.mark.parametrize('unpacked', [False, True], ids=['archive', 'folder'])
@pytest.mark.parametrize('name, num_classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar_reads_the_binary_version(tmp_path, name, num_classes, unpacked):
  expected = dict(zip(('train', 'test'), _cifar_archive(tmp_path, name, unpacked)))
  config = _config(name=name, data_dir=str(tmp_path), num_classes=num_classes, train_size=10,
                   test_size=3, augment='crop_flip')
  for split, (images, labels) in expected.items():
    loaded = arrays.load(config, split)
    np.testing.assert_array_equal(loaded['image'], images)  # HWC, as decoded from CHW.
    np.testing.assert_array_equal(loaded['label'], labels)  # cifar100: the fine label.


def test_cifar_errors_name_the_archive_and_the_fix(tmp_path):
  config = _config(name='cifar10', data_dir=str(tmp_path), train_size=10, test_size=3)
  with pytest.raises((FileNotFoundError, ValueError),
                     match='cifar-10-binary.tar.gz.*binary version'):
    arrays.load(config, 'train')
  os.makedirs(tmp_path / 'cifar-10-batches-bin')
  for i in range(1, 6):
    (tmp_path / 'cifar-10-batches-bin' / f'data_batch_{i}.bin').write_bytes(b'\0' * 3000)
  with pytest.raises(ValueError, match='data_batch_1.bin holds 3000 bytes, not a multiple of '
                     'the 3073-byte records'):
    arrays.load(config, 'train')


# Folders, decoded with Pillow (tiny_imagenet cached beside its files).


def _write_png(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


def _tiny_imagenet_dir(root, size=8):
  rng = np.random.default_rng(1)
  wnids = ['n01', 'n02']
  images = {}
  for label, wnid in enumerate(wnids):
    for i in range(3):
      image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      path = os.path.join(root, 'train', wnid, 'images', f'{wnid}_{i}.png')
      _write_png(path, image)
      images[path] = (image, label)
  rows = []
  for i, wnid in enumerate(wnids * 2):
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    _write_png(os.path.join(root, 'val', 'images', f'val_{i}.png'), image)
    rows.append(f'val_{i}.png\t{wnid}\t0\t0\t1\t1\n')
  with open(os.path.join(root, 'val', 'val_annotations.txt'), 'w', encoding='utf-8') as f:
    f.writelines(rows)
  return str(root)


def test_tiny_imagenet_file_names_that_are_not_utf8_are_read(tmp_path):
  """A file name of Latin-1 bytes (not UTF-8), in the train folder and in the validation
  annotations: read like any other (and cached)."""
  root = _tiny_imagenet_dir(tmp_path)
  images = os.path.join(root, 'train', 'n01', 'images').encode()
  latin1 = os.path.join(images, b'n01_\xe9.png')
  image = np.full((8, 8, 3), 200, np.uint8)
  Image.fromarray(image).save(latin1.decode('utf-8', 'surrogateescape'), format='PNG')
  val = os.path.join(root, 'val').encode()
  Image.fromarray(image).save(os.path.join(val, b'images', b'val_\xe9.png').decode(
      'utf-8', 'surrogateescape'), format='PNG')
  with open(os.path.join(val, b'val_annotations.txt'), 'ab') as f:
    f.write(b'val_\xe9.png\tn02\t0\t0\t1\t1\n')
  config = _config(name='tiny_imagenet', data_dir=root, image_size=8, num_classes=2,
                   train_size=7, test_split='val', test_size=5, augment='crop_flip')
  train = arrays.load(config, 'train')
  assert list(train['label']) == [0, 0, 0, 0, 1, 1, 1]
  np.testing.assert_array_equal(train['image'][3], image)  # n01_\xe9 sorts after n01_2.
  test = arrays.load(config, 'test')
  assert list(test['label']) == [0, 1, 0, 1, 1]
  np.testing.assert_array_equal(test['image'][4], image)


def test_tiny_imagenet_is_decoded_once_and_cached(tmp_path):
  root = _tiny_imagenet_dir(tmp_path)
  config = _config(name='tiny_imagenet', data_dir=root, image_size=8, num_classes=2,
                   train_size=6, test_split='val', test_size=4, augment='crop_flip')
  first = arrays.load(config, 'train')
  assert first['image'].shape == (6, 8, 8, 3) and list(first['label']) == [0, 0, 0, 1, 1, 1]
  first_image = np.asarray(Image.open(os.path.join(root, 'train', 'n01', 'images',
                                                    'n01_0.png')))
  np.testing.assert_array_equal(first['image'][0], first_image)
  cache = os.path.join(root, 'alignmix_train_8.npz')
  assert os.path.isfile(cache)
  # The cache is what is read next time: a changed pixel in a file is not seen ...
  _write_png(os.path.join(root, 'train', 'n01', 'images', 'n01_0.png'),
             np.zeros((8, 8, 3), np.uint8))
  np.testing.assert_array_equal(arrays.load(config, 'train')['image'], first['image'])
  # ... but a changed file list rebuilds it.
  os.rename(os.path.join(root, 'train', 'n01', 'images', 'n01_0.png'),
            os.path.join(root, 'train', 'n01', 'images', 'n01_9.png'))
  rebuilt = arrays.load(config, 'train')
  assert not rebuilt['image'][2].any()  # n01_9.png (zeros) sorts last in its class.
  val = arrays.load(config, 'test')
  assert list(val['label']) == [0, 1, 0, 1]


def test_an_undecodable_image_is_named(tmp_path):
  root = _tiny_imagenet_dir(tmp_path)
  bad = os.path.join(root, 'val', 'images', 'val_2.png')
  with open(bad, 'wb') as f:
    f.write(b'not an image')
  config = _config(name='tiny_imagenet', data_dir=root, image_size=8, num_classes=2,
                   train_size=6, test_split='val', test_size=4)
  with pytest.raises(ValueError, match=f'Cannot decode the image {bad}'):
    arrays.load(config, 'test')


def test_fit_resizes_the_shorter_side_and_crops_the_centre():
  image = np.zeros((1, 20, 40, 3), np.uint8)
  image[:, :, 6:34] = 200  # More than the middle half, where the centre crop falls.
  fitted = arrays.fit(image, 10)  # 20 x 40 -> 10 x 20 -> the middle 10 x 10.
  assert fitted.shape == (1, 10, 10, 3)
  np.testing.assert_array_equal(fitted, np.full((1, 10, 10, 3), 200, np.uint8))
  ramp = np.broadcast_to(np.arange(40, dtype=np.uint8)[None, None, :, None], (1, 20, 40, 3))
  np.testing.assert_array_equal(arrays.fit(ramp, 20), ramp[:, :, 10:30])  # Only the crop.
  same = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  assert arrays.fit(same, 4) is same


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
  config = _config(name='tiny_imagenet', data_dir=str(root), image_size=8, num_classes=2,
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
  config = _config(name='image_folder', data_dir=str(folder), image_size=8, folder_labels=False)
  image = arrays.load(config, 'test')['image'][0]
  expected = np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, axis=-1)
  np.testing.assert_array_equal(image, expected)  # Every pixel, white inside, black outside.


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
  loaded = arrays.load(data.unlabeled_folder(config.dataset,
                                             config.eval.ood_folders.lsun_resize), 'test')
  assert loaded['image'].shape == (5, 16, 16, 3) and (loaded['label'] == -1).all()


# The device-resident back end.


def test_train_inputs_are_epoch_permutations_that_resume_exactly():
  size, batch = 50, 8  # 6 steps per epoch, 2 examples left out of each epoch.
  stream = device.train_inputs(size, batch, seed=3, start_step=0)
  steps = [next(stream) for _ in range(18)]
  for epoch in range(3):
    indices = np.concatenate([s['index'] for s in steps[6 * epoch:6 * (epoch + 1)]])
    assert len(set(indices.tolist())) == 48 and indices.max() < size
    assert all((s['epoch'] == epoch).all() for s in steps[6 * epoch:6 * (epoch + 1)])
  assert not np.array_equal(steps[0]['index'], steps[6]['index'])  # Reshuffled each epoch.
  resumed = device.train_inputs(size, batch, seed=3, start_step=7)
  for step in steps[7:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['index'], step['index'])
    np.testing.assert_array_equal(got['epoch'], step['epoch'])
  other = next(device.train_inputs(size, batch, seed=4, start_step=0))
  assert not np.array_equal(other['index'], steps[0]['index'])


def _candidates(image, padding, flips):
  """Every crop of the zero-padded image (and its mirror where `flips`), as NumPy sees it."""
  side = image.shape[0]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  out = {}
  for dy in range(2 * padding + 1):
    for dx in range(2 * padding + 1):
      crop = padded[dy:dy + side, dx:dx + side]
      out[(dy, dx, False)] = crop
      if flips:
        out[(dy, dx, True)] = crop[:, ::-1]
  return out


@pytest.mark.parametrize('augment', ['crop_flip', 'crop', 'none'])
def test_device_augmentation_is_a_uniform_padded_crop_and_flip(augment):
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (8, 6, 6, 3), dtype=np.uint8)  # No zeros: crops are distinct.
  resident = {'image': images, 'label': np.arange(8, dtype=np.int32)}
  draws = 1200
  inputs = {'index': np.arange(draws, dtype=np.int32) % 8,
            'epoch': np.arange(draws, dtype=np.int32) // 8}
  out = jax.jit(functools.partial(device.batch, augment=augment, padding=2, seed=5))(
      resident, inputs)
  out = jax.device_get(out)
  assert out['image'].dtype == np.float32 and (out['mask'] == 1).all()
  np.testing.assert_array_equal(out['label'], inputs['index'])
  pixels = np.round(out['image'] * 255).astype(np.uint8)
  seen = []
  for pixel, index in zip(pixels, inputs['index']):
    if augment == 'none':
      np.testing.assert_array_equal(pixel, images[index])
      continue
    matches = [key for key, crop in _candidates(images[index], 2, augment == 'crop_flip').items()
               if np.array_equal(crop, pixel)]
    assert len(matches) == 1, matches  # Exactly one crop (and flip) of the padded image.
    seen.append(matches[0])
  if augment != 'none':
    offsets = np.array([(dy, dx) for dy, dx, _ in seen])
    assert set(map(tuple, offsets)) == {(dy, dx) for dy in range(5) for dx in range(5)}
    assert abs(offsets.mean() - 2.0) < 0.15  # Uniform over 0..4.
    flipped = np.mean([flip for *_, flip in seen])
    assert (abs(flipped - 0.5) < 0.06) if augment == 'crop_flip' else flipped == 0
  # A function of (seed, epoch, index): the same draw again, another epoch another draw.
  again = jax.device_get(jax.jit(functools.partial(
      device.batch, augment=augment, padding=2, seed=5))(resident, inputs))
  np.testing.assert_array_equal(again['image'], out['image'])


def _digits(**fields):
  return _config(**{'image_size': 16, **fields})


def _materialized(feed, mesh, count):
  """The batches of the next `count` steps of `feed` (one `take`), as the step sees them,
  gathered to the host: a list of `count` batches."""
  materialize = jax.jit(jax.vmap(jax.shard_map(
      feed.batch, mesh=mesh, in_specs=(P(), P(parallel.AXIS)), out_specs=P(parallel.AXIS)),
      in_axes=(None, 0)))
  stacked = jax.device_get(materialize(feed.resident, feed.take(count)))
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(count)]


def test_train_feed_is_the_same_on_one_and_two_devices_in_any_takes_and_resumes():
  """The global batch depends on (seed, step) only: a 2-device mesh makes the batch a
  1-device mesh makes, takes of 3, 1 and 4 steps make the 8 batches one take of 8 makes, and
  a feed started at step 5 continues an uninterrupted one."""
  config = _digits(augment='crop')
  batches = {}
  for count in (1, 2):
    mesh = parallel.data_mesh(jax.devices()[:count])
    feed = data.train_feed(config, mesh, global_batch_size=16, seed=0)
    batches[count] = [batch for take in (3, 1, 4) for batch in _materialized(feed, mesh, take)]
  mesh = parallel.data_mesh()
  whole = _materialized(data.train_feed(config, mesh, global_batch_size=16, seed=0), mesh, 8)
  for one, two, together in zip(batches[1], batches[2], whole, strict=True):
    for key in one:
      np.testing.assert_array_equal(one[key], two[key])
      np.testing.assert_array_equal(one[key], together[key])
  assert not np.array_equal(batches[1][0]['image'], batches[1][1]['image'])
  resumed = data.train_feed(config, mesh, global_batch_size=16, seed=0, start_step=5)
  for expected, got in zip(batches[2][5:], _materialized(resumed, mesh, 3), strict=True):
    np.testing.assert_array_equal(got['image'], expected['image'])


def test_device_eval_batches_cover_the_split_once_with_masked_zero_padding():
  config = _digits()
  mesh = parallel.data_mesh()
  batches = data.eval_batches(config, mesh, global_batch_size=100)
  for _ in range(2):  # Every iteration is a new pass.
    passes = jax.device_get(list(batches))
    assert [float(b['mask'].sum()) for b in passes] == [100, 100, 100, 60]
    last = passes[-1]
    assert not last['image'][60:].any()
    images = np.concatenate([b['image'][b['mask'] == 1] for b in passes])
    labels = np.concatenate([b['label'][b['mask'] == 1] for b in passes])
  expected = arrays.load(config, 'test')
  np.testing.assert_allclose(images, expected['image'] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(labels, expected['label'])
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    data.eval_batches(config, mesh, global_batch_size=99)


@pytest.mark.parametrize('fields, expected', [
    ({}, 'device'),
    ({'name': 'cifar10', 'augment': 'crop_flip'}, 'device'),
    ({'name': 'imagenet2012', 'augment': 'imagenet'}, 'tfdata'),
    ({'name': 'image_folder'}, 'device'),
    ({'name': 'image_folder', 'pipeline': 'device'}, 'device'),
    ({'pipeline': 'tfdata'}, 'tfdata'),
])
def test_backend_of_each_dataset(fields, expected):
  assert data.backend(_config(**fields)) == expected


@pytest.mark.parametrize('fields, message', [
    ({'pipeline': 'gpu'}, "Unknown config.dataset.pipeline 'gpu'; valid: auto, device, "
                          'tfdata'),
    ({'name': 'imagenet2012', 'pipeline': 'device'}, "imagenet2012 is streamed: use "
                                                     "pipeline='tfdata'"),
    ({'augment': 'imagenet', 'pipeline': 'device'}, "augment='imagenet' needs "
                                                    "pipeline='tfdata'"),
    ({'name': 'mnist'}, 'Unknown config.dataset.name'),
])
def test_backend_errors_name_the_fix(fields, message):
  with pytest.raises(ValueError, match=message):
    data.backend(_config(**fields))


# Training and evaluation without TensorFlow, through `python -m main`.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main_without_tensorflow(*args):
  """`python -m main *args` in a process where importing TensorFlow or tfds fails."""
  argv = ['main', *args]
  code = ("import runpy, sys; sys.modules.update({'tensorflow': None, "
          "'tensorflow_datasets': None}); "
          f"sys.argv = {argv!r}; runpy.run_module('main', run_name='__main__')")
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                        text=True, timeout=600, check=False)


def test_digits_trains_and_evaluates_without_tensorflow(tmp_path):
  common = ['--config', os.path.join(REPO, 'tests', 'tiny_config.py'), '--workdir',
            str(tmp_path), '--config.num_train_steps=4', '--config.eval.pgd_iters=2']
  result = _main_without_tensorflow(*common)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = metric_logging.read_jsonl(str(tmp_path))
  assert [line['step'] for line in lines if 'train/loss' in line] == [2, 4]
  assert lines[-1]['step'] == 4 and 'test/top1' in lines[-1]
  events = helpers.tensorboard_scalars(tmp_path)  # The same scalars in the event files.
  assert [step for step, _ in events['train/loss']] == [2, 4]
  for line in lines:
    for name, value in line.items():
      if name != 'step':
        assert (line['step'], pytest.approx(value)) in events[name]
  result = _main_without_tensorflow(*common, '--mode', 'eval')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'eval.json', encoding='utf-8') as f:
    results = json.load(f)
  assert {'top1_error', 'fgsm_error', 'pgd_error', 'ece', 'ood/uniform/auroc'} <= set(results)
  assert helpers.tensorboard_scalars(tmp_path / 'eval')['top1_error'][0][0] == 4


def test_fashion_mnist_config_trains_without_tensorflow(tmp_path):
  os.makedirs(tmp_path / 'data')
  root, _ = _fashion_dir(tmp_path / 'data', counts=(64, 20))
  result = _main_without_tensorflow(
      '--config', os.path.join(REPO, 'configs', 'fashion_mnist.py'), '--workdir',
      str(tmp_path / 'run'), f'--config.dataset.data_dir={root}',
      '--config.dataset.train_size=64', '--config.dataset.test_size=20',
      '--config.model.width=4', '--config.batch_size=16', '--config.num_train_steps=4',
      '--config.log_every_steps=2', '--config.checkpoint_every_steps=4',
      '--config.eval.batch_size=20', '--config.dataset.train_examples=40')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = metric_logging.read_jsonl(str(tmp_path / 'run'))
  top1 = lines[-1]['test/top1']
  assert lines[-1]['step'] == 4 and 0 <= top1 <= 100
  assert lines[-1]['test/epoch'] == 2.0  # 40 of the 64 images: 2 batches of 16 per epoch.
  assert top1 / 5 == pytest.approx(round(top1 / 5), abs=1e-4)  # Of 20 test images: 5% each.
  events = helpers.tensorboard_scalars(tmp_path / 'run')
  assert [step for step, _ in events['train/loss']] == [2, 4]
  assert events['test/top1'] == [(4, pytest.approx(top1))]
