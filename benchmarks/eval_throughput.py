"""Evaluation throughput: clean top-1, FGSM and PGD, on synthetic data on the device.

  python -m benchmarks.eval_throughput [--config digits] [--devices N]
      [--steps 10] [--config.eval.batch_size=500 --config.model.dtype=bfloat16 ...]

One JSON line per program (`clean`, `fgsm`, `pgd`), each the jitted per-batch computation
of `alignmix_jax/evaluation` (the attack, then the error count on the attacked images):
images/s from the median of `--steps` batches after compilation, compile time, and the
attack's settings (`config.eval`: FGSM eps; PGD eps, step and iterations, 20 in the paper).
The variables are freshly initialised (speed does not depend on their values); the batch of
`config.eval.batch_size` images is sharded over the devices as `--mode eval` does.
"""

import functools
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from alignmix_jax import configs
from alignmix_jax import models
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax.evaluation import attacks

config_flags.DEFINE_config_file('config', configs.resolve('digits'), 'A setting or config '
                                'file, as for main.py; override fields with '
                                '--config.<field>=<value>.')
flags.DEFINE_integer('devices', 0, 'Use the first N devices (0: all).')
flags.DEFINE_integer('steps', 10, 'Timed batches per program.')
FLAGS = flags.FLAGS


def programs(config, logits_fn):
  """`{name: (images, labels, key) -> wrong [B]}`: `attacks.wrong_after`, as the evaluation
  programs compute it."""
  ev = config.eval
  settings = dict(fgsm_eps=ev.fgsm_eps, pgd_eps=ev.pgd_eps, pgd_step=ev.pgd_step,
                  pgd_iters=ev.pgd_iters)
  return {attack: functools.partial(attacks.wrong_after, attack, logits_fn, **settings)
          for attack in ('clean', 'fgsm', 'pgd')}


def measure(config, mesh, num_steps):
  """One record per program."""
  model = models.create_model(config)
  size, batch_size = config.dataset.image_size, config.eval.batch_size
  variables = state_lib.create_train_state(config, mesh).variables()
  rng = np.random.default_rng(0)
  images, labels = jax.device_put(
      (rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32),
       rng.integers(0, config.dataset.num_classes, batch_size, dtype=np.int32)),
      parallel.sharded(mesh))
  key = jax.random.PRNGKey(config.seed)
  logits_fn = lambda x: model.apply(variables, x, train=False)
  records = []
  for name, program in programs(config, logits_fn).items():
    run = jax.jit(program)
    start = time.perf_counter()
    compiled = run.lower(images, labels, key).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(images, labels, key))
    times = []
    for _ in range(num_steps):
      start = time.perf_counter()
      jax.block_until_ready(compiled(images, labels, key))
      times.append(time.perf_counter() - start)
    median_s = statistics.median(times)
    records.append({
        'benchmark': 'eval_throughput', 'program': name, 'model': config.model.name,
        'width': config.model.width, 'autoencoder': config.model.autoencoder,
        'image_size': size, 'batch': batch_size, 'devices': mesh.size,
        'dtype': config.model.dtype, 'pgd_iters': config.eval.pgd_iters if name == 'pgd'
        else None, 'steps': num_steps, 'compile_s': round(compile_s, 2),
        'batch_ms_median': round(1e3 * median_s, 2),
        'images_per_s': round(batch_size / median_s, 1),
        'device': jax.devices()[0].device_kind})
  return records


def main(argv):
  del argv
  devices = jax.devices()[:FLAGS.devices] if FLAGS.devices else jax.devices()
  for record in measure(FLAGS.config, parallel.data_mesh(devices), FLAGS.steps):
    print(json.dumps(record), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: FLAGS(configs.command_line(argv)))
