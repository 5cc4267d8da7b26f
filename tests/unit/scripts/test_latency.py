"""scripts/latency.py: one percentile method for every tool, NaN for nothing, a bounded reservoir."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.latency import LatencyReservoir, percentiles, summarize


@pytest.mark.parametrize(
    ("values", "qs", "digits", "expected"),
    [
        ([], (50, 99), 1, {"p50": math.nan, "p99": math.nan}),
        ([7.0], (50, 90, 99), None, {"p50": 7.0, "p90": 7.0, "p99": 7.0}),
        ([1.0, 2.0, 3.0, 4.0], (50,), None, {"p50": 2.5}),
        ([10.0, 20.0, 30.0, 40.0], (90, 99), 1, {"p90": 37.0, "p99": 39.7}),
        (list(range(1, 101)), (50, 90, 99), 2, {"p50": 50.5, "p90": 90.1, "p99": 99.01}),
        ([0.123456], (50,), 3, {"p50": 0.123}),
    ],
    ids=["empty", "one value", "even count", "rounded", "hundred", "digits"],
)
def test_percentiles_table(values, qs, digits, expected):
    found = percentiles(values, qs, digits)
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert (math.isnan(found[key]) and math.isnan(value)) or found[key] == pytest.approx(value)


def test_percentiles_are_numpy_linear_interpolation():
    values = np.random.default_rng(0).exponential(50.0, 1001)
    expected = np.percentile(values, [50, 90, 99])
    assert list(percentiles(values.tolist()).values()) == pytest.approx(expected.tolist())


def test_summarize_keys_and_empty():
    assert summarize([1.0, 2.0, 3.0]) == {"count": 3, "mean": 2.0, "p50": 2.0, "p90": 2.8, "p99": 2.98}
    empty = summarize([])
    assert empty["count"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "p50", "p90", "p99"))


def test_reservoir_keeps_a_uniform_sample_within_capacity():
    reservoir = LatencyReservoir(capacity=500, seed=1)
    for value in range(10_000):
        reservoir.add(float(value))
    assert reservoir.count == 10_000 and len(reservoir.samples) == 500
    # A uniform sample of 0..9999: its median is near 5000 (a biased one, e.g. the first 500, is not).
    assert 4000 <= reservoir.percentiles()["p50"] <= 6000
    assert list(reservoir.percentiles((50, 99))) == ["p50", "p99"]
