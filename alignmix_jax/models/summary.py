"""Parameter overview of a model: `python -m alignmix_jax --config <setting> --mode summary`.

`summarize(config)` initialises the model abstractly (`jax.eval_shape`: shapes only, no
compute, so the ImageNet ResNet-50 summary is instant) and returns the text: the shapes of
A and z, a table of every parameter (path, shape, size), then one line per top-level module,
the total and the classifier's count,
  params/<module>: <count>
  params/total: <count>
  classifier params (E + g, as the paper counts): <count>
with counts as PyTorch counts them (BatchNorm scale and bias are parameters, the running
statistics are not). The classifier is the encoder E and the head g, without e and D: the
authors' network, the one the paper's tables count (e.g. 11217444 for PreActResNet18 on
CIFAR-100).
"""

import math

import jax
import jax.numpy as jnp

from alignmix_jax import models


def _count(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def parameter_summary(variables_or_params):
  """`params/<module>: <count>` per top-level module (sorted), then `params/total: <count>`.

  Args:
    variables_or_params: the dict `init` returns ({'params': ..., 'batch_stats': ...}) or
      its 'params' entry; arrays or `jax.ShapeDtypeStruct`s.
  """
  params = variables_or_params.get('params', variables_or_params)
  lines = [f'params/{name}: {_count(params[name])}' for name in sorted(params)]
  return lines + [f'params/total: {_count(params)}']


CLASSIFIER_MODULES = ('encoder', 'classifier')  # E and g: the paper's classifier.


def classifier_summary(variables_or_params):
  """`classifier params (E + g, as the paper counts): <count>`, without e and D.

  Args:
    variables_or_params: as for `parameter_summary`.
  """
  params = variables_or_params.get('params', variables_or_params)
  count = sum(_count(params[name]) for name in CLASSIFIER_MODULES)
  return f'classifier params (E + g, as the paper counts): {count}'


def parameter_table(params):
  """One row per parameter: its path (module/.../name), shape and number of values."""
  rows = [('/'.join(str(getattr(key, 'key', key)) for key in path), str(tuple(leaf.shape)),
           f'{math.prod(leaf.shape):,}')
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
  header = ('parameter', 'shape', 'size')
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

  def line(row):
    return ' | '.join(cell.ljust(width) for cell, width in zip(row, widths))

  return '\n'.join([line(header), '-+-'.join('-' * width for width in widths),
                    *map(line, rows)])


def abstract_variables(model, image_size):
  """The shapes and dtypes of `model.init`'s variables, computed with `jax.eval_shape`."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  rngs = {'params': jax.random.key(0), 'reparam': jax.random.key(1)}
  return jax.eval_shape(lambda x: model.init(rngs, x, train=False), images)


def summarize(config):
  """The parameter overview of the model `config` describes (see the module docstring)."""
  model = models.create_model(config)
  size = config.dataset.image_size
  variables = abstract_variables(model, size)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

  def shapes(variables, x):
    features = model.apply(variables, x, train=False, method='features')
    return features, model.apply(variables, features, train=False, method='latent')

  features, latent = jax.eval_shape(shapes, variables, images)
  latent_shapes = jax.tree_util.tree_map(lambda leaf: list(leaf.shape[1:]), latent)
  header = [
      f'model: {config.model.name}, autoencoder: {config.model.autoencoder}, '
      f'dtype: {config.model.dtype}, input: [{size}, {size}, 3]',
      f'A (features): {list(features.shape[1:])}, z (latent): {latent_shapes}',
      f'manifold mixup layers: 0 to {model.num_stages}',
  ]
  return '\n'.join(header + [parameter_table(variables['params'])]
                   + parameter_summary(variables) + [classifier_summary(variables)])
