"""Models: the encoder registry and `create_model(config)`.

`config.model.name` picks the stage-1 encoder E (`ENCODERS`; `preact_shortcut` applies to
PreActResNet18); `config.model.autoencoder`, `latent`, `latent_dim`, `feature_resolution`,
`width`, `dtype` and `conv` (`layers.CONV_IMPLS`) shape the rest of `network.AlignMixNet`;
`config.dataset` gives num_classes, image_size, mean and std.

  from alignmix_jax import models
  model = models.create_model(config)
  variables = model.init({'params': k1, 'reparam': k2}, x, train=False)
"""

import jax.numpy as jnp

from alignmix_jax.models import layers
from alignmix_jax.models.heads import LATENT_KINDS
from alignmix_jax.models.network import AUTOENCODERS
from alignmix_jax.models.network import AlignMixNet
from alignmix_jax.models.preact_resnet import SHORTCUTS
from alignmix_jax.models.preact_resnet import PreActResNet18
from alignmix_jax.models.resnet import ResNet50
from alignmix_jax.models.vgg import VGGGAP
from alignmix_jax.models.wide_resnet import WideResNet16_8

ENCODERS = {
    'preactresnet18': PreActResNet18,
    'wrn16_8': WideResNet16_8,
    'resnet50': ResNet50,
    'vgg_gap': VGGGAP,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _check_choice(field, value, valid):
  if value not in valid:
    raise ValueError(f'Unknown {field}={value!r}; valid: {", ".join(valid)}.')


def _feature_geometry(native_side, resolution):
  """(remove_last_downsampling, feature_pool) giving A the side `resolution` (0: native)."""
  if resolution in (0, native_side):
    return False, 1
  if resolution == 2 * native_side:
    return True, 1
  if 0 < resolution < native_side and native_side % resolution == 0:
    return False, native_side // resolution
  valid = [side for side in range(1, native_side + 1) if native_side % side == 0]
  raise ValueError(
      f'model.feature_resolution={resolution} is not reachable from this encoder\'s native '
      f'{native_side}x{native_side} A; valid: 0 (native), a divisor of {native_side} '
      f'(average pooling: {", ".join(map(str, valid))}) or {2 * native_side} (the last '
      'downsampling removed).')


def create_model(config):
  """Builds the `AlignMixNet` described by `config.model` and `config.dataset`.

  Raises:
    ValueError: an unknown model name, autoencoder, latent kind or dtype (the message lists
      the valid ones), or a setting the geometry does not allow.
  """
  model_config, data_config = config.model, config.dataset
  _check_choice('model.name', model_config.name, tuple(ENCODERS))
  _check_choice('model.autoencoder', model_config.autoencoder, AUTOENCODERS)
  _check_choice('model.latent', model_config.latent, LATENT_KINDS)
  _check_choice('model.dtype', model_config.dtype, tuple(DTYPES))
  conv_impl = layers.resolve_conv_impl(model_config.conv)
  width, image_size = model_config.width, data_config.image_size
  if not isinstance(width, int) or width < 1:
    raise ValueError(f'model.width must be a positive int (64 in the paper); got {width!r}.')
  if len(data_config.mean) != 3 or len(data_config.std) != 3 or min(data_config.std) <= 0:
    raise ValueError('dataset.mean and dataset.std must be 3 per-channel values with std > 0; '
                     f'got {data_config.mean!r}, {data_config.std!r}.')

  encoder_cls = ENCODERS[model_config.name]
  stride = 2**encoder_cls(width=width).num_downsamplings
  if image_size % stride:
    raise ValueError(f'dataset.image_size={image_size} must be a multiple of {stride}, the '
                     f'downsampling of {model_config.name}.')
  remove_last, feature_pool = _feature_geometry(image_size // stride,
                                                model_config.feature_resolution)
  options = {}
  if model_config.name == 'preactresnet18':
    _check_choice('model.preact_shortcut', model_config.preact_shortcut, SHORTCUTS)
    options['shortcut'] = model_config.preact_shortcut
  elif model_config.preact_shortcut != 'authors':
    raise ValueError(f'model.preact_shortcut={model_config.preact_shortcut!r} applies to '
                     f'preactresnet18 only; {model_config.name} is built as the authors\' '
                     "(or torchvision's) definition. Leave it 'authors'.")
  encoder = encoder_cls(width=width, remove_last_downsampling=remove_last,
                        dtype=DTYPES[model_config.dtype], conv_impl=conv_impl, **options)

  channels = encoder.out_channels
  tensor = model_config.latent == 'tensor'
  latent_dim = model_config.latent_dim or (channels // 4 if tensor else channels)
  if model_config.autoencoder == 'none' and (tensor or latent_dim != channels):
    raise ValueError("model.autoencoder='none' reads z = the pooled A: it needs "
                     f"model.latent='vector' and model.latent_dim 0 or {channels} (got "
                     f'{model_config.latent!r}, {model_config.latent_dim}).')
  model = AlignMixNet(
      encoder=encoder,
      num_classes=data_config.num_classes,
      image_size=image_size,
      mean=tuple(data_config.mean),
      std=tuple(data_config.std),
      autoencoder=model_config.autoencoder,
      latent_kind=model_config.latent,
      latent_dim=latent_dim,
      feature_pool=feature_pool,
      dtype=DTYPES[model_config.dtype],
      conv_impl=conv_impl)
  side = model.feature_side
  if tensor and side % 2:
    raise ValueError(f"model.latent='tensor' (conv 2x2, stride 2) needs an even side of A; "
                     f'it is {side}. Use model.latent=\'vector\' or another feature_resolution.')
  upsampling = image_size // side
  if model_config.autoencoder != 'none' and upsampling & (upsampling - 1):
    raise ValueError(f'The decoder doubles the side of A ({side}) up to image_size '
                     f'({image_size}); their ratio {upsampling} must be a power of 2. Use '
                     "model.autoencoder='none' or another feature_resolution.")
  return model
