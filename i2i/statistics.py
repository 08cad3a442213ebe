"""The uncertainty of a score: across runs of one configuration, between two configurations,
and within one run over its test inputs.

- :func:`t_interval`: a configuration's mean over its runs (seeds) with the 95 % Student-t
  interval, mean +- t(0.975, n-1) * s / sqrt(n), s the sample standard deviation (ddof 1).
- :func:`welch_difference`: the difference of two configurations' means with Welch's interval,
  which does not assume equal variances: se = sqrt(s1^2/n1 + s2^2/n2), and the degrees of freedom
  of Welch-Satterthwaite, se^4 / ((s1^2/n1)^2/(n1-1) + (s2^2/n2)^2/(n2-1)).
- :func:`verdict`: better, worse, or no difference detectable, knowing which direction of the
  score is better.
- :func:`bootstrap_interval`: the percentile bootstrap of one run's score over its test inputs
  (Efron and Tibshirani 1993, ch. 13).

A single run has no interval: n = 1 is reported as such, never as an interval of width zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` runs; ``sd``, ``low`` and ``high`` are None when n = 1."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """``mean - baseline mean`` with its Welch interval (None when either side has one run)."""

    diff: float
    low: float | None
    high: float | None
    df: float | None
    n: int
    n_baseline: int


def t_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean, sample standard deviation and Student-t interval of ``values`` (NaNs dropped)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no finite values")
    mean = float(x.mean())
    if n == 1:
        return Estimate(1, mean, None, None, None)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(n, mean, sd, mean - half, mean + half)


def welch_difference(
    values: Sequence[float], baseline: Sequence[float], level: float = LEVEL
) -> Difference:
    """``mean(values) - mean(baseline)`` and its Welch interval."""
    a, b = t_interval(values, level), t_interval(baseline, level)
    diff = a.mean - b.mean
    if a.sd is None or b.sd is None:
        return Difference(diff, None, None, None, a.n, b.n)
    va, vb = a.sd**2 / a.n, b.sd**2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:  # both configurations gave the same value on every run: the difference is exact
        return Difference(diff, diff, diff, math.inf, a.n, b.n)
    df = se**4 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return Difference(diff, diff - half, diff + half, df, a.n, b.n)


def verdict(d: Difference, lower_is_better: bool) -> str:
    """``better``/``worse`` when the interval excludes zero, else what the runs cannot tell."""
    if d.low is None:
        return f"n = {d.n} vs {d.n_baseline}: no interval, no verdict"
    if d.low > 0 or d.high < 0:
        return "worse" if (d.low > 0) == lower_is_better else "better"
    return f"no difference detectable with n = {d.n} vs {d.n_baseline}"


def bootstrap_interval(
    statistic: Callable[..., float],
    sizes: Sequence[int],
    resamples: int = 200,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*indices)``: each resample draws, for every
    set ``k`` (test inputs; the real target images), ``sizes[k]`` indices with replacement."""
    rng = np.random.default_rng(seed)
    values = np.array(
        [statistic(*(rng.integers(0, n, n) for n in sizes)) for _ in range(resamples)]
    )
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
