"""Prepared tfds datasets (`tfds build NAME --data_dir=DIR`), read without ever downloading:
the streamed ImageNet and CUB of the tf.data back end, and a prepared CIFAR read whole by
`arrays`. Imports TensorFlow and tensorflow-datasets (`pip install .[tfds]`); TensorFlow
runs on the host CPU only: the accelerators belong to JAX, so GPUs are hidden from it here,
before any of its ops runs.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alignmix_jax.data import catalog

tf.config.set_visible_devices([], 'GPU')


def builder(dataset_config, split):
  """The prepared tfds builder, its split checked against the config; never downloads."""
  name = dataset_config.name
  prepared = tfds.builder(name, data_dir=dataset_config.data_dir or None)
  if not prepared.is_prepared():
    root = prepared.data_path.parent.parent
    manual = (f' after putting ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
              f'https://image-net.org) in {root}/downloads/manual/'
              if name == 'imagenet2012' else '')
    raise FileNotFoundError(
        f'tfds dataset {name!r} is not prepared in data_dir {root} (no {prepared.data_path}/'
        'dataset_info.json) and this pipeline never downloads. Prepare it once, on a machine '
        f'with network access: `tfds build {name} --data_dir={root}`{manual}; then set '
        'config.dataset.data_dir to that data_dir.')
  try:
    info = prepared.info.splits[catalog.split_name(dataset_config, split)]
  except (KeyError, ValueError) as error:
    raise ValueError(f'Unknown {split} split {catalog.split_name(dataset_config, split)!r} for '
                     f'{name} (config.dataset.{split}_split); valid: '
                     f'{sorted(prepared.info.splits)} and their slices.') from error
  catalog.check_size(dataset_config, split, info.num_examples)
  catalog.check_classes(dataset_config, prepared.info.features['label'].num_classes)
  return prepared


def read_whole(dataset_config, split):
  """A small prepared tfds split (CIFAR) read whole: uint8 images, int32 labels."""
  prepared = builder(dataset_config, split)
  data = tfds.as_numpy(prepared.as_dataset(split=catalog.split_name(dataset_config, split),
                                          batch_size=-1))
  return {'image': data['image'], 'label': data['label'].astype(np.int32)}
