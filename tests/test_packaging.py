"""The package as `pip install .` builds it: its files, version and dependencies."""

import email
import os
import subprocess
import sys
import zipfile

import alignmix_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_wheel_holds_the_package_its_version_and_no_tensorflow_in_the_core(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
       '-w', str(tmp_path), REPO], capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  wheels = list(tmp_path.glob('alignmix_jax-*.whl'))
  assert len(wheels) == 1, wheels
  with zipfile.ZipFile(wheels[0]) as wheel:
    names = wheel.namelist()
    metadata = email.message_from_bytes(wheel.read(
        next(name for name in names if name.endswith('.dist-info/METADATA'))))
  for module in ('alignment.py', 'mixup.py', 'data/__init__.py', 'data/device.py',
                 'data/tfdata.py', 'models/preact_resnet.py', 'evaluation/runner.py'):
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
