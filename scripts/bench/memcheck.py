"""Memory of a running TorchServe (frontend + workers) and the growth check used by the soak.

Growth of a series of samples (MB, taken at a steady rate after warm-up) is
    max(second half) - trimmed mean(all samples, 10 % cut at each end)
A flat series gives about its noise; a leak of L MB over the run gives about L/2; a one-off spike
in the first half is trimmed away. The check passes when growth <= limit (50 MB by default).

With the sample times, the report also gives the trend: the Theil-Sen slope of the series in MB per
10 minutes (the median of all pairwise slopes, so a few spikes do not tilt it). It is information
for whoever reads the report (a slow creep that a short run cannot fail on), not part of the check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil
from scipy import stats

__all__ = [
    "DEFAULT_LIMIT_MB",
    "MIN_SAMPLES",
    "TRIM",
    "GrowthCheck",
    "MemorySampler",
    "check_growth",
    "rss_mb",
    "tree_rss_mb",
    "trend_mb_per_10min",
    "trimmed_mean",
]

DEFAULT_LIMIT_MB = 50.0
TRIM = 0.1  # fraction cut at each end before the mean
MIN_SAMPLES = 4


def trimmed_mean(values: Sequence[float], trim: float = TRIM) -> float:
    ordered = np.sort(np.asarray(values, dtype=float))
    cut = int(len(ordered) * trim)
    return float(ordered[cut : len(ordered) - cut].mean())


@dataclass(frozen=True)
class GrowthCheck:
    samples: int
    trimmed_mean_mb: float
    second_half_max_mb: float
    growth_mb: float
    limit_mb: float
    trend_mb_per_10min: float | None = None

    @property
    def passed(self) -> bool:
        return self.growth_mb <= self.limit_mb

    def to_json(self) -> dict:
        return {
            "samples": self.samples,
            "trimmed_mean_mb": round(self.trimmed_mean_mb, 1),
            "second_half_max_mb": round(self.second_half_max_mb, 1),
            "growth_mb": round(self.growth_mb, 1),
            "limit_mb": self.limit_mb,
            "passed": self.passed,
            "trend_mb_per_10min": _rounded(self.trend_mb_per_10min),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def check_growth(
    samples_mb: Sequence[float], limit_mb: float = DEFAULT_LIMIT_MB, times_s: Sequence[float] | None = None
) -> GrowthCheck:
    """Second-half max minus trimmed mean of ``samples_mb``; ValueError on too few samples.
    ``times_s`` (seconds, one per sample) adds the trend to the report."""
    if len(samples_mb) < MIN_SAMPLES:
        raise ValueError(
            f"need at least {MIN_SAMPLES} memory samples, got {len(samples_mb)}: sample more often"
        )
    second_half = samples_mb[len(samples_mb) // 2 :]
    mean = trimmed_mean(samples_mb)
    peak = float(max(second_half))
    trend = None if times_s is None else trend_mb_per_10min(samples_mb, times_s)
    return GrowthCheck(len(samples_mb), mean, peak, peak - mean, limit_mb, trend)


def trend_mb_per_10min(samples_mb: Sequence[float], times_s: Sequence[float]) -> float:
    """Theil-Sen slope of memory over time, MB per 10 minutes."""
    if len(samples_mb) != len(times_s):
        raise ValueError(f"{len(samples_mb)} samples but {len(times_s)} sample times")
    slope_mb_per_s = stats.theilslopes(samples_mb, times_s).slope
    return float(slope_mb_per_s) * 600.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MB (processes that vanish are skipped)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e6


def rss_mb(pid: int) -> float:
    """Resident memory of one process, MB."""
    return psutil.Process(pid).memory_info().rss / 1e6


@dataclass
class MemorySampler:
    """Background thread sampling :func:`tree_rss_mb` of ``pid`` every ``interval_s`` seconds."""

    pid: int
    interval_s: float = 2.0
    samples_mb: list[float] = field(default_factory=list)
    root_samples_mb: list[float] = field(default_factory=list)  # ``pid`` alone (the frontend)
    times_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples_mb.append(tree_rss_mb(self.pid))
            try:
                self.root_samples_mb.append(rss_mb(self.pid))
            except psutil.NoSuchProcess:
                self.root_samples_mb.append(0.0)
            self.times_s.append(time.monotonic() - start)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
