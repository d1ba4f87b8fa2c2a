"""Figures over seeds: their mean, standard deviation and range, and the band a fresh run is
checked against.

A run of the same recipe on another seed, another machine type or after a change that only
re-rounds (a faster kernel, a reordered sum) is another draw of the same distribution: the
band is the two-sided `PREDICTION` prediction interval of one more draw under a normal
model, mean +- t(n - 1) sqrt(1 + 1/n) s over the n quoted seeds, widened to `floor` (the
figure's resolution, e.g. one test image) when the seeds happen to agree.
"""

import dataclasses
import math
import statistics
from typing import Callable

from scipy import stats as scipy_stats

PREDICTION = 0.999


@dataclasses.dataclass(frozen=True)
class Summary:
  """Mean, sample standard deviation (0 for one value), range and count of some values."""
  mean: float
  std: float
  low: float
  high: float
  n: int

  @classmethod
  def of(cls, values):
    values = [float(v) for v in values]
    if not values:
      raise ValueError('No values to summarise.')
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return cls(statistics.fmean(values), std, min(values), max(values), len(values))

  def text(self, decimals=2):
    """'99.44 +- 0.12', or '99.44' for one value."""
    if self.n == 1:
      return f'{self.mean:.{decimals}f}'
    return f'{self.mean:.{decimals}f} +- {self.std:.{decimals}f}'

  def range_text(self, decimals=2):
    return f'{self.low:.{decimals}f} to {self.high:.{decimals}f}'


def band_factor(n):
  """t(n - 1) sqrt(1 + 1/n): the half-width of the prediction interval in units of s."""
  if n < 2:
    raise ValueError('A band needs the figures of at least 2 seeds.')
  return scipy_stats.t.ppf(0.5 + PREDICTION / 2, n - 1) * math.sqrt(1 + 1 / n)


def band(summary, floor, limits=(-math.inf, math.inf)):
  """`(low, high)`: mean +- max(band_factor(n) * std, floor), within the figure's `limits`
  (e.g. 0 to 100 for a percentage)."""
  half = max(band_factor(summary.n) * summary.std, floor)
  return max(summary.mean - half, limits[0]), min(summary.mean + half, limits[1])


@dataclasses.dataclass(frozen=True)
class Check:
  """A figure checked against its band: `value(run)` of one run's record, `floor` its
  resolution, `limits` the values it can take, `decimals` as quoted."""
  name: str
  value: Callable[[dict], float]
  floor: float
  limits: tuple = (0.0, 100.0)
  decimals: int = 2


def verdicts(checks, quoted_runs, fresh_runs):
  """One line per check and fresh run, and whether every fresh figure is in its band."""
  lines, ok = [], True
  for check in checks:
    summary = Summary.of(check.value(run) for run in quoted_runs)
    low, high = band(summary, check.floor, check.limits)
    for run in fresh_runs:
      value = check.value(run)
      inside = low <= value <= high
      ok &= inside
      lines.append(f'{"ok  " if inside else "OUT "} {check.name}: {value:.{check.decimals}f} '
                   f'(seed {run.get("seed", "?")}); band {low:.{check.decimals}f} to '
                   f'{high:.{check.decimals}f} from {summary.text(check.decimals)} over '
                   f'{summary.n} seeds')
  return lines, ok
