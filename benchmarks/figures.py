"""Every figure the README quotes, measured again on this machine and written into it.

  python -m benchmarks.figures                      # the sections of DEFAULT
  python -m benchmarks.figures digits fashion_mnist # some sections
  python -m benchmarks.figures fidelity --authors_dir AUTHORS_DIR   # needs torch
  python -m benchmarks.figures --check digits       # rerun, compare, change nothing
  python -m benchmarks.figures --render             # rewrite the README from figures.json

Each section runs the README's own commands (`python -m main ...`, `python -m benchmarks.*`)
in subprocesses, keeps what they print or write in `docs/figures.json` (with the machine,
the date and the commands) and rewrites the blocks of README.md that quote them, between
`<!-- figures: NAME -->` and `<!-- /figures: NAME -->`. So the README cannot disagree with
the code that produced it: edit the templates here, never the numbers there.

`--check` reruns the sections and compares the deterministic blocks they feed (accuracy and
evaluation figures, parameter counts; not times) with the README, exiting with status 1 and
a diff when they differ. The digits run is deterministic on a given machine type, so CI
checks its figures (`tests/test_figures.py`, marker `slow`).

The subprocesses run without `XLA_FLAGS`, as a user typing the README's commands would.

Sections:
  digits          configs/digits.py trained and evaluated (`--mode eval`);
  fashion_mnist   configs/fashion_mnist.py, 400 steps, AlignMix/AE and vanilla;
  summary         parameter counts (`--mode summary`) of the CIFAR networks;
  throughput      benchmarks.train_throughput, every row (digits config);
  pipelines       the step fed by each data back end (digits and Fashion-MNIST);
  alignment       benchmarks.alignment, 4x4 and 8x8 (with `--authors_dir`: against their
                  code too; against OTT-JAX when it is installed);
  eval            benchmarks.eval_throughput;
  fidelity        benchmarks.fidelity against the authors' code (`--authors_dir`), both
                  networks;
  torch           benchmarks.torch_reference (needs torch): our step against PyTorch's;
  compare         benchmarks.compare_methods on Fashion-MNIST, CPU budget (about 70 minutes;
                  resumes its runs in `--compare_dir`);
  tests           the README's two test commands, timed;
  gpu             the figures `benchmarks.gpu_check --out FILE` wrote on an accelerator
                  (`--gpu_jsonl FILE`).
"""

import argparse
import datetime
import difflib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from alignmix_jax import metric_logging
from benchmarks import compare_methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, 'docs', 'figures.json')
README = os.path.join(ROOT, 'README.md')
BLOCK = re.compile(r'(<!-- figures: (\S+) -->)(.*?)(<!-- /figures: \2 -->)', re.S)
SUMMARY_CONFIGS = ('cifar10_preactresnet18', 'cifar100_preactresnet18', 'cifar10_wrn16_8')


# ---------------------------------------------------------------------------- running


def _env():
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  return env


def _run(command, log):
  """Runs `command` (a list) from the repository root; returns (stdout, seconds)."""
  log.append(' '.join(command))
  print('$', ' '.join(command), flush=True)
  start = time.perf_counter()
  done = subprocess.run([sys.executable] + command[1:] if command[0] == 'python' else command,
                        cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if done.returncode:
    sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
    raise SystemExit(f'figures: `{" ".join(command)}` failed (status {done.returncode}).')
  return done.stdout, seconds


def _json_lines(text):
  return [json.loads(line) for line in text.splitlines() if line.startswith('{')]


def _train_and_evaluate(config, workdir, log, overrides=()):
  """Trains `config` in a fresh `workdir`; returns the run's figures."""
  command = ['python', '-m', 'main', '--config', config, '--workdir', workdir, *overrides]
  _, seconds = _run(command, log)
  lines = metric_logging.read_jsonl(workdir)
  tests = [line for line in lines if 'test/top1' in line]
  row_errors = [line['train/sinkhorn_row_error'] for line in lines
                if 'train/sinkhorn_row_error' in line]
  out = {'top1': tests[-1]['test/top1'], 'best_top1': tests[-1]['test/best_top1'],
         'steps': tests[-1]['step'], 'seconds': seconds, 'evaluations': len(tests)}
  if row_errors:
    out['row_error_range'] = [min(row_errors), max(row_errors)]
  return out


def run_digits(args, log):
  del args
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, 'digits')
    out = _train_and_evaluate('configs/digits.py', workdir, log)
    _, out['eval_seconds'] = _run(['python', '-m', 'main', '--config', 'configs/digits.py',
                                   '--workdir', workdir, '--mode', 'eval'], log)
    with open(os.path.join(workdir, 'eval.json'), encoding='utf-8') as f:
      out['eval'] = json.load(f)
  return out


def run_fashion_mnist(args, log):
  del args
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for method in ('alignmix', 'vanilla'):
      out[method] = _train_and_evaluate(
          f'configs/fashion_mnist.py:{method}', os.path.join(tmp, method), log,
          ['--config.num_train_steps=400'])
  return out


def run_summary(args, log):
  del args
  out = {}
  for name in SUMMARY_CONFIGS:
    text, _ = _run(['python', '-m', 'main', '--config', f'configs/{name}.py:vanilla',
                    '--mode', 'summary'], log)
    match = re.search(r'^classifier params .*: (\d+)$', text, re.M)
    if match is None:
      raise SystemExit(f'figures: no `classifier params ...: N` line in the summary of {name}.')
    out[name] = int(match.group(1))
  return out


def run_throughput(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.train_throughput', '--steps', '20',
                  '--compile_repeats', '3'], log)
  return {'records': _json_lines(text)}


def run_pipelines(args, log):
  del args
  records = []
  for config in ('configs/digits.py', 'configs/fashion_mnist.py'):
    text, _ = _run(['python', '-m', 'benchmarks.train_throughput', '--config', config,
                    '--rows', 'vanilla', '--pipeline_steps', '40',
                    '--pipelines', 'device,tfdata'], log)
    records += [r for r in _json_lines(text) if r['row'].startswith('pipeline_')]
  return {'records': records}


def run_alignment(args, log):
  command = ['python', '-m', 'benchmarks.alignment']
  if args.authors_dir:
    command += ['--authors_dir', args.authors_dir]
  text, _ = _run(command, log)
  return {str(r['side']): r for r in _json_lines(text)}


def run_eval(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.eval_throughput'], log)
  return {r['program']: r for r in _json_lines(text)}


def run_fidelity(args, log):
  if not args.authors_dir:
    raise SystemExit('figures: the fidelity section needs --authors_dir (a checkout of '
                     'github.com/shashankvkt/AlignMixup_CVPR22) and torch.')
  out = {}
  for model in ('preactresnet18', 'wrn16_8'):
    text, _ = _run(['python', '-m', 'benchmarks.fidelity', '--authors_dir', args.authors_dir,
                    '--model', model], log)
    out[model] = {r['part']: r for r in _json_lines(text)}
  return out


def run_torch(args, log):
  del args
  text, _ = _run(['python', '-m', 'benchmarks.torch_reference'], log)
  return {'records': _json_lines(text), 'torch': importlib.metadata.version('torch')}


def run_compare(args, log):
  """The comparison of `benchmarks.compare_methods` (resumes, or rereads, its runs)."""
  out = os.path.join(ROOT, args.compare_dir)
  _run(['python', '-m', 'benchmarks.compare_methods', '--out', args.compare_dir], log)
  with open(os.path.join(out, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  with open(os.path.join(out, 'results.md'), encoding='utf-8') as f:
    results['table'] = f.read().strip()
  for name, copy in (('reliability_best_worst.png', 'compare_reliability.png'),
                     ('figure3_interpolations.png', 'compare_figure3.png')):
    shutil.copyfile(os.path.join(out, name), os.path.join(ROOT, 'docs', copy))
  return results


def run_tests(args, log):
  """The README's test commands, timed (with whatever compilation cache this machine has)."""
  del args
  out = {}
  for name, command in (('default', ['python', '-m', 'pytest', '-q', '-n', '2', 'tests']),
                        ('slow', ['python', '-m', 'pytest', '-q', '-m', 'slow', 'tests'])):
    text, seconds = _run(command, log)
    passed = re.search(r'(\d+) passed', text)
    out[name] = {'seconds': seconds, 'passed': int(passed.group(1)) if passed else 0}
  return out


def run_gpu(args, log):
  """What `benchmarks.gpu_check --out FILE` wrote on an accelerator (`--gpu_jsonl FILE`):
  read here, not measured; the machine is that of its `environment` line."""
  if not args.gpu_jsonl:
    raise SystemExit('figures: the gpu section needs --gpu_jsonl FILE, written on the '
                     'accelerator by `python -m benchmarks.gpu_check --fashion_dir DIR --out '
                     'FILE`.')
  with open(args.gpu_jsonl, encoding='utf-8') as f:
    records = [json.loads(line) for line in f if line.strip()]
  environment = next(r for r in records if r['check'] == 'environment')
  log.append('python -m benchmarks.gpu_check --fashion_dir DIR --out FILE')
  return {'records': records,
          'machine': {'cpu': f'{environment["devices"]}x {environment["device_kind"]}',
                      'jax': environment['jax']}}


SECTIONS = {'digits': run_digits, 'fashion_mnist': run_fashion_mnist, 'summary': run_summary,
            'throughput': run_throughput, 'pipelines': run_pipelines,
            'alignment': run_alignment, 'eval': run_eval, 'fidelity': run_fidelity,
            'torch': run_torch, 'compare': run_compare, 'tests': run_tests, 'gpu': run_gpu}


# The sections a plain `python -m benchmarks.figures` runs (the others need torch, the
# authors' code, or an hour).
DEFAULT = ('digits', 'fashion_mnist', 'summary', 'throughput', 'pipelines', 'alignment', 'eval')


def machine():
  """This machine in words, e.g. `2-core x86_64 CPU, jax 0.10.2`."""
  model = ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      model = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), '')
  except OSError:
    pass
  return {'cpu': f'{os.cpu_count()}-core {platform.machine()} CPU', 'cpu_model': model,
          'jax': importlib.metadata.version('jax'), 'python': platform.python_version()}


# -------------------------------------------------------------------------- rendering


def _pct(value):
  return f'{value:.2f}%'


def _time(seconds):
  seconds = int(round(seconds))
  return f'{seconds // 60} min {seconds % 60} s' if seconds >= 60 else f'{seconds} s'


def _where(section):
  m = section['machine']
  return f'{m["cpu"]}, jax {m["jax"]}'


def _table(header, rows):
  """A Markdown table from a header and rows, each a sequence of cell strings."""
  lines = [header, ['---'] * len(header), *rows]
  return '\n'.join('| ' + ' | '.join(cells) + ' |' for cells in lines)


def _digits_setup(f):
  d = f['digits']
  return (f'{_pct(d["top1"])} final and {_pct(d["best_top1"])} best test accuracy in '
          f'{_time(d["seconds"])} on a {d["machine"]["cpu"]}')


def _results(f):
  d, fm = f['digits'], f.get('fashion_mnist')
  rows = [[f'`configs/digits.py` (AlignMix/AE, PreActResNet18 width 16, {d["steps"]} steps, '
           '1 device)',
           f'{_pct(d["top1"])} final, {_pct(d["best_top1"])} best test top-1 (360 test images)',
           f'{_time(d["seconds"])} with start-up and {d["evaluations"]} evaluations'],
          ['`--mode eval` on that run (attacks, calibration, OOD noise)',
           'see [Evaluation](#evaluation)', _time(d['eval_seconds'])]]
  if fm:
    a, v = fm['alignmix'], fm['vanilla']
    rows.append(['`configs/fashion_mnist.py` for 400 steps (`--config.num_train_steps=400`; '
                 'the method as `:vanilla`)',
                 f'AlignMix/AE {_pct(a["top1"])}, vanilla {_pct(v["top1"])} test top-1 '
                 '(10,000 images)', f'{_time(a["seconds"])}, {_time(v["seconds"])}'])
  return _table(['run', 'result', 'time'], rows) + f'\n\nMachine: {_where(d)}.'


def _digits_eval(f):
  values = sorted(f['digits']['eval'].items())
  return '```\n{\n' + ',\n'.join(f'  "{name}": {value:.2f}' for name, value in values) + '\n}\n```'


def _row_error(f):
  low, high = f['digits']['row_error_range']
  return f'{low:.1f} to {high:.1f}'


def _param_counts(f):
  s = f['summary']
  return (f'{s["cifar10_preactresnet18"]:,} parameters on CIFAR-10 '
          f'({s["cifar100_preactresnet18"]:,} on CIFAR-100), WRN16-8 '
          f'{s["cifar10_wrn16_8"]:,}')


def _throughput(f):
  records = f['throughput']['records']
  rows = {r['row']: r for r in records if 'step_ms_median' in r}
  summary = next(r for r in records if r['row'] == 'summary')
  first = next(iter(rows.values()))
  table = _table(['row', 'compile', 'step (median)', 'step (mean)', 'images/s'],
                 [[name, f'{r["compile_s"]:.1f} s', f'{r["step_ms_median"]:.0f} ms',
                   f'{r["step_ms_mean"]:.0f} ms', f'{r["images_per_s"]:.0f}']
                  for name, r in rows.items()])
  return (table + f'\n\n{first["model"]} width {first["width"]}, batch '
          f'{first["batch"]}, {first["image_size"]}x{first["image_size"]}, {first["dtype"]}, '
          f'{first["devices"]} device, {first["steps"]} steps per row, compile times the median '
          f'of {first.get("compile_repeats", 1)}; {_where(f["throughput"])}. '
          f'Feature step / vanilla step: **{summary["feature_over_vanilla"]:.2f}** (target '
          f'<= 1.10); five-mode step (mean over its draws) / vanilla: '
          f'**{summary["five_mode_over_vanilla"]:.2f}** (target <= 1.25); five-mode compile / '
          f'vanilla compile: **{summary["five_mode_compile_over_vanilla"]:.2f}** (target <= 1.5).')


def _pipelines(f):
  p = f['pipelines']
  table = _table(['data', 'back end', 'fed AlignMix step', 'pipeline alone', 'one epoch'],
                 [[f'{r["dataset"]} (batch {r["batch"]})', r['row'][len('pipeline_'):],
                   f'{r["images_per_s"]:,.0f} images/s',
                   f'{r["pipeline_only_images_per_s"]:,.0f} images/s', f'{r["epoch_s"]:.1f} s']
                  for r in p['records']])
  return table + f'\n\n{_where(p)}.'


def _alignment(f):
  a = f['alignment']

  def ott(r, name):
    if f'{name}_ms' not in r:
      return '-'
    return f'{r[f"{name}_ms"]:.1f} ms ({"valid" if r[f"{name}_valid"] else "invalid plan"})'

  rows = []
  for side in ('4', '8'):
    r = a[side]
    authors = ([f'{r["authors_ms"]:.0f} ms ({r["authors_iterations"]} iterations)',
                f'**{r["ours_speed_vs_authors"]:.0f}x**'] if 'authors_ms' in r else ['-', '-'])
    rows.append([f'{side}x{side}', f'**{r["ours_ms"]:.1f} ms**', *authors,
                 ott(r, 'ott_log_domain'), ott(r, 'ott_kernel'),
                 f'**{r["ours_speed_vs_ott"]:.2f}x**' if 'ours_speed_vs_ott' in r else '-'])
  r4 = a['4']
  return (_table(['side', 'ours', "authors' code", 'ours vs theirs', 'OTT-JAX log domain',
                  'OTT-JAX kernel', "ours vs OTT's fastest valid"], rows)
          + f'\n\nB={r4["batch"]}, C={r4["channels"]}, {r4["sinkhorn_iters"]} iterations, '
          f'cost + Sinkhorn + transport, the rows taking turns; {_where(a)}.')


def _eval(f):
  e = f['eval']
  return (f'clean {e["clean"]["images_per_s"]:,.0f} images/s, FGSM '
          f'{e["fgsm"]["images_per_s"]:,.0f}, PGD-{e["pgd"]["pgd_iters"]} '
          f'{e["pgd"]["images_per_s"]:,.1f} (batch {e["clean"]["batch"]}; {_where(e)})')


def _fidelity(f):
  fid = f['fidelity']
  models = ('preactresnet18', 'wrn16_8')

  def row(label, get):
    return [label, *(get(fid[m]) for m in models)]

  def three(name):
    return lambda m: ' / '.join(f'{m["alignment"][f"mixed_{name}_{k}_rel"]:.1e}' for k in
                                ('ours_vs_theirs', 'ours_vs_theirs_float64',
                                 'theirs_vs_theirs_float64'))

  net = lambda key: lambda m: f'{m["network"][key]:.1e}'
  rows = [row('A, eval mode (max \\|A\\|)', net('eval_A_rel')),
           row('logits, eval mode (max \\|logits\\|)', net('eval_logits_rel')),
           row('A, train mode (batch statistics)', net('train_A_rel')),
           row('logits, train mode', net('train_logits_rel')),
           row('one SGD step: ours vs theirs / ours vs theirs in float64 / theirs vs theirs '
               'in float64', lambda m: ' / '.join(
                   f'{m["sgd_step"][k]:.1e}' for k in
                   ('ours_vs_theirs_rel_change', 'ours_vs_theirs_float64_rel_change',
                    'theirs_vs_theirs_float64_rel_change'))),
           row('(13) mixed, 100 iterations, same three', three('13')),
           row('(14) mixed, same three', three('14')),
           row('iterations their loop ran (of 100)',
               lambda m: str(m['alignment']['authors_iterations_13'])),
           row('largest row sum of R, minus 1',
               lambda m: f'{m["alignment"]["row_error"]:.1f}')]
  return (_table(['compared (max difference relative to)', 'PreActResNet18', 'WRN16-8'], rows)
          + f'\n\n{_where(fid)}, torch {fid["torch"]}.')


def _convergence(f):
  a = f['fidelity']['preactresnet18']['alignment']
  wrn = f['fidelity']['wrn16_8']['alignment']
  t13, t14 = a['tilde_13_to_converged'], a['tilde_14_to_converged']
  return (f'100 iterations leave rows of R summing to up to {1 + a["row_error"]:.0f} '
          f'(WRN16-8: {1 + wrn["row_error"]:.0f}): a vector of (13) is then a weighted sum of '
          f'A\'\'s vectors, not a convex combination, and A~ ends {t13["one_plan"]:.1f} from the '
          f'converged one (max |A| {a["max_abs_A"]:.1f}; A~\' of (14), whose columns are exact, '
          f'{t14["one_plan"]:.1f}; with the barycentric projection {t13["one_plan_barycentric"]:.1f} '
          f'and {t14["one_plan_barycentric"]:.1f})')


def _test_time(f):
  t = f['tests']
  return (f'{t["default"]["passed"]} tests in {_time(t["default"]["seconds"])} on a '
          f'{t["machine"]["cpu"]}')


def _slow_time(f):
  return _time(f['tests']['slow']['seconds'])


def _torch(f):
  t = f['torch']
  table = _table(['threads', 'batch', 'step', 'PyTorch', 'ours', "our speed / PyTorch's"],
                 [[str(r['threads']), str(r['batch']), r['step'], f'{r["torch_ms"]:.0f} ms',
                   f'{r["ours_ms"]:.0f} ms', f'**{r["ours_speed_vs_torch"]:.2f}**']
                  for r in t['records']])
  width = t['records'][0]['width']
  return (table + f'\n\nPreActResNet18 width {width}, CIFAR-100 head, 32x32, SGD; '
          f'{_where(t)}, torch {t["torch"]}.')


def _gpu(f):
  g = f['gpu']
  records = g['records']
  steps = [r for r in records if r['check'] == 'train_step' and r['row'] != 'summary']
  summaries = {r['dtype']: r for r in records if r.get('row') == 'summary'}
  first = steps[0]
  table = _table(['dtype', 'row', 'compile', 'step (median)', 'step (mean)', 'images/s',
                  'step memory'],
                 [[r['dtype'], r['row'], f'{r["compile_s"]:.1f} s',
                   f'{r["step_ms_median"]:.2f} ms', f'{r["step_ms_mean"]:.2f} ms',
                   f'{r["images_per_s"]:,.0f}', f'{r["step_memory_bytes"] / 2**30:.2f} GiB']
                  for r in steps])
  ratios = '; '.join(f'{dtype}: feature / vanilla {s["feature_over_vanilla"]:.2f}, five-mode '
                     f'(mean) / vanilla {s["five_mode_over_vanilla"]:.2f}'
                     for dtype, s in summaries.items())
  side = {r['side']: r for r in records if r['check'] == 'alignment'}
  fashion = next(r for r in records if r['check'] == 'fashion_mnist')
  return (table + f'\n\n{first["model"]} width {first["width"]}, batch {first["batch"]}, '
          f'{first["image_size"]}x{first["image_size"]}, {first["steps"]} steps per row; '
          f'{_where(g)}. Step ratios, {ratios}. The alignment alone (B=128, C=512, 100 '
          f'iterations): {side[4]["ours_ms"]:.2f} ms at 4x4, {side[8]["ours_ms"]:.2f} ms at '
          f'8x8. `configs/fashion_mnist.py` (width {fashion["width"]}, batch '
          f'{fashion["batch"]}, device-resident data) for {fashion["epochs"]} epochs: '
          f'{_pct(fashion["test_top1"])} test top-1, {fashion["epoch_s_training"]:.1f} s per '
          f'epoch of training steps, {_time(fashion["wall_s"])} in all with start-up.')


def _compare(f):
  c = f['compare']
  o = c['overrides']
  return (c['table'] + f'\n\n`{c["config"]}` with the `{c["budget"]}` budget: PreActResNet18 '
          f'width {o["model.width"]}, batch {o["batch_size"]}, {o["num_epochs"]} epochs, lr '
          f'{o["optimizer.learning_rate"]}, decayed x0.1 at epochs {o["optimizer.decay_epochs"]}; '
          f'FGSM and PGD on the first {o["eval.attack_examples"]} test images. {_where(c)}.')


def _compare_reading(f):
  """Each row against vanilla, metric by metric: the difference of the means and whether it
  exceeds the seed-to-seed spread (the sum of the two standard deviations)."""
  records = f['compare']['records']
  rows = list(dict.fromkeys(r['row'] for r in records))
  metrics = (('top1_error', 'top-1 error', -1), ('pgd_error', 'PGD error', -1),
             ('ece', 'ECE', -1), ('ood/sklearn_digits/auroc', 'digits AuROC', 1))

  def stats(row, key):
    values = [r[key] for r in records if r['row'] == row]
    spread = statistics.stdev(values) if len(values) > 1 else float('inf')
    return statistics.fmean(values), spread

  lines = []
  for row in rows:
    if row == 'vanilla':
      continue
    parts = []
    for key, label, better in metrics:
      (mean, spread), (base, base_spread) = stats(row, key), stats('vanilla', key)
      diff = mean - base
      if abs(diff) > spread + base_spread:
        verdict = 'better' if diff * better > 0 else 'worse'
      else:
        verdict = 'within the spread'
      parts.append(f'{label} {diff:+.2f} ({verdict})')
    lines.append(f'- {compare_methods.LABELS.get(row, row)} vs vanilla: ' + ', '.join(parts) + '.')
  return '\n'.join(lines)


# Block name -> (sections it needs, renderer, whether --check compares it).
BLOCKS = {
    'digits_setup': (('digits',), _digits_setup, False),
    'results': (('digits',), _results, False),
    'digits_eval': (('digits',), _digits_eval, True),
    'row_error': (('digits',), _row_error, True),
    'param_counts': (('summary',), _param_counts, True),
    'throughput': (('throughput',), _throughput, False),
    'pipelines': (('pipelines',), _pipelines, False),
    'alignment': (('alignment',), _alignment, False),
    'gpu': (('gpu',), _gpu, False),
    'eval': (('eval',), _eval, False),
    'fidelity': (('fidelity',), _fidelity, False),
    'convergence': (('fidelity',), _convergence, False),
    'torch': (('torch',), _torch, False),
    'compare': (('compare',), _compare, False),
    'compare_reading': (('compare',), _compare_reading, False),
    'test_time': (('tests',), _test_time, False),
    'slow_time': (('tests',), _slow_time, False),
}


def render(figures):
  """`{block: text}` for every block whose sections are in `figures`."""
  return {name: renderer(figures) for name, (needs, renderer, _) in BLOCKS.items()
          if all(section in figures for section in needs)}


def checked_values(figures, sections):
  """The deterministic figures of `sections`, as the README quotes them (for --check)."""
  digits = figures.get('digits')
  out = {}
  for name, text in render(figures).items():
    needs, _, checked = BLOCKS[name]
    if checked and set(needs) & set(sections):
      out[name] = text
  if 'digits' in sections and digits:  # The accuracy, without the time next to it.
    out['digits_top1'] = f'{_pct(digits["top1"])} final, {_pct(digits["best_top1"])} best'
  return out


def read_blocks(text):
  return {match.group(2): match.group(3).strip('\n') for match in BLOCK.finditer(text)}


def write_blocks(text, blocks):
  def replace(match):
    name = match.group(2)
    if name not in blocks:
      return match.group(0)
    body = blocks[name]
    inline = '\n' not in body and '\n' not in match.group(3)
    body = body if inline else f'\n{body}\n'
    return f'{match.group(1)}{body}{match.group(4)}'
  return BLOCK.sub(replace, text)


def load_figures():
  if not os.path.exists(FIGURES):
    return {}
  with open(FIGURES, encoding='utf-8') as f:
    return json.load(f)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('sections', nargs='*', help=f'of {", ".join(SECTIONS)} (default: '
                      f'{", ".join(DEFAULT)})')
  parser.add_argument('--compare_dir', default='workdirs/compare_fashion_cpu',
                      help='the runs of the compare section')
  parser.add_argument('--check', action='store_true', help='compare, write nothing')
  parser.add_argument('--render', action='store_true', help='rewrite README.md from '
                      'docs/figures.json without running anything')
  parser.add_argument('--gpu_jsonl', default='',
                      help='for the gpu section: the --out file of benchmarks.gpu_check')
  parser.add_argument('--authors_dir', default='',
                      help='for the fidelity section (needed) and the alignment (optional)')
  args = parser.parse_args(argv)
  unknown = [s for s in args.sections if s not in SECTIONS]
  if unknown:
    parser.error(f'unknown sections {unknown}; valid: {", ".join(SECTIONS)}')
  sections = args.sections or list(DEFAULT)
  figures = load_figures()
  with open(README, encoding='utf-8') as f:
    readme = f.read()

  if not args.render:
    fresh = dict(figures)
    for name in sections:
      log = []
      values = {'machine': machine(), 'commands': log,
                'date': datetime.date.today().isoformat(), **SECTIONS[name](args, log)}
      if name == 'fidelity':
        values['torch'] = importlib.metadata.version('torch')
      fresh[name] = values
    if args.check:
      quoted = checked_values(figures, sections)
      measured = checked_values(fresh, sections)
      if quoted != measured:
        diff = difflib.unified_diff(
            json.dumps(quoted, indent=1).splitlines(),
            json.dumps(measured, indent=1).splitlines(), 'quoted (docs/figures.json)',
            'measured now', lineterm='')
        print('\n'.join(diff))
        print(f'figures: the figures of {", ".join(sections)} differ from the README\'s: '
              f'rerun `python -m benchmarks.figures {" ".join(sections)}` and commit '
              'README.md and docs/figures.json.')
        return 1
      print(f'figures: {", ".join(sections)} as the README quotes them.')
      return 0
    figures = fresh
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, 'w', encoding='utf-8') as f:
      json.dump(figures, f, indent=1, sort_keys=True)
      f.write('\n')

  blocks = render(figures)
  missing = sorted(set(read_blocks(readme)) - set(blocks))
  if missing:
    print(f'figures: no figures yet for the README blocks {missing}.')
  updated = write_blocks(readme, blocks)
  if updated != readme:
    with open(README, 'w', encoding='utf-8') as f:
      f.write(updated)
    print('figures: README.md rewritten.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
