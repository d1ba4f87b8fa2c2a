"""The paper's comparison (Tables 1-3, 5) on one dataset: every method, same data, model,
schedule and seeds, then the evaluation programs on each final checkpoint.

  python -m benchmarks.compare_methods --out workdirs/compare                # CPU budget
  python -m benchmarks.compare_methods --out workdirs/compare_gpu --budget gpu
  python -m benchmarks.compare_methods --out DIR --budget tiny               # smoke test

Rows (`ROWS`): every registered method (`alignmix_jax.methods`: the baselines, the authors'
code, AlignMix with the autoencoder), then the `VARIANTS` of AlignMix: without the
autoencoder (AlignMix/-, `model.autoencoder=none`) and two cheap rows of Table 5, A mixed
unaligned (`mixup.align=False`) and aligned at 2x2 (`feature_resolution=2`).

Every run is a workdir `<out>/runs/<row>_seed<k>`: `python -m alignmix_jax` trains it (and
resumes it if the comparison was killed), then `--mode eval` writes its `eval.json`; a run whose
eval.json exists is not run again. So the command restarts where it stopped. The near-OOD
set is scikit-learn's digits written as an image folder (`<out>/ood_sklearn_digits`), which
no method trained on. Outputs in `<out>`: `results.json` (every run), `results.md` (the
table: mean +- std over seeds), `reliability_best_worst.png` (the best and the worst
calibrated rows, seed 0) and `figure3_interpolations.png` (decoded interpolations of the
AlignMix/AE model, seed 0).

Budgets (`BUDGETS`) set the config overrides common to every row; `--set field=value`
(repeatable) adds or replaces one, e.g. `--set num_epochs=200`. The `gpu` budget is the
paper's CIFAR recipe at full width on Fashion-MNIST.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
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
}
ROWS = {**{name: Row(methods.get(name).label, name, {}) for name in methods.names()},
        **VARIANTS}
BUDGETS = {
    # About 70 minutes for 9 rows x 2 seeds on a 2-core CPU (Fashion-MNIST: 1,404 steps).
    'cpu': {'model.width': 8, 'batch_size': 128, 'num_epochs': 3, 'num_train_steps': 0,
            'optimizer.learning_rate': 0.02, 'optimizer.decay_epochs': (2,),
            'eval_every_epochs': 1, 'log_every_steps': 117, 'checkpoint_every_steps': 468,
            'eval.batch_size': 500, 'eval.attack_examples': 1000},
    # The paper's CIFAR recipe (PreActResNet18 width 64, lr 0.1, 200 epochs) for a GPU.
    'gpu': {'model.width': 64, 'batch_size': 128, 'num_epochs': 200,
            'optimizer.learning_rate': 0.1, 'optimizer.decay_epochs': (100, 150),
            'eval_every_epochs': 10, 'log_every_steps': 117, 'checkpoint_every_steps': 4680,
            'eval.batch_size': 500, 'eval.attack_examples': 0},
    # CI: seconds per run.
    'tiny': {'model.width': 4, 'batch_size': 16, 'num_train_steps': 6, 'log_every_steps': 3,
             'checkpoint_every_steps': 6, 'eval_every_epochs': 1000, 'eval.batch_size': 100,
             'eval.attack_examples': 100, 'eval.pgd_iters': 2, 'mixup.sinkhorn_iters': 10},
}
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


def run_one(config, row, seed, overrides, out_dir, near_ood):
  """Trains and evaluates one run (resuming or skipping what is done); its record.

  `<workdir>/compare_run.json` says what is done: the command's config and overrides, then
  `train_seconds` once training finished and `eval_seconds` once the evaluation did (written
  atomically before the run and after each phase). A run made with other overrides is
  refused.
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
    done = subprocess.run(base + args + extra, cwd=ROOT, check=False)
    if done.returncode:
      raise SystemExit(f'compare_methods: {row} seed {seed} failed ({done.returncode}); '
                       'rerun the same command to resume.')
    status[phase] = time.perf_counter() - start
    _write_json(status_path, status)
  record = _read_json(os.path.join(workdir, 'eval.json'))
  tests = [line for line in metric_logging.read_jsonl(workdir) if 'test/best_top1' in line]
  record['best_top1_error'] = 100.0 - tests[-1]['test/best_top1']
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder of the runs and the table')
  parser.add_argument('--config', default='fashion_mnist', help='a setting or config file')
  parser.add_argument('--budget', default='cpu', choices=sorted(BUDGETS))
  parser.add_argument('--seeds', default='0,1')
  parser.add_argument('--rows', default=','.join(ROWS), help=f'of {", ".join(ROWS)}')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='a config override for every row (repeatable)')
  args = parser.parse_args(argv)
  rows = args.rows.split(',')
  unknown = [row for row in rows if row not in ROWS]
  if unknown:
    parser.error(f'unknown rows {unknown}; valid: {", ".join(ROWS)}')
  seeds = [int(s) for s in args.seeds.split(',')]
  overrides = {**{k: cli_value(v) for k, v in BUDGETS[args.budget].items()},
               **parse_set(args.set)}
  out_dir = os.path.abspath(args.out)
  near_ood = os.path.join(out_dir, 'ood_sklearn_digits')
  write_near_ood(near_ood, 32)
  records = [run_one(args.config, row, seed, overrides, out_dir, near_ood)
             for seed in seeds for row in rows]
  _write_json(os.path.join(out_dir, 'results.json'),
              {'config': args.config, 'budget': args.budget, 'overrides': overrides,
               'records': records})
  text = table(records, rows, seeds)
  with open(os.path.join(out_dir, 'results.md.tmp'), 'w', encoding='utf-8') as f:
    f.write(text + '\n')
  os.replace(os.path.join(out_dir, 'results.md.tmp'), os.path.join(out_dir, 'results.md'))
  print(text)
  print(side_by_side(records, out_dir))
  if 'alignmix' in rows:
    seed0 = os.path.join(out_dir, 'runs', f'alignmix_seed{seeds[0]}')
    print(interpolations(args.config, seed0, out_dir))
  return 0


if __name__ == '__main__':
  sys.exit(main())
