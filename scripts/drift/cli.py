"""Compare a live window of traffic with a reference profile: PSI and KS per input and output feature.

    python -m scripts.drift report --profile monitoring/reference_profile.json --window 1h
    python -m scripts.drift serve  --profile monitoring/reference_profile.json --port 9109

``report`` prints one line per feature (exit code 1 with ``--fail-on-drift`` when one drifted);
``serve`` is a Prometheus exporter that recomputes the comparison every ``--interval`` seconds over
the last ``--window`` and exposes it (monitoring/prometheus.yml scrapes it, monitoring/alerts.yml
alerts on it).

Where the live window comes from: the per-request feature log the handler writes
(handlers/metrics.py, ``<log dir>/features/features-<pid>.jsonl``), not Prometheus. TorchServe 0.12
gives its histograms only the client's fixed default buckets (0.005 .. 10), so a feature in
Prometheus has 5 to 10 usable bins that are not the profile's bins; PSI and KS on those would
measure the bucket layout as much as the traffic. The log keeps every request's exact values, so
the window is binned on the reference's own quantile edges, any interval can be chosen after the
fact, and the same records can build a new reference profile (scripts/drift/profile.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.cli import MOMENT_HELP, Exit, UsageError, moment_type, prog, run_main
from scripts.drift.stats import FeatureDrift, Profile, compare, samples_from_records
from scripts.paths import REPO

__all__ = [
    "DEFAULT_LOG_DIR",
    "DEFAULT_PROFILE",
    "DriftExporter",
    "build_parser",
    "drifted",
    "format_report",
    "live_window",
    "main",
    "parse_duration",
    "read_records",
    "run",
]

DEFAULT_PROFILE = REPO / "monitoring" / "reference_profile.json"
DEFAULT_LOG_DIR = REPO / "logs" / "features"
# Decision rule of the report (the alert rules in monitoring/alerts.yml use the same numbers).
PSI_THRESHOLD = 0.25
PVALUE_THRESHOLD = 0.01
MIN_SAMPLES = 30


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '1d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"duration {text!r}: write e.g. 90s, 15m, 2h") from None


def read_records(
    log_dir: Path, since: float, until: float, model: str | None = None, version: str | None = None
) -> Iterator[dict[str, Any]]:
    """Feature log records with since <= ts < until (rotated files included), optionally one model."""
    for path in sorted(Path(log_dir).glob("features-*.jsonl*")):
        if path.stat().st_mtime < since:
            continue  # last written before the window opened
        with path.open() as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash or being written right now
                if not since <= record.get("ts", 0) < until:
                    continue
                if model and record.get("model") != model or version and record.get("version") != version:
                    continue
                yield record


def live_window(profile: Profile, log_dir: Path, since: float, until: float) -> tuple[dict, int]:
    """Samples per feature and image count of the profile's model and version in [since, until)."""
    return samples_from_records(read_records(log_dir, since, until, profile.model, profile.version))


def drifted(result: FeatureDrift, min_samples: int = MIN_SAMPLES) -> bool:
    return result.drifted(PSI_THRESHOLD, PVALUE_THRESHOLD, min_samples)


def format_report(
    profile: Profile,
    results: list[FeatureDrift],
    images: int,
    since: float,
    until: float,
    min_samples: int = MIN_SAMPLES,
) -> str:
    def num(value: float, spec: str) -> str:
        return "-" if math.isnan(value) else format(value, spec)

    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    lines = [
        f"drift of {profile.model} {profile.version}: {images} images from {stamp}, {until - since:.0f}s "
        f"window, against {profile.images} reference images ({profile.source or 'profile'})",
        f"flagged when PSI > {PSI_THRESHOLD} and KS p < {PVALUE_THRESHOLD} on >= {min_samples} samples",
        f"{'feature':<12}{'kind':<8}{'samples':>8}{'PSI':>9}{'PSI@same':>10}{'KS D':>8}{'KS p':>11}  verdict",
    ]
    for r in results:
        if r.samples < min_samples:
            verdict = "too few samples"
        else:
            verdict = "DRIFT" if drifted(r, min_samples) else "ok"
        lines.append(
            f"{r.feature:<12}{r.kind:<8}{r.samples:>8}{num(r.psi, '.3f'):>9}"
            f"{num(r.psi_expected, '.3f'):>10}{num(r.ks_statistic, '.3f'):>8}"
            f"{num(r.ks_pvalue, '.2e'):>11}  {verdict}"
        )
    lines.append("PSI@same: the PSI two samples of one distribution show at these sizes (small-window bias)")
    return "\n".join(lines)


class DriftExporter:
    """Prometheus gauges of the latest comparison; :meth:`update` recomputes them."""

    def __init__(self, profile: Profile, log_dir: Path, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.profile = profile
        self.log_dir = Path(log_dir)
        self.registry = registry or CollectorRegistry()
        labels = ["model_name", "model_version", "feature", "kind"]
        self.psi = Gauge(
            "detection_drift_psi",
            "PSI of the live window against the reference profile",
            labels,
            registry=self.registry,
        )
        self.ks = Gauge(
            "detection_drift_ks_statistic",
            "Two-sample KS statistic D (binned) against the reference",
            labels,
            registry=self.registry,
        )
        self.pvalue = Gauge(
            "detection_drift_ks_pvalue",
            "p-value of the KS test against the reference",
            labels,
            registry=self.registry,
        )
        self.samples = Gauge(
            "detection_drift_window_samples",
            "Values of the feature in the live window",
            labels,
            registry=self.registry,
        )
        self.images = Gauge(
            "detection_drift_window_images",
            "Requests in the live window",
            ["model_name", "model_version"],
            registry=self.registry,
        )
        self.last_run = Gauge(
            "detection_drift_last_run_timestamp_seconds",
            "When the comparison last ran",
            registry=self.registry,
        )

    def update(self, since: float, until: float) -> list[FeatureDrift]:
        window, images = live_window(self.profile, self.log_dir, since, until)
        results = compare(self.profile, window)
        model = [self.profile.model, self.profile.version]
        for r in results:
            labels = [*model, r.feature, r.kind]
            self.psi.labels(*labels).set(r.psi)
            self.ks.labels(*labels).set(r.ks_statistic)
            self.pvalue.labels(*labels).set(r.ks_pvalue)
            self.samples.labels(*labels).set(r.samples)
        self.images.labels(*model).set(images)
        self.last_run.set(time.time())
        return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("scripts.drift"),
        description="Input and output drift against a reference profile.",
        epilog='exit codes: README.md, "Exit codes" (1: drift found with --fail-on-drift)',
    )
    parser.add_argument("action", choices=["report", "serve"], help="print once, or serve to Prometheus")
    parser.add_argument(
        "--profile", type=Path, default=DEFAULT_PROFILE,
        help="built by python -m scripts.drift.profile (default: monitoring/reference_profile.json)",
    )  # fmt: skip
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=DEFAULT_LOG_DIR,
        help="the handler's feature log (default: logs/features)",
    )
    parser.add_argument(
        "--window", type=parse_duration, default=3600.0, help="live window, e.g. 15m, 1h (default: 1h)"
    )
    parser.add_argument(
        "--since", type=moment_type(end=False), help=f"window start instead of --window: {MOMENT_HELP}"
    )
    parser.add_argument(
        "--until", type=moment_type(end=True),
        help="window end, same forms (a date: the end of that day; default: now)",
    )  # fmt: skip
    parser.add_argument(
        "--min-samples", type=int, default=MIN_SAMPLES,
        help=f"fewer values of a feature are not judged (default: {MIN_SAMPLES})",
    )  # fmt: skip
    parser.add_argument("--fail-on-drift", action="store_true", help="report: exit 1 when a feature drifted")
    parser.add_argument("--port", type=int, default=9109, help="serve: exporter port (default: 9109)")
    parser.add_argument("--host", default="127.0.0.1", help="serve: exporter address (default: 127.0.0.1)")
    parser.add_argument(
        "--interval", type=parse_duration, default=60.0, help="serve: time between runs (default: 60s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: run(args), parser.prog)


def run(args: argparse.Namespace) -> Exit:
    try:
        profile = Profile.load(args.profile)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"cannot read the reference profile: {err}") from None

    def window() -> tuple[float, float]:
        until = args.until or time.time()
        since = args.since if args.since is not None else until - args.window
        if since >= until:
            raise UsageError(
                f"the window is empty: --since ({since:.0f}) is not before --until ({until:.0f})"
            )
        return since, until

    if args.action == "report":
        since, until = window()
        samples, images = live_window(profile, args.log_dir, since, until)
        results = compare(profile, samples)
        print(format_report(profile, results, images, since, until, args.min_samples))
        found = any(drifted(r, args.min_samples) for r in results)
        return Exit.FAILED_ITEMS if args.fail_on_drift and found else Exit.OK

    from prometheus_client import start_http_server

    exporter = DriftExporter(profile, args.log_dir)
    try:
        start_http_server(args.port, addr=args.host, registry=exporter.registry)
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({err}); choose another --port") from None
    print(f"drift exporter on http://{args.host}:{args.port}/metrics, window {args.window:.0f}s", flush=True)
    while True:
        since, until = window()
        results = exporter.update(since, until)
        flagged = [r.feature for r in results if drifted(r, args.min_samples)]
        print(f"{time.strftime('%H:%M:%S')} drift: {', '.join(flagged) or 'none'}", flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
