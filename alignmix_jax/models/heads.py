"""Stage-2 encoder e: A -> z and classifier g: z -> logits (paper section 3.1, Table 5).

Shapes: A = `features` `[B, h, w, c]`; z = `latent`, a vector `[B, d]` ('vector': a
fully-connected layer on the flattened A) or the tensor Z `[B, h/2, w/2, d]` ('tensor': a
2x2 convolution with stride 2). The variational encoder returns the mean and log-variance of
q(z|A), `{'mean': z-shaped, 'logvar': z-shaped}`, from two such layers.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from alignmix_jax.models import layers

LATENT_KINDS = ('vector', 'tensor')


class LatentEncoder(nn.Module):
  """e: A `[B, h, w, c]` -> z `[B, d]` or Z `[B, h/2, w/2, d]` (float32).

  Attributes:
    kind: 'vector' (fully connected on the flattened A) or 'tensor' (conv 2x2, stride 2).
    dim: d.
    variational: return `{'mean', 'logvar'}` (two layers) instead of z.
    dtype: compute dtype.
    conv_impl: how the tensor head's convolution is written (`layers.CONV_IMPLS`).
  """
  kind: str
  dim: int
  variational: bool
  dtype: Any
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, features):
    def project(name):
      if self.kind == 'vector':
        flat = features.reshape(features.shape[0], -1)
        out = layers.dense(flat, self.dim, name=name, dtype=self.dtype)
      else:
        out = layers.conv(features, self.dim, 2, strides=2, use_bias=True, name=name,
                          dtype=self.dtype, impl=self.conv_impl)
      return out.astype(jnp.float32)

    if self.variational:
      return {'mean': project('mean'), 'logvar': project('logvar')}
    return project('fc')


class Classifier(nn.Module):
  """g: z `[B, ...]` (flattened) -> logits `[B, num_classes]` float32, one linear layer."""
  num_classes: int
  dtype: Any

  @nn.compact
  def __call__(self, latent):
    flat = latent.reshape(latent.shape[0], -1)
    return layers.dense(flat, self.num_classes, name='fc', dtype=self.dtype).astype(jnp.float32)

  def class_maps(self, features):
    """Class activation maps: A `[B, h, w, c]` times the weights, `[B, h, w, num_classes]`.

    Needs g to read z = GAP(A) `[B, c]` (autoencoder 'none'); the bias is left out, so the
    spatial mean of the maps plus the bias is the logits.
    """
    kernel = self.variables['params']['fc']['kernel']
    return jnp.einsum('bhwc,ck->bhwk', features.astype(jnp.float32), kernel)
