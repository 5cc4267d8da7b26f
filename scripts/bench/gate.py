"""Benchmark regression gate: compare a benchmark JSON with a stored baseline, exit 1 on a regression.

Benchmark JSON (written by the benchmark tool; the baseline has the same shape plus a "note"):
    {"model": str, "version": str,
     "steps": [{"target": "torchserve"|"inprocess"|"flask"|"litserve", "concurrency": int,
                "requests": int, "errors": int, "throughput_rps": float,
                "latency_ms": {"p50": float, "p90": float, "p99": float}}, ...]}

For every (target, concurrency) present in both files, with tolerance t (default 0.30):
    throughput_rps  < (1 - t) x baseline   fails
    latency_ms.p99  > (1 + t) x baseline   fails
    errors > 0 where the baseline had 0    fails
Steps present in only one file are listed and not judged. Nothing to compare at all fails too (a gate
that compares nothing would pass every regression), unless --allow-empty.

Usage: python -m scripts.bench.gate build/benchmark.json [--baseline benchmarks/baseline.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.cli import Exit, UsageError, prog, run_main
from scripts.paths import REPO

__all__ = [
    "BASELINE",
    "TARGETS",
    "BenchmarkFormatError",
    "Check",
    "compare",
    "format_table",
    "gate",
    "index_steps",
    "load",
    "main",
    "unmatched",
    "validate",
]

BASELINE = REPO / "benchmarks" / "baseline.json"
TARGETS = ("torchserve", "inprocess", "flask", "litserve")

StepKey = tuple[str, int]


class BenchmarkFormatError(ValueError):
    """The file does not have the benchmark JSON shape."""


@dataclass(frozen=True)
class Check:
    target: str
    concurrency: int
    metric: str  # throughput_rps | p99_ms | errors
    baseline: float
    current: float
    limit: str  # the bound that was applied, for the table
    ok: bool


def load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchmarkFormatError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(f"{path} is not JSON: {err}") from None
    validate(data, str(path))
    return data


def validate(data: Any, name: str = "benchmark") -> None:
    """Raise BenchmarkFormatError naming the first field that does not fit the shape above."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise BenchmarkFormatError(f'{name}: expected an object with a "steps" list')
    for i, step in enumerate(data["steps"]):
        where = f"{name}: steps[{i}]"
        if not isinstance(step, dict):
            raise BenchmarkFormatError(f"{where} is not an object")
        if step.get("target") not in TARGETS:
            raise BenchmarkFormatError(f"{where}.target must be one of {', '.join(TARGETS)}")
        for key in ("concurrency", "requests", "errors"):
            if not isinstance(step.get(key), int) or step[key] < 0:
                raise BenchmarkFormatError(f"{where}.{key} must be a non-negative integer")
        if not _number(step.get("throughput_rps")):
            raise BenchmarkFormatError(f"{where}.throughput_rps must be a non-negative number")
        latency = step.get("latency_ms")
        if not isinstance(latency, dict) or not all(_number(latency.get(p)) for p in ("p50", "p90", "p99")):
            raise BenchmarkFormatError(f"{where}.latency_ms needs numbers p50, p90, p99")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def index_steps(data: dict[str, Any]) -> dict[StepKey, dict[str, Any]]:
    steps: dict[StepKey, dict[str, Any]] = {}
    for step in data["steps"]:
        key = (step["target"], step["concurrency"])
        if key in steps:
            raise BenchmarkFormatError(f"two steps for target {key[0]} at concurrency {key[1]}")
        steps[key] = step
    return steps


def compare(current: dict[str, Any], baseline: dict[str, Any], tolerance: float = 0.30) -> list[Check]:
    """One Check per metric for every (target, concurrency) present in both files."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), e.g. 0.30 for 30 %; got {tolerance}")
    now, base = index_steps(current), index_steps(baseline)
    checks = []
    for key in sorted(now.keys() & base.keys()):
        c, b = now[key], base[key]
        low = (1 - tolerance) * b["throughput_rps"]
        high = (1 + tolerance) * b["latency_ms"]["p99"]
        checks += [
            Check(*key, "throughput_rps", b["throughput_rps"], c["throughput_rps"],
                  f">= {low:.1f}", c["throughput_rps"] >= low),
            Check(*key, "p99_ms", b["latency_ms"]["p99"], c["latency_ms"]["p99"],
                  f"<= {high:.1f}", c["latency_ms"]["p99"] <= high),
            Check(*key, "errors", b["errors"], c["errors"],
                  "== 0" if b["errors"] == 0 else "any", b["errors"] > 0 or c["errors"] == 0),
        ]  # fmt: skip
    return checks


def unmatched(current: dict[str, Any], baseline: dict[str, Any]) -> tuple[list[StepKey], list[StepKey]]:
    """Steps only in the benchmark, and steps only in the baseline."""
    now, base = index_steps(current), index_steps(baseline)
    return sorted(now.keys() - base.keys()), sorted(base.keys() - now.keys())


def format_table(checks: list[Check]) -> str:
    header = ("target", "conc", "metric", "baseline", "current", "change", "limit", "result")
    rows = [header]
    for c in checks:
        change = f"{(c.current - c.baseline) / c.baseline:+.1%}" if c.baseline else "-"
        rows.append((c.target, str(c.concurrency), c.metric, f"{c.baseline:g}", f"{c.current:g}",
                     change, c.limit, "ok" if c.ok else "FAIL"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def gate(
    current: dict[str, Any], baseline: dict[str, Any], tolerance: float = 0.30, allow_empty: bool = False
) -> tuple[bool, str]:
    """(passed, report): the table of checks and what was not compared."""
    lines = []
    if current.get("model") != baseline.get("model"):
        return False, f"model differs: benchmark {current.get('model')!r}, baseline {baseline.get('model')!r}"
    checks = compare(current, baseline, tolerance)
    only_now, only_base = unmatched(current, baseline)
    if checks:
        lines.append(format_table(checks))
    if only_now:
        lines.append("not in the baseline (not judged): " + ", ".join(f"{t}@{c}" for t, c in only_now))
    if only_base:
        lines.append("not in the benchmark (not judged): " + ", ".join(f"{t}@{c}" for t, c in only_base))
    if not checks:
        lines.append("nothing compared: the benchmark and the baseline share no (target, concurrency)")
        return allow_empty, "\n".join(lines)
    failed = [c for c in checks if not c.ok]
    lines.append(
        f"{len(failed)} of {len(checks)} checks failed (tolerance {tolerance:.0%})"
        if failed
        else f"all {len(checks)} checks passed (tolerance {tolerance:.0%})"
    )
    return not failed, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog("scripts.bench.gate"), description="Fail when a benchmark is worse than the baseline.",
        epilog='exit codes: README.md, "Exit codes" (1: a regression; 2: a file that cannot be read)',
    )  # fmt: skip
    parser.add_argument("benchmark", type=Path, help="benchmark JSON of this run")
    parser.add_argument(
        "--baseline", type=Path, default=BASELINE, help="baseline JSON (default: benchmarks/baseline.json)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.30, help="allowed change, 0.30 = 30 %% (default: 0.30)"
    )
    parser.add_argument("--allow-empty", action="store_true", help="pass when nothing can be compared")
    args = parser.parse_args(argv)
    return run_main(lambda: run(args), parser.prog)


def run(args: argparse.Namespace) -> Exit:
    try:
        current, baseline = load(args.benchmark), load(args.baseline)
        passed, report = gate(current, baseline, args.tolerance, args.allow_empty)
    except (BenchmarkFormatError, ValueError) as err:
        raise UsageError(str(err)) from None  # non-zero: an unreadable benchmark never passes the gate
    print(f"benchmark {args.benchmark} ({current.get('version')}) vs baseline {args.baseline} "
          f"({baseline.get('version')})")  # fmt: skip
    print(report)
    return Exit.OK if passed else Exit.FAILED_ITEMS


if __name__ == "__main__":
    sys.exit(main())
