"""Tests of alignmix_jax.methods, the one registry of the methods: names, order and labels,
`configure` (exactly the method's fields), `table` (normalised, zero weights dropped),
`table_modes`, `check`, the errors, and a method registered in one place reaching every
config, the validation and the benchmarks' rows."""

import dataclasses

import numpy as np
import pytest

import tiny_config
from alignmix_jax import configs
from alignmix_jax import methods
from alignmix_jax import modes
from alignmix_jax import validation
from alignmix_jax.configs import default
from alignmix_jax.configs import digits

# The paper's tables, in order: name -> label.
LABELS = {'vanilla': 'Baseline', 'input_mixup': 'Input mixup',
          'manifold_mixup': 'Manifold mixup', 'cutmix': 'CutMix', 'puzzlemix': 'PuzzleMix',
          'comixup': 'Co-Mixup',
          'alignmix_official': "AlignMix (authors' code)", 'alignmix': 'AlignMix/AE'}
# The fields each method sets (its paper's network and mixing coefficient).
FIELDS = {
    'vanilla': {'model.autoencoder': 'none'},
    'input_mixup': {'model.autoencoder': 'none', 'mixup.alpha': 1.0},
    'manifold_mixup': {'model.autoencoder': 'none', 'mixup.alpha': 2.0,
                       'mixup.manifold_layers': (0, 1, 2)},
    'cutmix': {'model.autoencoder': 'none', 'mixup.alpha': 1.0},
    'puzzlemix': {'model.autoencoder': 'none', 'mixup.alpha': 1.0,
                  'mixup.classification_loss': 'softmax_bce'},
    'comixup': {'model.autoencoder': 'none', 'mixup.alpha': 2.0,
                'mixup.classification_loss': 'softmax_bce'},
    'alignmix_official': {'model.autoencoder': 'none', 'mixup.alpha': 2.0},
    'alignmix': {},
}


def _leaves(config, prefix=''):
  """`{dotted field: value}` of every leaf of a ConfigDict."""
  out = {}
  for name, value in config.items():
    if hasattr(value, 'items'):
      out.update(_leaves(value, f'{prefix}{name}.'))
    else:
      out[f'{prefix}{name}'] = tuple(value) if isinstance(value, list) else value
  return out


def test_the_methods_their_order_and_labels():
  assert methods.names() == tuple(LABELS)
  for name, label in LABELS.items():
    method = methods.get(name)
    assert (method.name, method.label) == (name, label)
    assert method.description and '\n' not in method.description  # One line for --help.
    assert dict(method.fields) == FIELDS[name]


@pytest.mark.parametrize('name', list(LABELS))
def test_configure_sets_the_method_and_exactly_its_fields(name):
  # A base whose fields all differ from what any method sets, so every set field shows.
  base = default.get_config()
  base.mixup.method = 'none_yet'
  base.model.autoencoder = 'vae'
  base.mixup.alpha = 7.0
  base.mixup.manifold_layers = (3,)
  before = _leaves(base)
  configured = methods.configure(base, name)
  assert configured is base  # In place, and returned.
  after = _leaves(configured)
  changed = {field for field in before if before[field] != after[field]}
  assert changed == {'mixup.method', *FIELDS[name]}
  assert after['mixup.method'] == name
  for field, value in FIELDS[name].items():
    assert after[field] == value


def _with(**fields):
  return tiny_config.with_overrides(**fields)


def test_table_normalises_the_weights_and_drops_the_zero_ones():
  five = methods.table(_with(**{'mixup.mode_weights': (2.0, 0.0, 1.0, 1.0, 0.0)}))
  assert five == (('clean', 0.5), ('latent', 0.25), ('feature', 0.25))
  uniform = methods.table(tiny_config.get_config())
  assert [name for name, _ in uniform] == list(modes.FIVE_MODES)
  np.testing.assert_allclose([p for _, p in uniform], 0.2)
  assert methods.table(_with(**{'mixup.method': 'alignmix_official'})) == (
      ('input', 0.5), ('feature', 0.25), ('feature_reversed', 0.25))
  manifold = methods.table(_with(**{'mixup.method': 'manifold_mixup',
                                    'mixup.manifold_layers': (0, 2, 3, 4)}))
  assert manifold == tuple((name, 0.25) for name in ('input', 'layer2', 'layer3', 'layer4'))
  for name, mode in (('vanilla', 'clean'), ('input_mixup', 'input'), ('cutmix', 'cutmix'),
                     ('puzzlemix', 'puzzlemix'), ('comixup', 'comixup')):
    assert methods.table(_with(**{'mixup.method': name})) == ((mode, 1.0),)


def test_table_modes_are_the_modes_of_the_table_with_the_alignment_settings():
  config = _with(**{'mixup.mode_weights': (1.0, 0.0, 1.0, 1.0, 1.0)})
  got = methods.table_modes(config)
  assert [mode.name for mode in got] == ['clean', 'latent', 'feature', 'feature_reversed']
  assert got[2] == modes.Mode('feature', features_op=modes.ALIGN)
  assert got[3] == modes.Mode('feature_reversed', features_op=modes.ALIGN, reverse=True)
  assert got[1].latent_op == modes.MIXUP
  config.mixup.align = False  # Plain feature mixup both ways.
  config.mixup.align_latent = True
  unaligned = methods.table_modes(config)
  assert [mode.features_op for mode in unaligned[2:]] == [modes.MIXUP, modes.MIXUP]
  assert not any(mode.reverse for mode in unaligned)
  assert unaligned[1].latent_op == modes.ALIGN
  cutmix = methods.table_modes(_with(**{'mixup.method': 'cutmix'}))
  assert cutmix == (modes.Mode('cutmix', layer=0, layer_op=modes.CUTMIX),)
  puzzle = methods.table_modes(_with(**{'mixup.method': 'puzzlemix'}))
  assert puzzle == (modes.Mode('puzzlemix', layer=0, layer_op=modes.PUZZLEMIX),)


def test_check_refuses_mixing_after_a_stage_the_encoder_lacks():
  config = methods.configure(tiny_config.get_config(), 'manifold_mixup')
  config.mixup.manifold_layers = (0, 4)
  methods.check(config, num_stages=4)  # PreActResNet18: stages 1 to 4.
  with pytest.raises(ValueError, match=r'manifold_mixup mixes after stage 4 \(layer4\), but '
                                       r'preactresnet18 has stages 1 to 3'):
    methods.check(config, num_stages=3)
  methods.check(tiny_config.get_config(), num_stages=0)  # No stage mixed: nothing to check.


@pytest.mark.parametrize('fields, message', [
    ({'mixup.method': 'mixmatch'},
     "Unknown method 'mixmatch'; valid: vanilla, input_mixup, manifold_mixup, cutmix, "
     'puzzlemix, comixup, alignmix_official, alignmix.'),
    ({'mixup.mode_weights': (1.0, 1.0)}, 'mixup.mode_weights must be 5 non-negative weights'),
    ({'mixup.mode_weights': (1.0, -1.0, 1.0, 1.0, 1.0)}, 'non-negative'),
    ({'mixup.mode_weights': (0.0,) * 5}, 'with a positive sum; got (0.0, 0.0, 0.0, 0.0, 0.0)'),
    ({'mixup.method': 'manifold_mixup', 'mixup.manifold_layers': ()},
     'mixup.manifold_layers is empty'),
])
def test_unknown_names_and_bad_weights_are_errors_that_say_the_fix(fields, message):
  with pytest.raises(ValueError) as error:
    methods.table(_with(**fields))
  assert message in str(error.value)


def test_the_valid_names_are_listed_wherever_a_method_is_named():
  valid = 'valid: ' + ', '.join(methods.names()) + '.'
  for call in (lambda: methods.get('mixmatch'),
               lambda: methods.configure(default.get_config(), 'mixmatch'),
               lambda: digits.get_config('mixmatch')):
    with pytest.raises(ValueError) as error:
      call()
    assert str(error.value) == f"Unknown method 'mixmatch'; {valid}"


def test_a_name_is_registered_once():
  with pytest.raises(ValueError, match="A method named 'cutmix' is registered already"):
    methods.register(dataclasses.replace(methods.get('cutmix'), label='CutMix again'))
  assert methods.get('cutmix').label == 'CutMix' and methods.names() == tuple(LABELS)


def test_a_method_registered_in_one_place_reaches_every_config_and_the_checks():
  name = 'half_input_test_only'
  method = methods.Method(
      name, 'Half input', 'clean or input mixup, even odds (a test method)',
      lambda config: (('clean', 1.0), ('input', 1.0), ('cutmix', 0.0)),
      {'model.autoencoder': 'none', 'mixup.alpha': 0.5})
  assert methods.register(method) is method
  try:
    assert methods.names() == (*LABELS, name)
    config = digits.get_config(name)  # A setting's config takes it as its argument ...
    assert config.mixup.method == name
    assert (config.model.autoencoder, config.mixup.alpha) == ('none', 0.5)
    loaded = configs.load(f'digits:{name}')  # ... and so does `--config digits:<name>`.
    assert loaded.to_dict() == config.to_dict()
    assert methods.table(config) == (('clean', 0.5), ('input', 0.5))
    assert [mode.name for mode in methods.table_modes(config)] == ['clean', 'input']
    validation.validate(config, 2, mode='train')
    validation.validate(config, 2, mode='eval')
  finally:
    del methods._REGISTRY[name]  # pylint: disable=protected-access
  assert methods.names() == tuple(LABELS)
  with pytest.raises(ValueError, match=f"Unknown method '{name}'"):
    digits.get_config(name)


def test_the_comparisons_rows_are_the_registry():
  """The comparison builds its rows from the registry at import: every registered method is
  a row, in order, with its label (so a new method is a row without touching it)."""
  from benchmarks import compare_methods  # pylint: disable=g-import-not-at-top
  rows = list(compare_methods.ROWS)
  assert rows[:len(methods.names())] == list(methods.names())
  assert set(rows[len(methods.names()):]) == set(compare_methods.VARIANTS)
  for name in methods.names():
    row = compare_methods.ROWS[name]
    assert (row.label, row.method, row.overrides) == (methods.get(name).label, name, {})
