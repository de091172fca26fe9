"""Paired comparison of two methods over the same seeds: mean difference with a 95 % t interval.

Same seed = same student initialisation and the same batches whatever the objective, so the
seed-to-seed spread cancels in the differences; two unpaired standard deviations would count it
twice. "Beats" means the interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def t_quantile(df: int) -> float:
    """t_{0.975}(df), Student's t quantile of a two-sided 95 % interval (exact, every df)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 pairs (df >= 1), got df = {df}")
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Paired:
    """Method A minus method B over n shared seeds (points of top-1)."""

    n: int
    mean: float
    std: float  # sample std of the differences
    low: float  # 95 % confidence interval of the mean difference
    high: float
    wins: int  # seeds on which A is ahead

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "beats"
        if self.high < 0:
            return "loses to"
        return "no detectable difference from"

    def seeds_needed(self) -> int | None:
        """Seeds for which the interval's half-width would fall below |mean| (same spread).

        None when the mean difference is 0 or the spread is 0: more seeds cannot settle it.
        """
        if self.mean == 0 or self.std == 0:
            return None
        n = 2
        while t_quantile(n - 1) * self.std / math.sqrt(n) >= abs(self.mean):
            n += 1
            if n > 10_000:
                return None
        return n


def paired(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Compare A and B on the seeds both have: {seed: value} each."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        raise ValueError(f"a paired interval needs at least 2 shared seeds, got {seeds}")
    mean, std = statistics.mean(diffs), statistics.stdev(diffs)
    half = t_quantile(len(diffs) - 1) * std / math.sqrt(len(diffs))
    wins = sum(d > 0 for d in diffs)
    return Paired(len(diffs), mean, std, mean - half, mean + half, wins)
