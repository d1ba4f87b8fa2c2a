"""Every figure the documents quote, measured by the code that produces it, with its spread.

  python -m benchmarks.figures                      # the sections of `sections.DEFAULT`
  python -m benchmarks.figures digits fashion_mnist # some sections
  python -m benchmarks.figures fidelity --authors_dir AUTHORS_DIR   # needs torch
  python -m benchmarks.figures --check digits       # a fresh run against the quoted band
  python -m benchmarks.figures --render             # rewrite the documents from figures.json

Each section (`sections`) runs the documents' own commands (`python -m alignmix_jax ...`,
`python -m benchmarks.*`) in subprocesses and keeps what they print or write in
`docs/figures.json`, with the machine, the date and the commands. Each marked block of
README.md and docs/*.md, between `<!-- figures: NAME -->` and `<!-- /figures: NAME -->`, is
rendered from those figures (`render`) and rewritten in place (`documents`): the documents
cannot disagree with the code that produced them; edit the templates, never the numbers.

Runs whose result depends on the random seed and on round-off (the digits and Fashion-MNIST
runs) are measured over several seeds and quoted as mean +- standard deviation with their
range. `--check` reruns a section (one seed unless `--seeds` says otherwise) and checks each
fresh figure against the band of the quoted ones (`spread`): within a 99.9% prediction
interval of one more run, never digit for digit, so a change that only re-rounds, or another
machine, passes, while a broken method does not. Counts that are exact (parameters) must
match exactly.

Modules: `cli` (the command), `sections` (what each section runs), `spread` (statistics
over seeds and the bands), `render` (the blocks), `documents` (reading and rewriting them).
"""
