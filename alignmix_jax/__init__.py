"""alignmix_jax: AlignMix (CVPR 2022) in JAX/Flax.

Library entry points:
  alignmix_jax.alignment: Sinkhorn transport plans and feature-tensor alignment.
  alignmix_jax.mixup: input, latent, aligned-feature, manifold and CutMix operators.
  alignmix_jax.models: encoders, decoder, heads and `create_model(config)`.
  alignmix_jax.data: datasets and batches, on the accelerators or through tf.data.
  alignmix_jax.configs, alignmix_jax.methods: the paper's settings and the methods.
The command line, `python -m alignmix_jax --config digits --workdir DIR` (`cli`), trains
(`train`, `train_step`) and evaluates (`evaluation`); docs/design.md maps the modules.
"""

__version__ = '0.2.0'
