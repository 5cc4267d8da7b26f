"""Latency summaries, computed one way for every tool: numpy percentiles (linear interpolation).

Used by the benchmark steps (scripts/bench/load.py), the soak report, the stream statistics and the
version comparison (scripts/versions.py). An empty sequence gives NaN statistics (count 0) rather
than an error, so that a step where every request failed still reports.

    >>> from scripts.latency import summarize
    >>> summarize([10.0, 20.0, 30.0, 40.0], digits=1)
    {'count': 4, 'mean': 25.0, 'p50': 25.0, 'p90': 37.0, 'p99': 39.7}
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

__all__ = ["PERCENTILES", "LatencyReservoir", "percentiles", "summarize"]

PERCENTILES = (50, 90, 99)


def _rounded(value: float, digits: int | None) -> float:
    return value if digits is None else round(value, digits)


def percentiles(
    values: Sequence[float], qs: Sequence[int] = PERCENTILES, digits: int | None = None
) -> dict[str, float]:
    """{"p50": ..., "p90": ..., ...} of ``values`` for each q of ``qs``; NaN each when empty.

    ``digits`` rounds every value (None: full precision).
    """
    if len(values) == 0:
        return {f"p{q}": float("nan") for q in qs}
    found = np.percentile(np.asarray(values, dtype=np.float64), list(qs))  # (len(qs),)
    return {f"p{q}": _rounded(float(v), digits) for q, v in zip(qs, found)}


def summarize(values: Sequence[float], digits: int | None = None) -> dict[str, float]:
    """count, mean and p50 / p90 / p99 of ``values``; mean and percentiles NaN when empty."""
    mean = float(np.mean(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")
    return {"count": len(values), "mean": _rounded(mean, digits), **percentiles(values, PERCENTILES, digits)}


class LatencyReservoir:
    """Latency samples for percentiles; past ``capacity`` a uniform random sample is kept (bounded memory).

    Reservoir sampling (Algorithm R): the i-th value replaces a random slot with probability
    capacity / i, so every value seen has the same chance to be among the kept ones.
    """

    def __init__(self, capacity: int = 200_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0  # values seen, kept or not
        self.samples: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.samples) < self.capacity:
            self.samples.append(value)
            return
        slot = self._random.randrange(self.count)
        if slot < self.capacity:
            self.samples[slot] = value

    def percentiles(self, qs: Sequence[int] = PERCENTILES) -> dict[str, float]:
        return percentiles(self.samples, qs)
