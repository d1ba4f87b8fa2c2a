"""The paper's comparison (Tables 1-3, 5) on one dataset: every method, same data, model,
schedule and seeds, then the evaluation programs on each final checkpoint.

  python -m benchmarks.compare_methods --out workdirs/compare_fashion_cpu      # CPU budget
  python -m benchmarks.compare_methods --out workdirs/compare_fashion_lowdata --budget lowdata
  python -m benchmarks.compare_methods --out DIR --budget gpu_window           # one GPU window
  python -m benchmarks.compare_methods --out DIR --budget gpu_window --tiny    # its smoke test

Rows (`ROWS`): every registered method (`alignmix_jax.methods`: the baselines, the authors'
code, AlignMix with the autoencoder), then the `VARIANTS` of AlignMix: without the
autoencoder (AlignMix/-, `model.autoencoder=none`) and two cheap rows of Table 5, A mixed
unaligned (`mixup.align=False`) and aligned at 2x2 (`feature_resolution=2`), and PuzzleMix
with the cross-entropy of the other rows instead of its official softmax BCE.

Every run is a workdir `<out>/runs/<row>_seed<k>`: `python -m alignmix_jax` trains it (and
resumes it if the comparison was killed), then `--mode eval` writes its `eval.json`; a run whose
eval.json exists is not run again. So the command restarts where it stopped. `--parallel N`
runs N of them at once (separate processes; on a GPU each takes 1/N of its memory): a
narrow network leaves most of an accelerator idle. The near-OOD set is scikit-learn's
digits written as an image folder (`<out>/ood_sklearn_digits`), which no method trained on.
Outputs in `<out>`: `results.json` (every run, with its learning curve), `results.md` (the
table: mean +- std over seeds, and its reading), `learning_curves.png` (test top-1 against
epoch per row), `reliability_best_worst.png` (the best and the worst calibrated rows, first
seed) and `figure3_interpolations.png` (decoded interpolations of the AlignMix/AE model).

Budgets (`BUDGETS`) set the config overrides common to every row, and the rows, seeds and
parallel runs a plain command uses; `--rows`, `--seeds`, `--parallel` replace those, `--set
field=value` (repeatable) adds or replaces an override, e.g. `--set num_epochs=200`, and
`--tiny` shrinks the budget to seconds per run (`TINY`: what CI runs).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent import futures
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alignmix_jax import methods  # pylint: disable=g-import-not-at-top,wrong-import-position
from alignmix_jax import metric_logging  # pylint: disable=g-import-not-at-top,wrong-import-position


class Row(NamedTuple):
  """One row of the table: its label, the method (a config argument) and its overrides."""
  label: str
  method: str
  overrides: dict


# AlignMix variants compared beside the methods (Table 5).
VARIANTS = {
    'alignmix_no_ae': Row('AlignMix/-', 'alignmix', {'model.autoencoder': 'none'}),
    'alignmix_unaligned': Row('AlignMix/AE, A unaligned', 'alignmix', {'mixup.align': False}),
    'alignmix_2x2': Row('AlignMix/AE, 2x2', 'alignmix', {'model.feature_resolution': 2}),
    # PuzzleMix with the other rows' loss: its official softmax BCE has ~1/K the gradient.
    'puzzlemix_ce': Row('PuzzleMix, cross-entropy', 'puzzlemix',
                        {'mixup.classification_loss': 'cross_entropy'}),
}
ROWS = {**{name: Row(methods.get(name).label, name, {}) for name in methods.names()},
        **VARIANTS}
class Budget(NamedTuple):
  """What a comparison costs: config overrides common to every row, and the rows, seeds and
  concurrent runs a command uses unless told otherwise."""
  about: str
  overrides: dict
  rows: tuple = tuple(ROWS)
  seeds: tuple = (0, 1)
  parallel: int = 1


LOWDATA_EXAMPLES, LOWDATA_EPOCHS = 500, 200
_EVAL = {'eval.batch_size': 500, 'eval.attack_examples': 1000}
BUDGETS = {
    'cpu': Budget(
        'about 2 hours for every row x 2 seeds on a 2-core CPU (Fashion-MNIST: 1,404 steps)',
        {'model.width': 8, 'batch_size': 128, 'num_epochs': 3, 'num_train_steps': 0,
         'optimizer.learning_rate': 0.02, 'optimizer.decay_epochs': (2,),
         'eval_every_epochs': 1, 'log_every_steps': 117, 'checkpoint_every_steps': 468,
         **_EVAL}),
    # Mixing pays off when a network can memorise its data: few examples, many epochs.
    'lowdata': Budget(
        'about 95 minutes for 7 rows x 3 seeds on a 2-core CPU',
        {'dataset.train_examples': LOWDATA_EXAMPLES, 'model.width': 8, 'batch_size': 128,
         'num_epochs': LOWDATA_EPOCHS, 'num_train_steps': 0, 'optimizer.learning_rate': 0.02,
         'optimizer.decay_epochs': (LOWDATA_EPOCHS * 6 // 10, LOWDATA_EPOCHS * 8 // 10),
         'eval_every_epochs': 10, 'log_every_steps': 30, 'checkpoint_every_steps': 300,
         **_EVAL},
        rows=('vanilla', 'input_mixup', 'puzzlemix', 'puzzlemix_ce', 'comixup',
              'alignmix_official', 'alignmix'), seeds=(0, 1, 2)),
    # The paper's CIFAR recipe (PreActResNet18 width 64, lr 0.1, 200 epochs) for a GPU.
    'gpu': Budget(
        'the paper\'s CIFAR recipe: hours per run on one GPU',
        {'model.width': 64, 'batch_size': 128, 'num_epochs': 200, 'num_train_steps': 0,
         'optimizer.learning_rate': 0.1, 'optimizer.decay_epochs': (100, 150),
         'eval_every_epochs': 10, 'log_every_steps': 117, 'checkpoint_every_steps': 4680,
         'eval.batch_size': 500, 'eval.attack_examples': 0}),
    # The same recipe shortened to 30 epochs, every row x 2 seeds, several runs at once.
    'gpu_window': Budget(
        'the paper\'s CIFAR recipe shortened to 30 epochs, every row x 2 seeds, 4 runs at once '
        'on one GPU (aimed at one 9-minute window of an H200; not yet measured)',
        {'model.width': 64, 'batch_size': 128, 'num_epochs': 30, 'num_train_steps': 0,
         'optimizer.learning_rate': 0.1, 'optimizer.decay_epochs': (15, 23),
         'eval_every_epochs': 3, 'log_every_steps': 117, 'checkpoint_every_steps': 2340,
         **_EVAL},
        parallel=4),
}
# `--tiny`: any budget at seconds per run (CI), its rows, seeds and parallel runs kept.
TINY = {'model.width': 4, 'batch_size': 16, 'num_train_steps': 6, 'log_every_steps': 3,
        'checkpoint_every_steps': 6, 'eval_every_epochs': 1000, 'eval.batch_size': 100,
        'eval.attack_examples': 100, 'eval.pgd_iters': 2, 'mixup.sinkhorn_iters': 10,
        'dataset.train_examples': 0}

COLUMNS = (('top1_error', 'Top-1 error'), ('best_top1_error', 'best top-1 error'),
           ('fgsm_error', 'FGSM error'), ('pgd_error', 'PGD error'), ('ece', 'ECE'),
           ('ood/uniform/auroc', 'Uniform AuROC'), ('ood/uniform/det_acc', 'Uniform Det Acc'),
           ('ood/gaussian/auroc', 'Gaussian AuROC'), ('ood/gaussian/det_acc', 'Gaussian Det Acc'),
           ('ood/sklearn_digits/auroc', 'digits AuROC'),
           ('ood/sklearn_digits/det_acc', 'digits Det Acc'), ('minutes', 'minutes'))


def cli_value(value):
  if isinstance(value, tuple):
    return '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def parse_set(items):
  """`['a.b=1', ...]` -> `{'a.b': '1'}` (values as the command line gives them)."""
  out = {}
  for item in items:
    field, sep, value = item.partition('=')
    if not sep or not field:
      raise SystemExit(f'compare_methods: --set {item!r} is not field=value.')
    out[field] = value
  return out


def write_near_ood(folder, image_size):
  """scikit-learn's digits as `folder/*.png` (unlabeled, grey, `image_size` square), written
  into a temporary folder then renamed: `folder` exists only whole. A folder of another
  count (an earlier, killed write) is written again."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  images = datasets.load_digits().images
  if os.path.isdir(folder) and len(os.listdir(folder)) == len(images):
    return
  from PIL import Image  # pylint: disable=g-import-not-at-top
  partial = folder + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  for index, image in enumerate(images):
    grey = (image * (255.0 / 16.0)).astype('uint8')
    Image.fromarray(grey).resize((image_size, image_size), Image.BILINEAR).save(
        os.path.join(partial, f'{index:04d}.png'))
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(partial, folder)


def _write_json(path, value):
  """`value` as JSON at `path`, atomically (a temporary file, then a rename)."""
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
  os.replace(path + '.tmp', path)


def _read_json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def run_one(config, row, seed, overrides, out_dir, near_ood, env=None):
  """Trains and evaluates one run (resuming or skipping what is done); its record, with its
  learning curve (`curve`: [epoch, test top-1] at every evaluation of training).

  `<workdir>/compare_run.json` says what is done: the command's config and overrides, then
  `train_seconds` once training finished and `eval_seconds` once the evaluation did (written
  atomically before the run and after each phase). A run made with other overrides is
  refused. `env`: the subprocesses' environment (None: this process's).
  """
  method, row_overrides = ROWS[row].method, ROWS[row].overrides
  workdir = os.path.join(out_dir, 'runs', f'{row}_seed{seed}')
  fields = {**{k: cli_value(v) for k, v in row_overrides.items()}, **overrides,
            'seed': str(seed), 'eval.ood_folders.sklearn_digits': near_ood}
  args = [f'--config.{field}={value}' for field, value in fields.items()]
  base = [sys.executable, '-m', 'alignmix_jax', '--config', f'{config}:{method}', '--workdir',
          workdir]
  status_path = os.path.join(workdir, 'compare_run.json')
  made = {'config': f'{config}:{method}', 'overrides': fields}
  if not os.path.exists(status_path):  # Before anything runs: a restart can check it.
    os.makedirs(workdir, exist_ok=True)
    _write_json(status_path, made)
  status = _read_json(status_path)
  if {key: status.get(key) for key in made} != made:
    raise SystemExit(
        f'compare_methods: {workdir} was run with {status.get("config")} and the overrides '
        f'{status.get("overrides")}, not {made["config"]} with {fields}: give another --out, '
        f'or delete {os.path.join(out_dir, "runs")} to run everything again.')
  for phase, extra in (('train_seconds', []), ('eval_seconds', ['--mode', 'eval'])):
    if phase in status:
      continue
    print(f'compare_methods: {row} seed {seed}: {" ".join(extra) or "train"}', flush=True)
    start = time.perf_counter()
    done = subprocess.run(base + args + extra, cwd=ROOT, env=env, check=False)
    if done.returncode:
      raise SystemExit(f'compare_methods: {row} seed {seed} failed ({done.returncode}); '
                       'rerun the same command to resume.')
    status[phase] = time.perf_counter() - start
    _write_json(status_path, status)
  record = _read_json(os.path.join(workdir, 'eval.json'))
  tests = [line for line in metric_logging.read_jsonl(workdir) if 'test/best_top1' in line]
  record['best_top1_error'] = 100.0 - tests[-1]['test/best_top1']
  record['curve'] = [[line['test/epoch'], line['test/top1']] for line in tests
                     if 'test/epoch' in line]  # Runs before test/epoch existed: none.
  record['minutes'] = (status['train_seconds'] + status['eval_seconds']) / 60.0
  return {'row': row, 'seed': seed, 'workdir': workdir, **record}


def table(records, rows, seeds):
  """The markdown table: mean +- std over seeds per row and column."""
  head = '| method | ' + ' | '.join(label for _, label in COLUMNS) + ' |'
  lines = [head, '| --- ' * (len(COLUMNS) + 1) + '|']
  for row in rows:
    cells = []
    for key, _ in COLUMNS:
      values = [r[key] for r in records if r['row'] == row and key in r]
      if not values:
        cells.append('-')
      elif len(values) == 1:
        cells.append(f'{values[0]:.2f}')
      else:
        cells.append(f'{statistics.fmean(values):.2f} +- {statistics.stdev(values):.2f}')
    lines.append(f'| {ROWS[row].label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + (f'\n\n{len(seeds)} seeds ({", ".join(map(str, seeds))}); errors, '
                             'ECE, AuROC and Det Acc in percent; minutes: training and '
                             'evaluation of one run.')


def rows_of(records):
  """The rows of `records`, in their first appearance's order."""
  return list(dict.fromkeys(r['row'] for r in records))


# What the reading weighs, with the direction that is better (-1: lower).
READING = (('top1_error', 'top-1 error', -1), ('pgd_error', 'PGD error', -1),
           ('ece', 'ECE', -1), ('ood/sklearn_digits/auroc', 'digits AuROC', 1))
ALIGNMIX_ROWS = ('alignmix', 'alignmix_official')


def verdicts(records, row, other):
  """`row` against `other`, metric by metric (`READING`): `[(label, difference of the means
  over seeds, word)]`, the word 'better' or 'worse' only when the difference exceeds the
  seed-to-seed spread (the sum of the two standard deviations; one seed: never), else
  'within the spread'."""
  def stats(name, key):
    values = [r[key] for r in records if r['row'] == name and key in r]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1
                                      else float('inf'))
  out = []
  for key, label, better in READING:
    (mean, spread), (base, base_spread) = stats(row, key), stats(other, key)
    diff = mean - base
    if abs(diff) > spread + base_spread:
      word = 'better' if diff * better > 0 else 'worse'
    else:
      word = 'within the spread'
    out.append((label, diff, word))
  return out


def reading(records):
  """Every row against the Baseline, then AlignMix (the authors' and AlignMix/AE) against
  every other row: one line of `verdicts` per pair, the same code for every row; then, per
  AlignMix row and metric, which rows it beats, which it is within the spread of, and
  which beat it."""
  rows = rows_of(records)
  pairs = [(row, 'vanilla') for row in rows if row != 'vanilla' and 'vanilla' in rows]
  for first in (row for row in ALIGNMIX_ROWS if row in rows):
    pairs += [(first, other) for other in rows if other not in (first, 'vanilla')
              and (other, first) not in pairs]
  lines = [f'- {ROWS[row].label} vs {ROWS[other].label}: '
           + ', '.join(f'{label} {diff:+.2f} ({word})'
                       for label, diff, word in verdicts(records, row, other)) + '.'
           for row, other in pairs]
  for first in (row for row in ALIGNMIX_ROWS if row in rows):
    others = [row for row in rows if row != first]
    if not others:
      continue
    lines.append(f'\n{ROWS[first].label}, beyond the seed spread:')
    words = {other: verdicts(records, first, other) for other in others}
    for index, (_, label, _) in enumerate(READING):
      groups = {word: ', '.join(f'*{ROWS[other].label}*' for other in others
                                if words[other][index][2] == word) or 'none'
                for word in ('better', 'within the spread', 'worse')}
      lines.append(f'- {label}: better than {groups["better"]}; within the spread of '
                   f'{groups["within the spread"]}; worse than {groups["worse"]}.')
  return '\n'.join(lines)


def learning_curves(records, out_dir, title):
  """`learning_curves.png`: test top-1 against epoch, one line per row (the mean over
  seeds) with the band between its seeds' lowest and highest; left the whole run, right
  its second half magnified."""
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  series = {}  # row: (epochs, [top-1 of each seed] per epoch)
  for row in rows_of(records):
    curves = [r['curve'] for r in records if r['row'] == row and r.get('curve')]
    if curves:
      length = min(len(curve) for curve in curves)  # Equal unless a run changed budget.
      series[row] = ([point[0] for point in curves[0][:length]],
                     [[curve[i][1] for curve in curves] for i in range(length)])
  last = max((epochs[-1] for epochs, _ in series.values()), default=1.0)
  late_values = [value for epochs, top1 in series.values()
                 for epoch, values in zip(epochs, top1) if epoch >= last / 2 for value in values]
  fig = mpl_figure.Figure(figsize=(12, 5), dpi=100)
  whole, late = fig.subplots(1, 2)
  for row, (epochs, top1) in series.items():
    for ax in (whole, late):
      line, = ax.plot(epochs, [statistics.fmean(v) for v in top1], marker='.',
                      label=ROWS[row].label)
      ax.fill_between(epochs, [min(v) for v in top1], [max(v) for v in top1], alpha=0.15,
                      color=line.get_color())
  late.set_xlim(last / 2, last * 1.02)
  if late_values:
    margin = max(0.5, 0.05 * (max(late_values) - min(late_values)))
    late.set_ylim(min(late_values) - margin, max(late_values) + margin)
  for ax, what in ((whole, title), (late, 'second half')):
    ax.set_xlabel('epoch')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title(what)
    ax.grid(alpha=0.3)
  whole.legend()
  path = os.path.join(out_dir, 'learning_curves.png')
  fig.savefig(path, bbox_inches='tight')
  return path


def side_by_side(records, out_dir):
  """The reliability diagrams of the best and the worst calibrated rows (seed 0)."""
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  from matplotlib import image as mpl_image  # pylint: disable=g-import-not-at-top
  first = sorted((r for r in records if r['seed'] == min(x['seed'] for x in records)),
                 key=lambda r: r['ece'])
  best, worst = first[0], first[-1]
  fig = mpl_figure.Figure(figsize=(9, 6), dpi=100)
  for ax, record, what in zip(fig.subplots(1, 2), (best, worst), ('best', 'worst')):
    ax.imshow(mpl_image.imread(os.path.join(record['workdir'], 'eval', 'reliability.png')))
    ax.set_axis_off()
    ax.set_title(f'{what} calibrated: {ROWS[record["row"]].label}')
  path = os.path.join(out_dir, 'reliability_best_worst.png')
  fig.savefig(path, bbox_inches='tight')
  return path


def interpolations(config_path, workdir, out_dir):
  """Figure 3 from the AlignMix/AE run in `workdir`."""
  from alignmix_jax import configs  # pylint: disable=g-import-not-at-top
  from alignmix_jax import visualize  # pylint: disable=g-import-not-at-top
  config = configs.load(f'{config_path}:alignmix')
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    recorded = json.load(f)
  for group in ('model', 'dataset'):  # The network and data the run was trained with.
    for name, value in recorded[group].items():
      if name in config[group] and not isinstance(value, dict):
        config[group][name] = tuple(value) if isinstance(value, list) else value
  trained = visualize.load(workdir, config)
  x, x_prime = visualize.pair_from_test_set(config, (0, 7))  # T-shirt, sneaker.
  lams = visualize.lam_grid(7)
  rows = visualize.interpolation_rows(trained.model, trained.variables, x, x_prime, lams)
  return visualize.save_figure(visualize.plot_interpolations(rows, x, x_prime, lams), out_dir,
                               'figure3_interpolations.png')


def _environment(parallel):
  """The runs' environment: with several at once, each may take 1/`parallel` of an
  accelerator's memory (JAX takes 75% by default; `XLA_PYTHON_CLIENT_MEM_FRACTION` already
  set is kept)."""
  env = dict(os.environ)
  if parallel > 1:
    env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', f'{0.9 / parallel:.3f}')
  return env


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder of the runs and the table')
  parser.add_argument('--config', default='fashion_mnist', help='a setting or config file')
  parser.add_argument('--budget', default='cpu', choices=sorted(BUDGETS))
  parser.add_argument('--tiny', action='store_true',
                      help='the budget at seconds per run (TINY), its rows and seeds kept')
  parser.add_argument('--seeds', default='', help='comma-separated (default: the budget\'s)')
  parser.add_argument('--rows', default='', help=f'of {", ".join(ROWS)} (default: the '
                      'budget\'s)')
  parser.add_argument('--parallel', type=int, default=0,
                      help='runs at once (default: the budget\'s)')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='a config override for every row (repeatable)')
  args = parser.parse_args(argv)
  budget = BUDGETS[args.budget]
  rows = args.rows.split(',') if args.rows else list(budget.rows)
  unknown = [row for row in rows if row not in ROWS]
  if unknown:
    parser.error(f'unknown rows {unknown}; valid: {", ".join(ROWS)}')
  try:
    seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else list(budget.seeds)
  except ValueError:
    parser.error(f'--seeds {args.seeds!r} is not a comma-separated list of integers')
  parallel = args.parallel or budget.parallel
  if parallel < 1:
    parser.error(f'--parallel {args.parallel} must be at least 1')
  sized = {**budget.overrides, **(TINY if args.tiny else {})}
  overrides = {**{k: cli_value(v) for k, v in sized.items()}, **parse_set(args.set)}
  out_dir = os.path.abspath(args.out)
  near_ood = os.path.join(out_dir, 'ood_sklearn_digits')
  write_near_ood(near_ood, 32)
  env = _environment(parallel)
  runs = [(row, seed) for seed in seeds for row in rows]
  with futures.ThreadPoolExecutor(parallel) as pool:  # Threads wait on the processes.
    records = list(pool.map(
        lambda run: run_one(args.config, *run, overrides, out_dir, near_ood, env), runs))
  _write_json(os.path.join(out_dir, 'results.json'),
              {'config': args.config, 'budget': args.budget, 'about': budget.about,
               'tiny': args.tiny, 'parallel': parallel, 'overrides': overrides,
               'records': records})
  text = table(records, rows, seeds) + '\n\n' + reading(records)
  with open(os.path.join(out_dir, 'results.md.tmp'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  os.replace(os.path.join(out_dir, 'results.md.tmp'), os.path.join(out_dir, 'results.md'))
  print(text)
  print(learning_curves(records, out_dir, f'{args.config}, {args.budget} budget'))
  print(side_by_side(records, out_dir))
  if 'alignmix' in rows:
    seed0 = os.path.join(out_dir, 'runs', f'alignmix_seed{seeds[0]}')
    print(interpolations(args.config, seed0, out_dir))
  return 0


if __name__ == '__main__':
  sys.exit(main())
