"""AlignMixNet: encoder E, stage-2 encoder e, decoder D and classifier g (paper Figure 2).

  x `[B, H, W, 3]` in [0, 1] --E--> A `[B, h, w, c]` --e--> z --g--> logits `[B, K]`
                                                              z --D--> x_hat `[B, H, W, 3]`

Each piece is a method, called as `model.apply(variables, ..., method='features')` (with
`mutable=['batch_stats']` when `train=True`), so a train step can mix at x, A or z:
  features(x, train, mix_fn) -> A                 latent(A, train) -> z (a pytree)
  classify(z, train) -> logits                    decode(z, train) -> x_hat
  kl(z) -> [B]                                    cam(x) -> class activation maps
  __call__(x, train) = classify(latent(features(x)))
Every output is float32 whatever the compute `dtype`; parameters are float32.

`autoencoder`:
  'ae':   z = e(A), D decodes z (AlignMix/AE, the paper's default).
  'vae':  e gives the mean and log-variance of q(z|A); z = mean + exp(logvar / 2) * noise
          when training (the 'reparam' RNG stream), the mean otherwise (AlignMix/VAE).
  'none': no e, no D; z = global average pool of A (no parameters), as in the authors'
          code: trained without mixup this is the Baseline (AlignMix/-).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignmix_jax.models import decoder as decoder_lib
from alignmix_jax.models import heads

AUTOENCODERS = ('ae', 'vae', 'none')


class AlignMixNet(nn.Module):
  """The assembled network; build it with `alignmix_jax.models.create_model(config)`.

  Attributes:
    encoder: the stage-1 encoder E (an instance from `models.ENCODERS`), with
      `num_stages`, `num_downsamplings` and `out_channels`.
    num_classes: K.
    image_size: H (= W) of the input.
    mean: per-channel mean of the [0, 1] images, subtracted inside the model.
    std: per-channel standard deviation, divided inside the model.
    autoencoder: 'ae' | 'vae' | 'none' (module docstring).
    latent_kind: 'vector' (z `[B, d]`) or 'tensor' (Z `[B, h/2, w/2, d]`); 'vector' only
      with autoencoder 'none'.
    latent_dim: d (c with autoencoder 'none').
    feature_pool: average pooling window and stride applied to the encoder output (2 for
      the 2x2 alignment ablation on a 4x4 encoder; 1 for none).
    dtype: compute dtype (float32 or bfloat16).
    conv_impl: how the decoder's and e's convolutions are written (`layers.CONV_IMPLS`;
      the encoder has its own).
  """
  encoder: nn.Module
  num_classes: int
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  autoencoder: str = 'ae'
  latent_kind: str = 'vector'
  latent_dim: int = 512
  feature_pool: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = 'xla'

  @property
  def num_stages(self):
    """Residual stages of E: valid manifold mixup layers are 0 (x) to num_stages."""
    return self.encoder.num_stages

  @property
  def feature_side(self):
    """h (= w), the side of A."""
    return self.image_size // 2**self.encoder.num_downsamplings // self.feature_pool

  @property
  def feature_channels(self):
    """c, the channels of A."""
    return self.encoder.out_channels

  def setup(self):
    if self.autoencoder != 'none':
      self.latent_encoder = heads.LatentEncoder(
          self.latent_kind, self.latent_dim, variational=self.autoencoder == 'vae',
          dtype=self.dtype, conv_impl=self.conv_impl)
      self.decoder = decoder_lib.Decoder(
          feature_side=self.feature_side,
          # The width at A's side, capped at 8 x base width (512): ResNet-50's 2048 and
          # VGG-GAP's 1024 channels would make the fully-connected input layer huge.
          channels=min(self.feature_channels, 8 * self.encoder.width),
          min_width=self.encoder.width,
          num_upsamplings=(self.image_size // self.feature_side).bit_length() - 1,
          dtype=self.dtype, conv_impl=self.conv_impl)
    self.classifier = heads.Classifier(self.num_classes, self.dtype)

  def features(self, x, train, mix_fn=None):
    """E: images x `[B, H, W, 3]` in [0, 1] -> A `[B, h, w, c]` float32.

    Normalises x with `mean` and `std` inside, runs E, then the `feature_pool` averaging.

    Args:
      x: images in [0, 1] pixel space.
      train: BatchNorm with batch statistics (True) or running averages (False).
      mix_fn: the mixing hook (input and manifold mixup): when given, `mix_fn(k, h)` replaces
        the activations h after stage k, for k = 0 (the input image) to `num_stages`, and
        the forward goes on with its result.
    """
    def after_stage(stage, activations):
      return activations if mix_fn is None else mix_fn(stage, activations)

    x = after_stage(0, jnp.asarray(x, jnp.float32))
    x = (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
    features = self.encoder(x.astype(self.dtype), train, after_stage)
    if self.feature_pool > 1:
      window = (self.feature_pool, self.feature_pool)
      features = nn.avg_pool(features, window, strides=window)
    return features.astype(jnp.float32)

  def latent(self, features, train):
    """e: A `[B, h, w, c]` -> z `[B, d]` or Z `[B, h/2, w/2, d]`; VAE: {'mean', 'logvar'}.

    'none': z = the global average pool of A `[B, c]`. `train` is accepted for the common
    calling convention; e has no BatchNorm.
    """
    del train
    if self.autoencoder == 'none':
      return jnp.mean(features, axis=(1, 2))
    return self.latent_encoder(features)

  def sample(self, latent, train):
    """The z that g and D read: VAE: mean + exp(logvar / 2) * noise (train) or the mean.

    The noise comes from the 'reparam' RNG stream, drawn at this module's top scope, so
    separate `apply` calls given the same 'reparam' key draw the same noise.
    """
    if self.autoencoder != 'vae':
      return latent
    mean = latent['mean']
    if not train:
      return mean
    noise = jax.random.normal(self.make_rng('reparam'), mean.shape, jnp.float32)
    return mean + jnp.exp(0.5 * latent['logvar']) * noise

  def classify(self, latent, train):
    """g: z (the output of `latent`, possibly mixed) -> logits `[B, num_classes]` float32."""
    return self.classifier(self.sample(latent, train))

  def decode(self, latent, train):
    """D: z -> x_hat `[B, H, W, 3]` float32 in [0, 1] (sigmoid), the input's size."""
    if self.autoencoder == 'none':
      raise ValueError("decode needs a decoder; model.autoencoder='none' has none (use "
                       "'ae' or 'vae').")
    return self.decoder(self.sample(latent, train), train)

  def kl(self, latent):
    """KL(q(z|x) || N(0, I)) per example `[B]` float32, summed over the latent dims.

    `0.5 * sum(exp(logvar) + mean^2 - 1 - logvar)` for the VAE; zeros for 'ae' and 'none'.
    """
    if self.autoencoder != 'vae':
      return jnp.zeros(latent.shape[:1], jnp.float32)
    mean, logvar = latent['mean'], latent['logvar']
    terms = jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar
    return 0.5 * jnp.sum(terms.reshape(terms.shape[0], -1), axis=-1)

  def cam(self, x):
    """Class activation maps `[B, h, w, num_classes]` float32: A (eval mode) times g's weights.

    Defined for autoencoder 'none', where g reads the pooled A.
    """
    if self.autoencoder != 'none':
      raise ValueError("cam needs the classifier to read the pooled A directly: use "
                       f"model.autoencoder='none' (got {self.autoencoder!r}).")
    return self.classifier.class_maps(self.features(x, train=False))

  def __call__(self, x, train=False):
    """Logits `[B, num_classes]` float32 = classify(latent(features(x))).

    During `init` it also runs the decoder, so `init` creates every parameter.
    """
    latent = self.latent(self.features(x, train), train)
    if self.is_initializing() and self.autoencoder != 'none':
      self.decode(latent, train)
    return self.classify(latent, train)
