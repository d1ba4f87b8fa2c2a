"""The device-resident back end: a split held on the accelerators, batched by the step itself.

The split (`arrays.load`: uint8 `[N, S, S, 3]` and int32 `[N]` labels) is replicated on every
device of the mesh. Per step the host sends only the global batch's example indices and
their epoch (`[B]` int32 each, sharded over `batch`); each device gathers its examples and
augments them with `jax.random` (`batch`), inside the jitted step.

Order: the indices of step s are `perm_e[o B : (o + 1) B]`, with `e, o = divmod(s,
steps_per_epoch)` and `perm_e` a permutation of the split that is a function of (seed, e).
Augmentation: each example with a key that is a function of (seed, e, its index):
  crop_flip  zero-pad by `crop_padding`, a uniformly placed S x S crop, then a horizontal
             flip with probability 1/2 (CIFAR, Tiny-ImageNet, Fashion-MNIST);
  crop       the same without the flip (digits);
  none       nothing.
Then float32 in [0, 1] (the model normalizes). The batches are thus a function of (seed,
step) alone: the same on any number of devices and processes (2 processes equal 1 process
with 2 devices), and a resumed run sees exactly what an uninterrupted one sees.

Evaluation: one pass in order, the last batch padded with masked (mask 0) zero images.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

AUGMENTATIONS = ('crop_flip', 'crop', 'none')


def train_inputs(size, global_batch_size, seed, start_step):
  """Host side, endless: per step `{'index': int32 [B], 'epoch': int32 [B]}` (numpy)."""
  steps = size // global_batch_size
  step, epoch, order = start_step, None, None
  while True:
    current, offset = divmod(step, steps)
    if current != epoch:
      epoch = current
      order = np.random.default_rng([seed, epoch]).permutation(size).astype(np.int32)
    index = order[offset * global_batch_size:(offset + 1) * global_batch_size]
    yield {'index': index, 'epoch': np.full(global_batch_size, epoch, np.int32)}
    step += 1


def eval_inputs(size, global_batch_size):
  """Host side, one pass: `{'index': int32 [B], 'mask': float32 [B]}`, padding masked."""
  for start in range(0, size, global_batch_size):
    index = np.arange(start, start + global_batch_size)
    mask = index < size
    yield {'index': np.where(mask, index, 0).astype(np.int32),
           'mask': mask.astype(np.float32)}


def _augment(key, image, augment, padding):
  """One uint8 image `[S, S, C]`, augmented (see the module docstring)."""
  crop_key, flip_key = jax.random.split(key)
  if padding:
    offset = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    image = lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
  if augment == 'crop_flip':
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  return image


def batch(resident, inputs, *, augment=None, padding=0, seed=0):
  """The examples `inputs['index']` of `resident` as a batch (per device, traced).

  Args:
    resident: `{'image': uint8 [N, S, S, 3], 'label': int32 [N]}`.
    inputs: `{'index': int32 [b]}` and `'epoch'` (training) or `'mask'` (evaluation).
    augment: None (evaluation) or one of `AUGMENTATIONS`.
    padding: the crop's zero padding.
    seed: the augmentation seed.

  Returns:
    `{'image': float32 [b, S, S, 3] in [0, 1], 'label': int32 [b], 'mask': float32 [b]}`.
  """
  images = jnp.take(resident['image'], inputs['index'], axis=0)
  labels = jnp.take(resident['label'], inputs['index'], axis=0)
  mask = inputs.get('mask', jnp.ones(inputs['index'].shape, jnp.float32))
  if augment not in (None, 'none'):
    base = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda epoch, index: jax.random.fold_in(jax.random.fold_in(base, epoch),
                                                             index))(inputs['epoch'],
                                                                     inputs['index'])
    images = jax.vmap(functools.partial(_augment, augment=augment, padding=padding))(
        keys, images)
  images = images.astype(jnp.float32) / 255.0 * mask[:, None, None, None]
  return {'image': images, 'label': labels, 'mask': mask}
