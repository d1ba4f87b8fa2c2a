"""The authors' computations in NumPy (float64, or float32 to measure round-off), written for
the tests from their description (`../shared/REFERENCE.md`; no code of theirs): the
PreActResNet18, WRN16-8 and ResNet-50 encoders, their Sinkhorn loop and their aligned feature
mixup. Independent of the Flax code: the networks read a Flax variable tree only as a
dictionary of weights.

Layout: images and feature maps `[B, H, W, C]`; conv kernels `[k, k, Cin, Cout]` (the
PyTorch `[Cout, Cin, k, k]` transposed); PyTorch's symmetric zero padding (k - 1) // 2.
"""

import numpy as np

BN_EPS = 1e-5


def as_numpy(tree, dtype=np.float64):
  """A (nested) dict of arrays as NumPy arrays of `dtype` (the networks compute in the dtype
  of their input and weights: float64 for the references, float32 to measure round-off)."""
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    return {name: as_numpy(value, dtype) for name, value in tree.items()}
  return np.asarray(tree, dtype)


def conv(x, layer, stride=1):
  """PyTorch `nn.Conv2d(padding=(k - 1) // 2)`; `layer` = {'kernel', optional 'bias'}."""
  kernel = layer['kernel']
  k = kernel.shape[0]
  pad = (k - 1) // 2
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h = (x.shape[1] - k) // stride + 1
  out_w = (x.shape[2] - k) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]), x.dtype)
  for dy in range(k):
    for dx in range(k):
      window = x[:, dy:dy + stride * (out_h - 1) + 1:stride,
                 dx:dx + stride * (out_w - 1) + 1:stride, :]
      out += window @ kernel[dy, dx]
  return out + layer.get('bias', 0.0)


def batch_norm(x, params, stats, train):
  """`nn.BatchNorm2d`: batch statistics (biased variance) in train mode, running ones in eval."""
  if train:
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  else:
    mean, var = stats['mean'], stats['var']
  return (x - mean) / np.sqrt(var + BN_EPS) * params['scale'] + params['bias']


def relu(x):
  return np.maximum(x, 0.0)


def max_pool_3x3_s2(x):
  """`nn.MaxPool2d(3, stride=2, padding=1)` (padding never wins the max)."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  windows = [x[:, dy:dy + 2 * (out_h - 1) + 1:2, dx:dx + 2 * (out_w - 1) + 1:2, :]
             for dy in range(3) for dx in range(3)]
  return np.max(windows, axis=0)


def preact_block(x, params, stats, stride, train, shortcut='authors'):
  """The authors' `PreActBlock`: o = relu(bn1(x)); the shortcut is conv1x1(o) when the shape
  changes, else o ('authors') or x ('standard', He et al. 2016);
  out = conv2(relu(bn2(conv1(o)))) + shortcut."""
  o = relu(batch_norm(x, params['bn1'], stats['bn1'], train))
  if 'shortcut' in params:
    identity = conv(o, params['shortcut'], stride)
  else:
    identity = o if shortcut == 'authors' else x
  out = conv(o, params['conv1'], stride)
  out = conv(relu(batch_norm(out, params['bn2'], stats['bn2'], train)), params['conv2'])
  return out + identity


def preact_resnet18(x, params, stats, train, shortcut='authors'):
  """The authors' CIFAR/Tiny-ImageNet PreActResNet18 encoder: conv1 -> bn1 -> ReLU, then
  [2, 2, 2, 2] PreActBlocks with strides 1, 2, 2, 2; A is the raw layer4 output."""
  out = relu(batch_norm(conv(x, params['conv1']), params['bn1'], stats['bn1'], train))
  for stage in range(4):
    for block in range(2):
      name = f'layer{stage + 1}_{block}'
      stride = 2 if stage > 0 and block == 0 else 1
      out = preact_block(out, params[name], stats[name], stride, train, shortcut)
  return out


def wide_block(x, params, stats, stride, train):
  """The authors' `wide_basic`: out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x),
  conv1 stride 1, conv2 stride s, every conv with bias, shortcut a 1x1 conv of x (stride s)
  when the shape changes, else x."""
  out = conv(relu(batch_norm(x, params['bn1'], stats['bn1'], train)), params['conv1'])
  out = conv(relu(batch_norm(out, params['bn2'], stats['bn2'], train)), params['conv2'],
             stride)
  identity = conv(x, params['shortcut'], stride) if 'shortcut' in params else x
  return out + identity


def wide_resnet16_8(x, params, stats, train):
  """The authors' WRN16-8 encoder: conv1 (bias), 3 stages of 2 wide blocks (strides 1, 2, 2),
  then relu(bn1(.)). (Their final BN's running-average momentum does not enter eval or
  train-mode outputs.)"""
  out = conv(x, params['conv1'])
  for stage in range(3):
    for block in range(2):
      name = f'layer{stage + 1}_{block}'
      stride = 2 if stage > 0 and block == 0 else 1
      out = wide_block(out, params[name], stats[name], stride, train)
  return relu(batch_norm(out, params['bn1'], stats['bn1'], train))


def bottleneck(x, params, stats, stride, train):
  """torchvision's (v1.5) `Bottleneck`, as the authors' ImageNet code: 1x1, 3x3 (stride s),
  1x1 (4x width), each conv followed by BN, ReLU after the first two and after the sum;
  downsample = 1x1 conv (stride s) -> BN when the shape changes."""
  def conv_bn(h, index, s=1):
    return batch_norm(conv(h, params[f'conv{index}'], s), params[f'bn{index}'],
                      stats[f'bn{index}'], train)

  out = relu(conv_bn(x, 1))
  out = relu(conv_bn(out, 2, stride))
  out = conv_bn(out, 3)
  if 'downsample_conv' in params:
    x = batch_norm(conv(x, params['downsample_conv'], stride), params['downsample_bn'],
                   stats['downsample_bn'], train)
  return relu(out + x)


def resnet50(x, params, stats, train):
  """The authors' ImageNet ResNet-50 encoder (torchvision layout, no avgpool/fc)."""
  out = relu(batch_norm(conv(x, params['conv1'], 2), params['bn1'], stats['bn1'], train))
  out = max_pool_3x3_s2(out)
  for stage, num_blocks in enumerate((3, 4, 6, 3)):
    for block in range(num_blocks):
      name = f'layer{stage + 1}_{block}'
      stride = 2 if stage > 0 and block == 0 else 1
      out = bottleneck(out, params[name], stats[name], stride, train)
  return out


def classifier(features, params):
  """`avg_pool2d` over the whole A, then `nn.Linear` (with bias): logits `[B, K]`."""
  return features.mean(axis=(1, 2)) @ params['kernel'] + params['bias']


def sinkhorn_plan(cost, eps=0.1, iters=100):
  """The authors' Sinkhorn loop: potentials f, g in cost units, both 0 at the start; each
  iteration updates f, then g, from the modified cost `(-m_ij + f_i + g_j) / eps`;
  marginals 1/r (+1e-8 inside the log, as theirs); no early stop (the fixed iteration count
  of the comparisons). Returns P `[r, r']`."""
  cost = np.asarray(cost, np.float64)
  r, s = cost.shape
  f, g = np.zeros(r), np.zeros(s)

  def modified(f, g):
    return (-cost + f[:, None] + g[None, :]) / eps

  def lse(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(x - m).sum(axis=axis))

  for _ in range(iters):
    f = eps * (np.log(1.0 / r + 1e-8) - lse(modified(f, g), 1)) + f
    g = eps * (np.log(1.0 / s + 1e-8) - lse(modified(f, g), 0)) + g
  return np.exp(modified(f, g))


def alignments(features, partner, eps=0.1, iters=100):
  """(13)'s A~ = A' (rP)^T and (14)'s A~' = A (rP), in the authors' c x r layout, from ONE
  plan P of the cost between the positions of A and those of A'.

  Args:
    features, partner: `[H, W, C]` A and A'.

  Returns:
    `(A~ [H, W, C], A~' [H, W, C], R [r, r])`.
  """
  h, w, c = features.shape
  a = np.asarray(features, np.float64).reshape(h * w, c).T  # c x r
  a_prime = np.asarray(partner, np.float64).reshape(h * w, c).T
  cost = ((a.T[:, None, :] - a_prime.T[None, :, :]) ** 2).sum(-1)  # m_ij = |a_i - a'_j|^2
  assignment = h * w * sinkhorn_plan(cost, eps, iters)
  tilde = a_prime @ assignment.T
  tilde_prime = a @ assignment
  return tilde.T.reshape(h, w, c), tilde_prime.T.reshape(h, w, c), assignment


def aligned_mixup(features, perm, lam, reverse, eps=0.1, iters=100, barycentric=False):
  """The authors' aligned feature mixup of a batch `[B, H, W, C]` with partners `perm`:
  (13) `lam A + (1 - lam) A~`, (14) `lam A~' + (1 - lam) A'`; targets lam y + (1 - lam) y'
  in both. `barycentric` (our ablation, not theirs): R's rows divided by their sums for
  (13), its columns for (14). Returns the mixed `[B, H, W, C]`."""
  out = []
  for i, j in enumerate(np.asarray(perm)):
    a, a_prime = np.asarray(features[i], np.float64), np.asarray(features[j], np.float64)
    tilde, tilde_prime, assignment = alignments(a, a_prime, eps, iters)
    if barycentric:
      rows = assignment / assignment.sum(1, keepdims=True)
      cols = assignment / assignment.sum(0, keepdims=True)
      channels = a.shape[-1]
      tilde = (rows @ a_prime.reshape(-1, channels)).reshape(a.shape)
      tilde_prime = (cols.T @ a.reshape(-1, channels)).reshape(a.shape)
    out.append(lam * tilde_prime + (1 - lam) * a_prime if reverse
               else lam * a + (1 - lam) * tilde)
  return np.stack(out)
