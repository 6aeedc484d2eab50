"""Paired verdicts: a claim "A is lower than B" is decided from the paired differences A - B
over replicates (seeds, splits or tasks) by a two-sided 95% t-interval of their mean. It holds
or does not hold only when the interval excludes zero; otherwise it is not decided."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metarep.storage import tables

LEVEL = 0.95
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not decided"
# t_{0.975, df} for df = 1..30 (scipy.stats.t.ppf, 6 decimals); above 30 the Cornish-Fisher
# expansion below is within 1e-6 of it.
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.04523, 2.042272)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, n = _Z975, float(df)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))


@dataclass(frozen=True)
class Verdict:
    """Mean, standard error and 95% t-interval of n paired differences, and the verdict on the
    claim that they are negative (or positive, `sign` = +1)."""

    n: int
    mean: float
    se: float
    low: float
    high: float
    verdict: str
    sign: int = -1

    def interval(self, digits: int = 3) -> str:
        if not math.isfinite(self.low):
            return "no interval (one replicate)"
        return f"95% CI [{tables.fmt(self.low, digits)}, {tables.fmt(self.high, digits)}]"

    def text(self, unit: str = "seeds", digits: int = 3) -> str:
        """e.g. '-1.24 +- 0.034 (95% CI [-1.33, -1.15], 5 seeds): holds'."""
        return (f"{tables.fmt(self.mean, digits)} +- {tables.fmt(self.se, 2)} ({self.interval(digits)}, "
                f"{self.n} {unit}): {self.verdict}")

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "se": self.se, "low": self.low, "high": self.high,
                "verdict": self.verdict}


def paired(diffs: Sequence[float] | np.ndarray, *, sign: int = -1) -> Verdict:
    """The verdict on "the paired differences are below zero" (sign -1; above zero: sign +1).

    mean +- t_{0.975, n-1} s / sqrt(n) with s the sample standard deviation; "holds" when the
    interval lies on the claimed side of zero, "does not hold" when it lies on the other, and
    "not decided" when it contains zero or there are fewer than two finite differences."""
    if sign not in (-1, 1):
        raise ValueError(f"sign must be -1 or +1, got {sign}")
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return Verdict(0, math.nan, math.nan, math.nan, math.nan, UNDECIDED, sign)
    mean = float(d.mean())
    if n < 2:
        return Verdict(n, mean, math.nan, math.nan, math.nan, UNDECIDED, sign)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = t975(n - 1) * se
    low, high = mean - half, mean + half
    near, far = sorted((sign * low, sign * high))
    word = HOLDS if near > 0 else FAILS if far < 0 else UNDECIDED
    return Verdict(n, mean, se, low, high, word, sign)
