"""Rows and same-run ratios of a benchmark run (python -m scripts.bench)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["at", "best", "format_row", "summarize", "write_report"]


def write_report(path: Path | None, report: dict) -> None:
    """The JSON report of a benchmark tool at ``--out`` (nothing when None), folders made."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def format_row(step: dict) -> str:
    lat = step["latency_ms"]
    row = (
        f"{step['target']:>10}  c={step['concurrency']:<3} {step['throughput_rps']:>8.2f} img/s  "
        f"p50 {lat['p50']:>8.1f}  p90 {lat['p90']:>8.1f}  p99 {lat['p99']:>8.1f} ms  errors {step['errors']}"
    )
    server = step.get("server")
    if server:
        row += (
            f"  | server: queue {server['queue_ms_avg']} ms, inference {server['inference_ms_avg']} ms,"
            f" batch {server['batch_size_avg']}, cores busy {server.get('cores_busy')}"
        )
    return row


def best(steps: list[dict], target: str) -> dict | None:
    own = [s for s in steps if s["target"] == target]
    return max(own, key=lambda s: s["throughput_rps"]) if own else None


def at(steps: list[dict], target: str, concurrency: int) -> dict | None:
    return next((s for s in steps if s["target"] == target and s["concurrency"] == concurrency), None)


def summarize(steps: list[dict], compare_at: int = 16) -> dict:
    """Ratios against the deployment, and the issue's targets as booleans."""
    ts_best, ceiling = best(steps, "torchserve"), best(steps, "inprocess")
    summary: dict = {}
    if ts_best and ceiling:
        summary["served_best_vs_ceiling"] = round(ts_best["throughput_rps"] / ceiling["throughput_rps"], 3)
    ts_at = at(steps, "torchserve", compare_at)
    others = [s for s in (at(steps, "flask", compare_at), at(steps, "litserve", compare_at)) if s]
    if ts_at and others:
        rival = max(others, key=lambda s: s["throughput_rps"])
        summary[f"c{compare_at}_throughput_vs_best_alternative"] = round(
            ts_at["throughput_rps"] / rival["throughput_rps"], 3
        )
        summary[f"c{compare_at}_best_alternative"] = rival["target"]
        for other in others:
            summary[f"c{compare_at}_p99_vs_{other['target']}"] = round(
                ts_at["latency_ms"]["p99"] / other["latency_ms"]["p99"], 3
            )
    return summary
