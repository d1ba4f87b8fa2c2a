"""Tests of alignmix_jax.models: shapes, PyTorch parameter counts, pieces, dtypes, hooks.

Reference parameter counts are computed here by formula, independently of the Flax code: a
sum over the layers of the PyTorch definitions (conv k*k*cin*cout (+cout with bias), BN 2c
(weight and bias; running statistics are buffers), Linear cin*cout + cout). The formulas are
checked against the widely quoted totals (PreActResNet18 CIFAR-10 11,171,146, torchvision
ResNet-50 25,557,032 and VGG16 138,357,544) before the models are compared with them.

Numeric tests use narrow models (width 4) on 16x16 or 32x32 images; full-width models are
only traced abstractly (`jax.eval_shape`). Parameters come from 'rbg' keys, which compile
much faster than threefry on CPU.
"""

import functools
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import authors_numpy
from alignmix_jax import models
from alignmix_jax.models import summary
from alignmix_jax.configs import default

WIDTH = 4


def _key(seed):
  return jax.random.key(seed, impl='rbg')


def _config(name='preactresnet18', image_size=16, width=WIDTH, num_classes=10, **model):
  config = default.get_config()
  config.dataset.image_size = image_size
  config.dataset.num_classes = num_classes
  config.dataset.mean = (0.4914, 0.4822, 0.4465)
  config.dataset.std = (0.2023, 0.1994, 0.2010)
  config.model.name = name
  config.model.width = width
  config.model.conv = 'xla'  # The graph every backend runs (tests/test_cpu_conv.py: 'cpu').
  for field, value in model.items():
    config.model[field] = value
  return config


def _images(image_size, batch=2, seed=0):
  return jax.random.uniform(_key(seed), (batch, image_size, image_size, 3), jnp.float32)


@functools.lru_cache(maxsize=None)
def _built(name='preactresnet18', image_size=16, autoencoder='ae', latent='vector'):
  """(model, variables, images) of a width-4 model, built once per test process."""
  model = models.create_model(_config(name, image_size, autoencoder=autoencoder,
                                      latent=latent))
  x = _images(image_size)
  init = _quick_jit(functools.partial(model.init, train=False))
  return model, init({'params': _key(1), 'reparam': _key(2)}, x), x


def _quick_jit(fn):
  """`jax.jit` with XLA's CPU optimisations off: these tests compile far more than they run."""
  options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  return lambda *args: jax.jit(fn).lower(*args).compile(options)(*args)


# Reference parameter counts of the PyTorch definitions, by formula.


def _conv(k, cin, cout, bias=False):
  return k * k * cin * cout + (cout if bias else 0)


def _bn(c):
  return 2 * c


def _linear(cin, cout):
  return cin * cout + cout


def _preact_resnet18_count(num_classes, stem_bn):
  total = _conv(3, 3, 64) + (_bn(64) if stem_bn else 0)
  cin = 64
  for width, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
    for block in range(2):
      total += _bn(cin) + _conv(3, cin, width) + _bn(width) + _conv(3, width, width)
      if (stride if block == 0 else 1) != 1 or cin != width:
        total += _conv(1, cin, width)
      cin = width
  return total + _linear(512, num_classes)


def _wrn16_8_count(num_classes):
  total = _conv(3, 3, 16, bias=True)
  cin = 16
  for width, stride in zip((128, 256, 512), (1, 2, 2)):
    for block in range(2):
      total += (_bn(cin) + _conv(3, cin, width, bias=True) + _bn(width)
                + _conv(3, width, width, bias=True))
      if (stride if block == 0 else 1) != 1 or cin != width:
        total += _conv(1, cin, width, bias=True)
      cin = width
  return total + _bn(512) + _linear(512, num_classes)


def _resnet50_count(num_classes):
  total = _conv(7, 3, 64) + _bn(64)
  cin = 64
  for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
    for block in range(blocks):
      total += (_conv(1, cin, width) + _bn(width) + _conv(3, width, width) + _bn(width)
                + _conv(1, width, 4 * width) + _bn(4 * width))
      if block == 0:
        total += _conv(1, cin, 4 * width) + _bn(4 * width)
      cin = 4 * width
  return total + _linear(2048, num_classes)


def _vgg16_convs_count():
  widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
  return sum(_conv(3, cin, cout, bias=True) for cin, cout in zip([3] + widths, widths))


def test_reference_formulas_reproduce_quoted_totals():
  assert _preact_resnet18_count(10, stem_bn=False) == 11_171_146
  assert _resnet50_count(1000) == 25_557_032
  vgg16 = (_vgg16_convs_count() + _linear(512 * 7 * 7, 4096) + _linear(4096, 4096)
           + _linear(4096, 1000))
  assert vgg16 == 138_357_544


def _summary_counts(config):
  text = summary.summarize(config)
  lines = [line for line in text.splitlines() if line.startswith('params/')]
  return {line.split(': ')[0][len('params/'):]: int(line.split(': ')[1]) for line in lines}


@pytest.mark.parametrize('name,image_size,num_classes,expected', [
    ('preactresnet18', 32, 10, _preact_resnet18_count(10, stem_bn=True)),
    ('preactresnet18', 32, 100, _preact_resnet18_count(100, stem_bn=True)),
    ('wrn16_8', 32, 10, _wrn16_8_count(10)),
    ('wrn16_8', 32, 100, _wrn16_8_count(100)),
    ('resnet50', 224, 1000, _resnet50_count(1000)),
    ('vgg_gap', 224, 200,
     _vgg16_convs_count() + _conv(3, 512, 1024, bias=True) + _linear(1024, 200)),
])
def test_classifier_parameter_counts_equal_pytorch(name, image_size, num_classes, expected):
  config = _config(name, image_size, width=64, num_classes=num_classes, autoencoder='none')
  counts = _summary_counts(config)
  assert counts['total'] == expected
  assert set(counts) == {'encoder', 'classifier', 'total'}
  channels = {'preactresnet18': 512, 'wrn16_8': 512, 'resnet50': 2048, 'vgg_gap': 1024}[name]
  assert counts['classifier'] == _linear(channels, num_classes)
  assert counts['encoder'] + counts['classifier'] == counts['total']


@pytest.mark.parametrize('setting,expected', [
    ('cifar100_preactresnet18', 11_217_444),
    ('cifar10_preactresnet18', 11_171_274),
    ('cifar10_wrn16_8', 10_965_866),
])
def test_summary_prints_the_classifier_count_of_the_paper(setting, expected):
  # Parameter counts of the authors' PyTorch networks (E + g), quoted in the README.
  config = importlib.import_module(f'configs.{setting}').get_config()
  assert config.model.autoencoder == 'ae'  # e and D exist and must be left out.
  text = summary.summarize(config)
  found = re.findall(r'^classifier params \(E \+ g, as the paper counts\): (\d+)$', text,
                     flags=re.MULTILINE)
  assert [int(count) for count in found] == [expected]
  total = re.search(r'^params/total: (\d+)$', text, flags=re.MULTILINE).group(1)
  assert int(total) > expected + 4_000_000  # e and D (millions of parameters) not counted.


def test_summary_lines_match_variables():
  _, variables, _ = _built()
  lines = summary.parameter_summary(variables)
  assert lines == summary.parameter_summary(variables['params'])
  counts = {line.split(': ')[0]: int(line.split(': ')[1]) for line in lines}
  assert list(counts) == ['params/classifier', 'params/decoder', 'params/encoder',
                          'params/latent_encoder', 'params/total']
  leaves = jax.tree_util.tree_leaves(variables['params'])
  assert counts['params/total'] == sum(leaf.size for leaf in leaves)
  assert counts['params/total'] == sum(v for k, v in counts.items() if k != 'params/total')
  # e: fully connected from the flattened 2x2x32 A to z in R^32, with bias.
  assert counts['params/latent_encoder'] == _linear(2 * 2 * 32, 32)


# Shapes.


def _abstract_shapes(config, batch=2):
  model = models.create_model(config)
  size = config.dataset.image_size
  variables = summary.abstract_variables(model, size)
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def run(variables, x):
    features = model.apply(variables, x, train=False, method='features')
    latent = model.apply(variables, features, train=False, method='latent')
    logits = model.apply(variables, latent, train=False, method='classify')
    decoded = (None if config.model.autoencoder == 'none' else
               model.apply(variables, latent, train=False, method='decode'))
    return features, latent, logits, decoded

  return jax.eval_shape(run, variables, x)


@pytest.mark.parametrize('name,image_size,resolution,expected', [
    ('preactresnet18', 32, 0, (4, 4, 512)),
    ('preactresnet18', 64, 0, (8, 8, 512)),  # Tiny-ImageNet, as the authors' code.
    ('preactresnet18', 64, 4, (4, 4, 512)),
    ('preactresnet18', 32, 2, (2, 2, 512)),  # Alignment ablation: average pooling.
    ('preactresnet18', 32, 8, (8, 8, 512)),  # Alignment ablation: last stride removed.
    ('wrn16_8', 32, 0, (8, 8, 512)),
    ('wrn16_8', 32, 4, (4, 4, 512)),
    ('wrn16_8', 32, 16, (16, 16, 512)),
    ('resnet50', 224, 0, (7, 7, 2048)),
    ('resnet50', 224, 14, (14, 14, 2048)),  # WSOL: layer4 with stride 1.
    ('vgg_gap', 224, 0, (14, 14, 1024)),
    ('vgg_gap', 224, 28, (28, 28, 1024)),
])
def test_encoder_output_shapes(name, image_size, resolution, expected):
  config = _config(name, image_size, width=64, num_classes=7, autoencoder='none',
                   feature_resolution=resolution)
  features, latent, logits, _ = _abstract_shapes(config)
  assert features.shape == (2,) + expected and features.dtype == jnp.float32
  assert latent.shape == (2, expected[-1])
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32


@pytest.mark.parametrize('name,image_size,autoencoder,latent,expected', [
    ('preactresnet18', 32, 'ae', 'vector', (32,)),
    ('preactresnet18', 32, 'ae', 'tensor', (2, 2, 8)),  # Z: d = c / 4 (128 x 2 x 2 at c = 512).
    ('preactresnet18', 64, 'vae', 'vector', (32,)),
    ('wrn16_8', 32, 'vae', 'tensor', (4, 4, 8)),
    ('resnet50', 64, 'ae', 'vector', (128,)),
    ('vgg_gap', 32, 'ae', 'tensor', (1, 1, 16)),
])
def test_latent_and_decoder_shapes(name, image_size, autoencoder, latent, expected):
  config = _config(name, image_size, autoencoder=autoencoder, latent=latent)
  _, z, logits, decoded = _abstract_shapes(config)
  leaves = z if autoencoder == 'ae' else z['mean']
  assert leaves.shape == (2,) + expected
  if autoencoder == 'vae':
    assert z['logvar'].shape == (2,) + expected
  assert logits.shape == (2, 10)
  assert decoded.shape == (2, image_size, image_size, 3) and decoded.dtype == jnp.float32


# Forward and backward of every model.


@pytest.mark.parametrize('name,image_size,autoencoder,latent', [
    ('preactresnet18', 16, 'ae', 'vector'),
    ('preactresnet18', 16, 'vae', 'tensor'),
    ('wrn16_8', 16, 'none', 'vector'),
    ('resnet50', 32, 'none', 'vector'),
    ('vgg_gap', 32, 'none', 'vector'),
])
def test_forward_and_backward(name, image_size, autoencoder, latent):
  model, variables, x = _built(name, image_size, autoencoder, latent)
  labels = jnp.array([0, 1])

  def loss_fn(params):
    v = {**variables, 'params': params}
    features, stats = model.apply(v, x, True, method='features', mutable=['batch_stats'])
    z = model.apply(v, features, True, method='latent')
    logits = model.apply(v, z, True, method='classify', rngs={'reparam': _key(3)})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    if autoencoder != 'none':
      decoded, _ = model.apply(v, z, True, method='decode', rngs={'reparam': _key(3)},
                               mutable=['batch_stats'])
      loss += jnp.mean(jnp.square(decoded - x)) + model.apply(v, z, method='kl').mean()
    return loss, stats

  (loss, stats), grads = _quick_jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables['params'])
  assert np.isfinite(float(loss)) and float(loss) > 0
  # Every parameter gets a finite, non-zero gradient: all pieces are wired into the loss.
  norms = jax.tree_util.tree_map(lambda g: float(np.linalg.norm(np.asarray(g))), grads)
  flat = jax.tree_util.tree_leaves_with_path(norms)
  assert all(np.isfinite(n) for _, n in flat)
  assert [jax.tree_util.keystr(p) for p, n in flat if n == 0] == []
  expected_modules = {'encoder', 'classifier'} | (
      set() if autoencoder == 'none' else {'latent_encoder', 'decoder'})
  assert set(grads) == expected_modules
  if name != 'vgg_gap':  # VGG has no BatchNorm.
    before = jax.tree_util.tree_leaves(variables['batch_stats']['encoder'])
    after = jax.tree_util.tree_leaves(stats['batch_stats']['encoder'])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


# Pieces of the network.


def test_decoder_output_is_an_image():
  model, variables, x = _built()
  z = model.apply(variables, model.apply(variables, x, False, method='features'), False,
                  method='latent')
  decoded = model.apply(variables, z, False, method='decode')
  assert decoded.shape == x.shape and decoded.dtype == jnp.float32
  assert float(decoded.min()) > 0 and float(decoded.max()) < 1


def test_none_latent_is_pooled_features_and_cam_reproduces_logits():
  model, variables, x = _built(autoencoder='none')
  features = model.apply(variables, x, False, method='features')
  z = model.apply(variables, features, False, method='latent')
  np.testing.assert_allclose(z, features.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
  logits = model.apply(variables, x, train=False)
  maps = model.apply(variables, x, method='cam')
  assert maps.shape == (2, 2, 2, 10)
  bias = variables['params']['classifier']['fc']['bias']
  np.testing.assert_allclose(maps.mean(axis=(1, 2)) + bias, logits, rtol=1e-5, atol=1e-5)
  assert 'latent_encoder' not in variables['params']
  assert 'decoder' not in variables['params']


def test_normalization_is_inside_the_model():
  model, variables, x = _built()
  config = _config(autoencoder='ae')
  config.dataset.mean, config.dataset.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
  plain = models.create_model(config)
  mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
  expected = plain.apply(variables, (x - mean) / std, False, method='features')
  np.testing.assert_allclose(model.apply(variables, x, False, method='features'), expected,
                             rtol=1e-5, atol=1e-5)


def test_kl_of_the_vae():
  model, variables, _ = _built(autoencoder='vae', latent='tensor')

  def kl(mean, logvar):
    return model.apply(variables, {'mean': mean, 'logvar': logvar}, method='kl')

  zeros = jnp.zeros((3, 32))
  np.testing.assert_array_equal(kl(zeros, zeros), np.zeros(3))
  # Closed form per dimension: 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2).
  np.testing.assert_allclose(kl(zeros + 1.0, zeros), np.full(3, 0.5 * 32), rtol=1e-6)
  np.testing.assert_allclose(kl(zeros, zeros + np.log(2.0)),
                             np.full(3, 0.5 * 32 * (1.0 - np.log(2.0))), rtol=1e-6)
  random = kl(jax.random.normal(_key(4), (3, 32)), 3 * jax.random.normal(_key(5), (3, 32)))
  assert random.shape == (3,) and bool(jnp.all(random > 0))
  ae_model, ae_variables, _ = _built()
  np.testing.assert_array_equal(ae_model.apply(ae_variables, zeros, method='kl'),
                                np.zeros(3))


def test_vae_sampling_uses_the_reparam_stream():
  model, variables, x = _built(autoencoder='vae', latent='tensor')
  latent = model.apply(variables, model.apply(variables, x, False, method='features'), False,
                       method='latent')

  def sample(logvar, train, seed):
    return model.apply(variables, {'mean': latent['mean'], 'logvar': logvar}, train,
                       method='sample', rngs={'reparam': _key(seed)})

  np.testing.assert_array_equal(sample(latent['logvar'], False, 0), latent['mean'])
  unit = sample(jnp.zeros_like(latent['mean']), True, 0)
  doubled = sample(jnp.full_like(latent['mean'], np.log(4.0)), True, 0)
  np.testing.assert_allclose(doubled - latent['mean'], 2 * (unit - latent['mean']),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(unit, sample(jnp.zeros_like(latent['mean']), True, 1))
  # Separate apply calls with the same key classify and decode the same sample.
  logits = [model.apply(variables, latent, True, method='classify', rngs={'reparam': _key(7)})
            for _ in range(2)]
  np.testing.assert_array_equal(logits[0], logits[1])
  eval_logits = model.apply(variables, latent, False, method='classify')
  np.testing.assert_allclose(model.apply(variables, x, train=False), eval_logits, rtol=1e-6)


def test_bfloat16_compute_with_float32_parameters():
  reference_model, variables, x = _built(autoencoder='none')
  model = models.create_model(_config(autoencoder='none', dtype='bfloat16'))

  def run(variables, x):
    logits = model.apply(variables, x, train=False)
    features, state = model.apply(variables, x, True, method='features',
                                  mutable=['batch_stats', 'intermediates'],
                                  capture_intermediates=True)
    return logits, features, state

  logits, features, state = _quick_jit(run)(variables, x)
  assert logits.dtype == features.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits))) and bool(jnp.all(jnp.isfinite(features)))
  reference = reference_model.apply(variables, x, train=False)
  np.testing.assert_allclose(logits, reference, rtol=0.05,
                             atol=0.05 * float(jnp.abs(reference).max()))
  # Activations are bfloat16; BatchNorm statistics and all parameters float32.
  assert state['intermediates']['encoder']['layer4_1']['__call__'][0].dtype == jnp.bfloat16
  for leaf in jax.tree_util.tree_leaves(state['batch_stats']):
    assert leaf.dtype == jnp.float32
  fresh = summary.abstract_variables(model, 16)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(fresh)} == {np.dtype('float32')}


def test_batchnorm_follows_pytorch_and_padding_is_symmetric():
  """Stem conv (stride 1) and layer2's strided conv against NumPy; BN momentum 0.1."""
  model, variables, x = _built()
  (_, state) = model.apply(variables, x, True, method='features',
                           mutable=['batch_stats', 'intermediates'],
                           capture_intermediates=True)
  encoder = state['intermediates']['encoder']
  params = variables['params']['encoder']

  def numpy_conv(inputs, kernel, stride):
    inputs = np.pad(np.asarray(inputs, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = np.asarray(kernel, np.float64)
    side = (inputs.shape[1] - 3) // stride + 1
    out = np.zeros((inputs.shape[0], side, side, kernel.shape[-1]))
    for i in range(side):
      for j in range(side):
        patch = inputs[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
        out[:, i, j] = np.einsum('bhwc,hwco->bo', patch, kernel)
    return out

  normalized = (np.asarray(x) - np.array([0.4914, 0.4822, 0.4465])) / np.array(
      [0.2023, 0.1994, 0.2010])
  stem = numpy_conv(normalized, params['conv1']['kernel'], 1)
  np.testing.assert_allclose(encoder['conv1']['__call__'][0], stem, rtol=1e-4, atol=1e-4)
  # Running mean after one step from 0: 0.1 (PyTorch momentum) times the batch mean.
  np.testing.assert_allclose(state['batch_stats']['encoder']['bn1']['mean'],
                             0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  block = encoder['layer2_0']
  activated = np.maximum(block['bn1']['__call__'][0], 0)
  strided = numpy_conv(activated, params['layer2_0']['conv1']['kernel'], 2)
  np.testing.assert_allclose(block['conv1']['__call__'][0], strided, rtol=1e-4, atol=1e-4)


def _with_random_batchnorms(variables, seed):
  """`variables` with every BatchNorm's scale, bias and running statistics drawn at random
  (initialised ones are 1, 0, 0 and 1, which would hide a misplaced BN)."""
  rng = np.random.default_rng(seed)

  def visit(tree):
    if not isinstance(tree, dict):
      return tree
    if 'scale' in tree:
      return {'scale': rng.uniform(0.5, 1.5, tree['scale'].shape).astype(np.float32),
              'bias': rng.normal(0.0, 0.2, tree['bias'].shape).astype(np.float32)}
    if 'var' in tree:
      return {'mean': rng.normal(0.0, 0.2, tree['mean'].shape).astype(np.float32),
              'var': rng.uniform(0.5, 1.5, tree['var'].shape).astype(np.float32)}
    return {name: visit(value) for name, value in tree.items()}

  return {'params': visit(jax.device_get(variables['params'])),
          'batch_stats': visit(jax.device_get(variables['batch_stats']))}


AUTHORS_ENCODERS = {
    'preactresnet18': authors_numpy.preact_resnet18,
    'wrn16_8': authors_numpy.wide_resnet16_8,
    'resnet50': authors_numpy.resnet50,
}


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name,image_size,shortcut', [
    ('preactresnet18', 16, 'authors'),
    ('preactresnet18', 16, 'standard'),
    ('wrn16_8', 16, 'authors'),
    ('resnet50', 64, 'authors'),
])
def test_encoders_compute_the_authors_definitions(name, image_size, shortcut, train):
  """A and the logits of our encoders (width 4, the classifier on the pooled A) against the
  authors' definitions written in NumPy (`authors_numpy`), on the same weights, with random
  BatchNorm parameters and statistics; BN with running (eval) or batch (train) statistics."""
  model = models.create_model(_config(name, image_size, autoencoder='none',
                                      preact_shortcut=shortcut))
  x = _images(image_size, batch=3, seed=7)
  init = _quick_jit(functools.partial(model.init, train=False))
  variables = _with_random_batchnorms(init({'params': _key(1), 'reparam': _key(2)}, x), 3)
  features = model.apply(variables, x, train, method='features',
                         mutable=['batch_stats'] if train else False)
  features = features[0] if train else features
  logits = model.apply(variables, model.apply(variables, features, train, method='latent'),
                       train, method='classify')

  normalized = (np.asarray(x, np.float64) - np.array([0.4914, 0.4822, 0.4465])) / np.array(
      [0.2023, 0.1994, 0.2010])
  kwargs = {'shortcut': shortcut} if name == 'preactresnet18' else {}

  def authors(dtype):
    """Their encoder and classifier in NumPy, computed in `dtype`."""
    params = authors_numpy.as_numpy(variables['params'], dtype)
    stats = authors_numpy.as_numpy(variables['batch_stats'], dtype)
    features = AUTHORS_ENCODERS[name](normalized.astype(dtype), params['encoder'],
                                      stats['encoder'], train, **kwargs)
    return features, authors_numpy.classifier(features, params['classifier']['fc'])

  expected, expected_logits = authors(np.float64)
  # Ours in float32 against their definition in float64, within a few times the float32
  # round-off of the same definition (NumPy in float32): that round-off depends on the
  # network, the batch and the mode (train-mode BatchNorm over few values amplifies it up to
  # about 1e-4 of max |A| for ResNet-50), so it is measured, not assumed.
  rounded, rounded_logits = authors(np.float32)
  for got, exact, float32 in ((features, expected, rounded),
                              (logits, expected_logits, rounded_logits)):
    top = np.abs(exact).max()
    round_off = np.abs(float32.astype(np.float64) - exact).max()
    np.testing.assert_allclose(got, exact, atol=max(8 * round_off, 1e-6 * top))
  top = np.abs(expected).max()
  params = authors_numpy.as_numpy(variables['params'])
  stats = authors_numpy.as_numpy(variables['batch_stats'])
  if name == 'preactresnet18':  # The other shortcut is a different function (the test bites).
    other = authors_numpy.preact_resnet18(
        normalized, params['encoder'], stats['encoder'], train,
        shortcut='standard' if shortcut == 'authors' else 'authors')
    assert np.abs(other - expected).max() > 0.05 * top


def test_preact_shortcut_is_checked():
  with pytest.raises(ValueError, match="model.preact_shortcut='x'; valid: authors, standard"):
    models.create_model(_config(preact_shortcut='x'))
  with pytest.raises(ValueError, match='applies to preactresnet18 only'):
    models.create_model(_config('wrn16_8', preact_shortcut='standard'))


def test_wrn_final_batchnorm_keeps_the_authors_momentum():
  model, variables, x = _built('wrn16_8', autoencoder='none')
  (_, state) = model.apply(variables, x, True, method='features',
                           mutable=['batch_stats', 'intermediates'],
                           capture_intermediates=True)
  last_block = state['intermediates']['encoder']['layer3_1']['__call__'][0]
  # PyTorch BatchNorm2d(512, momentum=0.9): the running mean moves 0.9 of the way.
  np.testing.assert_allclose(state['batch_stats']['encoder']['bn1']['mean'],
                             0.9 * np.asarray(last_block).mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


# Manifold mixup hook and transformations.


def _at(layer, fn):
  """A mixing hook that applies `fn` after stage `layer` only."""
  return lambda stage, h: fn(h) if stage == layer else h


def test_manifold_mixup_hook():
  model, variables, x = _built()
  assert model.num_stages == 4
  plain = model.apply(variables, x, False, method='features')

  def reverse(h):
    return h[::-1]

  # Eval mode is per example, so reversing the batch at any layer reverses A.
  for layer in range(model.num_stages + 1):
    mixed = model.apply(variables, x, False, _at(layer, reverse), method='features')
    np.testing.assert_allclose(mixed, plain[::-1], rtol=1e-5, atol=1e-5)
  # Averaging the two examples after stage 2 makes their A equal, unlike the plain A.
  averaged = model.apply(variables, x, False, _at(2, lambda h: 0.5 * (h + h[::-1])),
                         method='features')
  np.testing.assert_allclose(averaged[0], averaged[1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(plain[0], plain[1], atol=1e-3)
  # The hook sees every stage boundary once, the input image first.
  seen = []
  model.apply(variables, x, False, lambda stage, h: seen.append((stage, h.shape)) or h,
              method='features')
  assert [stage for stage, _ in seen] == list(range(model.num_stages + 1))
  assert seen[0][1] == x.shape


def test_usable_under_switch_vmap_and_shard_map():
  model, variables, x = _built(autoencoder='none')

  def branch(layer):
    return lambda v, x: model.apply(v, x, False, _at(layer, lambda h: h[::-1]),
                                    method='features')

  @jax.jit
  def switched(index, v, x):
    return jax.lax.switch(index, [branch(0), branch(3)], v, x)

  expected = model.apply(variables, x, False, method='features')[::-1]
  for index in range(2):
    np.testing.assert_allclose(switched(index, variables, x), expected, rtol=1e-5, atol=1e-5)

  logits = model.apply(variables, x, train=False)
  per_example = jax.jit(jax.vmap(
      lambda image: model.apply(variables, image[None], train=False)[0]))(x)
  np.testing.assert_allclose(per_example, logits, rtol=1e-5, atol=1e-5)

  mesh = jax.make_mesh((2,), ('data',))
  spec = jax.sharding.PartitionSpec('data')
  x = jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))
  sharded = jax.jit(jax.shard_map(lambda x: model.apply(variables, x, train=False),
                                  mesh=mesh, in_specs=spec, out_specs=spec))(x)
  np.testing.assert_allclose(sharded, logits, rtol=1e-5, atol=1e-5)


# Errors.


@pytest.mark.parametrize('field,value,valid', [
    ('name', 'resnet18', models.ENCODERS),
    ('autoencoder', 'gan', ('ae', 'vae', 'none')),
    ('latent', 'matrix', ('vector', 'tensor')),
    ('dtype', 'float16', ('float32', 'bfloat16')),
])
def test_unknown_names_list_the_valid_ones(field, value, valid):
  with pytest.raises(ValueError, match=f'model.{field}') as error:
    models.create_model(_config(**{field: value}))
  assert all(option in str(error.value) for option in valid)


@pytest.mark.parametrize('overrides,message', [
    (dict(feature_resolution=3), r'valid: 0 \(native\), a divisor of 4'),
    (dict(feature_resolution=1, latent='tensor'), 'even side'),
    (dict(autoencoder='none', latent='tensor'), "latent='vector'"),
    (dict(autoencoder='none', latent_dim=16), 'latent_dim 0 or 32'),
    (dict(width=0), 'positive int'),
])
def test_bad_settings_are_explained(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.create_model(_config(image_size=32, **overrides))


def test_bad_image_size_and_missing_pieces():
  with pytest.raises(ValueError, match='multiple of 32'):
    models.create_model(_config('resnet50', image_size=48))
  with pytest.raises(ValueError, match='power of 2'):
    models.create_model(_config('resnet50', image_size=224, feature_resolution=1))
  model, variables, x = _built()
  with pytest.raises(ValueError, match="autoencoder='none'"):
    model.apply(variables, x, method='cam')
  model, variables, x = _built(autoencoder='none')
  z = model.apply(variables, model.apply(variables, x, False, method='features'), False,
                  method='latent')
  with pytest.raises(ValueError, match='needs a decoder'):
    model.apply(variables, z, False, method='decode')
