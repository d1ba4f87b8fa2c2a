"""The tf.data back end: batches made on the host by tf.data, for any dataset.

The only back end for the streamed datasets (imagenet2012, caltech_birds2011); selectable for
the others with `config.dataset.pipeline='tfdata'`. This module, `transforms` and
`tfds_prepared` (which hides the GPUs from TensorFlow) alone import TensorFlow; it runs on
the host CPU only.

  it = create_split(config.dataset, split='train', batch_size=per_process_batch,
                    seed=config.seed, train=True, start_step=step,
                    process_index=jax.process_index(), process_count=jax.process_count())

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

Sources: in-memory datasets come from `arrays.load`; the streamed ones from tfds.
Sharding: shard i of n holds examples i, i + n, i + 2n, ... of an in-memory split (strided,
so class-sorted file lists give every shard every class), and the i-th of
`tfds.even_splits(split, n)` of a streamed one.
"""

import dataclasses
from typing import Callable, Optional

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alignmix_jax.data import arrays
from alignmix_jax.data import catalog
from alignmix_jax.data import tfds_prepared
from alignmix_jax.data import transforms

_STREAMED = ('imagenet2012', 'caltech_birds2011')  # Too large for memory.


def num_eval_batches(dataset_config, per_process_batch, process_count, split='test'):
  """Batches of one evaluation pass per process: covers the largest process shard."""
  _check_batch(per_process_batch, 0, process_count)
  largest_shard = -(-catalog.split_size(dataset_config, split) // process_count)
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
    fields and data that is missing or disagrees with the config (see `load`).
  """
  _check_batch(batch_size, process_index, process_count)
  catalog.check_augment(dataset_config.augment)
  if start_step < 0 or (start_step and not train):
    raise ValueError(f'start_step must be >= 0, and 0 for evaluation (got {start_step}, '
                     f'train={train}).')
  if train:
    count = catalog.steps_per_epoch(dataset_config, batch_size * process_count, split)
  else:
    count = num_eval_batches(dataset_config, batch_size, process_count, split)
  source = load(dataset_config, split, process_index, process_count)
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


def load(dataset_config, split, process_index, process_count):
  """This process's `Source` of `split` ('train' | 'test') of `config.dataset`.

  Raises:
    ValueError: unknown dataset, split or split name; sizes or class counts that disagree
      with the config.
    FileNotFoundError: a tfds dataset that is not prepared in `data_dir`, or a missing or
      empty image folder; the message says how to prepare it or the expected layout.
  """
  catalog.check_dataset(dataset_config)
  if dataset_config.name in _STREAMED:
    return _streamed_tfds(dataset_config, split, process_index, process_count)
  records = arrays.load(dataset_config, split)
  # Strided shards: file lists sorted by class still give every process every class.
  shard = np.arange(process_index, len(records['label']), process_count)
  tensors = {key: tf.constant(value[shard]) for key, value in records.items()}

  def ordered(order_seed):
    count = len(shard)
    order = (np.arange(count) if order_seed is None
             else np.random.default_rng(order_seed).permutation(count))
    return tf.data.Dataset.from_tensor_slices(order).map(
        lambda index: {key: tf.gather(value, index) for key, value in tensors.items()})

  return Source(ordered, lambda record: record)


def _decode_bytes(record):
  """Decodes an encoded image (JPEG, PNG, BMP or GIF; grey becomes RGB) and casts the label."""
  image = tf.io.decode_image(record['image'], channels=3, expand_animations=False)
  return dict(record, image=image, label=tf.cast(record['label'], tf.int32))


def _streamed_tfds(dataset_config, split, process_index, process_count):
  """A large tfds split, streamed: records hold the encoded image, decoded after shuffling."""
  builder = tfds_prepared.builder(dataset_config, split)
  features = {'image': True, 'label': True, 'bbox': True}
  if not dataset_config.with_bbox:
    del features['bbox']
  decoders = tfds.decode.PartialDecoding(features,
                                         decoders={'image': tfds.decode.SkipDecoding()})
  shard = tfds.even_splits(catalog.split_name(dataset_config, split), process_count)[process_index]

  def ordered(order_seed):
    shuffled = order_seed is not None
    records = builder.as_dataset(split=shard, shuffle_files=shuffled, decoders=decoders,
                                 read_config=tfds.ReadConfig(shuffle_seed=order_seed))
    if shuffled:
      records = records.shuffle(dataset_config.shuffle_buffer, seed=order_seed)
    return records

  return Source(ordered, _decode_bytes)


