"""The blocks of the documents, each rendered from the figures of the sections it needs.

`BLOCKS` maps a block name to `(sections, renderer)`; `render(figures)` gives the text of
every block whose sections are measured (`methods` reads the registry and needs none).
`EXACT` blocks are compared digit for digit by `--check` (counts, not measurements).
"""

import statistics

from alignmix_jax import methods
from benchmarks import compare_methods
from benchmarks.figures import sections
from benchmarks.figures import spread


def _pct(value):
  return f'{value:.2f}%'


def _time(seconds):
  seconds = int(round(seconds))
  return f'{seconds // 60} min {seconds % 60} s' if seconds >= 60 else f'{seconds} s'


def _where(section):
  m = section['machine']
  model = f' ({m["cpu_model"]})' if m.get('cpu_model') else ''
  return f'{m["cpu"]}{model}, jax {m["jax"]}'


def _step_spread(record, spec):
  """'118 to 127 ms': the 10th to 90th percentile of a row's step times, where recorded."""
  if 'step_ms_p10' not in record:
    return '-'
  return f'{record["step_ms_p10"]:{spec}} to {record["step_ms_p90"]:{spec}} ms'


def _table(header, rows):
  """A Markdown table from a header and rows, each a sequence of cell strings."""
  lines = [header, ['---'] * len(header), *rows]
  return '\n'.join('| ' + ' | '.join(cells) + ' |' for cells in lines)


def _runs(f, section):
  return f[section]['runs']


def _summary(f, section, value):
  return spread.Summary.of(value(run) for run in _runs(f, section))


def _seeds(f, section):
  seeds = [run['seed'] for run in _runs(f, section)]
  return f'{len(seeds)} seed{"s" if len(seeds) > 1 else ""} ({", ".join(map(str, seeds))})'


def _digits_setup(f):
  top1 = _summary(f, 'digits', lambda run: run['top1'])
  best = _summary(f, 'digits', lambda run: run['best_top1'])
  seconds = _summary(f, 'digits', lambda run: run['seconds'])
  return (f'{top1.text()}% final and {best.text()}% best test accuracy over '
          f'{_seeds(f, "digits")}, {_time(seconds.mean)} per run on a '
          f'{f["digits"]["machine"]["cpu"]}')


def _results(f):
  runs = _runs(f, 'digits')
  top1 = _summary(f, 'digits', lambda run: run['top1'])
  best = _summary(f, 'digits', lambda run: run['best_top1'])
  seconds = _summary(f, 'digits', lambda run: run['seconds'])
  evaluation = _summary(f, 'digits', lambda run: run['eval_seconds'])
  rows = [[f'`--config digits` (AlignMix/AE, PreActResNet18 width 16, {runs[0]["steps"]} '
           'steps, 1 device)',
           f'{top1.text()}% final ({top1.range_text()}), {best.text()}% best test top-1 '
           '(360 test images)',
           f'{_time(seconds.mean)} with start-up and {runs[0]["evaluations"]} evaluations'],
          ['`--mode eval` on that run (attacks, calibration, OOD noise)',
           'see [docs/evaluation.md](docs/evaluation.md)', _time(evaluation.mean)]]
  if 'fashion_mnist' in f:
    summaries = {method: _summary(f, 'fashion_mnist', lambda run, m=method: run[m]['top1'])
                 for method in ('alignmix', 'vanilla')}
    times = {method: _summary(f, 'fashion_mnist', lambda run, m=method: run[m]['seconds'])
             for method in ('alignmix', 'vanilla')}
    rows.append([f'`--config fashion_mnist` for {sections.FASHION_STEPS} steps '
                 f'(`--config.num_train_steps={sections.FASHION_STEPS}`; the Baseline as '
                 '`fashion_mnist:vanilla`)',
                 f'AlignMix/AE {summaries["alignmix"].text()}%, Baseline '
                 f'{summaries["vanilla"].text()}% test top-1 (10,000 images)',
                 f'{_time(times["alignmix"].mean)}, {_time(times["vanilla"].mean)}'])
  seeds = f'digits: {_seeds(f, "digits")}'
  if 'fashion_mnist' in f:
    seeds += f'; Fashion-MNIST: {_seeds(f, "fashion_mnist")}'
  return (_table(['run', 'result (mean +- std over seeds)', 'time (mean)'], rows)
          + f'\n\nSeeds: {seeds}. Machine: {_where(f["digits"])}.')


def _digits_eval(f):
  runs = _runs(f, 'digits')
  checked = {check.name[len('eval '):-len(' (%)')]: check for check in
             sections.CHECKS['digits'] if check.name.startswith('eval ')}
  rows = []
  for name in sorted(runs[0]['eval']):
    summary = spread.Summary.of(run['eval'][name] for run in runs)
    if name in checked and summary.n > 1:
      low, high = spread.band(summary, checked[name].floor, checked[name].limits)
      band = f'{low:.2f} to {high:.2f}'
    else:
      band = 'not checked'
    rows.append([f'`{name}`', summary.text(), summary.range_text(), band])
  return (_table(['eval.json', 'mean +- std', 'range', '`--check` band'], rows)
          + f'\n\nPercent; {_seeds(f, "digits")}; {_where(f["digits"])}.')


def _row_error(f):
  low = min(run['row_error_range'][0] for run in _runs(f, 'digits'))
  high = max(run['row_error_range'][1] for run in _runs(f, 'digits'))
  return f'{low:.1f} to {high:.1f} (digits runs, {_seeds(f, "digits")})'


def _methods(f):
  del f  # The registry, not a measurement.
  rows = []
  for name in methods.names():
    method = methods.get(name)
    fields = ', '.join(f'`{field}={value!r}`' for field, value in method.fields.items())
    rows.append([f'`{name}`', method.label, method.description, fields or '-'])
  return _table(['method', 'label', 'what it trains', 'fields it sets'], rows)


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
  table = _table(['row', 'compile', 'step (median)', 'step p10 to p90', 'step (mean)',
                  'images/s'],
                 [[name, f'{r["compile_s"]:.1f} s', f'{r["step_ms_median"]:.0f} ms',
                   _step_spread(r, '.0f'), f'{r["step_ms_mean"]:.0f} ms',
                   f'{r["images_per_s"]:.0f}'] for name, r in rows.items()])
  return (table + f'\n\n{first["model"]} width {first["width"]}, batch '
          f'{first["batch"]}, {first["image_size"]}x{first["image_size"]}, {first["dtype"]}, '
          f'{first["devices"]} device, {first["steps"]} steps per row, compile times the median '
          f'of {first.get("compile_repeats", 1)}; {_where(f["throughput"])}. '
          f'Feature step / vanilla step: **{summary["feature_over_vanilla"]:.2f}** (target '
          f'<= 1.10); five-mode step (mean over its draws) / vanilla: '
          f'**{summary["five_mode_over_vanilla"]:.2f}** (target <= 1.25); five-mode compile / '
          f'vanilla compile: **{summary["five_mode_compile_over_vanilla"]:.2f}** (target <= 1.5).'
          + (f' PuzzleMix step (mean over its grid sizes) / Baseline step: '
             f'**{summary["puzzlemix_over_baseline"]:.2f}** (the official code: about 1.5 on a '
             'GPU, with 8 processes for the graph cuts).'
             if 'puzzlemix_over_baseline' in summary else '')
          + (f' Co-Mixup step / Baseline step: **{summary["comixup_over_baseline"]:.2f}**.'
             if 'comixup_over_baseline' in summary else ''))


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
          f'{t14["one_plan"]:.1f}; with the barycentric projection '
          f'{t13["one_plan_barycentric"]:.1f} and {t14["one_plan_barycentric"]:.1f})')


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


def _gpu_side_by_side(records):
  """Our steps beside PyTorch's (check `torch_reference`): one table, one column per batch,
  and each of our rows' speed over the authors' step in PyTorch."""
  rows = [r for r in records if r.get('side') in ('torch', 'ours')]
  if not rows:
    return ''
  batches = sorted({r['batch'] for r in rows})
  ms = {(r['side'], r['row'], r['step'], r['batch']): r['ms'] for r in rows}
  keys = list(dict.fromkeys((r['side'], r['row'], r['step']) for r in rows))
  table = _table(['side', 'configuration', 'step', *(f'batch {b}' for b in batches)],
                 [[side, row, step, *(f'{ms[side, row, step, b]:.2f} ms'
                                      if (side, row, step, b) in ms else '-' for b in batches)]
                  for side, row, step in keys])
  ratios = {r['batch']: r for r in records if r.get('row') == 'ratios'}
  ours = [row for side, row, step in keys if side == 'ours' and step != 'vanilla']
  lines = []
  for name in ours:
    cells = []
    for batch in batches:
      r = ratios.get(batch, {})
      if f'{name}_vs_torch_best' in r:
        cells.append(f'batch {batch}: **{r[f"{name}_vs_torch_autocast_bf16"]:.2f}** over '
                     f'autocast_bf16, **{r[f"{name}_vs_torch_best"]:.2f}** over their fastest '
                     f'({r["torch_best_alignmix"]})')
    lines.append(f'{name}: ' + '; '.join(cells))
  return (table + '\n\nOur AlignMix step\'s speed over the authors\' step in PyTorch (> 1: ours '
          'is faster): ' + '. '.join(lines) + '.')


def _gpu_steps(records):
  """Every mode's step (check `train_step`) and the ratios of its `summary` lines."""
  steps = [r for r in records if r['check'] == 'train_step' and r.get('row') not in
           (None, 'summary')]
  if not steps:
    return ''
  summaries = {r['dtype']: r for r in records
               if r['check'] == 'train_step' and r.get('row') == 'summary'}
  first = steps[0]
  table = _table(['dtype', 'row', 'compile', 'step (median)', 'step p10 to p90',
                  'step (mean)', 'images/s', 'step memory'],
                 [[r['dtype'], r['row'], f'{r["compile_s"]:.1f} s',
                   f'{r["step_ms_median"]:.2f} ms', _step_spread(r, '.2f'),
                   f'{r["step_ms_mean"]:.2f} ms', f'{r["images_per_s"]:,.0f}',
                   f'{r["step_memory_bytes"] / 2**30:.2f} GiB'] for r in steps])
  ratios = '; '.join(f'{dtype}: feature / vanilla {s["feature_over_vanilla"]:.2f}, five-mode '
                     f'(mean) / vanilla {s["five_mode_over_vanilla"]:.2f}'
                     for dtype, s in summaries.items())
  per_dispatch = (f', {first["steps_per_dispatch"]} per dispatch'
                  if 'steps_per_dispatch' in first else '')
  return (table + f'\n\n{first["model"]} width {first["width"]}, batch {first["batch"]}, '
          f'{first["image_size"]}x{first["image_size"]}, {first["steps"]} steps per row'
          f'{per_dispatch}. Step ratios, {ratios}.')


def _dispatch_table(rows, spec):
  """Per row of `benchmarks.train_throughput --steps_per_dispatch`, its time per step at
  each count and its speed over one step per dispatch."""
  single = {r['row']: r['step_ms_mean'] for r in rows if r['steps_per_dispatch'] == 1}
  return _table(['row', 'steps per dispatch', 'step (mean)', 'images/s', 'speed-up over 1'],
                [[r['row'], str(r['steps_per_dispatch']), f'{r["step_ms_mean"]:{spec}} ms',
                  f'{r["batch"] * 1000 / r["step_ms_mean"]:,.0f}',
                  f'**{single[r["row"]] / r["step_ms_mean"]:.2f}x**'] for r in rows])


def _dispatch(f):
  d = f['dispatch']
  rows = [r for r in d['records'] if r['row'] != 'summary']
  first = rows[0]
  return (_dispatch_table(rows, '.0f') + f'\n\n{first["model"]} width {first["width"]}, '
          f'batch {first["batch"]}, {first["image_size"]}x{first["image_size"]}, '
          f'{first["dtype"]}, {first["devices"]} device, the rows and counts taking turns; '
          f'{_where(d)}.')


def _gpu_dispatch(records):
  """Steps per dispatch (check `dispatch`): the per-step time at each count."""
  rows = [r for r in records if r['check'] == 'dispatch' and r.get('row') not in
          (None, 'summary')]
  summary = next((r for r in records if r['check'] == 'dispatch' and r.get('row') ==
                  'summary'), None)
  if not rows or summary is None:
    return ''
  table = _dispatch_table(rows, '.2f')
  shares = ', '.join(f'{row} {share:.0%}' for row, share in summary['overhead_share'].items())
  return (table + f'\n\n{rows[0]["dtype"]}; the share of a single-step dispatch that is '
          f'host overhead (1 - t(largest count) / t(1)): {shares}.')


def _gpu_rest(records):
  """The XLA_FLAGS variants, the targets, the alignment and the Fashion-MNIST run, as
  sentences (each where its check ran)."""
  out = []
  variants = [r for r in records if r['check'] == 'xla_flags']
  if len(variants) > 1:
    out.append('The five-mode bfloat16 step under XLA_FLAGS variants: ' + ', '.join(
        f'{r["variant"]} {r["step_ms_mean"]:.2f} ms' for r in variants) + '.')
  side = {r['side']: r for r in records if r['check'] == 'alignment'}
  if 4 in side and 8 in side:
    a = side[4]
    out.append(f'The alignment alone (B={a.get("batch", 128)}, C={a.get("channels", 512)}, '
               f'{a.get("sinkhorn_iters", 100)} iterations): '
               f'{side[4]["ours_ms"]:.2f} ms at 4x4, {side[8]["ours_ms"]:.2f} ms at 8x8.')
  fashion = next((r for r in records if r['check'] == 'fashion_mnist' and 'test_top1' in r),
                 None)
  if fashion:
    out.append(f'`--config fashion_mnist` (width {fashion["width"]}, batch '
               f'{fashion["batch"]}, device-resident data'
               + (f', {fashion["steps_per_dispatch"]} steps per dispatch'
                  if 'steps_per_dispatch' in fashion else '') + ') for '
               f'{fashion["epochs"]} epochs: {_pct(fashion["test_top1"])} test top-1, '
               f'{fashion["epoch_s_training"]:.1f} s per epoch of training steps, '
               f'{_time(fashion["wall_s"])} in all with start-up.')
  targets = next((r for r in records if r['check'] == 'targets'), None)
  if targets:
    def verdict(t):
      if t['value'] is None:
        return 'not measured'
      return f'{t["value"]} ({"holds" if t["holds"] else "missed"})'
    out.append('Targets of the GPU issue: ' + '; '.join(
        f'{t["target"]} {t["wanted"]}: {verdict(t)}' for t in targets['targets']) + '.')
  skipped = [r['check'] for r in records if 'skipped' in r]
  if skipped:
    out.append(f'Not run (time budget or `--skip`): {", ".join(skipped)}.')
  return ' '.join(out)


def _gpu(f):
  """Every part of one `benchmarks.gpu_check` run that its records hold: a run of an older
  gpu_check (no side-by-side, dispatch or targets lines) renders what it has."""
  g = f['gpu']
  parts = [_gpu_side_by_side([r for r in g['records'] if r['check'] == 'torch_reference']),
           _gpu_steps(g['records']), _gpu_dispatch(g['records'])]
  text = '\n\n'.join(part for part in parts if part)
  return text + f'\n\nOn {_where(g)}. ' + _gpu_rest(g['records'])


def _compare(section):
  """The block of a compare section: the table (`compare_methods.table`), the setting, the
  command and the machine."""
  def block(f):
    c = f[section]
    o, records = c['overrides'], c['records']
    rows, seeds = compare_methods.rows_of(records), sorted({r['seed'] for r in records})
    subset = o.get('dataset.train_examples', '0')
    about = f' ({c["about"]})' if c.get('about') else ''
    data = (f'a class-balanced subset of {subset} training images (the whole test split)'
            if subset != '0' else 'every training image')
    return (compare_methods.table(records, rows, seeds)
            + f'\n\n`{c["config"]}` with the `{c["budget"]}` budget{about}: '
            f'{data}, PreActResNet18 width {o["model.width"]}, batch {o["batch_size"]}, '
            f'{o["num_epochs"]} epochs, lr {o["optimizer.learning_rate"]}, decayed x0.1 at '
            f'epochs {o["optimizer.decay_epochs"]}; FGSM and PGD on the first '
            f'{o["eval.attack_examples"]} test images. `{c["commands"][0]}` on {_where(c)}, '
            f'{c["date"]}.')
  return block


def _compare_reading(section):
  """The reading of a compare section (`compare_methods.reading`)."""
  return lambda f: compare_methods.reading(f[section]['records'])


BLOCKS = {
    'digits_setup': (('digits',), _digits_setup),
    'results': (('digits',), _results),
    'digits_eval': (('digits',), _digits_eval),
    'row_error': (('digits',), _row_error),
    'methods': ((), _methods),
    'param_counts': (('summary',), _param_counts),
    'throughput': (('throughput',), _throughput),
    'dispatch': (('dispatch',), _dispatch),
    'pipelines': (('pipelines',), _pipelines),
    'alignment': (('alignment',), _alignment),
    'gpu': (('gpu',), _gpu),
    'eval': (('eval',), _eval),
    'fidelity': (('fidelity',), _fidelity),
    'convergence': (('fidelity',), _convergence),
    'torch': (('torch',), _torch),
    **{name + suffix: ((name,), renderer(name))
       for name in ('compare', 'compare_lowdata', 'compare_gpu_window')
       for suffix, renderer in (('', _compare), ('_reading', _compare_reading))},
    'test_time': (('tests',), _test_time),
    'slow_time': (('tests',), _slow_time),
}
EXACT = ('param_counts',)


def render(figures):
  """`{block: text}` for every block whose sections are in `figures`."""
  return {name: renderer(figures) for name, (needs, renderer) in BLOCKS.items()
          if all(section in figures for section in needs)}
