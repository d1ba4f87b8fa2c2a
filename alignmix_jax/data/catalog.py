"""The datasets, their splits, sizes and checks, and the folder layouts: no TensorFlow.

Datasets (`config.dataset.name`):
  digits             scikit-learn's bundled 8x8 digits (no download): a fixed stratified
                     split (random_state 0) of the 1797 images: 1437 'train', 360 'test'.
  fashion_mnist      Fashion-MNIST from its four IDX files: 60,000 'train', 10,000 'test'.
  cifar10, cifar100  the binary archives (`cifar-10-binary.tar.gz`,
                     `cifar-100-binary.tar.gz`), or a prepared tfds data_dir.
  tiny_imagenet      the standard folder layout, splits 'train' and 'val'.
  image_folder       one subfolder per class (`folder_labels=False`: every image below the
                     folder, unlabeled, label -1; the OOD sets).
  imagenet2012, caltech_birds2011
                     tfds, streamed by the tf.data pipeline (too large for memory);
                     caltech_birds2011 has one box per image (`with_bbox`).
All but the last two are held in memory as uint8 arrays (`arrays`), read before training
starts, and by default on the accelerators (`config.dataset.pipeline`, see
`alignmix_jax.data`).

Sizes: `config.dataset.train_size` / `test_size` are the split sizes (no network needed) and
are checked against the data wherever it tells. `image_folder` sizes are counted from the
folder instead, so any folder (an OOD set) can be read with a config written for another
dataset.
"""

import os

import numpy as np

DATASETS = ('digits', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenet2012',
            'caltech_birds2011', 'tiny_imagenet', 'image_folder')
# Held in memory (and by default on the devices); the others are streamed by tf.data.
IN_MEMORY = ('digits', 'fashion_mnist', 'cifar10', 'cifar100', 'tiny_imagenet',
             'image_folder')
WITH_BBOX = ('caltech_birds2011',)
SPLITS = ('train', 'test')
AUGMENTATIONS = ('crop_flip', 'crop', 'imagenet', 'cub', 'none')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')

TINY_IMAGENET_LAYOUT = """\
  <data_dir>/train/<wnid>/images/*.JPEG    one folder per class (labels: sorted wnids)
  <data_dir>/val/images/*.JPEG
  <data_dir>/val/val_annotations.txt       lines: <file> TAB <wnid> TAB <box>
(the layout of tiny-imagenet-200.zip unpacked; config.dataset.data_dir names its root)"""

IMAGE_FOLDER_LAYOUT = f"""\
  <folder>/<class>/**/<image>   one subfolder per class (labels: sorted class names)
where <folder> is <data_dir>/<split> (<split> = config.dataset.train_split or test_split)
when that subfolder exists, else <data_dir> itself; images end in {IMAGE_EXTENSIONS}.
An unlabeled folder (every image below it, label -1: an OOD set) is read with
config.dataset.folder_labels=False, as config.eval.ood_folders are."""


def check_dataset(dataset_config):
  """Raises a ValueError for an unknown dataset name or a box request it cannot serve."""
  name = dataset_config.name
  if name not in DATASETS:
    raise ValueError(f'Unknown config.dataset.name {name!r}; valid: {", ".join(DATASETS)}.')
  if dataset_config.with_bbox and name not in WITH_BBOX:
    raise ValueError(f'config.dataset.with_bbox is set but {name!r} has no boxes; datasets '
                     f'with boxes: {", ".join(WITH_BBOX)}.')
  _check_train_examples(dataset_config)


def train_examples(dataset_config):
  """`config.dataset.train_examples`: 0 (the whole train split) or the size of its
  class-balanced subset (configs written before the field read as 0)."""
  return dataset_config.get('train_examples', 0)


def _check_train_examples(dataset_config):
  count, classes = train_examples(dataset_config), dataset_config.num_classes
  if count == 0:
    return
  if dataset_config.name not in IN_MEMORY:
    raise ValueError(f'config.dataset.train_examples = {count} subsets the datasets held in '
                     f'memory ({", ".join(IN_MEMORY)}), not the streamed {dataset_config.name}: '
                     'set it to 0.')
  if count < 0 or count % classes:
    raise ValueError(f'config.dataset.train_examples = {count} must be 0 (every training '
                     f'example) or a positive multiple of config.dataset.num_classes = '
                     f'{classes} (the subset holds as many examples of every class), e.g. '
                     f'{100 * classes}.')
  if dataset_config.name != 'image_folder' and count > dataset_config.train_size:
    raise ValueError(f'config.dataset.train_examples = {count} is more than the '
                     f'{dataset_config.train_size} examples of the train split: set it to at '
                     'most config.dataset.train_size, or to 0 for all of them.')


def balanced_subset(labels, dataset_config):
  """Indices (sorted) of the `config.dataset.train_examples` (> 0) training examples: as
  many of each class, drawn by `config.dataset.subset_seed` alone, so every method and
  every run seed trains on the same images.

  Raises:
    ValueError: a class with fewer examples than its share.
  """
  count = train_examples(dataset_config)
  share = count // dataset_config.num_classes
  members = [np.flatnonzero(labels == label) for label in range(dataset_config.num_classes)]
  smallest = min(range(len(members)), key=lambda label: len(members[label]))
  if len(members[smallest]) < share:
    raise ValueError(f'config.dataset.train_examples = {count} takes {share} examples of '
                     f'each class, but class {smallest} of {dataset_config.name} has '
                     f'{len(members[smallest])}: lower train_examples to at most '
                     f'{len(members[smallest]) * dataset_config.num_classes}.')
  rng = np.random.default_rng(dataset_config.get('subset_seed', 0))
  chosen = [rng.choice(indices, share, replace=False) for indices in members]
  return np.sort(np.concatenate(chosen))


def check_augment(name):
  """Raises a ValueError naming the valid augmentations when `name` is not one."""
  if name not in AUGMENTATIONS:
    raise ValueError(f'Unknown config.dataset.augment {name!r}; valid: '
                     f'{", ".join(AUGMENTATIONS)}.')


def check_split(split):
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; valid: {SPLITS} (config.dataset.train_split '
                     'and test_split name the dataset\'s own splits).')


def size_field(split):
  check_split(split)
  return f'{split}_size'


def split_name(dataset_config, split):
  """The dataset's own name of `split`: `config.dataset.train_split` or `test_split`."""
  check_split(split)
  return dataset_config[f'{split}_split']


def check_size(dataset_config, split, size):
  field = size_field(split)
  if size != dataset_config[field]:
    raise ValueError(
        f'{dataset_config.name} split {split_name(dataset_config, split)!r} has {size} '
        f'examples but config.dataset.{field} = {dataset_config[field]}: set '
        f'config.dataset.{field} = {size} (steps per epoch and evaluation batches count on '
        'it).')


def check_classes(dataset_config, num_classes):
  if num_classes != dataset_config.num_classes:
    raise ValueError(
        f'{dataset_config.name} has {num_classes} classes but config.dataset.num_classes = '
        f'{dataset_config.num_classes}: set config.dataset.num_classes = {num_classes}.')


def pick(options, dataset_config, split):
  """`options[split name]`, or a ValueError naming the valid split names."""
  name = split_name(dataset_config, split)
  if name not in options:
    raise ValueError(f'Unknown {split} split {name!r} for {dataset_config.name}; valid: '
                     f'{sorted(options)} (config.dataset.{split}_split).')
  return options[name]


def split_size(dataset_config, split):
  """Number of examples of `split` ('train' | 'test'), known without network access: for
  'train', `config.dataset.train_examples` when it subsets the split."""
  check_dataset(dataset_config)
  if split == 'train' and train_examples(dataset_config):
    return train_examples(dataset_config)
  if dataset_config.name == 'image_folder':
    return len(image_folder_files(dataset_config, split)[0])
  return dataset_config[size_field(split)]


def steps_per_epoch(dataset_config, global_batch_size, split='train'):
  """Full global batches per epoch of `split`: its size // `global_batch_size`."""
  size = split_size(dataset_config, split)
  if not 1 <= global_batch_size <= size:
    raise ValueError(f'The global batch size {global_batch_size} must be between 1 and the '
                     f'{split} split size {size} of {dataset_config.name}.')
  return size // global_batch_size


def data_root(dataset_config, layout):
  """`config.dataset.data_dir`, which must be an existing folder."""
  root = dataset_config.data_dir
  if not root:
    raise ValueError(f'{dataset_config.name} reads files: set config.dataset.data_dir to '
                     f'the root folder. Expected layout:\n{layout}')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{dataset_config.name}: config.dataset.data_dir {root} is not a '
                            f'folder. Expected layout:\n{layout}')
  return root


def image_files(folder):
  """Image files under `folder` (recursively), in a fixed (sorted) order."""
  found = []
  for parent, subfolders, names in os.walk(folder):
    subfolders.sort()
    found += [os.path.join(parent, name) for name in sorted(names)
              if name.lower().endswith(IMAGE_EXTENSIONS)]
  return found


def _class_files(folder, classes):
  """Paths and labels of the images under `folder/<class>`, label = index in `classes`."""
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = image_files(os.path.join(folder, name))
    paths += files
    labels += [label] * len(files)
  return paths, labels


def _require_files(dataset_config, paths, where, layout):
  if not paths:
    raise FileNotFoundError(f'{dataset_config.name}: no images in {where}. Expected '
                            f'layout:\n{layout}')


def tiny_imagenet_files(dataset_config, split):
  """`(paths, labels)` of a Tiny-ImageNet-200 split ('train' or 'val'; 'test' is unlabeled)."""
  root = data_root(dataset_config, TINY_IMAGENET_LAYOUT)
  train_dir = os.path.join(root, 'train')
  wnids = sorted(name for name in os.listdir(train_dir)
                 if os.path.isdir(os.path.join(train_dir, name))) if os.path.isdir(
                     train_dir) else []
  if not wnids:
    raise FileNotFoundError(f'tiny_imagenet: no class folders in {train_dir}. Expected '
                            f'layout:\n{TINY_IMAGENET_LAYOUT}')
  reader = pick({'train': _tiny_imagenet_train, 'val': _tiny_imagenet_val}, dataset_config,
                split)
  paths, labels, where = reader(root, wnids)
  _require_files(dataset_config, paths, where, TINY_IMAGENET_LAYOUT)
  check_classes(dataset_config, len(wnids))
  check_size(dataset_config, split, len(paths))
  return paths, labels


def _tiny_imagenet_train(root, wnids):
  folder = os.path.join(root, 'train')
  return *_class_files(folder, wnids), folder


def _tiny_imagenet_val(root, wnids):
  annotations = os.path.join(root, 'val', 'val_annotations.txt')
  if not os.path.isfile(annotations):
    return [], [], annotations
  with open(annotations, encoding='utf-8', errors='surrogateescape') as f:  # Any file names.
    rows = [line.split('\t')[:2] for line in f if line.strip()]
  index = {wnid: label for label, wnid in enumerate(wnids)}
  unknown = sorted({wnid for _, wnid in rows} - set(index))
  if unknown:
    raise ValueError(f'tiny_imagenet: {annotations} names classes with no train folder: '
                     f'{unknown[:5]}. Expected layout:\n{TINY_IMAGENET_LAYOUT}')
  paths = [os.path.join(root, 'val', 'images', name) for name, _ in rows]
  return paths, [index[wnid] for _, wnid in rows], annotations


def image_folder_files(dataset_config, split):
  """`(paths, labels)` of a folder, labeled by class subfolder; with `folder_labels=False`
  every image below the folder, unlabeled, label -1 (OOD sets, whatever their layout, e.g.
  the ODIN archives' `LSUN_resize/LSUN_resize/*.jpg`).

  Raises:
    ValueError: images beside the class subfolders, or no class subfolder (a labeled split
      of unlabeled images would train on label -1).
    FileNotFoundError: no images.
  """
  root = data_root(dataset_config, IMAGE_FOLDER_LAYOUT)
  folder = os.path.join(root, split_name(dataset_config, split))
  folder = folder if os.path.isdir(folder) else root
  if not dataset_config.folder_labels:
    paths = image_files(folder)
    _require_files(dataset_config, paths, folder, IMAGE_FOLDER_LAYOUT)
    return paths, [-1] * len(paths)
  entries = sorted(os.listdir(folder))
  flat = [os.path.join(folder, name) for name in entries
          if name.lower().endswith(IMAGE_EXTENSIONS)
          and os.path.isfile(os.path.join(folder, name))]
  classes = [name for name in entries if os.path.isdir(os.path.join(folder, name))]
  if flat and classes:
    raise ValueError(f'image_folder: {folder} holds both images and subfolders {classes[:5]}; '
                     f'use the layout:\n{IMAGE_FOLDER_LAYOUT}')
  if flat:
    raise ValueError(f'image_folder: {folder} holds images ({len(flat)}, e.g. {flat[0]}) but no '
                     'class subfolders, so they have no labels; put each class in its own '
                     f'subfolder:\n{IMAGE_FOLDER_LAYOUT}')
  paths, labels = _class_files(folder, classes)
  _require_files(dataset_config, paths, folder, IMAGE_FOLDER_LAYOUT)
  check_classes(dataset_config, len(classes))
  return paths, labels
