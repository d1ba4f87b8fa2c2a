"""The methods: one registry that the configs, the step, the command line, the benchmarks and
the tables read.

A method (`config.mixup.method`) is a table of (mode, probability), the modes being those of
`modes` (what is mixed where); the train step draws a mode on the device at every step. A
method also names the config fields it sets (its paper's network and hyperparameters, e.g.
no decoder and alpha 1 for CutMix) and its label in tables.

  from alignmix_jax import methods
  config = methods.configure(config, 'cutmix')   # what `--config digits:cutmix` does
  methods.table(config)                          # (('cutmix', 1.0),)
  methods.get('alignmix').label                  # 'AlignMix/AE'

Adding a method: `register(Method(...))` here, and its operation in `modes` and `mixup` if
it needs a new one; every config (`--config <setting>:<name>`), the comparison and the
throughput benchmark then offer it.
"""

import dataclasses
from typing import Any, Callable, Mapping

from alignmix_jax import configs
from alignmix_jax import modes as modes_lib


@dataclasses.dataclass(frozen=True)
class Method:
  """One method.

  Attributes:
    name: `config.mixup.method`, and the argument of a config (`digits:<name>`).
    label: its name in tables and figures.
    description: one line for `--help` and the docs.
    weights: `config -> ((mode name, weight), ...)`, the weights before normalisation.
    fields: the config fields the method sets (dotted names), after the setting's own.
  """
  name: str
  label: str
  description: str
  weights: Callable[[Any], tuple]
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_REGISTRY = {}


def register(method):
  """Adds `method` to the registry (its name must be new); returns it."""
  if method.name in _REGISTRY:
    raise ValueError(f'A method named {method.name!r} is registered already.')
  _REGISTRY[method.name] = method
  return method


def names():
  """Every registered method's name, in the order of registration."""
  return tuple(_REGISTRY)


def get(name):
  """The `Method` called `name`, or a ValueError naming the valid ones."""
  if name not in _REGISTRY:
    raise ValueError(f'Unknown method {name!r}; valid: {", ".join(_REGISTRY)}.')
  return _REGISTRY[name]


def configure(config, name):
  """Sets `config.mixup.method = name` and the fields the method sets; returns `config`."""
  return configs.override(config, {'mixup.method': name, **get(name).fields})


def table(config):
  """`((mode name, probability), ...)` of `config.mixup.method`, zero weights dropped.

  Raises:
    ValueError: an unknown method, or weights that make no distribution.
  """
  weights = tuple((name, float(w)) for name, w in get(config.mixup.method).weights(config)
                  if w > 0)
  total = sum(w for _, w in weights)
  return tuple((name, w / total) for name, w in weights)


def table_modes(config):
  """The `modes.Mode`s of `table(config)`, in order."""
  return tuple(modes_lib.mode(name, align=config.mixup.align,
                              align_latent=config.mixup.align_latent)
               for name, _ in table(config))


def check(config, num_stages):
  """Raises a ValueError for a method that cannot run on an encoder of `num_stages` stages:
  an unknown method, bad weights, or mixing after a stage the encoder lacks (the targets
  would be mixed while the images are not)."""
  for mode in table_modes(config):
    if mode.layer is not None and not 0 <= mode.layer <= num_stages:
      raise ValueError(
          f'{config.mixup.method} mixes after stage {mode.layer} ({mode.name}), but '
          f'{config.model.name} has stages 1 to {num_stages} (0: the input); fix '
          'mixup.manifold_layers.')


def _five_modes(config):
  weights = tuple(config.mixup.mode_weights)
  if (len(weights) != len(modes_lib.FIVE_MODES) or min(weights) < 0 or sum(weights) <= 0):
    raise ValueError(f'mixup.mode_weights must be {len(modes_lib.FIVE_MODES)} non-negative '
                     f'weights for {", ".join(modes_lib.FIVE_MODES)} with a positive sum; '
                     f'got {weights}.')
  return tuple(zip(modes_lib.FIVE_MODES, weights))


def _manifold_layers(config):
  layers = tuple(config.mixup.manifold_layers)
  if not layers:
    raise ValueError('mixup.manifold_layers is empty; give e.g. (0, 1, 2).')
  return tuple(('input' if k == 0 else f'layer{k}', 1.0) for k in layers)


# In the order of the paper's tables. The baselines run without a decoder (the paper's
# Baseline network, "AlignMix/-"), with the mixing coefficients of their papers.
register(Method(
    'vanilla', 'Baseline', 'no mixing (cross-entropy only), no decoder',
    lambda config: (('clean', 1.0),),
    {'model.autoencoder': 'none'}))
register(Method(
    'input_mixup', 'Input mixup', 'mixup of the images (Zhang et al. 2018), alpha 1',
    lambda config: (('input', 1.0),),
    {'model.autoencoder': 'none', 'mixup.alpha': 1.0}))
register(Method(
    'manifold_mixup', 'Manifold mixup',
    'mixup after a stage drawn uniformly from mixup.manifold_layers (0: the input; Verma et '
    'al. 2019), alpha 2',
    _manifold_layers,
    {'model.autoencoder': 'none', 'mixup.alpha': 2.0, 'mixup.manifold_layers': (0, 1, 2)}))
register(Method(
    'cutmix', 'CutMix', "a box of x' pasted into x, lam from the box (Yun et al. 2019), alpha 1",
    lambda config: (('cutmix', 1.0),),
    {'model.autoencoder': 'none', 'mixup.alpha': 1.0}))
register(Method(
    'puzzlemix', 'PuzzleMix',
    "saliency-guided blocks of x and x' by a graph cut, then transported (Kim et al. 2020), "
    'alpha 1; settings in mixup.puzzlemix',
    lambda config: (('puzzlemix', 1.0),),
    {'model.autoencoder': 'none', 'mixup.alpha': 1.0,
     'mixup.classification_loss': 'softmax_bce'}))
register(Method(
    'comixup', 'Co-Mixup',
    'groups of inputs mixed into as many outputs by saliency, diversity and a graph cut per '
    'output (Kim et al. 2021), Dirichlet alpha 2; settings in mixup.comixup',
    lambda config: (('comixup', 1.0),),
    {'model.autoencoder': 'none', 'mixup.alpha': 2.0,
     'mixup.classification_loss': 'softmax_bce'}))
register(Method(
    'alignmix_official', "AlignMix (authors' code)",
    "the authors' code: input mixup 1/2, (13) 1/4, (14) 1/4, no decoder",
    lambda config: (('input', 0.5), ('feature', 0.25), ('feature_reversed', 0.25)),
    {'model.autoencoder': 'none', 'mixup.alpha': 2.0}))
register(Method(
    'alignmix', 'AlignMix/AE',
    'the paper: clean, input, latent, (13) and (14) drawn by mixup.mode_weights (uniform), '
    'with the autoencoder',
    _five_modes))
