"""`python -m benchmarks.figures`: see `benchmarks/figures/__init__.py`."""

import sys

from benchmarks.figures import cli

sys.exit(cli.main())
