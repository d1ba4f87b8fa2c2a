"""Our CIFAR networks and alignment against the authors' PyTorch code, same weights and inputs.

  git clone https://github.com/shashankvkt/AlignMixup_CVPR22 AUTHORS_DIR
  pip install torch                    # the CPU build is enough
  python -m benchmarks.fidelity --authors_dir AUTHORS_DIR [--model wrn16_8] [--batch 16]

Needs PyTorch and a checkout of the authors' repository: their modules are imported from
there at run time (nothing of theirs is copied here). Their CIFAR network (PreActResNet18 or
WRN16-8) with a 100-class classifier is built with its PyTorch initialisation and random
BatchNorm parameters and statistics, its weights are copied into ours
(`cifar100_<model>:vanilla`), and both run on the same batch of real images
(scikit-learn's digits, 32x32 RGB). Prints JSON lines:

  network     max |ours - theirs| of A and the logits, eval mode (running statistics) and
              train mode (batch statistics), relative to max |A| and max |logits|;
  sgd_step    one SGD step (lr 0.1, momentum 0.9, weight decay 1e-4, cross-entropy) through
              our real train step against `torch.optim.SGD`: the largest parameter
              difference relative to the largest parameter change;
  alignment   their `mixup_aligned` (13) and (14) against `mixup.aligned_feature_mix` on
              their train-mode A (same pairs, same lam), relative to max |A|; the iterations
              their early-stopping loop ran; max |row sum - 1| of R; how far A~ (13) and
              A~' (14) are from the converged ones (absolute), with the plan of 100
              iterations, with the barycentric projection, and, for (14), with a second plan
              solved on the swapped pair (what this project did before).
Every comparison with their float32 code is also made with their code run in float64: our
float32 results are far closer to that than their own float32 ones.
"""

import argparse
import copy
import importlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets

from alignmix_jax import alignment
from alignmix_jax import mixup
from alignmix_jax import models
from alignmix_jax import methods
from alignmix_jax import optim
from alignmix_jax import parallel
from alignmix_jax import state as state_lib
from alignmix_jax import train_step as train_step_lib
from alignmix_jax.configs import cifar100_preactresnet18
from alignmix_jax.configs import cifar100_wrn16_8

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2023, 0.1994, 0.2010], np.float32)


def digit_images(batch, seed):
  """`batch` digits as `[B, 32, 32, 3]` float32 in [0, 1] (8x8 scaled by 4) and labels."""
  digits = datasets.load_digits()
  index = np.random.default_rng(seed).choice(len(digits.images), batch, replace=False)
  images = np.repeat(np.repeat(digits.images[index] / 16.0, 4, axis=1), 4, axis=2)
  return (np.repeat(images[..., None], 3, axis=-1).astype(np.float32),
          digits.target[index].astype(np.int32))


# --model -> (their module in cifar10_100/models, its classifier class, our setting config).
MODELS = {
    'preactresnet18': ('resnet18_classifier', 'Resnet_classifier', cifar100_preactresnet18),
    'wrn16_8': ('wrn16x8_classifier', 'WideResNet_classifier', cifar100_wrn16_8),
}


def import_authors(authors_dir, module):
  """Their CIFAR classifier module, with `.cuda()` made a no-op so that it runs on CPU."""
  import torch  # pylint: disable=import-outside-toplevel
  code = os.path.join(authors_dir, 'cifar10_100')
  if not os.path.isfile(os.path.join(code, 'models', f'{module}.py')):
    raise SystemExit(f'{authors_dir} is not a checkout of shashankvkt/AlignMixup_CVPR22 '
                     f'(no cifar10_100/models/{module}.py).')
  sys.path.insert(0, code)
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  return torch, importlib.import_module(f'models.{module}')


def to_flax(state_dict):
  """Their classifier's state dict -> our {'params', 'batch_stats'} (autoencoder 'none'):
  conv `[O, I, k, k]` -> `[k, k, I, O]` (bias as is), BN weight/bias -> scale/bias, running
  mean/var -> batch_stats, Linear `[K, C]` -> `[C, K]`."""
  params, stats = {}, {}
  for name, value in state_dict.items():
    value = value.detach().cpu().numpy()
    if name.endswith('num_batches_tracked'):
      continue
    parts = name.split('.')
    if parts[0] == 'classifier':
      params.setdefault('classifier', {}).setdefault('fc', {})[parts[1]] = (
          value.T if parts[1] == 'weight' else value)
      continue
    # encoder.conv1.weight, encoder.layer2.0.shortcut.0.weight, encoder.layer1.1.bn2.bias
    if parts[1].startswith('layer'):
      scope, layer, leaf = [f'{parts[1]}_{parts[2]}'], parts[3], parts[-1]
    else:
      scope, layer, leaf = [], parts[1], parts[-1]
    path = ['encoder', *scope, layer]
    if leaf == 'weight' and value.ndim == 4:
      tree, key, value = params, 'kernel', value.transpose(2, 3, 1, 0)
    elif leaf in ('weight', 'bias'):
      tree, key = params, {'weight': 'scale', 'bias': 'bias'}[leaf]
    else:
      tree, key = stats, {'running_mean': 'mean', 'running_var': 'var'}[leaf]
    node = tree
    for part in path:
      node = node.setdefault(part, {})
    node[key] = value
  if 'weight' in params['classifier']['fc']:
    params['classifier']['fc']['kernel'] = params['classifier']['fc'].pop('weight')
  return {'params': params, 'batch_stats': stats}


def relative(a, b, scale):
  return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / scale)


def compare_network(torch, net, model, variables, images):
  x = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
  out = {'benchmark': 'fidelity', 'part': 'network'}
  for train in (False, True):
    net.train(train)
    with torch.no_grad():
      theirs = net.encoder(x).permute(0, 2, 3, 1).numpy()
      their_logits = net.classifier(torch.from_numpy(theirs).mean(dim=(1, 2))).numpy()
    if train:
      ours = model.apply(variables, images, True, method='features',
                         mutable=['batch_stats'])[0]
    else:
      ours = model.apply(variables, images, False, method='features')
    our_logits = model.apply(variables, model.apply(variables, ours, train, method='latent'),
                             train, method='classify')
    mode = 'train' if train else 'eval'
    out[f'{mode}_max_abs_A'] = float(np.abs(theirs).max())
    out[f'{mode}_A_rel'] = relative(ours, theirs, np.abs(theirs).max())
    out[f'{mode}_logits_rel'] = relative(our_logits, their_logits, np.abs(their_logits).max())
  return out


def their_sgd_step(torch, net, config, images, labels, dtype):
  """One step of `torch.optim.SGD` on a copy of `net` in `dtype`: our parameter tree."""
  net = copy.deepcopy(net).to(dtype).train()
  optimizer = torch.optim.SGD(net.parameters(), lr=config.optimizer.learning_rate,
                              momentum=config.optimizer.momentum,
                              weight_decay=config.optimizer.weight_decay)
  x = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy()).to(dtype)
  logits = net.classifier(net.encoder(x).mean(dim=(2, 3)))
  loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels).long())
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return to_flax(net.state_dict())['params'], loss.item()


def compare_sgd_step(torch, net, config, model, variables, images, labels):
  theirs, their_loss = their_sgd_step(torch, net, config, images, labels, torch.float32)
  exact, _ = their_sgd_step(torch, net, config, images, labels, torch.float64)

  mesh = parallel.data_mesh(jax.devices()[:1])
  _, schedules = optim.create_optimizer(config.optimizer, steps_per_epoch=1000)
  state = state_lib.create_train_state(config, mesh, steps_per_epoch=1000)
  state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                        opt_state=state.tx.init(variables['params']))
  step = parallel.shard_map_step(train_step_lib.make_train_step(config, model, schedules),
                                 mesh, donate_state=False)
  new_state, metrics = step(state, {'image': images, 'label': labels})
  before, ours = jax.tree.leaves(variables['params']), jax.tree.leaves(new_state.params)
  change = max(float(np.abs(np.asarray(b) - np.asarray(a)).max()) for a, b in zip(before, ours))

  def difference(first, second):
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
               for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))) / change

  return {'benchmark': 'fidelity', 'part': 'sgd_step', 'loss_ours': float(metrics['loss']),
          'loss_theirs': their_loss, 'max_param_change': change,
          'ours_vs_theirs_rel_change': difference(new_state.params, theirs),
          'ours_vs_theirs_float64_rel_change': difference(new_state.params, exact),
          'theirs_vs_theirs_float64_rel_change': difference(theirs, exact)}


def compare_alignment(torch, authors, net, images, labels, lam, seed):
  net.train()
  x = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    features_nchw = net.encoder(x)
  features = features_nchw.permute(0, 2, 3, 1).numpy()
  top = float(np.abs(features).max())
  iterations = []
  original_m = authors.SinkhornDistance.M

  def counting_m(self, cost, u, v):
    iterations.append(1)
    return original_m(self, cost, u, v)

  out = {'benchmark': 'fidelity', 'part': 'alignment', 'batch': len(images), 'lam': lam,
         'max_abs_A': top}
  np.random.seed(seed)  # Their pairs come from np.random.permutation, drawn inside.
  perm = np.random.permutation(len(images))
  authors.SinkhornDistance.M = counting_m
  try:
    for direction, name in ((0, '13'), (1, '14')):
      authors.random.randint = lambda low, high, d=direction: d  # Their choice of direction.
      runs = {}
      for dtype in (torch.float32, torch.float64):
        np.random.seed(seed)
        iterations.clear()
        mixed, _, _ = authors.mixup_aligned(features_nchw.to(dtype),
                                            torch.from_numpy(labels), lam)
        runs[dtype] = mixed.permute(0, 2, 3, 1).numpy()
        # Each iteration calls M twice; the plan once more.
        out[f'authors_iterations_{name}'] = (len(iterations) - 1) // 2
      ours, weights = mixup.aligned_feature_mix(jnp.float32(lam), jnp.asarray(features),
                                                jnp.asarray(perm), reverse=direction == 1)
      out[f'mixed_{name}_ours_vs_theirs_rel'] = relative(ours, runs[torch.float32], top)
      out[f'mixed_{name}_ours_vs_theirs_float64_rel'] = relative(ours, runs[torch.float64],
                                                                 top)
      out[f'mixed_{name}_theirs_vs_theirs_float64_rel'] = relative(
          runs[torch.float32], runs[torch.float64], top)
  finally:
    authors.SinkhornDistance.M = original_m
  partner = features[perm]
  out['row_error'] = float(alignment.row_error(weights))
  cost = jax.vmap(lambda a, b: alignment.cost_matrix(a.reshape(-1, a.shape[-1]),
                                                     b.reshape(-1, b.shape[-1])))(
                                                         features, partner)
  out['cost_over_eps_mean'] = float(jnp.mean(cost) / 0.1)
  features, partner = jnp.asarray(features), jnp.asarray(partner)

  def aligned(reverse, **kwargs):
    return alignment.batched_align(features, partner, reverse=reverse, **kwargs)

  for reverse, name in ((False, '13'), (True, '14')):
    converged = aligned(reverse, num_iters=100_000, tol=1e-6)
    out[f'tilde_{name}_to_converged'] = {
        'one_plan': relative(aligned(reverse), converged, 1.0),
        'one_plan_barycentric': relative(aligned(reverse, barycentric=True), converged, 1.0)}
  resolved = alignment.batched_align(partner, features)  # (13)'s use of a swapped pair.
  out['tilde_14_to_converged']['second_plan_on_swapped_pair'] = relative(resolved, converged,
                                                                        1.0)
  out['one_plan_vs_second_plan_14_rel'] = relative(aligned(True), resolved, top)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--authors_dir', required=True,
                      help='A checkout of github.com/shashankvkt/AlignMixup_CVPR22.')
  parser.add_argument('--model', choices=tuple(MODELS), default='preactresnet18')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--lam', type=float, default=0.3)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  module, classifier, setting = MODELS[args.model]
  torch, authors = import_authors(args.authors_dir, module)
  torch.manual_seed(args.seed)
  net = getattr(authors, classifier)(num_classes=100)
  with torch.no_grad():  # Random running statistics, so that eval mode is not trivial.
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.2)
  config = setting.get_config('vanilla')
  model = models.create_model(config)
  variables = jax.tree.map(jnp.asarray, to_flax(net.state_dict()))
  shapes = state_lib.abstract_train_state(config, parallel.data_mesh()).variables()
  if jax.tree.structure(shapes) != jax.tree.structure(variables):
    raise SystemExit('The parameter trees differ: ' + str(jax.tree.structure(variables)))
  images, labels = digit_images(args.batch, args.seed)
  print(json.dumps(compare_network(torch, net, model, variables, images)), flush=True)
  print(json.dumps(compare_alignment(torch, authors, net, images, labels, args.lam,
                                     args.seed)), flush=True)
  assert methods.table(config) == (('clean', 1.0),)
  print(json.dumps(compare_sgd_step(torch, net, config, model, variables, images, labels)),
        flush=True)


if __name__ == '__main__':
  main()
