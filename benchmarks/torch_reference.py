"""Our train step against the same step in PyTorch, side by side in one process.

  pip install torch==2.13.0        # the CPU build (CI); on a GPU machine, torch with CUDA
  python -m benchmarks.torch_reference [--threads 1,2] [--batches 32,128] [--width 64]
  python -m benchmarks.torch_reference --device gpu [--batches 128,512]

The PyTorch side is this file's own definition of the authors' CIFAR PreActResNet18 (their
block: the identity shortcut adds the pre-activated input; stem conv -> BN -> ReLU; global
average pool -> Linear), trained as their code trains it: SGD (momentum 0.9, weight decay
1e-4), cross-entropy, either plain (`vanilla`), input mixup (`mixup`: `lam CE(y) + (1 -
lam) CE(y')` on `lam x + (1 - lam) x[perm]`), or the authors' AlignMix step (`alignmix`:
with probability 1/2 input mixup, else the aligned feature mixup of the last stage's A,
(13) or (14) with probability 1/4 each, lam ~ Beta(2, 2); their Sinkhorn: log domain, eps
0.1, at most 100 iterations, stopping when the batch mean of sum|u - u_prev| < 0.1, read
on the host every iteration; the plan without gradient). Our side is the real train step
(`cifar100_preactresnet18:<method>`, jit(shard_map) on one device), on the same synthetic
batch shapes.

`--device cpu` (default): for each thread count, a subprocess limited to that many cores
(CPU affinity, set before JAX and PyTorch start; `torch.set_num_threads`) builds both
steps (vanilla and mixup), then times them in alternating blocks of `--block` steps,
`--rounds` times, so that drift hits both alike, each block after `--pause` seconds of rest,
so that neither side's idle threads (PyTorch's OpenMP threads keep spinning after its step)
slow the other's block (by 5-7% here). One JSON line per (threads, batch, step): the median
step time of each side and `ours_speed_vs_torch` = torch time / our time (>= 1: ours is
faster).

`--device gpu`: one process on the first GPU, per batch of `--batches`, the rows of
`--torch` for the vanilla and AlignMix steps (`eager_fp32`: eager, float32; `autocast_bf16`:
autocast bfloat16 and channels-last; `compile_bf16`: `torch.compile` of the network's two
halves under the same autocast, the Sinkhorn loop eager as the authors run it) and ours
(`--ours`: vanilla, the authors' AlignMix (`alignmix_official`) and the five-mode AlignMix
(`alignmix`), in float32 and bfloat16, `--steps_per_dispatch` steps per dispatch), all on
data already on the GPU. After a warm-up (compiles), the rows take turns, `--rounds` times,
each running `--block` steps (synchronised before and after): one JSON line per row with
the median ms per step, then a `ratios` line per batch: each of our AlignMix rows against
the authors' step in PyTorch autocast bfloat16 and against their fastest configuration,
and our vanilla against theirs (> 1: ours is faster). `--tiny` (width 8, 16x16, batch 16)
runs the same code on a CPU in a minute: the CI smoke test.
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
  """The authors' PreActResNet18 for 32x32 inputs, as `torch.nn.Module`: `encode(x)` is E
  (x `[B, 3, H, W]` -> A `[B, C, h, w]`), `classify(A)` pools and classifies."""
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

  class Encoder(nn.Module):

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
      self.planes = planes_in

    def forward(self, x):
      return self.blocks(self.stem(x))

  class Classifier(nn.Module):

    def __init__(self, planes):
      super().__init__()
      self.fc = nn.Linear(planes, num_classes)

    def forward(self, features):
      return self.fc(features.mean(dim=(2, 3)))

  class Network(nn.Module):

    def __init__(self):
      super().__init__()
      self.encode = Encoder()
      self.classify = Classifier(self.encode.planes)

    def forward(self, x):
      return self.classify(self.encode(x))

  return Network()


def authors_plan(torch, features, partner, eps=0.1, max_iter=100, thresh=0.1):
  """The authors' transport plan P `[B, r, r]` between the r = h * w columns of A and A'
  (`[B, C, h, w]` each): squared Euclidean cost, uniform marginals, their log-domain
  Sinkhorn loop with its early stop (one host read per iteration). Float32, no gradient."""
  with torch.no_grad():
    a = features.float().flatten(2).transpose(1, 2)  # [B, r, C]
    b = partner.float().flatten(2).transpose(1, 2)
    cost = ((a[:, :, None, :] - b[:, None, :, :])**2).sum(-1)  # [B, r, r]
    r = cost.shape[-1]
    mu = torch.full(cost.shape[:2], 1.0 / r, device=cost.device)
    nu = torch.full(cost.shape[:2], 1.0 / r, device=cost.device)
    u, v = torch.zeros_like(mu), torch.zeros_like(nu)

    def log_kernel(u, v):
      return (-cost + u[:, :, None] + v[:, None, :]) / eps

    for _ in range(max_iter):
      previous = u
      u = eps * (torch.log(mu + 1e-8) - torch.logsumexp(log_kernel(u, v), dim=-1)) + u
      v = eps * (torch.log(nu + 1e-8)
                 - torch.logsumexp(log_kernel(u, v).transpose(-2, -1), dim=-1)) + v
      if (u - previous).abs().sum(-1).mean().item() < thresh:
        break
    return torch.exp(log_kernel(u, v))


def torch_step(torch, width, batch, num_classes, step, *, device='cpu', precision='float32',
               compile_network=False, image_size=32, seed=0):
  """A closure running one PyTorch train step (`step`: vanilla, mixup or alignmix) on a
  fixed synthetic batch on `device`; `precision` 'bfloat16' runs under autocast with
  channels-last tensors; `compile_network` compiles the encoder and the classifier."""
  torch.manual_seed(seed)
  net = torch_network(torch, width, num_classes).to(device).train()
  memory_format = (torch.channels_last if precision == 'bfloat16'
                   else torch.contiguous_format)
  net = net.to(memory_format=memory_format)
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  generator = torch.Generator().manual_seed(seed)
  images = torch.rand(batch, 3, image_size, image_size, generator=generator).to(
      device, memory_format=memory_format)
  labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
  loss_fn = torch.nn.CrossEntropyLoss()
  encode, classify = net.encode, net.classify
  if compile_network:
    encode, classify = torch.compile(encode), torch.compile(classify)
  beta = torch.distributions.Beta(torch.tensor(2.0 if step == 'alignmix' else 1.0),
                                  torch.tensor(2.0 if step == 'alignmix' else 1.0))

  def mixed_loss(logits, lam, perm):
    return lam * loss_fn(logits, labels) + (1 - lam) * loss_fn(logits, labels[perm])

  def forward():
    if step == 'vanilla':
      return loss_fn(classify(encode(images)), labels)
    lam = float(beta.sample())
    perm = torch.randperm(batch, device=device)
    if step == 'mixup' or float(torch.rand(())) < 0.5:  # Input mixup.
      return mixed_loss(classify(encode(lam * images + (1 - lam) * images[perm])), lam, perm)
    features = encode(images)
    partner = features[perm]
    plan = authors_plan(torch, features, partner).to(features.dtype)
    r = plan.shape[-1]
    flat, flat_partner = features.flatten(2), partner.flatten(2)  # [B, C, r]
    if float(torch.rand(())) < 0.5:  # (13): A' aligned to A, mixed with A.
      mixed = lam * flat + (1 - lam) * flat_partner @ (r * plan).transpose(1, 2)
    else:  # (14): A aligned to A', mixed with A'.
      mixed = lam * (flat @ (r * plan)) + (1 - lam) * flat_partner
    return mixed_loss(classify(mixed.view_as(features)), lam, perm)

  def run():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16,
                        enabled=precision == 'bfloat16'):
      loss = forward()
    loss.backward()
    optimizer.step()
    return loss

  return run
def jax_step(width, batch, method, *, dtype='float32', count=1, image_size=32):
  """A closure running `count` of our train steps (compiled, one dispatch) on a fixed
  synthetic batch; returns the last step's loss (not waited for)."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import train_throughput  # pylint: disable=g-import-not-at-top
  from alignmix_jax import parallel  # pylint: disable=g-import-not-at-top
  from alignmix_jax.configs import cifar100_preactresnet18  # pylint: disable=g-import-not-at-top
  config = cifar100_preactresnet18.get_config(method)
  config.model.width, config.batch_size, config.model.dtype = width, batch, dtype
  config.dataset.image_size = image_size
  mesh = parallel.data_mesh(jax.devices()[:1])
  compiled, state, data, compile_s = train_throughput.build(config, mesh, count)
  holder = {'state': state}

  def step():
    holder['state'], metrics = compiled(holder['state'], data)
    return metrics['loss'][-1]

  step.compile_s = compile_s
  return step


def measure(args):
  """In this process (already limited to `args.threads` cores): every record."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  records = []
  for batch in args.batches:
    for name, method in (('vanilla', 'vanilla'), ('mixup', 'input_mixup')):
      cpu_sides = {'torch': torch_step(torch, args.width, batch, 100, name),
                   'ours': jax_step(args.width, batch, method)}
      sides = {side: (lambda run=run: float(run())) for side, run in cpu_sides.items()}
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


TORCH_ROWS = {  # name: (precision, torch.compile)
    'eager_fp32': ('float32', False),
    'autocast_bf16': ('bfloat16', False),
    'compile_bf16': ('bfloat16', True),
}
OUR_ROWS = {  # name: (method, dtype)
    'vanilla_fp32': ('vanilla', 'float32'), 'vanilla_bf16': ('vanilla', 'bfloat16'),
    'alignmix_official_fp32': ('alignmix_official', 'float32'),
    'alignmix_official_bf16': ('alignmix_official', 'bfloat16'),
    'alignmix_fp32': ('alignmix', 'float32'), 'alignmix_bf16': ('alignmix', 'bfloat16'),
}


def side_by_side(args):
  """`--device gpu` (or its `--tiny` form on a CPU): every row at every batch, interleaved;
  the records, then one `ratios` record per batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if args.device == 'gpu' and (device != 'cuda' or jax.default_backend() != 'gpu'):
    raise SystemExit('torch_reference --device gpu needs a GPU for both PyTorch (CUDA build) '
                     f'and JAX (jax[cuda]); found torch on {device}, JAX on '
                     f'{jax.default_backend()}. --tiny runs the same rows on a CPU.')
  torch.backends.cudnn.benchmark = True
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  size, classes = (16, 10) if args.tiny else (32, 100)
  records = []
  for batch in args.batches:
    rows = {}
    for name in args.torch:
      precision, compiled = TORCH_ROWS[name]
      for step in ('vanilla', 'alignmix'):
        rows['torch', name, step] = torch_step(
            torch, args.width, batch, classes, step, device=device, precision=precision,
            compile_network=compiled, image_size=size)
    for name in args.ours:
      method, dtype = OUR_ROWS[name]
      rows['ours', name, method] = jax_step(args.width, batch, method, dtype=dtype,
                                            count=args.steps_per_dispatch, image_size=size)
    compile_s = {}
    for key, run in rows.items():  # Warm-up: compiles, autotuning, cuDNN's choices.
      start = time.perf_counter()
      for _ in range(8 if key[0] == 'torch' else 1):  # Both paths of the AlignMix step.
        loss = run()
      _wait(key[0], loss, sync)
      compile_s[key] = time.perf_counter() - start + getattr(run, 'compile_s', 0.0)
    times = {key: [] for key in rows}
    for _ in range(args.rounds):
      for key, run in rows.items():
        calls = args.block if key[0] == 'torch' else max(1, args.block // args.steps_per_dispatch)
        _wait(key[0], None, sync)
        start = time.perf_counter()
        for _ in range(calls):
          loss = run()
        _wait(key[0], loss, sync)
        steps = calls * (1 if key[0] == 'torch' else args.steps_per_dispatch)
        times[key].append((time.perf_counter() - start) / steps)
    batch_records = []
    for key, samples in times.items():
      side, name, step = key
      ms = 1e3 * statistics.median(samples)
      batch_records.append({
          'benchmark': 'torch_reference', 'device': _device_name(torch, jax, device),
          'batch': batch, 'width': args.width, 'side': side, 'row': name, 'step': step,
          'ms': round(ms, 3), 'images_per_s': round(batch / ms * 1e3, 1),
          'warmup_s': round(compile_s[key], 1),  # Compiles included.
          'steps_per_dispatch': 1 if side == 'torch' else args.steps_per_dispatch,
          'torch': torch.__version__, 'jax': jax.__version__})
    records += batch_records + [ratios(batch_records)]
  return records


def _wait(side, loss, sync):
  """Waits for the device: PyTorch's stream, or our loss (the state is computed with it)."""
  if side == 'torch':
    sync()
  elif loss is not None:
    loss.block_until_ready()


def _device_name(torch, jax, device):
  return torch.cuda.get_device_name() if device == 'cuda' else jax.devices()[0].device_kind


def ratios(records):
  """Speed ratios of one batch's rows (> 1: ours is faster): each of our AlignMix rows
  over the authors' step in PyTorch autocast bfloat16 and over their fastest row, our
  vanilla rows over their fastest vanilla row; and the fastest row of each side."""
  ms = {(r['side'], r['row'], r['step']): r['ms'] for r in records}
  out = {'benchmark': 'torch_reference', 'row': 'ratios', 'batch': records[0]['batch']}
  for step, ours_methods in (('alignmix', ('alignmix_official', 'alignmix')),
                             ('vanilla', ('vanilla',))):
    theirs = {name: t for (side, name, s), t in ms.items() if side == 'torch' and s == step}
    if not theirs:
      continue
    best = min(theirs, key=theirs.get)
    out[f'torch_best_{step}'] = best
    for (side, name, method), t in ms.items():
      if side == 'ours' and method in ours_methods:
        out[f'{name}_vs_torch_best'] = round(theirs[best] / t, 3)
        if step == 'alignmix' and 'autocast_bf16' in theirs:
          out[f'{name}_vs_torch_autocast_bf16'] = round(theirs['autocast_bf16'] / t, 3)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--device', choices=('cpu', 'gpu'), default='cpu')
  parser.add_argument('--threads', default='1,2', help='cpu: thread counts, one subprocess '
                      'each')
  parser.add_argument('--batches', default=None, help='default: 32,128 (cpu), 128,512 (gpu)')
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=None, help='default: 4 (cpu), 5 (gpu)')
  parser.add_argument('--block', type=int, default=None, help='steps per block; default: 3 '
                      '(cpu), 32 (gpu)')
  parser.add_argument('--pause', type=float, default=1.0,
                      help='cpu: seconds of rest before each block')
  parser.add_argument('--torch', default=','.join(TORCH_ROWS), help='gpu: PyTorch rows')
  parser.add_argument('--ours', default=','.join(OUR_ROWS), help='gpu: our rows')
  parser.add_argument('--steps_per_dispatch', type=int, default=0,
                      help='gpu: our steps per dispatch (0: the backend\'s default)')
  parser.add_argument('--tiny', action='store_true', help='gpu rows at a tiny size on any '
                      'device (width 8, 16x16, batch 16): the CI smoke test')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  gpu = args.device == 'gpu' or args.tiny
  args.batches = [int(b) for b in (args.batches or ('16' if args.tiny else '128,512' if gpu
                                                    else '32,128')).split(',')]
  args.rounds = args.rounds or (5 if gpu else 4)
  args.block = args.block or (32 if gpu else 3)
  if gpu:
    if args.tiny:
      args.width, args.rounds, args.block = 8, 2, 2
    args.torch, args.ours = args.torch.split(','), args.ours.split(',')
    for name in args.torch + args.ours:
      if name not in TORCH_ROWS and name not in OUR_ROWS:
        raise SystemExit(f'torch_reference: unknown row {name!r}; PyTorch rows: '
                         f'{", ".join(TORCH_ROWS)}; ours: {", ".join(OUR_ROWS)}.')
    from alignmix_jax import parallel  # pylint: disable=g-import-not-at-top
    args.steps_per_dispatch = parallel.steps_per_dispatch(args.steps_per_dispatch)
    for record in side_by_side(args):
      print(json.dumps(record), flush=True)
    return
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
