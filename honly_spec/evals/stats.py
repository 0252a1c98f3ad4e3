"""Aggregates with uncertainty: every reported rate or mean carries n and a 95% interval."""

from __future__ import annotations

import math
import random

Z95 = 1.959963984540054


def wilson(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a rate (well behaved at 0, 1 and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    # exact at the edges: rounding must not put 0 outside the interval of 0 successes
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def bootstrap_mean(
    values: list[float], seed: int = 0, resamples: int = 2000
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return (means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1])


def summarize(scores: list[float]) -> dict[str, float | int]:
    """Mean, n and a 95% interval: Wilson when every score is 0 or 1, else bootstrap."""
    n = len(scores)
    mean = sum(scores) / n if n else math.nan
    binary = all(s in (0.0, 1.0) for s in scores)
    low, high = wilson(sum(scores), n) if binary else bootstrap_mean(scores)
    return {"mean": mean, "n": n, "ci_low": low, "ci_high": high}
