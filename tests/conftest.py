"""Test setup, before JAX is imported.

* Two CPU devices, so that the data-parallel paths (shard_map over a 2-device mesh, pmap)
  run in every test process.
* A persistent compilation cache shared by the test processes (xdist workers and the
  `python -m main` runs that tests start inherit the environment), so a program compiled
  once is not compiled again.
* TensorFlow (the tf.data back end only) must not grab accelerators.
"""

import os
import tempfile

# Tests compile far more than they run: XLA's CPU optimisations off, here and in the
# subprocesses they start (but for the `slow` accuracy run).
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + f' {FAST_COMPILE}'
                           + ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'alignmix_jax_test_compile_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
