"""Input pipelines: every dataset through one function, selected by `config.dataset.name`.

  it = create_split(config.dataset, split='train', batch_size=per_process_batch,
                    seed=config.seed, train=True, start_step=step,
                    process_index=jax.process_index(), process_count=jax.process_count())
  for batch in global_batches(it, mesh): ...

Each element is a dict of numpy arrays, b = the per-process batch size, S = `image_size`:
  'image' float32 [b, S, S, 3] in [0, 1] (the model normalizes), 'label' int32 [b] (-1 for
  unlabeled image folders), 'mask' float32 [b] (1 real, 0 padding), and with
  `config.dataset.with_bbox` 'bbox' float32 [b, 4] (ymin, xmin, ymax, xmax) in [0, 1].

Training (`train=True`): this process's shard, reshuffled every epoch, augmented, repeated
forever, full batches only: `steps_per_epoch` batches per epoch, the same on every process.
The order of epoch e is a function of (seed, e, process), and the augmentation of an example
a function of (seed, e, process, its position in the epoch), so an iterator started at
`start_step` yields exactly what an uninterrupted run yields from that step on.

Evaluation (`train=False`): one pass over this process's shard in a fixed order with the
test transform; the last batches are padded (zero images, label 0, mask 0) up to
`num_eval_batches`, the same on every process, so each example counts exactly once.

Datasets and their preparation: `alignmix_jax.data.sources`; transforms:
`alignmix_jax.data.transforms`. With `process_count` processes, each reads a disjoint
shard of the split; `global_batches` assembles the global batch on the mesh.
"""

import collections

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec

from alignmix_jax.data import sources
from alignmix_jax.data import transforms

DATASETS = sources.DATASETS
AUGMENTATIONS = transforms.AUGMENTATIONS


def steps_per_epoch(dataset_config, global_batch_size, split='train'):
  """Full global batches per epoch of `split`: its size // `global_batch_size`."""
  size = sources.split_size(dataset_config, split)
  if not 1 <= global_batch_size <= size:
    raise ValueError(f'The global batch size {global_batch_size} must be between 1 and the '
                     f'{split} split size {size} of {dataset_config.name}.')
  return size // global_batch_size


def num_eval_batches(dataset_config, per_process_batch, process_count, split='test'):
  """Batches of one evaluation pass per process: covers the largest process shard."""
  _check_batch(per_process_batch, 0, process_count)
  largest_shard = -(-sources.split_size(dataset_config, split) // process_count)
  return -(-largest_shard // per_process_batch)


def create_split(dataset_config, split, *, batch_size, seed, train, start_step=0,
                 process_index=0, process_count=1):
  """This process's batches of `split` ('train' | 'test') of `config.dataset`.

  Args:
    dataset_config: `config.dataset`.
    split: 'train' or 'test'; `dataset_config.train_split` / `test_split` name the dataset's
      own split.
    batch_size: examples per batch on this process (the global batch / `process_count`).
    seed: seed of the example order and of the augmentation (training only).
    train: True: shuffled, augmented, endless; False: one padded pass, test transform.
    start_step: training only; the first batch yielded is the one an uninterrupted run yields
      at this step.
    process_index: this process, in [0, process_count).
    process_count: number of processes, each reading its own shard.

  Returns:
    An iterator of batches: dicts of numpy arrays (see the module docstring).

  Raises:
    ValueError / FileNotFoundError before any batch is made, for bad arguments or config
    fields and data that is missing or disagrees with the config (see `sources.load`).
  """
  _check_batch(batch_size, process_index, process_count)
  transforms.check_augment(dataset_config.augment)
  if start_step < 0 or (start_step and not train):
    raise ValueError(f'start_step must be >= 0, and 0 for evaluation (got {start_step}, '
                     f'train={train}).')
  if train:
    count = steps_per_epoch(dataset_config, batch_size * process_count, split)
  else:
    count = num_eval_batches(dataset_config, batch_size, process_count, split)
  source = sources.load(dataset_config, split, process_index, process_count)
  if train:
    return _train_batches(source, dataset_config, batch_size, count, seed, start_step,
                          process_index)
  return _eval_batches(source, dataset_config, batch_size, count)


def process_batches(dataset_config, split, *, global_batch_size, seed, train, start_step=0):
  """This process's part of each global batch, with the data cut into shards.

  The split is cut into `dataset_config.num_shards` shards (0: one per process); each
  process reads `num_shards / process_count` of them and concatenates their batches. The
  global batch is thus the same for any number of processes dividing `num_shards`: a
  2-process run equals a 1-process run with `num_shards=2`.
  """
  process_count, process_index = jax.process_count(), jax.process_index()
  num_shards = dataset_config.num_shards or process_count
  if num_shards % process_count or global_batch_size % num_shards:
    raise ValueError(f'dataset.num_shards={num_shards} must be a multiple of the number of '
                     f'processes ({process_count}) and divide the global batch size '
                     f'({global_batch_size}).')
  per_process = num_shards // process_count
  shards = [create_split(dataset_config, split, batch_size=global_batch_size // num_shards,
                         seed=seed, train=train, start_step=start_step,
                         process_index=process_index * per_process + k,
                         process_count=num_shards)
            for k in range(per_process)]
  if per_process == 1:
    return shards[0]
  return ({key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
          for parts in zip(*shards))


def global_batches(batches, mesh, prefetch=2):
  """Per-process numpy batches -> global `jax.Array`s sharded over the mesh axis 'batch'.

  Each process passes its own batches (first dimension b); the global arrays have first
  dimension b * process_count, split over the devices of the 'batch' axis
  (`jax.make_array_from_process_local_data` with `NamedSharding(mesh, P('batch'))`).
  `prefetch` batches are transferred ahead of the one being used.
  """
  if 'batch' not in mesh.axis_names:
    raise ValueError(f"The mesh needs an axis named 'batch' (axes: {mesh.axis_names}).")
  if prefetch < 0:
    raise ValueError(f'prefetch must be >= 0 (got {prefetch}).')
  sharding = NamedSharding(mesh, PartitionSpec('batch'))

  def transferred():
    queue = collections.deque()
    for batch in batches:
      queue.append(jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x), batch))
      if len(queue) > prefetch:
        yield queue.popleft()
    yield from queue

  return transferred()


def _check_batch(batch_size, process_index, process_count):
  if batch_size < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'Need batch_size >= 1 and 0 <= process_index < process_count (got '
                     f'batch_size={batch_size}, process_index={process_index}, '
                     f'process_count={process_count}).')


def _epoch_seeds(seed, epoch, process_index):
  """(order seed, augmentation key) of one epoch on one process, both in [0, 2**32)."""
  order, augment = np.random.SeedSequence([seed, epoch, process_index]).generate_state(2)
  return int(order), int(augment)


def _train_batches(source, dataset_config, batch_size, steps, seed, start_step,
                   process_index):
  """Endless training batches from `start_step` on: `steps` full batches per epoch."""
  epoch, offset = divmod(start_step, steps)
  while True:
    order_seed, key = _epoch_seeds(seed, epoch, process_index)

    def example(position, record, key=key):
      transformed = transforms.preprocess(source.decode(record), dataset_config,
                                          seed=tf.stack([tf.constant(key, tf.int64), position]))
      return dict(transformed, mask=tf.constant(1.0))

    records = source.records(order_seed).take(steps * batch_size)
    examples = records.enumerate().skip(offset * batch_size).map(
        example, num_parallel_calls=tf.data.AUTOTUNE)
    yield from examples.batch(batch_size, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE).as_numpy_iterator()
    epoch, offset = epoch + 1, 0


def _eval_batches(source, dataset_config, batch_size, num_batches):
  """One pass in a fixed order, padded with masked zero examples to `num_batches` batches."""

  def example(record):
    transformed = transforms.preprocess(source.decode(record), dataset_config)
    return dict(transformed, mask=tf.constant(1.0))

  examples = source.records(None).map(example, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
      lambda spec: tf.zeros(spec.shape, spec.dtype), examples.element_spec)).repeat()
  examples = examples.concatenate(padding).take(num_batches * batch_size)
  return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
