"""Our train step against the same step in PyTorch, side by side in one process.

  pip install torch                               # the CPU build is enough; not a CI need
  python -m benchmarks.torch_reference [--threads 1,2] [--batches 32,128] [--width 64]

The PyTorch side is this file's own definition of the authors' CIFAR PreActResNet18 (their
block: the identity shortcut adds the pre-activated input; stem conv -> BN -> ReLU; global
average pool -> Linear), trained as their code trains it: SGD (momentum 0.9, weight decay
1e-4), cross-entropy, either plain (`vanilla`) or input mixup (`mixup`:
`lam CE(y) + (1 - lam) CE(y')` on `lam x + (1 - lam) x[perm]`). Our side is the real train
step (`cifar100_preactresnet18:vanilla` and `:input_mixup`, jit(shard_map) on one
device), on the same synthetic batch shapes.

For each thread count, a subprocess limited to that many cores (CPU affinity, set before
JAX and PyTorch start; `torch.set_num_threads`) builds both steps, then times them in
alternating blocks of `--block` steps, `--rounds` times, so that drift hits both alike,
each block after `--pause` seconds of rest, so that neither side's idle threads (PyTorch's
OpenMP threads keep spinning after its step) slow the other's block (by 5-7% here).
One JSON line per (threads, batch, step): the median step time of each side and
`ours_speed_vs_torch` = torch time / our time (>= 1: ours is faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_network(torch, width, num_classes):
  """The authors' PreActResNet18 for 32x32 inputs, as `torch.nn.Module`."""
  nn = torch.nn

  class Block(nn.Module):

    def __init__(self, planes_in, planes, stride):
      super().__init__()
      self.bn1 = nn.BatchNorm2d(planes_in)
      self.conv1 = nn.Conv2d(planes_in, planes, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(planes_in, planes, 1, stride, bias=False)
                       if stride != 1 or planes_in != planes else None)

    def forward(self, x):
      o = torch.relu(self.bn1(x))
      shortcut = o if self.shortcut is None else self.shortcut(o)
      return self.conv2(torch.relu(self.bn2(self.conv1(o)))) + shortcut

  class Network(nn.Module):

    def __init__(self):
      super().__init__()
      self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                nn.BatchNorm2d(width), nn.ReLU())
      blocks, planes_in = [], width
      for stage, stride in enumerate((1, 2, 2, 2)):
        planes = width * 2**stage
        for index in range(2):
          blocks.append(Block(planes_in, planes, stride if index == 0 else 1))
          planes_in = planes
      self.blocks = nn.Sequential(*blocks)
      self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
      return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

  return Network()


def torch_step(torch, width, batch, num_classes, mixup):
  """A closure running one PyTorch train step on a fixed synthetic batch."""
  net = torch_network(torch, width, num_classes).train()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  generator = torch.Generator().manual_seed(0)
  images = torch.rand(batch, 3, 32, 32, generator=generator)
  labels = torch.randint(0, num_classes, (batch,), generator=generator)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    if mixup:
      lam = float(torch.distributions.Beta(1.0, 1.0).sample())
      perm = torch.randperm(batch)
      logits = net(lam * images + (1 - lam) * images[perm])
      loss = lam * loss_fn(logits, labels) + (1 - lam) * loss_fn(logits, labels[perm])
    else:
      loss = loss_fn(net(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()

  return step


def jax_step(width, batch, mixup):
  """A closure running one of our train steps (compiled) on a fixed synthetic batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import train_throughput  # pylint: disable=g-import-not-at-top
  from alignmix_jax import parallel  # pylint: disable=g-import-not-at-top
  from alignmix_jax.configs import cifar100_preactresnet18  # pylint: disable=g-import-not-at-top
  config = cifar100_preactresnet18.get_config('input_mixup' if mixup else 'vanilla')
  config.model.width, config.batch_size = width, batch
  mesh = parallel.data_mesh(jax.devices()[:1])
  compiled, state, data, _ = train_throughput.build(config, mesh)
  holder = {'state': state}

  def step():
    holder['state'], metrics = compiled(holder['state'], data)
    return float(jax.block_until_ready(metrics['loss']))

  return step


def measure(args):
  """In this process (already limited to `args.threads` cores): every record."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  records = []
  for batch in args.batches:
    for name, mixup in (('vanilla', False), ('mixup', True)):
      sides = {'torch': torch_step(torch, args.width, batch, 100, mixup),
               'ours': jax_step(args.width, batch, mixup)}
      times = {side: [] for side in sides}
      for side, step in sides.items():  # Warm-up (and our compile).
        step()
      for _ in range(args.rounds):
        for side, step in sides.items():
          time.sleep(args.pause)  # The other side's idle threads settle first.
          for _ in range(args.block):
            start = time.perf_counter()
            step()
            times[side].append(time.perf_counter() - start)
      ms = {side: 1e3 * statistics.median(t) for side, t in times.items()}
      records.append({'benchmark': 'torch_reference', 'threads': args.threads, 'batch': batch,
                      'step': name, 'width': args.width, 'torch_ms': round(ms['torch'], 1),
                      'ours_ms': round(ms['ours'], 1),
                      'ours_speed_vs_torch': round(ms['torch'] / ms['ours'], 3),
                      'steps_per_side': len(times['ours']), 'torch': torch.__version__})
  return records


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--threads', default='1,2', help='thread counts, one subprocess each')
  parser.add_argument('--batches', default='32,128')
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=4)
  parser.add_argument('--block', type=int, default=3)
  parser.add_argument('--pause', type=float, default=1.0,
                      help='seconds of rest before each block')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.batches = [int(b) for b in args.batches.split(',')]
  if args.child:
    args.threads = int(args.threads)
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    for record in measure(args):
      print(json.dumps(record), flush=True)
    return
  for threads in args.threads.split(','):
    command = [sys.executable, '-m', 'benchmarks.torch_reference', '--child', '--threads',
               threads, '--batches', ','.join(map(str, args.batches)), '--width',
               str(args.width), '--rounds', str(args.rounds), '--block', str(args.block),
               '--pause', str(args.pause)]
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode:
      raise SystemExit(f'torch_reference: the {threads}-thread run failed ({done.returncode}).')


if __name__ == '__main__':
  main()
