"""Tests of the tf.data back end (alignmix_jax.data.tfdata), offline: digits, folders written
here, mocked tfds."""

import itertools
import os
import time

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn import datasets as sklearn_datasets

from alignmix_jax import data
from alignmix_jax import parallel
from alignmix_jax.data import arrays
from alignmix_jax.data import tfdata
from alignmix_jax.configs import default


def _config(**fields):
  config = default.get_config().dataset
  config.update(fields)
  return config


def _take(iterator, count):
  return list(itertools.islice(iterator, count))


def _pixels(batch):
  """The batch's images back as uint8 `[b, S, S, 3]` (exact for untouched images)."""
  return np.round(batch['image'] * 255).astype(np.uint8)


def _real(batches, key='image'):
  """The real (mask 1) entries of `key` over an evaluation pass."""
  return np.concatenate([batch[key][batch['mask'] == 1] for batch in batches])


def _write_image(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(image))


def _flat_folder(root, images):
  for index, image in enumerate(images):
    _write_image(os.path.join(root, f'{index:03d}.png'), image)
  return str(root)


def _constant_images(count, size=8):
  """`count` images of one distinct grey value each: the value identifies the image."""
  return [np.full((size, size, 3), 10 * index, np.uint8) for index in range(count)]


def _ids(images):
  return sorted(np.round(images[:, 0, 0, 0] * 255 / 10).astype(int).tolist())


# Digits: the offline default.


def test_digits_splits_are_the_sklearn_digits_at_image_size():
  config = _config(image_size=8)  # 8x8: the upscaling is the identity, pixels compare exactly.
  digits = sklearn_datasets.load_digits()
  expected = np.round(digits.images / 16.0 * 255).astype(np.uint8)
  passes = {split: list(tfdata.create_split(config, split, batch_size=100, seed=0,
                                                    train=False)) for split in ('train', 'test')}
  images = {split: _pixels({'image': _real(batches)}) for split, batches in passes.items()}
  labels = {split: _real(batches, 'label') for split, batches in passes.items()}
  assert len(labels['train']) == 1437 and len(labels['test']) == 360
  # Grey replicated to RGB; together the two splits are exactly sklearn's 1797 images.
  assert all(np.array_equal(image[..., 0], image[..., 2]) for image in images.values())
  found = np.concatenate([images['train'], images['test']])[..., 0].reshape(1797, -1)
  assert np.array_equal(np.unique(found, axis=0), np.unique(expected.reshape(1797, -1), axis=0))
  # Each example keeps its label, and the test split is stratified.
  by_image = {image.tobytes(): label for image, label in zip(expected, digits.target)}
  for split in passes:
    assert all(by_image[image[..., 0].tobytes()] == label
               for image, label in zip(images[split], labels[split]))
  assert set(np.bincount(labels['test'], minlength=10)) <= {35, 36, 37}


def test_digits_are_upscaled_bilinearly_into_unit_range():
  batch = next(tfdata.create_split(_config(image_size=32), 'test', batch_size=16,
                                           seed=0, train=False))
  assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32 and batch['mask'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  # Bilinear upscaling of 8x8 digits gives many intermediate grey levels.
  assert len(np.unique(_pixels(batch))) > 100


def test_eval_pass_is_padded_with_masked_zeros():
  config = _config()
  batches = list(tfdata.create_split(config, 'test', batch_size=100, seed=0,
                                             train=False))
  assert len(batches) == tfdata.num_eval_batches(config, 100, 1) == 4
  assert [batch['mask'].sum() for batch in batches] == [100, 100, 100, 60]
  last = batches[-1]
  assert all(batch['image'].shape == (100, 32, 32, 3) for batch in batches)
  assert not last['image'][60:].any() and not last['label'][60:].any()
  assert (last['image'][:60].reshape(60, -1).max(axis=1) > 0).all()


# Determinism and resume.


def test_same_seed_same_batches_other_seed_other_batches():
  config = _config()

  def run(seed):
    return _take(tfdata.create_split(config, 'train', batch_size=64, seed=seed,
                                             train=True), 3)

  first, again, other = run(0), run(0), run(1)
  for a, b in zip(first, again):
    assert all(np.array_equal(a[key], b[key]) for key in a)
  assert not np.array_equal(first[0]['label'], other[0]['label'])
  assert (first[0]['mask'] == 1).all()


def test_start_step_resumes_exactly_across_epochs():
  config = _config()
  steps = data.steps_per_epoch(config, 64)
  assert steps == 1437 // 64
  full = _take(tfdata.create_split(config, 'train', batch_size=64, seed=3, train=True),
               2 * steps + 2)
  # Epochs differ in order: each is a permutation of the same examples.
  assert not np.array_equal(full[0]['label'], full[steps]['label'])
  for start in (5, steps - 1, steps, 2 * steps + 1):
    resumed = _take(tfdata.create_split(config, 'train', batch_size=64, seed=3,
                                                train=True, start_step=start), 1)[0]
    assert all(np.array_equal(resumed[key], full[start][key]) for key in resumed), start


def test_an_epoch_of_a_train_examples_subset_is_the_subset_once():
  config = _config(train_examples=100, augment='none')
  steps = data.steps_per_epoch(config, 20)
  assert steps == 5
  batches = _take(tfdata.create_split(config, 'train', batch_size=20, seed=0, train=True),
                  steps)
  labels = np.concatenate([batch['label'] for batch in batches])
  assert np.bincount(labels, minlength=10).tolist() == [10] * 10
  seen = np.concatenate([_pixels(batch) for batch in batches]).reshape(100, -1)
  subset = arrays.load(config, 'train')['image'].reshape(100, -1)  # The device back end's.
  assert sorted(map(bytes, seen)) == sorted(map(bytes, subset))


# Augmentation.


def _candidates(images, padding):
  """uint8 bytes of every shifted (zero fill) and mirrored version -> (image, shift, flip)."""
  table = {}
  for index, image in enumerate(images):
    size = image.shape[0]
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    for dy, dx, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1),
                                          (False, True)):
      crop = padded[dy:dy + size, dx:dx + size]
      table[(crop[:, ::-1] if flip else crop).tobytes()] = (index, (dy, dx), flip)
  return table


def test_crop_flip_shifts_with_zero_padding_and_flips_half_the_time(tmp_path):
  images = list(np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3), np.uint8))
  config = _config(name='image_folder', data_dir=_flat_folder(tmp_path, images),
                   folder_labels=False, image_size=8, crop_padding=2, augment='crop_flip')
  batches = _take(tfdata.create_split(config, 'test', batch_size=32, seed=0,
                                              train=True), 12)
  table = _candidates(images, padding=2)
  outputs = [table[image.tobytes()] for batch in batches for image in _pixels(batch)]
  assert all(batch['image'].shape == (32, 8, 8, 3) for batch in batches)
  assert 0.4 < np.mean([flip for _, _, flip in outputs]) < 0.6
  assert len({shift for _, shift, _ in outputs}) >= 20  # Of the 25 shifts.
  # Every epoch shows every image once.
  assert all(sorted(index for index, _, _ in outputs[i:i + 32]) == list(range(32))
             for i in range(0, len(outputs), 32))


def test_imagenet_augmentation_keeps_size_range_and_jitters_colour(tmp_path):
  colours = np.random.default_rng(1).integers(40, 216, (16, 3))
  for label, colour in enumerate(colours):  # One class per image: the label finds its colour.
    _write_image(str(tmp_path / f'class{label:02d}' / 'image.png'),
                 np.broadcast_to(colour, (30 + 2 * label, 44 - label, 3)).astype(np.uint8))
  config = _config(name='image_folder', data_dir=str(tmp_path), num_classes=16, image_size=16,
                   augment='imagenet')
  train = _take(tfdata.create_split(config, 'test', batch_size=16, seed=0,
                                            train=True), 4)
  test = next(tfdata.create_split(config, 'test', batch_size=16, seed=0, train=False))
  for batch in train + [test]:
    assert batch['image'].shape == (16, 16, 16, 3)
    assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
    # Crops, resizes and flips of a constant image stay constant; jitter is per image.
    assert np.ptp(batch['image'], axis=(1, 2)).max() < 1e-5
  # The test transform keeps the colour; training changes it (jitter and lighting).
  assert np.abs(test['image'][:, 0, 0] - colours[test['label']] / 255).max() < 1e-5
  change = np.concatenate([np.abs(batch['image'][:, 0, 0] - colours[batch['label']] / 255)
                           for batch in train])
  assert np.mean(change.max(axis=-1) > 0.02) > 0.8


def test_folder_images_of_other_sizes_are_fitted(tmp_path):
  images = [np.full((12, 8, 3), 200, np.uint8), np.full((5, 9, 3), 100, np.uint8)]
  config = _config(name='image_folder', data_dir=_flat_folder(tmp_path, images), image_size=4,
                   folder_labels=False)
  batch = next(tfdata.create_split(config, 'test', batch_size=2, seed=0, train=False))
  assert batch['image'].shape == (2, 4, 4, 3)
  assert np.allclose(_pixels(batch)[:, :, :, 0], np.array([200, 100])[:, None, None], atol=1)
  assert batch['label'].tolist() == [-1, -1]


# Folder datasets.


def test_image_folder_labels_by_class_and_splits_by_subfolder(tmp_path):
  for split, count in (('train', 3), ('test', 2)):
    for label, name in enumerate(('cat', 'dog')):
      for index in range(count):
        image = np.full((6, 6, 3), 100 * label + 10 * index, np.uint8)
        _write_image(str(tmp_path / split / name / 'nested' / f'{index}.png'), image)
  config = _config(name='image_folder', data_dir=str(tmp_path), image_size=6, num_classes=2)
  assert data.steps_per_epoch(config, 2) == 3  # Sizes are counted: 6 train images.
  batches = list(tfdata.create_split(config, 'test', batch_size=3, seed=0,
                                             train=False))
  labels, images = _real(batches, 'label'), _pixels({'image': _real(batches)})
  assert labels.tolist() == [0, 0, 1, 1]
  assert (images[:, 0, 0, 0] // 100).tolist() == labels.tolist()


def test_tiny_imagenet_folder_layout(tmp_path):
  wnids = ('n02', 'n01', 'n03')  # Labels follow sorted wnids: n01 -> 0, n02 -> 1, n03 -> 2.
  for wnid in wnids:
    for index in range(4):
      image = np.full((8, 8, 3), 60 * int(wnid[-1]), np.uint8)
      _write_image(str(tmp_path / 'train' / wnid / 'images' / f'{wnid}_{index}.JPEG'), image)
  rows = []
  for index, wnid in enumerate(wnids * 2):
    _write_image(str(tmp_path / 'val' / 'images' / f'val_{index}.JPEG'),
                 np.full((8, 8, 3), 60 * int(wnid[-1]), np.uint8))
    rows.append(f'val_{index}.JPEG\t{wnid}\t0\t0\t7\t7\n')
  (tmp_path / 'val' / 'val_annotations.txt').write_text(''.join(rows))
  config = _config(name='tiny_imagenet', data_dir=str(tmp_path), image_size=8, num_classes=3,
                   train_size=12, test_size=6, test_split='val')
  test = list(tfdata.create_split(config, 'test', batch_size=4, seed=0, train=False))
  colours = _pixels({'image': _real(test)})[:, 0, 0, 0]
  assert _real(test, 'label').tolist() == [1, 0, 2, 1, 0, 2]
  assert (colours // 60 - 1).tolist() == [1, 0, 2, 1, 0, 2]
  train = next(tfdata.create_split(config, 'train', batch_size=12, seed=0, train=True))
  assert sorted(train['label'].tolist()) == [0] * 4 + [1] * 4 + [2] * 4


# Multi-process sharding.


def test_process_shards_are_disjoint_and_cover_the_split(tmp_path):
  config = _config(name='image_folder', data_dir=_flat_folder(tmp_path, _constant_images(11)),
                   folder_labels=False, image_size=8, crop_padding=0)
  passes = [list(tfdata.create_split(config, 'test', batch_size=4, seed=0, train=False,
                                             process_index=index, process_count=2))
            for index in range(2)]
  assert [len(batches) for batches in passes] == [2, 2]
  assert tfdata.num_eval_batches(config, 4, 2) == 2
  shards = [_ids(_real(batches)) for batches in passes]
  # Strided shards: examples 0, 2, 4, ... and 1, 3, 5, ... (class-sorted lists stay mixed).
  assert shards == [list(range(0, 11, 2)), list(range(1, 11, 2))]
  # Training: within an epoch, the processes see disjoint examples of their own shards.
  epoch = [_ids(np.concatenate([batch['image'] for batch in _take(tfdata.create_split(
      config, 'test', batch_size=2, seed=0, train=True, process_index=index,
      process_count=2), 2)])) for index in range(2)]
  assert set(epoch[0]) <= set(shards[0]) and set(epoch[1]) <= set(shards[1])
  assert len(epoch[0]) == len(set(epoch[0])) == 4 == len(epoch[1]) == len(set(epoch[1]))


# tfds datasets, mocked: metadata written here, examples from tfds.testing.mock_data.


def _prepare_metadata(data_dir, name, sizes):
  """Writes what a prepared tfds dataset has besides its records (the mock supplies those)."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=name,
                                           filetype_suffix='tfrecord')
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0,
                          filename_template=template) for split, size in sizes.items()]))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
  return str(data_dir)


@pytest.mark.parametrize('name, num_classes', [('cifar10', 10), ('cifar100', 100)])
def test_cifar_through_mocked_tfds(tmp_path, name, num_classes):
  data_dir = _prepare_metadata(tmp_path, name, {'train': 24, 'test': 24})
  config = _config(name=name, data_dir=data_dir, num_classes=num_classes, train_size=24,
                   test_size=24)
  with tfds.testing.mock_data(num_examples=24, data_dir=data_dir):
    expected = tfds.as_numpy(tfds.builder(name).as_dataset(split='test', batch_size=-1))
    test = list(tfdata.create_split(config, 'test', batch_size=10, seed=0,
                                            train=False))
    train = _take(tfdata.create_split(config, 'train', batch_size=8, seed=0,
                                              train=True), 4)
  assert np.array_equal(_pixels({'image': _real(test)}), expected['image'])
  assert np.array_equal(_real(test, 'label'), expected['label'])
  assert [batch['mask'].sum() for batch in test] == [10, 10, 4]
  assert all(batch['image'].shape == (8, 32, 32, 3) for batch in train)
  # One epoch is 3 batches: a permutation of the split's labels.
  epoch = np.concatenate([batch['label'] for batch in train[:3]])
  assert sorted(epoch.tolist()) == sorted(expected['label'].tolist())


def test_imagenet_streams_and_resumes_through_mocked_tfds(tmp_path):
  data_dir = _prepare_metadata(tmp_path, 'imagenet2012', {'train': 20, 'validation': 20})
  config = _config(name='imagenet2012', data_dir=data_dir, num_classes=1000, train_size=20,
                   test_size=20, test_split='validation', image_size=16, augment='imagenet',
                   shuffle_buffer=8)
  with tfds.testing.mock_data(num_examples=20, data_dir=data_dir):
    full = _take(tfdata.create_split(config, 'train', batch_size=4, seed=0,
                                             train=True), 7)
    resumed = next(tfdata.create_split(config, 'train', batch_size=4, seed=0,
                                               train=True, start_step=6))
    test = list(tfdata.create_split(config, 'test', batch_size=8, seed=0,
                                            train=False))
  assert all(np.array_equal(resumed[key], full[6][key]) for key in resumed)
  assert full[0]['image'].shape == (4, 16, 16, 3)
  assert 0.0 <= min(b['image'].min() for b in full) and max(b['image'].max() for b in full) <= 1
  assert sum(batch['mask'].sum() for batch in test) == 20 and len(test) == 3


_CUB_SHAPES = ((40, 50), (48, 36), (44, 44), (36, 52))
_CUB_BOXES = ((8, 10, 28, 30), (4, 6, 40, 20), (10, 10, 30, 40), (2, 20, 20, 50))  # Pixels.


def _cub_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  """Mocked CUB records: black images with a white box (tfds's random boxes do not encode)."""
  del split, read_config, shuffle_files
  examples = []
  for index, ((height, width), (top, left, bottom, right)) in enumerate(
      zip(_CUB_SHAPES, _CUB_BOXES)):
    image = np.zeros((height, width, 3), np.uint8)
    image[top:bottom, left:right] = 255
    examples.append({
        'image': image, 'label': index, 'label_name': f'bird{index}',
        'image/filename': f'{index}.jpg', 'segmentation_mask': image[..., :1],
        'bbox': tfds.features.BBox(top / height, left / width, bottom / height, right / width)})
  features = self.info.features
  if isinstance(decoders, tfds.decode.PartialDecoding):
    features, decoders = decoders.extract_features(features), decoders.decoders
  encoded = [features.encode_example({key: example[key] for key in features})
             for example in examples]
  records = tf.data.Dataset.from_tensor_slices(
      {key: [example[key] for example in encoded] for key in features})
  return records.map(lambda record: features.decode_example(record, decoders=decoders))


def _box_of_white(image):
  """(ymin, xmin, ymax, xmax) of the pixels brighter than 1/2, as fractions of the side."""
  rows, columns = np.nonzero(image.mean(axis=-1) > 0.5)
  size = image.shape[0]
  return np.array([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1]) / size


def test_cub_boxes_move_with_the_image(tmp_path):
  data_dir = _prepare_metadata(tmp_path, 'caltech_birds2011', {'train': 4, 'test': 4})
  config = _config(name='caltech_birds2011', data_dir=data_dir, num_classes=200, train_size=4,
                   test_size=4, image_size=32, augment='cub', with_bbox=True)
  with tfds.testing.mock_data(num_examples=4, data_dir=data_dir, as_dataset_fn=_cub_as_dataset):
    test = next(tfdata.create_split(config, 'test', batch_size=4, seed=0, train=False))
    train = _take(tfdata.create_split(config, 'train', batch_size=4, seed=0,
                                              train=True), 6)
  expected = np.array([[top / h, left / w, bottom / h, right / w] for (h, w), (
      top, left, bottom, right) in zip(_CUB_SHAPES, _CUB_BOXES)])
  assert np.allclose(test['bbox'][np.argsort(test['label'])], expected, atol=1e-6)
  assert test['image'].shape == (4, 32, 32, 3)
  flipped = 0
  for batch in [test] + train:
    assert batch['bbox'].shape == (4, 4) and batch['bbox'].dtype == np.float32
    for image, box in zip(batch['image'], batch['bbox']):
      assert np.abs(_box_of_white(image) - box).max() <= 1.5 / 32
  for batch in train:  # Flips mirror boxes: a box's x centre moves to 1 - centre.
    centres = (batch['bbox'][:, 1] + batch['bbox'][:, 3]) / 2
    flipped += np.sum(np.abs(centres - (expected[batch['label'], 1]
                                        + expected[batch['label'], 3]) / 2) > 0.1)
  assert 0 < flipped < 24


# Errors.


def test_unknown_names_list_the_valid_ones():
  for field, valid in (('name', data.DATASETS),
                       ('augment', data.AUGMENTATIONS)):
    with pytest.raises(ValueError, match=f"Unknown config.dataset.{field} 'mnist'") as error:
      tfdata.create_split(_config(**{field: 'mnist'}), 'train', batch_size=8, seed=0,
                                  train=True)
    assert all(name in str(error.value) for name in valid)
  with pytest.raises(ValueError, match="Unknown split 'val'.*'train', 'test'"):
    tfdata.create_split(_config(), 'val', batch_size=8, seed=0, train=False)
  with pytest.raises(ValueError, match="test split 'validation' for digits.*'test', 'train'"):
    tfdata.create_split(_config(test_split='validation'), 'test', batch_size=8,
                                seed=0, train=False)
  with pytest.raises(ValueError, match='has no boxes.*caltech_birds2011'):
    tfdata.create_split(_config(with_bbox=True), 'test', batch_size=8, seed=0,
                                train=False)


def test_sizes_and_classes_that_disagree_with_the_data_say_the_right_value():
  with pytest.raises(ValueError, match='has 1437 examples.*set config.dataset.train_size = 1437'):
    tfdata.create_split(_config(train_size=1500), 'train', batch_size=8, seed=0,
                                train=True)
  with pytest.raises(ValueError, match='set config.dataset.num_classes = 10'):
    tfdata.create_split(_config(num_classes=100), 'train', batch_size=8, seed=0,
                                train=True)
  with pytest.raises(ValueError, match='global batch size 2000'):
    data.steps_per_epoch(_config(), 2000)


def test_unprepared_tfds_dataset_fails_fast_with_instructions(tmp_path):
  start = time.monotonic()
  for name, extra in (('cifar10', ''), ('imagenet2012', 'ILSVRC2012_img_train.tar')):
    with pytest.raises(FileNotFoundError) as error:
      tfdata.create_split(_config(name=name, data_dir=str(tmp_path)), 'train',
                                  batch_size=8, seed=0, train=True)
    message = str(error.value)
    assert f"'{name}' is not prepared in data_dir {tmp_path}" in message
    assert f'tfds build {name} --data_dir={tmp_path}' in message and extra in message
  assert time.monotonic() - start < 10  # No download attempt (that hangs ~200 s offline).


def test_missing_or_empty_folders_show_the_expected_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'is not a folder(.|\n)*<wnid>/images'):
    tfdata.create_split(_config(name='tiny_imagenet', data_dir=str(tmp_path / 'no')),
                                'train', batch_size=8, seed=0, train=True)
  with pytest.raises(ValueError, match='set config.dataset.data_dir(.|\n)*folder_labels=False'):
    tfdata.create_split(_config(name='image_folder'), 'test', batch_size=8, seed=0,
                                train=False)
  (tmp_path / 'empty' / 'test').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r'no images in .*empty/test(.|\n)*folder_labels=False'):
    tfdata.create_split(_config(name='image_folder', data_dir=str(tmp_path / 'empty')),
                                'test', batch_size=8, seed=0, train=False)
  (tmp_path / 'tiny' / 'train' / 'n01' / 'images').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r'val_annotations.txt(.|\n)*<wnid>/images'):
    tfdata.create_split(
        _config(name='tiny_imagenet', data_dir=str(tmp_path / 'tiny'), test_split='val'),
        'test', batch_size=8, seed=0, train=False)


def test_the_entry_point_serves_tfdata_batches_to_the_step_and_to_evaluation():
  config = _config(pipeline='tfdata', image_size=16)
  mesh = parallel.data_mesh()
  assert data.backend(config) == 'tfdata'
  feed = data.train_feed(config, mesh, global_batch_size=16, seed=0, start_step=3)
  assert feed.resident == {}
  expected = _take(tfdata.process_batches(config, 'train', global_batch_size=16, seed=0,
                                          train=True, start_step=3), 2)
  inputs = feed.take(2)  # Two steps' batches, `[2, 16, ...]`, split over the devices.
  assert inputs['image'].sharding.spec == parallel.STEPS_SPEC
  for index, want in enumerate(expected):
    got = jax.device_get(feed.batch(feed.resident, jax.tree.map(lambda x, i=index: x[i],
                                                                  inputs)))
    assert sorted(got) == sorted(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  passes = [jax.device_get(list(data.eval_batches(config, mesh, global_batch_size=120)))
            for _ in range(2)]  # Each iteration a new pass.
  want = list(tfdata.create_split(config, 'test', batch_size=120, seed=0, train=False))
  for got in passes:
    assert len(got) == len(want) == 3
    for got_batch, want_batch in zip(got, want):
      np.testing.assert_array_equal(got_batch['image'], want_batch['image'])
      np.testing.assert_array_equal(got_batch['mask'], want_batch['mask'])
