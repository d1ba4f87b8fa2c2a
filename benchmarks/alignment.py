"""Times the batched alignment (cost, Sinkhorn, transport) of one training batch, side by side
with the authors' code and OTT-JAX where they are available.

  python -m benchmarks.alignment [--batch 128] [--channels 512] [--sides 4,8] [--iters 100]
      [--authors_dir DIR]     # a checkout of shashankvkt/AlignMixup_CVPR22, needs torch

Per feature side, on the same random features `[B, side, side, C]` and partners:
  ours      `mixup.aligned_feature_mix` (13): milliseconds per batch after compilation
            (median of `--repeats` runs) and compile seconds;
  authors   (with `--authors_dir`) their `mixup_aligned` on the same tensors (their
            direction drawn inside, their early-stopping loop, whose iterations are
            reported), `ours_speed_vs_authors` = their time / ours;
  ott       (when `ott-jax` is installed) our alignment with OTT-JAX's Sinkhorn in place of
            ours, 100 iterations: log domain (`lse_mode=True`) and kernel mode, each with
            `max_dR` = max |R_ott - R_ours| and `valid` (a finite plan of total mass 1 in
            every pair; the kernel mode underflows to 0 on such costs);
            `ours_speed_vs_ott` = the fastest valid OTT setting's time / ours.
The rows take turns `--repeats` times, one call each, so drift hits them alike. One JSON
line per side.
"""

import argparse
import functools
import importlib
import json
import os
import statistics
import time

import jax
import numpy as np

from alignmix_jax import alignment
from alignmix_jax import mixup
from benchmarks import fidelity


def _ott_sinkhorn(cost, *, lse_mode, num_iters):
  """OTT-JAX's plan for one `[r, r]` cost, eps 0.1, a fixed `num_iters` (imported lazily)."""
  from ott.geometry import geometry  # pylint: disable=import-outside-toplevel
  from ott.problems.linear import linear_problem  # pylint: disable=import-outside-toplevel
  from ott.solvers.linear import sinkhorn  # pylint: disable=import-outside-toplevel
  solver = sinkhorn.Sinkhorn(lse_mode=lse_mode, threshold=-1.0, min_iterations=num_iters,
                             max_iterations=num_iters, inner_iterations=num_iters,
                             implicit_diff=None)
  # OTT updates the column potential first: solve the transposed problem so that the row
  # update comes first, as in the authors' loop and ours.
  return solver(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost.T,
                                                               epsilon=0.1))).matrix.T


def _jax_rows(num_iters):
  """name -> jitted `(features, partner) -> (mixed, R)`: ours and OTT's (if installed)."""
  def ours(features, partner):
    weights = jax.vmap(functools.partial(alignment.assignment, num_iters=num_iters))(
        features, partner)
    return jax.vmap(alignment.transport)(weights, partner), weights

  rows = {'ours': ours}
  try:
    importlib.import_module('ott')
  except ImportError:
    return {name: jax.jit(fn) for name, fn in rows.items()}

  def with_ott(lse_mode, features, partner):
    r = features.shape[1] * features.shape[2]

    def one(a, b):
      cost = alignment.cost_matrix(a.reshape(r, -1), b.reshape(r, -1))
      return r * _ott_sinkhorn(cost, lse_mode=lse_mode, num_iters=num_iters)

    weights = jax.lax.stop_gradient(jax.vmap(one)(features, partner))
    return jax.vmap(alignment.transport)(weights, partner), weights

  rows['ott_log_domain'] = functools.partial(with_ott, True)
  rows['ott_kernel'] = functools.partial(with_ott, False)
  return {name: jax.jit(fn) for name, fn in rows.items()}


def _authors_row(authors_dir):
  """A callable timing their `mixup_aligned` on NCHW torch features, or None."""
  if not authors_dir:
    return None
  # PyTorch's OpenMP threads spin after each call by default, slowing what runs next.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  torch, module = fidelity.import_authors(authors_dir, 'resnet18_classifier')
  original_m = module.SinkhornDistance.M
  calls = []

  def counting_m(self, cost, u, v):
    calls.append(1)
    return original_m(self, cost, u, v)

  module.SinkhornDistance.M = counting_m

  def run(features_nchw, labels):
    calls.clear()
    module.mixup_aligned(features_nchw, labels, 0.5)
    return (len(calls) - 1) // 2  # Two M calls per iteration, one for the plan.

  return torch, run


def time_side(args, side, jax_rows, authors):
  keys = jax.random.split(jax.random.PRNGKey(side), 2)
  shape = (args.batch, side, side, args.channels)
  features = jax.random.normal(keys[0], shape)
  partner = mixup.partner_of(features, jax.random.permutation(keys[1], args.batch))
  record = {'benchmark': 'alignment', 'batch': args.batch, 'side': side,
            'channels': args.channels, 'sinkhorn_iters': args.iters,
            'device': jax.devices()[0].device_kind}
  calls, weights = {}, {}
  for name, fn in jax_rows.items():
    start = time.perf_counter()
    weights[name] = np.asarray(jax.block_until_ready(fn(features, partner))[1])
    record[f'{name}_compile_s'] = round(time.perf_counter() - start, 2)
    calls[name] = lambda fn=fn: jax.block_until_ready(fn(features, partner))
  for name in jax_rows:
    if name != 'ours':
      w = weights[name]
      record[f'{name}_max_dR'] = float(np.abs(w - weights['ours']).max())
      r = w.shape[-1]
      record[f'{name}_valid'] = bool(np.isfinite(w).all()
                                     and np.abs(w.sum(axis=(1, 2)) / r - 1).max() < 1e-3)
  if authors is not None:
    torch, run = authors
    features_nchw = torch.from_numpy(np.asarray(features).transpose(0, 3, 1, 2).copy())
    labels = torch.zeros(args.batch, dtype=torch.long)
    iterations = []
    calls['authors'] = lambda: iterations.append(run(features_nchw, labels))
    calls['authors']()
  times = {name: [] for name in calls}
  for _ in range(args.repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
  for name, value in ms.items():
    record[f'{name}_ms'] = round(value, 3)
  if authors is not None:
    record['authors_iterations'] = int(statistics.median(iterations))
    record['ours_speed_vs_authors'] = round(ms['authors'] / ms['ours'], 1)
  valid = [ms[name] for name in jax_rows if record.get(f'{name}_valid')]
  if valid:
    record['ours_speed_vs_ott'] = round(min(valid) / ms['ours'], 2)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--channels', type=int, default=512)
  parser.add_argument('--sides', default='4,8')
  parser.add_argument('--iters', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--authors_dir', default='',
                      help="a checkout of the authors' repository (needs torch)")
  args = parser.parse_args()
  jax_rows = _jax_rows(args.iters)
  authors = _authors_row(args.authors_dir)
  for side in (int(s) for s in args.sides.split(',')):
    print(json.dumps(time_side(args, side, jax_rows, authors)), flush=True)


if __name__ == '__main__':
  main()
