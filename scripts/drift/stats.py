"""Reference profiles and the two drift statistics (PSI and a KS test) shared by the drift tools.

A profile holds, per feature, a histogram of the reference values on bins cut at the reference's own
quantiles: ``edges`` e1 < ... < ek define the bins (-inf, e1), [e1, e2), ..., [ek, +inf) and
``counts`` the reference values in each. A live window is binned on the same edges.

PSI (population stability index) = sum over bins of (live% - ref%) * ln(live% / ref%), on at most
:data:`PSI_BINS` bins (groups of the fine bins holding about equal reference mass), with 0.5 added
to every count so that an empty bin stays finite. Usual reading: < 0.1 stable, 0.1-0.25 moderate,
> 0.25 significant. For two samples of one distribution its expected value is about
(bins - 1) * (1/n_live + 1/n_ref): small windows inflate it, hence the minimum window size.

KS: the profile keeps histograms, not the reference values, so ``scipy.stats.ks_2samp`` cannot run
on it. The two-sample statistic is computed on the fine bins instead: D = max |F_ref - F_live| over
the bin edges (the exact D at those points; between them it can only be missed by at most one fine
bin's mass, 1/FINE_BINS of the reference) and its p-value is the one ks_2samp uses for large samples:
``scipy.stats.kstwo.sf(D, round(n*m / (n+m)))``. Ties (the ``detections`` count) make it conservative.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from handlers.features import INPUT_FEATURES, OUTPUT_FEATURES

__all__ = [
    "FEATURES",
    "FINE_BINS",
    "PROFILE_FORMAT",
    "PSI_BINS",
    "FeatureDrift",
    "FeatureHistogram",
    "Profile",
    "compare",
    "histogram_from_values",
    "ks_from_counts",
    "psi",
    "samples_from_records",
]

FINE_BINS = 20  # reference-quantile bins kept in a profile (KS resolution)
PSI_BINS = 10  # bins PSI is computed on
PROFILE_FORMAT = 1
FEATURES = {**{name: "input" for name in INPUT_FEATURES}, **{name: "output" for name in OUTPUT_FEATURES}}


@dataclass
class FeatureHistogram:
    name: str
    kind: str  # "input" | "output"
    edges: list[float]
    counts: list[int]

    @property
    def n(self) -> int:
        return int(sum(self.counts))

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` on this histogram's bins."""
        index = np.searchsorted(np.asarray(self.edges, dtype=float), values, side="right")
        return np.bincount(index, minlength=len(self.edges) + 1)

    def psi_groups(self) -> list[slice]:
        """The fine bins grouped for PSI: the two outer bins (below the reference minimum, above its
        maximum: no reference mass) alone, the others in at most PSI_BINS - 2 groups of about equal
        reference mass."""
        last = len(self.counts) - 1
        inner = np.asarray(self.counts[1:last], dtype=float)
        cumulative = np.cumsum(inner) / max(1.0, inner.sum())
        groups, start = [slice(0, 1)], 0
        for target in np.linspace(0, 1, PSI_BINS - 1)[1:]:
            stop = min(max(int(np.searchsorted(cumulative, target - 1e-9)) + 1, start + 1), len(inner))
            if stop > start:
                groups.append(slice(1 + start, 1 + stop))
                start = stop
        return [*groups, slice(last, last + 1)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "edges": self.edges, "counts": self.counts}


def histogram_from_values(name: str, values: np.ndarray, bins: int = FINE_BINS) -> FeatureHistogram:
    """Bins cut at the reference quantiles (ties collapse into one edge), plus one bin below the
    reference minimum and one above its maximum, both empty in the reference."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError(f"no reference values for feature {name!r}: the profile needs some")
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    low, high = float(values.min()), float(values.max())
    above = high + max(1e-6, abs(high) * 1e-9)
    edges = sorted({float(np.round(q, 6)) for q in quantiles if low < q <= high} | {low, above})
    hist = FeatureHistogram(name, FEATURES.get(name, "input"), edges, [])
    hist.counts = [int(c) for c in hist.bin_counts(values)]
    return hist


@dataclass
class Profile:
    model: str
    version: str
    features: dict[str, FeatureHistogram]
    images: int
    source: str = ""
    created: float = 0.0

    @classmethod
    def from_samples(
        cls, model: str, version: str, samples: dict[str, np.ndarray], images: int, source: str = ""
    ) -> Profile:
        features = {
            name: histogram_from_values(name, samples[name]) for name in FEATURES if len(samples[name])
        }
        return cls(model, version, features, images, source, time.time())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "version": self.version,
            "images": self.images,
            "source": self.source,
            "created": round(self.created, 3),
            "features": {name: hist.to_json() for name, hist in self.features.items()},
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Profile:
        obj = json.loads(Path(path).read_text())
        if obj.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"{path}: profile format {obj.get('format')!r}, expected {PROFILE_FORMAT}; rebuild it "
                "with `python -m scripts.drift.profile`"
            )
        features = {
            name: FeatureHistogram(
                name, spec["kind"], [float(e) for e in spec["edges"]], [int(c) for c in spec["counts"]]
            )
            for name, spec in obj["features"].items()
        }
        return cls(
            obj["model"],
            str(obj["version"]),
            features,
            int(obj["images"]),
            obj.get("source", ""),
            float(obj.get("created", 0.0)),
        )


def psi(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    ref = (np.asarray(ref_counts, dtype=float) + 0.5) / (np.sum(ref_counts) + 0.5 * len(ref_counts))
    live = (np.asarray(live_counts, dtype=float) + 0.5) / (np.sum(live_counts) + 0.5 * len(live_counts))
    return float(np.sum((live - ref) * np.log(live / ref)))


def ks_from_counts(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic D on shared bins and its p-value (see the module docstring)."""
    n, m = float(np.sum(ref_counts)), float(np.sum(live_counts))
    if n == 0 or m == 0:
        return math.nan, math.nan
    d = float(np.max(np.abs(np.cumsum(ref_counts) / n - np.cumsum(live_counts) / m)))
    effective = max(1, round(n * m / (n + m)))
    return d, float(stats.kstwo.sf(d, effective))


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    samples: int
    psi: float
    ks_statistic: float
    ks_pvalue: float
    psi_expected: float  # PSI two samples of one distribution would show at these sizes

    def drifted(self, psi_threshold: float, pvalue_threshold: float, min_samples: int) -> bool:
        """Both an effect size worth acting on and a significant test, on enough samples."""
        return self.samples >= min_samples and self.psi > psi_threshold and self.ks_pvalue < pvalue_threshold


def compare(profile: Profile, window: dict[str, np.ndarray]) -> list[FeatureDrift]:
    """One :class:`FeatureDrift` per profile feature; NaN statistics where the window has no values."""
    results = []
    for name, hist in profile.features.items():
        values = np.asarray(window.get(name, []), dtype=float)
        live = hist.bin_counts(values)
        ref = np.asarray(hist.counts)
        groups = hist.psi_groups()
        ref_grouped = np.array([ref[g].sum() for g in groups])
        live_grouped = np.array([live[g].sum() for g in groups])
        if values.size:
            value = psi(ref_grouped, live_grouped)
            d, p = ks_from_counts(ref, live)
            expected = (len(groups) - 1) * (1 / values.size + 1 / max(1, hist.n))
        else:
            value = d = p = expected = math.nan
        results.append(FeatureDrift(name, hist.kind, int(values.size), value, d, p, expected))
    return results


def samples_from_records(records: Iterable[dict[str, Any]]) -> tuple[dict[str, np.ndarray], int]:
    """Feature log records -> per-feature arrays (per-detection features flattened), image count."""
    columns: dict[str, list[float]] = {name: [] for name in FEATURES}
    images = 0
    for record in records:
        images += 1
        for name in FEATURES:
            value = record.get(name)
            if isinstance(value, list):
                columns[name].extend(float(v) for v in value)
            elif value is not None:
                columns[name].append(float(value))
    return {name: np.asarray(values, dtype=float) for name, values in columns.items()}, images
