"""Paired verdicts: the t-interval against scipy, and the three verdicts."""

import math

import numpy as np
import pytest

from metarep.reproduce.verdict import FAILS, HOLDS, UNDECIDED, paired, t975

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 30, 31, 45, 200, 5000])
def test_t_quantile_matches_scipy(df):
    assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-6)


def test_interval_is_scipys_t_interval():
    d = np.array([-1.3, -1.1, -1.25, -1.4, -1.2])
    v = paired(d)
    low, high = stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d))
    assert (v.n, v.mean) == (5, pytest.approx(d.mean()))
    assert v.se == pytest.approx(stats.sem(d))
    assert (v.low, v.high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
    assert v.verdict == HOLDS


def test_an_interval_straddling_zero_is_not_decided():
    # mean -0.2 but a spread that puts zero inside the interval
    v = paired([-1.0, 0.6, -0.5, 0.3, -0.4])
    assert v.low < 0 < v.high and v.verdict == UNDECIDED
    assert "not decided" in v.text()


def test_the_opposite_side_does_not_hold_and_sign_flips_the_claim():
    d = [0.5, 0.6, 0.55, 0.7]
    assert paired(d).verdict == FAILS
    assert paired(d, sign=+1).verdict == HOLDS
    assert paired([-x for x in d], sign=+1).verdict == FAILS


def test_too_few_replicates_decide_nothing():
    assert paired([-3.0]).verdict == UNDECIDED and math.isnan(paired([-3.0]).se)
    assert paired([]).verdict == UNDECIDED
    # non-finite differences (a diverged run) are left out, and counted out of n
    assert paired([-1.0, -1.1, float("nan"), -0.9]).n == 3
    with pytest.raises(ValueError):
        paired([1.0, 2.0], sign=0)
