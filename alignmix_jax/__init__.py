"""alignmix_jax: AlignMix (CVPR 2022) in JAX/Flax.

Public library entry points:
  alignmix_jax.alignment: Sinkhorn transport plans and feature-tensor alignment.
  alignmix_jax.mixup: input, latent, aligned-feature, manifold and CutMix operators.
"""
