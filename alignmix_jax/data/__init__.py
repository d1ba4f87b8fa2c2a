"""Batches for training and evaluation: one entry point, two back ends.

  from alignmix_jax import data
  feed = data.train_feed(config.dataset, mesh, global_batch_size=128, seed=0, start_step=0)
  steps = parallel.shard_map_steps(feed.wrap(train_step), mesh, num_replicated=1)
  while training:
    state, metrics = steps(state, feed.resident, feed.take(8))  # 8 steps, metrics [8].
  for batch in data.eval_batches(config.dataset, mesh, global_batch_size=500): ...

`config.dataset.pipeline` picks the back end:
  'device'  (`device`) the split held on the accelerators as uint8 and batched, augmented
            and converted to float by the train step itself; the host sends only example
            indices. No TensorFlow. For the datasets that fit in memory
            (`catalog.IN_MEMORY`: read by `arrays`) and the augmentations crop_flip, crop
            and none.
  'tfdata'  (`tfdata`) tf.data on the host CPUs; every dataset and augmentation. Needs
            tensorflow and tensorflow-datasets (`pip install .[tfds]`).
  'auto'    'device' for the datasets held in memory (with those augmentations),
            'tfdata' for imagenet2012 and caltech_birds2011.

A batch, as the train step sees it on one device (b examples, S = `image_size`):
  'image' float32 [b, S, S, 3] in [0, 1] (the model normalizes), 'label' int32 [b],
  'mask' float32 [b] (1); an evaluation batch (a global array over the mesh) has the same
keys, padded at the end with mask-0 zero images, and 'bbox' [B, 4] with `with_bbox`.
Both back ends give each run the same batches at every step whether it was interrupted and
resumed or not; the order and augmentation of each are described in their modules.
"""

import dataclasses
import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alignmix_jax import parallel
from alignmix_jax.data import arrays
from alignmix_jax.data import catalog
from alignmix_jax.data import device

DATASETS = catalog.DATASETS
AUGMENTATIONS = catalog.AUGMENTATIONS
PIPELINES = ('auto', 'device', 'tfdata')
split_size = catalog.split_size
steps_per_epoch = catalog.steps_per_epoch


def backend(dataset_config):
  """'device' or 'tfdata': the back end `config.dataset.pipeline` selects for the dataset.

  Raises:
    ValueError: an unknown pipeline, dataset or augmentation, or 'device' for a dataset or
      an augmentation it does not serve (the message names the fix).
  """
  catalog.check_dataset(dataset_config)
  catalog.check_augment(dataset_config.augment)
  pipeline, name = dataset_config.pipeline, dataset_config.name
  if pipeline not in PIPELINES:
    raise ValueError(f'Unknown config.dataset.pipeline {pipeline!r}; valid: '
                     f'{", ".join(PIPELINES)}.')
  if pipeline == 'auto':
    return ('device' if name in catalog.IN_MEMORY
            and dataset_config.augment in device.AUGMENTATIONS else 'tfdata')
  if pipeline == 'device':
    if name not in catalog.IN_MEMORY:
      raise ValueError(f"config.dataset.pipeline='device' holds a dataset in accelerator "
                       f'memory; {name} is streamed: use pipeline=\'tfdata\' (or \'auto\').')
    if dataset_config.augment not in device.AUGMENTATIONS:
      raise ValueError(f"config.dataset.pipeline='device' augments with "
                       f'{", ".join(device.AUGMENTATIONS)}; augment='
                       f"{dataset_config.augment!r} needs pipeline='tfdata'.")
  return pipeline


def unlabeled_folder(dataset_config, path):
  """The dataset config of the image folder `path` read unlabeled (every image below it,
  label -1; e.g. an OOD set) as `dataset_config`'s test split: same image size and back end.
  """
  folder = dataset_config.copy_and_resolve_references()
  folder.with_bbox = False
  folder.pipeline = backend(folder)
  folder.name = 'image_folder'
  folder.data_dir = path
  folder.folder_labels = False
  return folder


def _tfdata():
  """The tf.data back end, or an ImportError that says how to get TensorFlow."""
  try:
    from alignmix_jax.data import tfdata  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
        f"config.dataset.pipeline resolves to 'tfdata', which needs TensorFlow ({error}). "
        "Install it with `pip install .[tfds]`, or use pipeline='device' for a dataset that "
        f'fits in memory ({", ".join(catalog.IN_MEMORY)}).') from error
  return tfdata


@dataclasses.dataclass
class Feed:
  """What the training loop feeds a step with, whatever the back end.

  Attributes:
    resident: arrays replicated on the mesh that every step reads (the device-resident
      split: `{'image': uint8 [N, S, S, 3], 'label': int32 [N]}`; `{}` for tf.data).
    host: endless, the host's inputs of each step in order (numpy: the global batch's
      example indices and epochs, or this process's images and labels made by tf.data).
    batch: `(resident, inputs) -> batch` on one device, inside the step (module docstring).
    transfer: the host inputs of K steps, stacked `[K, ...]` -> global arrays split over
      'batch' on their second axis (`parallel.STEPS_SPEC`).
  """
  resident: Any
  host: Iterator[Any]
  batch: Callable[[Any, Any], dict]
  transfer: Callable[[Any], Any]

  def take(self, count):
    """The inputs of the next `count` steps as global arrays `[count, B, ...]` (transferred
    now, so that taking the next ones while the devices run overlaps the two)."""
    steps = [next(self.host) for _ in range(count)]
    return self.transfer(jax.tree.map(lambda *xs: np.stack(xs), *steps))

  def wrap(self, step):
    """`step(state, batch)` -> `(state, resident, inputs) -> step(state, batch(...))`: run it
    with `parallel.shard_map_steps(..., num_replicated=1)` on `take(K)`."""
    return lambda state, resident, inputs: step(state, self.batch(resident, inputs))


def _unchanged(resident, inputs):
  del resident
  return inputs


def train_feed(dataset_config, mesh, *, global_batch_size, seed, start_step=0):
  """The training `Feed` of `config.dataset`: endless, full batches, from `start_step` on."""
  if backend(dataset_config) == 'tfdata':
    batches = _tfdata().process_batches(dataset_config, 'train',
                                        global_batch_size=global_batch_size, seed=seed,
                                        train=True, start_step=start_step)
    return Feed({}, batches, _unchanged, functools.partial(parallel.global_steps, mesh=mesh))
  catalog.steps_per_epoch(dataset_config, global_batch_size)  # Batch size against the split.
  split = arrays.load(dataset_config, 'train')
  if len(split['label']) < global_batch_size:  # Unreadable images left out.
    raise ValueError(f'{dataset_config.name}: the train split holds {len(split["label"])} '
                     'readable images once the unreadable ones are left out, fewer than the '
                     f'global batch size {global_batch_size}; replace the unreadable images or '
                     'lower batch_size.')
  resident = {key: parallel.global_array(value, mesh) for key, value in split.items()}
  host = device.train_inputs(len(split['label']), global_batch_size, seed, start_step)
  return Feed(resident, host,
              functools.partial(device.batch, augment=dataset_config.augment,
                                padding=dataset_config.crop_padding, seed=seed),
              lambda inputs: jax.tree.map(
                  lambda x: parallel.global_array(x, mesh, parallel.STEPS_SPEC), inputs))


class _DeviceEvalBatches:
  """One evaluation pass per iteration, gathered on the devices from the resident split."""

  def __init__(self, dataset_config, mesh, global_batch_size, split):
    data = arrays.load(dataset_config, split)
    self._size = len(data['label'])
    self._mesh, self._batch_size = mesh, global_batch_size
    self._resident = {key: parallel.global_array(value, mesh) for key, value in data.items()}
    self._gather = jax.jit(device.batch, out_shardings=NamedSharding(mesh, P(parallel.AXIS)))

  def __iter__(self):
    for inputs in device.eval_inputs(self._size, self._batch_size):
      yield self._gather(self._resident, jax.tree.map(
          lambda x: parallel.global_array(x, self._mesh, P(parallel.AXIS)), inputs))


class _TfdataEvalBatches:

  def __init__(self, dataset_config, mesh, global_batch_size, split):
    self._tfdata = _tfdata()
    self._args = dataset_config, mesh, global_batch_size, split

  def __iter__(self):
    dataset_config, mesh, global_batch_size, split = self._args
    return parallel.global_batches(self._tfdata.process_batches(
        dataset_config, split, global_batch_size=global_batch_size, seed=0, train=False),
        mesh)


def eval_batches(dataset_config, mesh, *, global_batch_size, split='test'):
  """One pass over `split` in a fixed order, as global batches on `mesh`, each example once.

  Returns an iterable: every `iter()` makes a new pass (the device back end reads the split
  into accelerator memory once, when this is called).
  """
  if global_batch_size < 1 or global_batch_size % mesh.size:
    raise ValueError(f'The evaluation batch size {global_batch_size} must be a positive '
                     f'multiple of the number of devices ({mesh.size}).')
  kind = (_DeviceEvalBatches if backend(dataset_config) == 'device' else _TfdataEvalBatches)
  return kind(dataset_config, mesh, global_batch_size, split)
