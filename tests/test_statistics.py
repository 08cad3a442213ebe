"""The uncertainty i2i states, checked against values worked out by hand or by another route
(scipy's own Welch test), never against the implementation itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from i2i.statistics import bootstrap_interval, t_interval, verdict, welch_difference


def test_the_t_interval_of_five_runs_uses_students_t_with_four_degrees_of_freedom():
    # 1..5: mean 3, s = sqrt(2.5); t(0.975, 4) = 2.776 from a printed t table, so the
    # half-width is 2.776 * sqrt(2.5) / sqrt(5) = 2.776 / sqrt(2) = 1.963 (z would give 1.386).
    e = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert e.n == 5 and e.mean == 3.0
    assert e.sd == pytest.approx(math.sqrt(2.5))
    assert e.half_width == pytest.approx(1.963, abs=1e-3)
    assert (e.low, e.high) == pytest.approx((3 - 1.963, 3 + 1.963), abs=1e-3)


def test_one_run_has_no_interval_and_nans_are_not_runs():
    e = t_interval([0.7, math.nan])
    assert (e.n, e.mean, e.sd, e.low, e.high) == (1, 0.7, None, None, None)
    d = welch_difference([0.7], [0.5, 0.6])
    assert d.low is None and verdict(d, lower_is_better=False) == (
        "n = 1 vs 2: no interval, no verdict"
    )


def test_welch_difference_on_hand_given_numbers():
    a, b = [10.0, 12.0, 14.0], [5.0, 6.0, 7.0, 8.0, 9.0]
    # By hand: means 12 and 7, variances 4 and 2.5; s1^2/n1 = 4/3, s2^2/n2 = 0.5,
    # se^2 = 11/6, df = (11/6)^2 / ((4/3)^2 / 2 + 0.5^2 / 4) = 3.3611 / 0.95139 = 3.5328.
    # A pooled variance would give df = 6 and se = sqrt(3 (1/3 + 1/5)) = 1.265 instead of 1.354.
    d = welch_difference(a, b)
    assert d.diff == 5.0
    assert d.df == pytest.approx(3.5328, abs=1e-4)
    assert (d.high - d.low) / 2 / math.sqrt(11 / 6) == pytest.approx(
        scipy_stats.t.ppf(0.975, 3.5328), abs=1e-3
    )
    # scipy's Welch test computes the same interval by its own code path
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), abs=1e-9)


@pytest.mark.parametrize(
    ("values", "baseline", "lower_is_better", "expected"),
    [
        ([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], False, "better"),  # IoU up
        ([0.85, 0.86, 0.87], [0.90, 0.91, 0.92], False, "worse"),
        ([40.0, 41.0, 42.0], [50.0, 52.0, 54.0], True, "better"),  # FID down is better
        ([60.0, 61.0, 62.0], [50.0, 52.0, 54.0], True, "worse"),
        ([0.90, 0.95, 0.99], [0.91, 0.93, 0.96], False, "no difference detectable with n = 3 vs 3"),
    ],
)
def test_the_verdict_knows_which_direction_is_better(values, baseline, lower_is_better, expected):
    assert verdict(welch_difference(values, baseline), lower_is_better) == expected


def test_the_percentile_bootstrap_covers_a_known_mean_about_95_percent_of_the_time():
    """Draws of 60 from N(1, 1), 300 times: the bootstrap interval of the mean should hold the
    true mean 1 in about 95 % of the draws (the percentile bootstrap runs a little short at this
    n; 300 draws have a binomial sd of 1.3 %)."""
    rng = np.random.default_rng(7)
    covered = 0
    draws = 300
    for k in range(draws):
        x = rng.normal(1.0, 1.0, 60)
        low, high = bootstrap_interval(lambda i: x[i].mean(), [len(x)], resamples=400, seed=k)
        covered += low <= 1.0 <= high
    assert 0.89 <= covered / draws <= 0.99


def test_the_bootstrap_resamples_every_set_it_is_given():
    # Two sets: the statistic sees each resampled independently, with replacement.
    a, b = np.arange(10.0), np.arange(100.0, 120.0)
    seen = []

    def statistic(i, j):
        seen.append((len(i), len(j), len(set(i.tolist())) < 10 or len(set(j.tolist())) < 20))
        return a[i].mean() - b[j].mean()

    low, high = bootstrap_interval(statistic, [10, 20], resamples=50, seed=0)
    assert all(n == (10, 20, True) for n in seen) and len(seen) == 50
    assert low < a.mean() - b.mean() < high
