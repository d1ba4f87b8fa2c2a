"""The entry point from the repository root: `python -m main --config configs/digits.py ...`.

The same program as `python -m alignmix_jax` (`alignmix_jax/cli.py` says what it takes).
"""

from alignmix_jax import cli

if __name__ == '__main__':
  cli.run()
