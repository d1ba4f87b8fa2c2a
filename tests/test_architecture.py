"""The package's layers, read from its sources with `ast`: a module imports modules of its own
layer or lower (module-level and function-level imports of `alignmix_jax.*`), module-level
imports make no cycle, and the light entry points load nothing heavy (checked in a fresh
interpreter).

  core  the library: operators, models, data, methods and configs, the state, checkpoints,
        logging, the workdir, the evaluation programs;
  step  what composes the core into a step or checks a whole config (train_step,
        validation);
  top   what runs (train, evaluation.runner, visualize, cli, __main__).
"""

import ast
import json
import os
import subprocess
import sys

import pytest

import helpers

PACKAGE = 'alignmix_jax'
ROOT = os.path.join(helpers.REPO, PACKAGE)
CORE_PACKAGES = ('configs', 'models', 'data')  # Every module of these is core.
LAYERS = {
    'core': {'', 'alignment', 'mixup', 'puzzlemix', 'comixup', 'modes', 'methods', 'losses', 'configs',
             'models',
             'parallel', 'data', 'optim', 'state', 'checkpointing', 'metric_logging', 'console',
             'workdir', 'evaluation', 'evaluation.batches', 'evaluation.classification',
             'evaluation.attacks', 'evaluation.calibration', 'evaluation.ood',
             'evaluation.localization'},
    'step': {'train_step', 'validation'},
    'top': {'train', 'evaluation.runner', 'visualize', 'cli', '__main__'},
}
RANK = {'core': 0, 'step': 1, 'top': 2}


def _name(relative_path):
  """'evaluation/ood.py' -> 'alignmix_jax.evaluation.ood'; '__init__.py' -> 'alignmix_jax'."""
  parts = relative_path[:-3].split(os.sep)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join([PACKAGE, *parts])


def package_sources():
  """`{module name: (source, is_package)}` of every module of the package."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for file in files:
      if file.endswith('.py'):
        path = os.path.join(folder, file)
        with open(path, encoding='utf-8') as f:
          out[_name(os.path.relpath(path, ROOT))] = (f.read(), file == '__init__.py')
  return out


def _resolve(module, is_package, node, names):
  """The modules of `names` an import statement in `module` loads (those of the package)."""
  if isinstance(node, ast.Import):
    return {alias.name for alias in node.names if alias.name.split('.')[0] == PACKAGE}
  if node.level:  # Relative: from the module's package, up `level - 1` packages.
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    source = '.'.join(base + ([node.module] if node.module else []))
  else:
    source = node.module or ''
  if source.split('.')[0] != PACKAGE:
    return set()
  # `from a import b`: the module a.b if there is one, else a name of a.
  return {f'{source}.{alias.name}' if f'{source}.{alias.name}' in names else source
          for alias in node.names}


def imports(sources):
  """`{module: (module-level imports, function-level imports)}` of `sources` (as
  `package_sources` gives), the package's modules only."""
  names = set(sources)
  out = {}
  for module, (source, is_package) in sources.items():
    top, inner = set(), set()

    def visit(node, in_function, module=module, is_package=is_package, top=top, inner=inner):
      for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
          (inner if in_function else top).update(_resolve(module, is_package, child, names))
        visit(child, in_function or isinstance(child, (ast.FunctionDef,
                                                       ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    out[module] = (top - {module}, inner - {module} - top)
  return out


def layer_of(module):
  short = module[len(PACKAGE) + 1:] if module != PACKAGE else ''
  found = [layer for layer, members in LAYERS.items() if short in members]
  if not found and short.split('.')[0] in CORE_PACKAGES:
    found = ['core']
  return found[0] if len(found) == 1 else None


def upward_imports(graph):
  """`[(module, its layer, imported module, that layer)]` for imports from a lower layer."""
  return sorted((module, layer_of(module), target, layer_of(target))
                for module, (top, inner) in graph.items() for target in top | inner
                if RANK[layer_of(target)] > RANK[layer_of(module)])


def cycle(edges):
  """A cycle of `{node: set of nodes}` as a list `[a, b, ..., a]`, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for target in sorted(edges.get(node, ())):
      if state.get(target) == 'open':
        return stack[stack.index(target):] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(edges):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


@pytest.fixture(scope='module')
def graph():
  return imports(package_sources())


def test_every_module_has_one_layer(graph):
  unplaced = [module for module in graph if layer_of(module) is None]
  assert not unplaced, f'Put these modules in a layer of LAYERS: {unplaced}'
  listed = {f'{PACKAGE}.{short}' if short else PACKAGE for members in LAYERS.values()
            for short in members}
  assert listed <= set(graph), listed - set(graph)  # No stale names in LAYERS.


def test_the_import_graph_is_read_from_the_sources(graph):
  """Module-level, function-level, `import a.b`, `from a import b` and `from a.b import c`
  imports are all found (so the checks below see every edge)."""
  train_top, _ = graph['alignmix_jax.train']
  assert {'alignmix_jax.train_step', 'alignmix_jax.validation', 'alignmix_jax.state',
          'alignmix_jax.evaluation.classification'} <= train_top
  assert 'alignmix_jax.parallel' in graph['alignmix_jax.train_step'][0]  # `import AXIS`.
  assert 'alignmix_jax.models' in graph['alignmix_jax.models.summary'][0]
  cli_top, cli_inner = graph['alignmix_jax.cli']
  assert 'alignmix_jax.train' not in cli_top
  assert {'alignmix_jax.train', 'alignmix_jax.evaluation.runner',
          'alignmix_jax.models.summary'} <= cli_inner
  assert 'alignmix_jax.data.tfdata' in graph['alignmix_jax.data'][1]  # Only when used.


def test_no_module_imports_a_higher_layer(graph):
  assert upward_imports(graph) == []


def test_module_level_imports_make_no_cycle(graph):
  assert cycle({module: top for module, (top, _) in graph.items()}) is None


def test_the_checks_flag_an_upward_import_and_a_cycle():
  sources = package_sources()
  sources['alignmix_jax.mixup'] = (sources['alignmix_jax.mixup'][0]
                                   + '\n\ndef f():\n  from alignmix_jax import train\n', False)
  sources['alignmix_jax.losses'] = ('from . import validation\n', False)
  sources['alignmix_jax.models.vgg'] = ('from ..evaluation import runner\n', False)
  assert upward_imports(imports(sources)) == [
      ('alignmix_jax.losses', 'core', 'alignmix_jax.validation', 'step'),
      ('alignmix_jax.mixup', 'core', 'alignmix_jax.train', 'top'),
      ('alignmix_jax.models.vgg', 'core', 'alignmix_jax.evaluation.runner', 'top')]
  # state imports optim at module level; optim importing state closes a cycle.
  sources = package_sources()
  sources['alignmix_jax.optim'] = ('import alignmix_jax.state\n', False)
  graph = imports(sources)
  assert upward_imports(graph) == []  # Within the core: only the cycle is wrong.
  found = cycle({module: top for module, (top, _) in graph.items()})
  assert found in (['alignmix_jax.optim', 'alignmix_jax.state', 'alignmix_jax.optim'],
                   ['alignmix_jax.state', 'alignmix_jax.optim', 'alignmix_jax.state']), found
  assert cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def _loaded_after(statement):
  """The modules a fresh interpreter has loaded after `statement`."""
  code = f'import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))'
  result = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, 'PYTHONPATH': helpers.REPO})
  assert result.returncode == 0, result.stderr[-2000:]
  return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_data_package_loads_no_step_and_no_training_libraries():
  loaded = _loaded_after('import alignmix_jax.data')
  assert 'alignmix_jax.data' in loaded and 'jax' in loaded
  assert not {'alignmix_jax.train_step', 'flax', 'optax'} & loaded


def test_the_configs_and_the_methods_load_no_jax():
  loaded = _loaded_after('import alignmix_jax.configs, alignmix_jax.methods')
  assert {'alignmix_jax.configs', 'alignmix_jax.methods', 'alignmix_jax.modes'} <= loaded
  assert 'jax' not in loaded and not any(name.startswith('jax.') for name in loaded)
