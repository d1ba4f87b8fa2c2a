"""The datasets that fit in memory, read without TensorFlow into uint8 arrays.

`load(config.dataset, split)` returns `{'image': uint8 [N, S, S, 3], 'label': int32 [N]}`,
S = `config.dataset.image_size`, for
  digits         scikit-learn's digits, upscaled (bilinear) from 8x8, grey as RGB.
  fashion_mnist  the four IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
                 `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or `.gz`) in
                 `data_dir`: the 28x28 images zero-padded to 32x32 (as CIFAR's side), grey
                 as RGB. On Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts them in
                 /usr/share/datasets/fashion-mnist; elsewhere download them from
                 https://github.com/zalandoresearch/fashion-mnist (data/fashion).
  cifar10        `cifar-10-binary.tar.gz` in `data_dir` (or its unpacked
                 `cifar-10-batches-bin/`): the "binary version" of
                 https://www.cs.toronto.edu/~kriz/cifar.html, never the pickled one.
  cifar100       `cifar-100-binary.tar.gz` (or `cifar-100-binary/`): the 100 fine labels.
                 For both, a prepared tfds data_dir works too when tensorflow-datasets is
                 installed.
  tiny_imagenet  the folder layout (`catalog.TINY_IMAGENET_LAYOUT`), decoded once with
                 Pillow and cached beside it as `alignmix_<split>_<S>.npz` (when writable).
  image_folder   every image of the folder, decoded with Pillow.
Images that are not S x S are fitted to it: the shorter side resized to S (bilinear, with
antialiasing), then the centre crop. Everything is read before training starts: missing or
malformed files raise errors that name the file and how to get it; with
`config.dataset.skip_unreadable` unreadable images (of the folder datasets) are left out
with a warning and a count instead. With `config.dataset.train_examples` the train split is
its class-balanced subset (`catalog.balanced_subset`, fixed by `config.dataset.subset_seed`).
"""

import gzip
import hashlib
import os
import tarfile

from absl import logging
import jax
import numpy as np

from alignmix_jax.data import catalog

_DIGITS_TEST_SIZE = 360
_FASHION_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
                  'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_FASHION_HELP = ('On Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts the four files '
                 'in /usr/share/datasets/fashion-mnist; elsewhere download '
                 'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
                 't10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from '
                 'https://github.com/zalandoresearch/fashion-mnist/tree/master/data/fashion '
                 'into one folder, and set config.dataset.data_dir to it.')
# name -> (archive, its folder, {split: member files}, label bytes, label byte used).
_CIFAR = {
    'cifar10': ('cifar-10-binary.tar.gz', 'cifar-10-batches-bin',
                {'train': [f'data_batch_{i}.bin' for i in range(1, 6)],
                 'test': ['test_batch.bin']}, 1, 0),
    'cifar100': ('cifar-100-binary.tar.gz', 'cifar-100-binary',
                 {'train': ['train.bin'], 'test': ['test.bin']}, 2, 1),
}
_CIFAR_PIXELS = 32 * 32 * 3


def load(dataset_config, split):
  """`{'image': uint8 [N, S, S, 3], 'label': int32 [N]}` of `split` ('train' | 'test').

  Raises:
    ValueError: a dataset that is not held in memory, an unknown split name, sizes or class
      counts that disagree with the config, a malformed file.
    FileNotFoundError: missing files; the message says where to get them.
  """
  catalog.check_dataset(dataset_config)
  name = dataset_config.name
  if name not in _LOADERS:
    raise ValueError(f'{name} is streamed by the tf.data pipeline, not held in memory: set '
                     "config.dataset.pipeline='tfdata'.")
  data = _LOADERS[name](dataset_config, split)
  if name != 'image_folder':
    catalog.check_size(dataset_config, split, len(data['label']))
  if split == 'train' and catalog.train_examples(dataset_config):
    kept = catalog.balanced_subset(data['label'], dataset_config)
    data = {key: value[kept] for key, value in data.items()}
  return {'image': fit(data['image'], dataset_config.image_size),
          'label': data['label'].astype(np.int32)}


def fit(images, size):
  """uint8 `[N, h, w, 3]` -> `[N, size, size, 3]`: the shorter side resized to `size`
  (bilinear, antialiased), then the centre crop; unchanged when already `size` x `size`."""
  height, width = images.shape[1:3]
  if (height, width) == (size, size):
    return images
  scale = size / min(height, width)
  resized_h, resized_w = max(size, round(height * scale)), max(size, round(width * scale))
  with jax.default_device(jax.local_devices(backend='cpu')[0]):
    resized = np.asarray(jax.image.resize(images.astype(np.float32),
                                          (len(images), resized_h, resized_w, 3), 'bilinear',
                                          antialias=True))
  top, left = (resized_h - size) // 2, (resized_w - size) // 2
  return np.clip(np.round(resized[:, top:top + size, left:left + size]), 0, 255).astype(
      np.uint8)


def _digits(dataset_config, split):
  """scikit-learn's digits, the fixed stratified split, grey (0..16) as uint8 RGB at 8x8."""
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  train, test = model_selection.train_test_split(
      np.arange(len(digits.target)), test_size=_DIGITS_TEST_SIZE, stratify=digits.target,
      random_state=0)
  indices = catalog.pick({'train': np.sort(train), 'test': np.sort(test)}, dataset_config,
                         split)
  catalog.check_classes(dataset_config, len(digits.target_names))
  grey = np.round(digits.images[indices] / 16.0 * 255.0).astype(np.uint8)
  return {'image': np.repeat(grey[..., None], 3, axis=-1), 'label': digits.target[indices]}


def _open_maybe_gzipped(folder, name):
  """The bytes of `folder/name` or `folder/name.gz`, or a FileNotFoundError with the fix."""
  for candidate, opener in ((name, open), (name + '.gz', gzip.open)):
    path = os.path.join(folder, candidate)
    if os.path.isfile(path):
      try:
        with opener(path, 'rb') as f:
          return path, f.read()
      except (OSError, EOFError) as error:
        raise ValueError(f'fashion_mnist: cannot read {path} ({error}). {_FASHION_HELP}') from error
  raise FileNotFoundError(f'fashion_mnist: {os.path.join(folder, name)}[.gz] not found. '
                          f'{_FASHION_HELP}')


def read_idx(path, data, dims):
  """An IDX array of unsigned bytes with `dims` dimensions (magic 0x0000 08 dims)."""
  if len(data) < 4 + 4 * dims or data[:4] != bytes([0, 0, 8, dims]):
    raise ValueError(f'{path} is not an IDX file of {dims}-dimensional unsigned bytes (its '
                     f'header is {data[:4].hex() or "empty"}, expected 000008{dims:02x}).')
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
  if body.size != np.prod(shape):
    raise ValueError(f'{path}: the header says {shape} ({np.prod(shape)} bytes) but the file '
                     f'holds {body.size}: truncated or damaged; get it again.')
  return body.reshape(shape)


def _fashion_mnist(dataset_config, split):
  if not dataset_config.data_dir:
    raise ValueError(f'fashion_mnist: set config.dataset.data_dir. {_FASHION_HELP}')
  images_name, labels_name = catalog.pick(_FASHION_FILES, dataset_config, split)
  images_path, images = _open_maybe_gzipped(dataset_config.data_dir, images_name)
  labels_path, labels = _open_maybe_gzipped(dataset_config.data_dir, labels_name)
  images, labels = read_idx(images_path, images, 3), read_idx(labels_path, labels, 1)
  if images.shape[1:] != (28, 28):
    raise ValueError(f'fashion_mnist: {images_path} holds {images.shape[1]}x{images.shape[2]} '
                     f'images; Fashion-MNIST\'s are 28x28. {_FASHION_HELP}')
  if len(images) != len(labels):
    raise ValueError(f'fashion_mnist: {images_path} holds {len(images)} images but '
                     f'{labels_path} {len(labels)} labels. {_FASHION_HELP}')
  if labels.size and labels.max() >= dataset_config.num_classes:
    raise ValueError(f'fashion_mnist: {labels_path} has label {labels.max()} but '
                     f'config.dataset.num_classes = {dataset_config.num_classes}.')
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28x28 -> 32x32, zeros around.
  return {'image': np.repeat(padded[..., None], 3, axis=-1), 'label': labels}


def _cifar_help(dataset_config):
  archive = _CIFAR[dataset_config.name][0]
  return (f'Put {archive} (https://www.cs.toronto.edu/~kriz/{archive}, the binary version) '
          f'in a folder and set config.dataset.data_dir to it; or, with tensorflow-datasets '
          f'installed, prepare it once with `tfds build {dataset_config.name} '
          '--data_dir=<dir>` and set data_dir to <dir>.')


def _cifar_members(dataset_config, split):
  """`[(path, bytes)]` of the split's binary files, from the archive or its folder."""
  archive, folder, members, _, _ = _CIFAR[dataset_config.name]
  names = catalog.pick(members, dataset_config, split)
  root = dataset_config.data_dir or '.'
  for directory in (os.path.join(root, folder), root):
    if all(os.path.isfile(os.path.join(directory, name)) for name in names):
      out = []
      for name in names:
        with open(os.path.join(directory, name), 'rb') as f:
          out.append((os.path.join(directory, name), f.read()))
      return out
  path = os.path.join(root, archive)
  if not os.path.isfile(path):
    return None
  try:
    with tarfile.open(path, 'r:gz') as tar:
      return [(f'{path}:{folder}/{name}', tar.extractfile(f'{folder}/{name}').read())
              for name in names]
  except (tarfile.TarError, KeyError, OSError, EOFError) as error:
    raise ValueError(f'{dataset_config.name}: cannot read {folder}/{names[0]} from {path} '
                     f'({error}): damaged or not the binary version. '
                     f'{_cifar_help(dataset_config)}') from error


def _cifar(dataset_config, split):
  """CIFAR from its binary files: records of label byte(s), then 3 x 32 x 32 pixels (CHW)."""
  members = _cifar_members(dataset_config, split)
  if members is None:
    return _tfds(dataset_config, split)
  _, _, _, label_bytes, label_index = _CIFAR[dataset_config.name]
  record = label_bytes + _CIFAR_PIXELS
  images, labels = [], []
  for path, data in members:
    if not data or len(data) % record:
      raise ValueError(f'{dataset_config.name}: {path} holds {len(data)} bytes, not a '
                       f'multiple of the {record}-byte records of the binary version. '
                       f'{_cifar_help(dataset_config)}')
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels.append(rows[:, label_index])
    images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
  catalog.check_classes(dataset_config, 10 if dataset_config.name == 'cifar10' else 100)
  return {'image': np.concatenate(images), 'label': np.concatenate(labels)}


def _tfds(dataset_config, split):
  """A prepared tfds data_dir (needs tensorflow-datasets), else the error that says how."""
  try:
    from alignmix_jax.data import tfds_prepared  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    root = dataset_config.data_dir or '.'
    raise FileNotFoundError(
        f'{dataset_config.name}: no {_CIFAR[dataset_config.name][0]} in {root} (and '
        f'tensorflow-datasets, which could read a prepared tfds data_dir, is not installed: '
        f'{error}). {_cifar_help(dataset_config)}') from error
  try:
    return tfds_prepared.read_whole(dataset_config, split)
  except FileNotFoundError as error:
    raise FileNotFoundError(
        f'{dataset_config.name}: no {_CIFAR[dataset_config.name][0]} in '
        f'{dataset_config.data_dir or "."}, and no prepared tfds dataset there ({error}). '
        f'{_cifar_help(dataset_config)}') from error


# Pillow's 16-bit grey modes (PNG, TIFF): scaled to 8 bits, not clipped by `convert('RGB')`.
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')


def _decode(path):
  """One image file as uint8 `[h, w, 3]`: grey, 1-bit and palette images become RGB, 16-bit
  grey images are scaled to 8 bits (value * 255 / 65535, rounded).

  Raises:
    ValueError: an image of 32-bit integers or floats, whose range is unknown.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    if image.mode in _SIXTEEN_BIT_MODES:
      values = np.asarray(image).astype(np.uint32)
      grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ('I', 'F'):
      raise ValueError(f'{"32-bit integer" if image.mode == "I" else "floating-point"} pixels '
                       '(Pillow mode ' + image.mode + ') have no known range; save the image '
                       'with 8 or 16 bits per channel')
    return np.asarray(image.convert('RGB'))


def _decode_all(dataset_config, split, paths, labels):
  """The images at `paths`, each fitted to `image_size`: `{'image': uint8 [N, S, S, 3],
  'label': int32 [N]}`. An unreadable image is an error naming it, or, with
  `config.dataset.skip_unreadable`, left out with a warning and a count."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  size = dataset_config.image_size
  out = np.empty((len(paths), size, size, 3), np.uint8)
  kept, skipped = [], []
  for path in paths:
    try:
      out[len(kept)] = fit(_decode(path)[None], size)[0]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
      if not dataset_config.skip_unreadable:
        raise ValueError(
            f'Cannot decode the image {path} ({dataset_config.name}, '
            f'{catalog.split_name(dataset_config, split)} split): {error}. Replace or remove '
            'the file, or set config.dataset.skip_unreadable=True to leave unreadable images '
            'out (with a warning and a count).') from error
      skipped.append((path, error))
      continue
    kept.append(len(kept) + len(skipped))
  if skipped:
    logging.warning('Left out %d unreadable images of %s (%s split), e.g. %s: %s',
                    len(skipped), dataset_config.name,
                    catalog.split_name(dataset_config, split), skipped[0][0], skipped[0][1])
  return {'image': out[:len(kept)], 'label': np.asarray(labels, np.int32)[kept]}


def _cached_decode(dataset_config, split, paths, labels):
  """`_decode_all`, cached in `data_dir` as an .npz keyed by the file list, the size and
  `skip_unreadable`."""
  size = dataset_config.image_size
  root = dataset_config.data_dir
  listing = '\n'.join(os.path.relpath(p, root) for p in paths)
  # File names that are not UTF-8 reach here as surrogate escapes: hash their bytes.
  digest = hashlib.sha1(f'{listing}\nskip={dataset_config.skip_unreadable}'.encode(
      'utf-8', 'surrogateescape')).hexdigest()
  cache = os.path.join(root, f'alignmix_{catalog.split_name(dataset_config, split)}_{size}.npz')
  if os.path.isfile(cache):
    try:
      with np.load(cache) as cached:
        if str(cached['digest']) == digest:
          return {'image': cached['image'], 'label': cached['label']}
    except (OSError, ValueError, KeyError, EOFError):
      pass  # A damaged cache is rebuilt.
  data = _decode_all(dataset_config, split, paths, labels)
  try:
    with open(cache + '.tmp', 'wb') as f:
      np.savez(f, digest=digest, **data)
    os.replace(cache + '.tmp', cache)
  except OSError:
    pass  # A read-only data_dir: decode again next time.
  return data


def _tiny_imagenet(dataset_config, split):
  paths, labels = catalog.tiny_imagenet_files(dataset_config, split)
  return _cached_decode(dataset_config, split, paths, labels)


def _image_folder(dataset_config, split):
  paths, labels = catalog.image_folder_files(dataset_config, split)
  return _decode_all(dataset_config, split, paths, labels)


_LOADERS = {'digits': _digits, 'fashion_mnist': _fashion_mnist, 'cifar10': _cifar,
            'cifar100': _cifar, 'tiny_imagenet': _tiny_imagenet, 'image_folder': _image_folder}
