"""Input pipeline internals: dataset readers (`sources`) and image transforms (`transforms`).

These modules and `alignmix_jax.input_pipeline` are the only ones that import TensorFlow.
TensorFlow runs the input pipeline on the host CPU only: the accelerators belong to JAX, so
GPUs are hidden from TensorFlow here, before any of its ops runs.
"""

import tensorflow as tf

tf.config.set_visible_devices([], 'GPU')
