"""`python -m alignmix_jax --config digits --workdir DIR`: see `alignmix_jax/cli.py`."""

from alignmix_jax import cli

cli.run()
