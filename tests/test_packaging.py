"""The package as `pip install .` builds it: its files, version and dependencies, and the
installed copy trains from any directory without the repository."""

import email
import os
import subprocess
import sys
import zipfile

import pytest

import alignmix_jax
from alignmix_jax import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """The wheel `pip install .` builds from this checkout."""
  folder = tmp_path_factory.mktemp('wheel')
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
       '-w', str(folder), REPO], capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  wheels = list(folder.glob('alignmix_jax-*.whl'))
  assert len(wheels) == 1, wheels
  return wheels[0]


def test_the_wheel_holds_the_package_its_version_and_no_tensorflow_in_the_core(wheel):
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    metadata = email.message_from_bytes(archive.read(
        next(name for name in names if name.endswith('.dist-info/METADATA'))))
  for module in ('__main__.py', 'alignment.py', 'mixup.py', 'methods.py', 'data/__init__.py',
                 'data/device.py', 'data/tfdata.py', 'models/preact_resnet.py',
                 'evaluation/runner.py', 'configs/__init__.py', 'configs/default.py',
                 *(f'configs/{name}.py' for name in configs.NAMES)):
    assert f'alignmix_jax/{module}' in names
  assert not any(name.startswith(('tests/', 'configs/', 'benchmarks/')) for name in names)
  assert metadata['Version'] == alignmix_jax.__version__
  requires = metadata.get_all('Requires-Dist')
  core = [r for r in requires if 'extra ==' not in r]
  assert {r.split('>')[0].split('<')[0].split('=')[0].strip().lower() for r in core} >= {
      'jax', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections', 'numpy', 'absl-py',
      'tensorboardx'}
  assert not any('tensorflow' in r for r in core)  # TensorFlow only in the [tfds] extra.
  assert any(r.startswith('tensorflow-datasets') and 'extra == "tfds"' in r for r in requires)
  assert all(('>' in r or '<' in r) for r in core)  # Ranges, not pins.


def test_the_installed_package_runs_its_settings_from_any_directory(wheel, tmp_path):
  """The wheel installed into a folder of its own, run from another folder with that folder
  alone on the path (this environment's packages, not this checkout): the settings ship with
  it, a short digits run trains and `--mode eval` evaluates it."""
  site = tmp_path / 'site'
  result = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q',
                           '--target', str(site), str(wheel)], capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {**os.environ, 'PYTHONPATH': str(site)}
  probe = subprocess.run(
      [sys.executable, '-c', 'import alignmix_jax; print(alignmix_jax.__file__)'],
      cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert probe.stdout.startswith(str(site))  # The installed copy, not the checkout.
  run = [sys.executable, '-m', 'alignmix_jax', '--config', 'digits:vanilla', '--workdir',
         'run', '--config.dataset.image_size=16', '--config.model.width=4',
         '--config.num_train_steps=2', '--config.log_every_steps=1',
         '--config.checkpoint_every_steps=2', '--config.eval.batch_size=120']
  for extra in ([], ['--mode', 'eval', '--config.eval.programs=("classification",)']):
    result = subprocess.run(run + extra, cwd=elsewhere, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(elsewhere / 'run' / 'checkpoints')) == ['2']
  assert 'top1_error' in (elsewhere / 'run' / 'eval.json').read_text()
