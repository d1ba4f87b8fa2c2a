"""The documents that quote figures (README.md and docs/*.md) and their marked blocks.

A block is `<!-- figures: NAME -->BODY<!-- /figures: NAME -->`: inline when BODY has no line
break, else BODY sits on its own lines. Each name appears in one document only.
"""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = re.compile(r'(<!-- figures: (\S+) -->)(.*?)(<!-- /figures: \2 -->)', re.S)


def paths():
  """README.md, then docs/*.md in name order."""
  return [os.path.join(ROOT, 'README.md'),
          *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))]


def read_blocks(text):
  """`{name: body}` of the blocks of `text`, bodies without their framing line breaks."""
  return {match.group(2): match.group(3).strip('\n') for match in BLOCK.finditer(text)}


def write_blocks(text, blocks):
  """`text` with the body of every block named in `blocks` replaced; others kept."""
  def replace(match):
    name = match.group(2)
    if name not in blocks:
      return match.group(0)
    body = blocks[name]
    inline = '\n' not in body and '\n' not in match.group(3)
    body = body if inline else f'\n{body}\n'
    return f'{match.group(1)}{body}{match.group(4)}'
  return BLOCK.sub(replace, text)


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def quoted():
  """`{name: (path, body)}` of every block of every document.

  Raises:
    ValueError: a block name used in two documents.
  """
  out = {}
  for path in paths():
    for name, body in read_blocks(_read(path)).items():
      if name in out:
        raise ValueError(f'The figures block {name!r} is in {out[name][0]} and in {path}; '
                         'a block lives in one document.')
      out[name] = (path, body)
  return out


def rewrite(blocks):
  """Rewrites the blocks of every document; returns the paths that changed."""
  changed = []
  for path in paths():
    text = _read(path)
    updated = write_blocks(text, blocks)
    if updated != text:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(updated)
      changed.append(path)
  return changed
