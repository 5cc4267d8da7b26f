"""PSI, binned KS and reference profiles (scripts/drift/stats.py), on synthetic samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scripts.drift.cli import parse_duration, read_records
from scripts.drift.stats import (
    FINE_BINS,
    Profile,
    compare,
    histogram_from_values,
    ks_from_counts,
    psi,
)

RNG = np.random.default_rng(12345)
REFERENCE = RNG.normal(120, 25, 400)


def test_histogram_has_empty_outer_bins_and_quantile_inner_bins() -> None:
    hist = histogram_from_values("brightness", REFERENCE)
    assert hist.counts[0] == 0 and hist.counts[-1] == 0
    assert hist.n == REFERENCE.size
    assert len(hist.counts) <= FINE_BINS + 2
    inner = np.asarray(hist.counts[1:-1])
    assert inner.max() - inner.min() <= 2  # quantile bins hold equal shares


@pytest.mark.parametrize(
    ("live", "drift"),
    [
        (RNG.normal(120, 25, 200), False),  # the same distribution
        (RNG.normal(120, 25, 1000), False),
        (RNG.normal(60, 15, 200), True),  # darker
        (RNG.normal(120, 5, 200), True),  # less contrast: same mean, narrower
        (RNG.normal(135, 25, 200), True),  # a moderate shift
    ],
)
def test_psi_and_ks_separate_same_from_shifted(live: np.ndarray, drift: bool) -> None:
    profile = Profile("m", "1", {"brightness": histogram_from_values("brightness", REFERENCE)}, 400)
    (result,) = compare(profile, {"brightness": live})
    assert result.drifted(0.25, 0.01, 30) is drift
    if not drift:
        assert result.psi < 0.1 and result.ks_pvalue > 0.05


def test_binned_ks_agrees_with_scipy_on_raw_samples() -> None:
    live = RNG.normal(128, 25, 300)
    hist = histogram_from_values("brightness", REFERENCE)
    d, p = ks_from_counts(np.asarray(hist.counts), hist.bin_counts(live))
    exact = stats.ks_2samp(REFERENCE, live)
    assert d <= exact.statistic + 1e-12  # D at the bin edges never exceeds the true D
    assert d >= exact.statistic - 1.0 / FINE_BINS - 0.01  # and misses it by at most about one bin
    assert p == pytest.approx(exact.pvalue, abs=0.1)


def test_constant_reference_count_feature_flags_a_collapse() -> None:
    """Every reference image had one face; a window with none is the output drift case."""
    profile = Profile("m", "1", {"detections": histogram_from_values("detections", np.ones(90))}, 90)
    (same,) = compare(profile, {"detections": np.ones(40)})
    (none,) = compare(profile, {"detections": np.zeros(40)})
    (few,) = compare(profile, {"detections": np.r_[np.ones(37), np.zeros(3)]})
    assert not same.drifted(0.25, 0.01, 30) and same.psi < 0.05
    assert none.drifted(0.25, 0.01, 30) and none.ks_statistic == 1.0
    assert not few.drifted(0.25, 0.01, 30)  # a few misses are not drift


def test_empty_window_gives_nan_not_an_error() -> None:
    profile = Profile("m", "1", {"score": histogram_from_values("score", RNG.uniform(0.5, 1, 100))}, 50)
    (result,) = compare(profile, {"score": np.array([])})
    assert result.samples == 0 and math.isnan(result.psi) and math.isnan(result.ks_pvalue)
    assert not result.drifted(0.25, 0.01, 30)


def test_psi_is_zero_for_identical_and_symmetric_in_magnitude() -> None:
    assert psi(np.array([10, 20, 30]), np.array([10, 20, 30])) == pytest.approx(0.0)
    assert psi(np.array([10, 20, 30]), np.array([30, 20, 10])) > 0.25


def test_profile_round_trip(tmp_path: Path) -> None:
    samples = {"brightness": REFERENCE, "detections": np.ones(10), "score": np.array([0.9, 0.95])}
    samples |= {name: np.array([]) for name in ("width", "height", "contrast", "sharpness", "box_size")}
    profile = Profile.from_samples("face_detector", "2.0", samples, 10, "test")
    profile.save(tmp_path / "p.json")
    loaded = Profile.load(tmp_path / "p.json")
    assert set(loaded.features) == {"brightness", "detections", "score"}
    assert loaded.features["brightness"].counts == profile.features["brightness"].counts
    assert loaded.features["detections"].kind == "output"


def test_profile_of_unknown_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="rebuild it"):
        Profile.load(tmp_path / "p.json")


def test_read_records_filters_time_model_and_broken_lines(tmp_path: Path) -> None:
    lines = [
        '{"ts": 100, "model": "face_detector", "version": "2.0", "width": 1}',
        '{"ts": 200, "model": "face_detector", "version": "1.0", "width": 2}',
        '{"ts": 300, "model": "face_detector", "version": "2.0", "width": 3}',
        '{"ts": 400, "model": "face_det',  # cut short by a crash
    ]
    (tmp_path / "features-1.jsonl").write_text("\n".join(lines) + "\n")
    got = [r["width"] for r in read_records(tmp_path, 0, 350, "face_detector", "2.0")]
    assert got == [1, 3]
    assert [r["width"] for r in read_records(tmp_path, 150, 1000)] == [2, 3]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
