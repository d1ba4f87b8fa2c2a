"""Times the batched alignment (cost, Sinkhorn, transport) of one training batch.

  python -m benchmarks.alignment [--batch 128] [--channels 512] [--sides 4,8] [--iters 100]

Prints one JSON line per feature side: milliseconds per batch after compilation (median of
`--repeats` runs) and the device it ran on.
"""

import argparse
import json
import time

import jax
import numpy as np

from alignmix_jax import alignment


def time_alignment(batch, side, channels, num_iters, repeats):
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  features = jax.random.normal(keys[0], (batch, side, side, channels))
  partner = jax.random.normal(keys[1], (batch, side, side, channels))
  run = jax.jit(lambda a, b: alignment.batched_align(a, b, num_iters=num_iters))
  start = time.perf_counter()
  run(features, partner).block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(features, partner).block_until_ready()
    times.append(time.perf_counter() - start)
  return {'benchmark': 'alignment', 'batch': batch, 'side': side, 'channels': channels,
          'sinkhorn_iters': num_iters, 'ms_per_batch': round(1e3 * float(np.median(times)), 3),
          'compile_s': round(compile_s, 2), 'device': jax.devices()[0].device_kind}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--channels', type=int, default=512)
  parser.add_argument('--sides', default='4,8')
  parser.add_argument('--iters', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  for side in (int(s) for s in args.sides.split(',')):
    print(json.dumps(time_alignment(args.batch, side, args.channels, args.iters, args.repeats)),
          flush=True)


if __name__ == '__main__':
  main()
