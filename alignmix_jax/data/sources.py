"""Dataset readers: one split of one dataset, this process's shard of it, as raw records.

`load` returns a `Source`: the shard's records in a fixed or a seeded order, and the function
that decodes one record into an example
`{'image': uint8 [h, w, 3], 'label': int32 [], 'bbox': float32 [4] (with_bbox only)}`.

Datasets (`config.dataset.name`):
  digits             scikit-learn's bundled 8x8 digits (no download): upscaled (bilinear) to
                     `image_size`, grey replicated to RGB; a fixed stratified split
                     (random_state 0) of the 1797 images: 1437 'train', 360 'test'.
  cifar10, cifar100  tfds, read once into memory (uint8).
  imagenet2012, caltech_birds2011
                     tfds, streamed: encoded images are shuffled, then decoded.
                     caltech_birds2011 has one box per image (`with_bbox`).
  tiny_imagenet      the standard folder layout, splits 'train' and 'val'.
  image_folder       one subfolder per class, or a flat folder of unlabeled images (label -1).
Folder datasets keep file paths in memory and read the images as they go.

Sharding: shard i of n holds examples i, i + n, i + 2n, ... of an in-memory split (strided,
so class-sorted file lists give every shard every class), and the i-th of
`tfds.even_splits(split, n)` of a streamed one. Shard sizes differ by at most one.

Sizes: `config.dataset.train_size` / `test_size` are the split sizes (no network needed) and are
checked against the data wherever it tells (tfds metadata, the digits split, the Tiny-ImageNet
files). `image_folder` sizes are counted from the folder instead, so any folder (an OOD set)
can be read with a config written for another dataset.
"""

import dataclasses
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

DATASETS = ('digits', 'cifar10', 'cifar100', 'imagenet2012', 'caltech_birds2011',
            'tiny_imagenet', 'image_folder')
SPLITS = ('train', 'test')
_STREAMED = ('imagenet2012', 'caltech_birds2011')  # Too large for memory.
_WITH_BBOX = ('caltech_birds2011',)
_DIGITS_TEST_SIZE = 360
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')

_TINY_IMAGENET_LAYOUT = """\
  <data_dir>/train/<wnid>/images/*.JPEG    one folder per class (labels: sorted wnids)
  <data_dir>/val/images/*.JPEG
  <data_dir>/val/val_annotations.txt       lines: <file> TAB <wnid> TAB <box>
(the layout of tiny-imagenet-200.zip unpacked; config.dataset.data_dir names its root)"""

_IMAGE_FOLDER_LAYOUT = f"""\
  labeled:    <folder>/<class>/**/<image>   one subfolder per class (labels: sorted names)
  unlabeled:  <folder>/<image>              flat, label -1 (e.g. an OOD set)
where <folder> is <data_dir>/<split> (<split> = config.dataset.train_split or test_split)
when that subfolder exists, else <data_dir> itself; images end in {_IMAGE_EXTENSIONS}"""


@dataclasses.dataclass(frozen=True)
class Source:
  """This process's shard of one split.

  Attributes:
    records: `order_seed -> tf.data.Dataset` of raw records: the shard in a fixed order when
      `order_seed` is None, else in an order that is a function of `order_seed` (an int).
    decode: one record -> `{'image': uint8 [h, w, 3], 'label': int32 [], 'bbox'?}`.
  """
  records: Callable[[Optional[int]], tf.data.Dataset]
  decode: Callable[[dict], dict]


def split_size(dataset_config, split):
  """Number of examples of `split` ('train' | 'test'), known without network access."""
  _check_dataset(dataset_config)
  if dataset_config.name == 'image_folder':
    return len(_image_folder(dataset_config, split)[0]['label'])
  return dataset_config[_size_field(split)]


def load(dataset_config, split, process_index, process_count):
  """This process's `Source` of `split` ('train' | 'test') of `config.dataset`.

  Raises:
    ValueError: unknown dataset, split or split name; sizes or class counts that disagree
      with the config.
    FileNotFoundError: a tfds dataset that is not prepared in `data_dir`, or a missing or
      empty image folder; the message says how to prepare it or the expected layout.
  """
  _check_dataset(dataset_config)
  if dataset_config.name in _STREAMED:
    return _streamed_tfds(dataset_config, split, process_index, process_count)
  records, decode = _IN_MEMORY[dataset_config.name](dataset_config, split)
  # Strided shards: file lists sorted by class still give every process every class.
  shard = np.arange(process_index, len(records['label']), process_count)
  tensors = {key: tf.constant(value[shard]) for key, value in records.items()}

  def ordered(order_seed):
    count = len(shard)
    order = (np.arange(count) if order_seed is None
             else np.random.default_rng(order_seed).permutation(count))
    return tf.data.Dataset.from_tensor_slices(order).map(
        lambda index: {key: tf.gather(value, index) for key, value in tensors.items()})

  return Source(ordered, decode)


def _check_dataset(dataset_config):
  """Raises a ValueError for an unknown dataset name or a box request it cannot serve."""
  name = dataset_config.name
  if name not in DATASETS:
    raise ValueError(f'Unknown config.dataset.name {name!r}; valid: {DATASETS}.')
  if dataset_config.with_bbox and name not in _WITH_BBOX:
    raise ValueError(f'config.dataset.with_bbox is set but {name!r} has no boxes; datasets '
                     f'with boxes: {_WITH_BBOX}.')


def _check_split(split):
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; valid: {SPLITS} (config.dataset.train_split '
                     'and test_split name the dataset\'s own splits).')


def _size_field(split):
  _check_split(split)
  return f'{split}_size'


def _split_name(dataset_config, split):
  """The dataset's own name of `split`: `config.dataset.train_split` or `test_split`."""
  _check_split(split)
  return dataset_config[f'{split}_split']


def _check_size(dataset_config, split, size):
  field = _size_field(split)
  if size != dataset_config[field]:
    raise ValueError(
        f'{dataset_config.name} split {_split_name(dataset_config, split)!r} has {size} '
        f'examples but config.dataset.{field} = {dataset_config[field]}: set '
        f'config.dataset.{field} = {size} (steps per epoch and evaluation batches count on '
        'it).')


def _check_classes(dataset_config, num_classes):
  if num_classes != dataset_config.num_classes:
    raise ValueError(
        f'{dataset_config.name} has {num_classes} classes but config.dataset.num_classes = '
        f'{dataset_config.num_classes}: set config.dataset.num_classes = {num_classes}.')


def _pick(options, dataset_config, split):
  """`options[split name]`, or a ValueError naming the valid split names."""
  name = _split_name(dataset_config, split)
  if name not in options:
    raise ValueError(f'Unknown {split} split {name!r} for {dataset_config.name}; valid: '
                     f'{sorted(options)} (config.dataset.{split}_split).')
  return options[name]


def _decode_bytes(record):
  """Decodes an encoded image (JPEG, PNG, BMP or GIF; grey becomes RGB) and casts the label."""
  image = tf.io.decode_image(record['image'], channels=3, expand_animations=False)
  return dict(record, image=image, label=tf.cast(record['label'], tf.int32))


def _decode_file(record):
  return _decode_bytes({'image': tf.io.read_file(record['path']), 'label': record['label']})


def _decoded(record):
  return record


def _digits(dataset_config, split):
  """scikit-learn's digits as uint8 `[N, S, S, 3]`, the fixed stratified split."""
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  train, test = model_selection.train_test_split(
      np.arange(len(digits.target)), test_size=_DIGITS_TEST_SIZE, stratify=digits.target,
      random_state=0)
  indices = _pick({'train': np.sort(train), 'test': np.sort(test)}, dataset_config, split)
  _check_size(dataset_config, split, len(indices))
  _check_classes(dataset_config, len(digits.target_names))
  size = dataset_config.image_size
  grey = digits.images[indices, :, :, None].astype(np.float32) / 16.0  # Pixels are 0..16.
  grey = tf.image.resize(grey, (size, size), method='bilinear').numpy()
  image = np.repeat(np.round(grey * 255.0).astype(np.uint8), 3, axis=-1)
  return {'image': image, 'label': digits.target[indices].astype(np.int32)}, _decoded


def _tfds_builder(dataset_config, split):
  """The prepared tfds builder, its split checked against the config; never downloads."""
  name = dataset_config.name
  builder = tfds.builder(name, data_dir=dataset_config.data_dir or None)
  if not builder.is_prepared():
    root = builder.data_path.parent.parent
    manual = (f' after putting ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
              f'https://image-net.org) in {root}/downloads/manual/'
              if name == 'imagenet2012' else '')
    raise FileNotFoundError(
        f'tfds dataset {name!r} is not prepared in data_dir {root} (no {builder.data_path}/'
        'dataset_info.json) and this pipeline never downloads. Prepare it once, on a machine '
        f'with network access: `tfds build {name} --data_dir={root}`{manual}; then set '
        'config.dataset.data_dir to that data_dir.')
  try:
    info = builder.info.splits[_split_name(dataset_config, split)]
  except (KeyError, ValueError) as error:
    raise ValueError(f'Unknown {split} split {_split_name(dataset_config, split)!r} for '
                     f'{name} (config.dataset.{split}_split); valid: '
                     f'{sorted(builder.info.splits)} and their slices.') from error
  _check_size(dataset_config, split, info.num_examples)
  _check_classes(dataset_config, builder.info.features['label'].num_classes)
  return builder


def _tfds_in_memory(dataset_config, split):
  """A small tfds split (CIFAR) read whole into memory: uint8 images, int32 labels."""
  builder = _tfds_builder(dataset_config, split)
  data = tfds.as_numpy(builder.as_dataset(split=_split_name(dataset_config, split),
                                          batch_size=-1))
  return {'image': data['image'], 'label': data['label'].astype(np.int32)}, _decoded


def _streamed_tfds(dataset_config, split, process_index, process_count):
  """A large tfds split, streamed: records hold the encoded image, decoded after shuffling."""
  builder = _tfds_builder(dataset_config, split)
  features = {'image': True, 'label': True, 'bbox': True}
  if not dataset_config.with_bbox:
    del features['bbox']
  decoders = tfds.decode.PartialDecoding(features,
                                         decoders={'image': tfds.decode.SkipDecoding()})
  shard = tfds.even_splits(_split_name(dataset_config, split), process_count)[process_index]

  def ordered(order_seed):
    shuffled = order_seed is not None
    records = builder.as_dataset(split=shard, shuffle_files=shuffled, decoders=decoders,
                                 read_config=tfds.ReadConfig(shuffle_seed=order_seed))
    if shuffled:
      records = records.shuffle(dataset_config.shuffle_buffer, seed=order_seed)
    return records

  return Source(ordered, _decode_bytes)


def _data_root(dataset_config, layout):
  """`config.dataset.data_dir`, which must be an existing folder."""
  root = dataset_config.data_dir
  if not root:
    raise ValueError(f'{dataset_config.name} reads image files: set config.dataset.data_dir to '
                     f'the root folder. Expected layout:\n{layout}')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{dataset_config.name}: config.dataset.data_dir {root} is not a '
                            f'folder. Expected layout:\n{layout}')
  return root


def _image_files(folder):
  """Image files under `folder` (recursively), in a fixed (sorted) order."""
  found = []
  for parent, subfolders, names in os.walk(folder):
    subfolders.sort()
    found += [os.path.join(parent, name) for name in sorted(names)
              if name.lower().endswith(_IMAGE_EXTENSIONS)]
  return found


def _class_files(folder, classes):
  """Paths and labels of the images under `folder/<class>`, label = index in `classes`."""
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = _image_files(os.path.join(folder, name))
    paths += files
    labels += [label] * len(files)
  return paths, labels


def _file_records(dataset_config, paths, labels, where, layout):
  if not paths:
    raise FileNotFoundError(f'{dataset_config.name}: no images in {where}. Expected '
                            f'layout:\n{layout}')
  return {'path': np.array(paths), 'label': np.array(labels, np.int32)}, _decode_file


def _tiny_imagenet(dataset_config, split):
  """Tiny-ImageNet-200 from its standard folder layout (the 'test' folder has no labels)."""
  root = _data_root(dataset_config, _TINY_IMAGENET_LAYOUT)
  train_dir = os.path.join(root, 'train')
  wnids = sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else []
  if not wnids:
    raise FileNotFoundError(f'tiny_imagenet: no class folders in {train_dir}. Expected '
                            f'layout:\n{_TINY_IMAGENET_LAYOUT}')
  reader = _pick({'train': _tiny_imagenet_train, 'val': _tiny_imagenet_val}, dataset_config,
                 split)
  paths, labels, where = reader(root, wnids)
  records = _file_records(dataset_config, paths, labels, where, _TINY_IMAGENET_LAYOUT)
  _check_classes(dataset_config, len(wnids))
  _check_size(dataset_config, split, len(paths))
  return records


def _tiny_imagenet_train(root, wnids):
  folder = os.path.join(root, 'train')
  return *_class_files(folder, wnids), folder


def _tiny_imagenet_val(root, wnids):
  annotations = os.path.join(root, 'val', 'val_annotations.txt')
  if not os.path.isfile(annotations):
    return [], [], annotations
  with open(annotations) as f:
    rows = [line.split('\t')[:2] for line in f if line.strip()]
  index = {wnid: label for label, wnid in enumerate(wnids)}
  unknown = sorted({wnid for _, wnid in rows} - set(index))
  if unknown:
    raise ValueError(f'tiny_imagenet: {annotations} names classes with no train folder: '
                     f'{unknown[:5]}. Expected layout:\n{_TINY_IMAGENET_LAYOUT}')
  paths = [os.path.join(root, 'val', 'images', name) for name, _ in rows]
  return paths, [index[wnid] for _, wnid in rows], annotations


def _image_folder(dataset_config, split):
  """Images of a folder: labeled by class subfolder, or flat and unlabeled (label -1)."""
  root = _data_root(dataset_config, _IMAGE_FOLDER_LAYOUT)
  folder = os.path.join(root, _split_name(dataset_config, split))
  folder = folder if os.path.isdir(folder) else root
  entries = sorted(os.listdir(folder))
  flat = [os.path.join(folder, name) for name in entries
          if name.lower().endswith(_IMAGE_EXTENSIONS)
          and os.path.isfile(os.path.join(folder, name))]
  classes = [name for name in entries if os.path.isdir(os.path.join(folder, name))]
  if flat and classes:
    raise ValueError(f'image_folder: {folder} holds both images and subfolders {classes[:5]}; '
                     f'use one of the layouts:\n{_IMAGE_FOLDER_LAYOUT}')
  if flat:
    return _file_records(dataset_config, flat, [-1] * len(flat), folder, _IMAGE_FOLDER_LAYOUT)
  paths, labels = _class_files(folder, classes)
  records = _file_records(dataset_config, paths, labels, folder, _IMAGE_FOLDER_LAYOUT)
  _check_classes(dataset_config, len(classes))
  return records


_IN_MEMORY = {'digits': _digits, 'cifar10': _tfds_in_memory, 'cifar100': _tfds_in_memory,
              'tiny_imagenet': _tiny_imagenet, 'image_folder': _image_folder}
