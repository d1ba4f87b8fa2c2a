"""`python -m benchmarks.figures [SECTION ...] [--check | --render]`: measure, check, render.

Without `--check` or `--render`: runs the sections (default `sections.DEFAULT`), keeps their
figures in `docs/figures.json` and rewrites the blocks of the documents. `--check` runs them
and compares, writing nothing: the figures with seeds against their bands
(`sections.CHECKS`, `spread`), the `render.EXACT` blocks digit for digit; exit status 1 when
one is outside. `--render` rewrites the documents from `docs/figures.json` alone.
"""

import argparse
import datetime
import importlib.metadata
import json
import os

from benchmarks.figures import documents
from benchmarks.figures import render
from benchmarks.figures import sections
from benchmarks.figures import spread

FIGURES = os.path.join(documents.ROOT, 'docs', 'figures.json')


def load_figures():
  if not os.path.exists(FIGURES):
    return {}
  with open(FIGURES, encoding='utf-8') as f:
    return json.load(f)


def measure(names, args):
  """`{section: figures}` of fresh runs of `names`."""
  out = {}
  for name in names:
    log = []
    values = {'machine': sections.machine(), 'commands': log,
              'date': datetime.date.today().isoformat(), **sections.SECTIONS[name](args, log)}
    if name == 'fidelity':
      values['torch'] = importlib.metadata.version('torch')
    out[name] = values
  return out


def check(quoted, fresh):
  """`(report lines, ok)`: `fresh` figures against the `quoted` ones."""
  lines, ok = [], True
  for name, figures in fresh.items():
    if name in sections.CHECKS:
      if name not in quoted:
        lines.append(f'OUT  {name}: no quoted figures to check against; run the section.')
        ok = False
        continue
      section_lines, section_ok = spread.verdicts(
          sections.CHECKS[name], quoted[name]['runs'], figures['runs'])
      lines += section_lines
      ok &= section_ok
  for block in render.EXACT:
    needs, renderer = render.BLOCKS[block]
    if set(needs) & set(fresh):
      was, now = renderer(quoted), renderer({**quoted, **fresh})
      ok &= was == now
      lines.append(f'{"ok  " if was == now else "OUT "} {block}: {now!r}'
                   + ('' if was == now else f' (quoted: {was!r})'))
  return lines, ok


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('sections', nargs='*', help=f'of {", ".join(sections.SECTIONS)} '
                      f'(default: {", ".join(sections.DEFAULT)})')
  parser.add_argument('--seeds', default='', help='comma-separated seeds of the digits and '
                      'fashion_mnist sections (default: theirs in sections.SEEDS; with '
                      '--check, the first of them)')
  parser.add_argument('--compare_root', default='workdirs',
                      help='the folder of the compare sections\' runs (compare_fashion_<budget>)')
  parser.add_argument('--check', action='store_true', help='compare with the quoted figures, '
                      'write nothing')
  parser.add_argument('--render', action='store_true', help='rewrite the documents from '
                      'docs/figures.json without running anything')
  parser.add_argument('--gpu_jsonl', default='',
                      help='for the gpu section: the --out file of benchmarks.gpu_check')
  parser.add_argument('--authors_dir', default='',
                      help='for the fidelity section (needed) and the alignment (optional)')
  args = parser.parse_args(argv)
  unknown = [s for s in args.sections if s not in sections.SECTIONS]
  if unknown:
    parser.error(f'unknown sections {unknown}; valid: {", ".join(sections.SECTIONS)}')
  args.seeds = [int(seed) for seed in args.seeds.split(',') if seed]
  figures = load_figures()
  if not args.render:
    fresh = measure(args.sections or sections.DEFAULT, args)
    if args.check:
      lines, ok = check(figures, fresh)
      print('\n'.join(lines))
      print('figures: ' + ('every figure within its band.' if ok else
                           'figures outside their band: the change alters results beyond the '
                           'seed-to-seed spread. If that is intended, rerun `python -m '
                           'benchmarks.figures SECTION` and commit the documents and '
                           'docs/figures.json.'))
      return 0 if ok else 1
    figures.update(fresh)
    with open(FIGURES, 'w', encoding='utf-8') as f:
      json.dump(figures, f, indent=1, sort_keys=True)
      f.write('\n')
  blocks = render.render(figures)
  missing = sorted(set(documents.quoted()) - set(blocks))
  if missing:
    print(f'figures: no figures yet for the blocks {missing}.')
  for path in documents.rewrite(blocks):
    print(f'figures: {os.path.relpath(path, documents.ROOT)} rewritten.')
  return 0
