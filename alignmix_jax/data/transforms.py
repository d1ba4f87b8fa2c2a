"""tf.data image transforms: a decoded example to what the model sees, per
`config.dataset.augment` (the names: `catalog.AUGMENTATIONS`).

An example is a dict `{'image': uint8 [h, w, 3], 'label': int32 [], 'bbox': float32 [4]}`
('bbox' only where the dataset has boxes: (ymin, xmin, ymax, xmax) as fractions of the image).
`preprocess` returns it with 'image' float32 `[S, S, 3]` in [0, 1], S = `image_size` (the
model normalizes inside); crops and flips move the box with the image (clipped to [0, 1]).

Augmentations (R = round(S * 256 / 224), the 256-for-224 resize of the ImageNet and CUB
protocols):
  crop_flip  train: fit to S x S, zero-pad by `crop_padding`, random S x S crop, horizontal
             flip (CIFAR, Tiny-ImageNet).  test: fit to S x S.
  crop       crop_flip without the flip (digits: a mirrored digit is another shape).
  imagenet   train: random-resized crop (area 8%-100%, aspect ratio 3/4-4/3) resized to
             S x S, flip, colour jitter (brightness, contrast, saturation 0.4, in that order),
             PCA lighting (std 0.1), each clipped to [0, 1].  test: resize the shorter side to
             R, centre S x S crop.
  cub        train: resize to R x R, random S x S crop, flip.  test: resize to S x S.
  none       train and test: fit to S x S.
"Fit to S x S" resizes the shorter side to S and takes the centre crop: the identity on
S x S images (CIFAR, digits, the 32 x 32 OOD sets), an aspect-preserving resize otherwise.
Resizing is bilinear with antialiasing.

Training randomness is stateless: a transform is a pure function of the example and its
`seed` (int64 `[2]`), so any example can be reproduced without replaying the ones before it.
"""

import tensorflow as tf

_RESIZE_RATIO = 256 / 224
_AREA_RANGE = (0.08, 1.0)
_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
_JITTER = 0.4
_LIGHTING_STD = 0.1
# PCA of ImageNet RGB pixels in [0, 1]: eigenvalues and eigenvectors (columns).
_EIGENVALUES = (0.2175, 0.0188, 0.0045)
_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009),
                 (-0.5808, -0.0045, -0.8140),
                 (-0.5836, -0.6948, 0.4203))


def preprocess(example, dataset_config, seed=None):
  """The training (`seed` given) or test (`seed` None) transform of one example.

  Args:
    example: `{'image': uint8 [h, w, 3], 'label': int32 [], 'bbox': float32 [4] (optional)}`.
    dataset_config: `config.dataset` (`augment`, `image_size`, `crop_padding`).
    seed: int64 `[2]` stateless seed of the training transform; None for the test transform.

  Returns:
    The example with 'image' float32 `[S, S, 3]` in [0, 1] and 'bbox' moved with it.
  """
  size = dataset_config.image_size
  example = dict(example, image=tf.image.convert_image_dtype(example['image'], tf.float32))
  if seed is None:
    example = _TEST[dataset_config.augment](example, size)
  else:
    example = _TRAIN[dataset_config.augment](example, size, dataset_config.crop_padding, seed)
  return dict(example, image=tf.ensure_shape(example['image'], [size, size, 3]))


def _resize(example, height, width):
  """Resizes the whole image; the box, in fractions of the image, is unchanged."""
  return dict(example, image=tf.image.resize(example['image'], (height, width), antialias=True))


def _crop(example, top, left, height, width):
  """The window `[top, top + height) x [left, left + width)`, zero outside the image."""
  image = example['image']
  image_height, image_width = tf.shape(image)[0], tf.shape(image)[1]
  pad_top, pad_left = tf.maximum(-top, 0), tf.maximum(-left, 0)
  padded = tf.pad(image, [[pad_top, tf.maximum(top + height - image_height, 0)],
                          [pad_left, tf.maximum(left + width - image_width, 0)], [0, 0]])
  row, column = top + pad_top, left + pad_left
  cropped = dict(example, image=padded[row:row + height, column:column + width])
  if 'bbox' in example:
    scale = tf.cast(tf.stack([image_height, image_width] * 2), tf.float32)
    origin = tf.cast(tf.stack([top, left] * 2), tf.float32)
    extent = tf.cast(tf.stack([height, width] * 2), tf.float32)
    cropped['bbox'] = tf.clip_by_value((example['bbox'] * scale - origin) / extent, 0.0, 1.0)
  return cropped


def _flip(example, flip):
  """Mirrors the image left-right where the boolean scalar `flip` is true."""
  flipped = dict(example, image=tf.where(flip, example['image'][:, ::-1], example['image']))
  if 'bbox' in example:
    ymin, xmin, ymax, xmax = tf.unstack(example['bbox'])
    flipped['bbox'] = tf.where(flip, tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin]),
                               example['bbox'])
  return flipped


def _random_flip(example, seed):
  return _flip(example, tf.random.stateless_uniform([], seed) < 0.5)


def _resize_and_centre_crop(example, shorter, size):
  """Resizes the shorter side to `shorter` (aspect kept), then the centre `size` crop."""
  shape = tf.cast(tf.shape(example['image'])[:2], tf.float32)
  resized = tf.cast(tf.round(shape * (shorter / tf.reduce_min(shape))), tf.int32)
  example = _resize(example, resized[0], resized[1])
  return _crop(example, (resized[0] - size) // 2, (resized[1] - size) // 2, size, size)


def _random_crop(example, size, seed, padding=0):
  """A uniformly placed `size` x `size` window of the image zero-padded by `padding`."""
  shape = tf.shape(example['image'])[:2]
  offset = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max,
                                       dtype=tf.int32) % (shape + 2 * padding - size + 1)
  return _crop(example, offset[0] - padding, offset[1] - padding, size, size)


def _random_resized_crop(example, size, seed):
  """Inception-style crop: a random area and aspect ratio, resized to `size` x `size`.

  After 10 failed draws the whole image is used (torchvision falls back to a centre crop).
  """
  begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(example['image']), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed, min_object_covered=0.0, aspect_ratio_range=_ASPECT_RATIO_RANGE,
      area_range=_AREA_RANGE, max_attempts=10, use_image_if_no_bounding_boxes=True)
  example = _crop(example, begin[0], begin[1], extent[0], extent[1])
  return _resize(example, size, size)


def _blend(image, other, factor):
  """`other + factor * (image - other)` clipped to [0, 1] (torchvision's colour blend)."""
  return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)


def _colour_jitter(image, seed):
  """Brightness, contrast and saturation, each scaled by a factor in [1 - 0.4, 1 + 0.4]."""
  factors = tf.random.stateless_uniform([3], seed, 1.0 - _JITTER, 1.0 + _JITTER)
  image = _blend(image, tf.zeros_like(image), factors[0])
  image = _blend(image, tf.reduce_mean(tf.image.rgb_to_grayscale(image)), factors[1])
  return _blend(image, tf.image.rgb_to_grayscale(image), factors[2])


def _lighting(image, seed):
  """AlexNet PCA lighting: adds `eigvec @ (alpha * eigval)`, alpha ~ N(0, 0.1^2) per image."""
  alpha = tf.random.stateless_normal([3], seed, stddev=_LIGHTING_STD)
  shift = tf.linalg.matvec(tf.constant(_EIGENVECTORS), alpha * tf.constant(_EIGENVALUES))
  return tf.clip_by_value(image + shift, 0.0, 1.0)


def _fit(example, size):
  if example['image'].shape[:2] == (size, size):  # Statically S x S: nothing to do.
    return example
  return _resize_and_centre_crop(example, size, size)


def _crop_flip_train(example, size, padding, seed):
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  example = _random_crop(_fit(example, size), size, crop_seed, padding)
  return _random_flip(example, flip_seed)


def _crop_train(example, size, padding, seed):
  return _random_crop(_fit(example, size), size, seed, padding)


def _imagenet_train(example, size, padding, seed):
  del padding  # crop_flip only.
  crop_seed, flip_seed, jitter_seed, lighting_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  example = _random_flip(_random_resized_crop(example, size, crop_seed), flip_seed)
  image = _lighting(_colour_jitter(example['image'], jitter_seed), lighting_seed)
  return dict(example, image=image)


def _imagenet_test(example, size):
  return _resize_and_centre_crop(example, round(size * _RESIZE_RATIO), size)


def _cub_train(example, size, padding, seed):
  del padding  # crop_flip only.
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  resized = round(size * _RESIZE_RATIO)
  example = _random_crop(_resize(example, resized, resized), size, crop_seed)
  return _random_flip(example, flip_seed)


def _cub_test(example, size):
  return _resize(example, size, size)


def _none_train(example, size, padding, seed):
  del padding, seed  # No augmentation.
  return _fit(example, size)


_TRAIN = {'crop_flip': _crop_flip_train, 'crop': _crop_train, 'imagenet': _imagenet_train,
          'cub': _cub_train, 'none': _none_train}
_TEST = {'crop_flip': _fit, 'crop': _fit, 'imagenet': _imagenet_test, 'cub': _cub_test,
         'none': _fit}
