"""Capacity model: replicas needed for N cameras at F frames/s, from a benchmark JSON.

    demand      = cameras x fps                                    images/s to serve
    per_replica = best throughput_rps of one server (one pod) among the benchmark steps of the
                  target with no errors and, with --p99-slo-ms, p99 within the latency objective
    per_worker  = per_replica / workers        (workers per server: the benchmark's "workers", i.e. the
                                               archive's minWorkers it ran with; --workers overrides)
    usable      = per_replica x (1 - headroom)                     headroom 0.30: pods run at <= 70 %
    replicas    = max(min_replicas, ceil(demand / usable))

The benchmark measures one server; run it once on the CPU pod size and once on the GPU pod size
(docs/capacity.md) and pass both files to get both rows.

Usage: python -m scripts.bench.capacity bench-cpu.json [bench-gpu.json ...] --cameras 40 --fps 5
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.gate import BenchmarkFormatError, load
from scripts.cli import UsageError, prog, run_main

__all__ = ["Capacity", "benchmark_workers", "format_table", "main", "per_replica", "plan", "replicas_needed"]


@dataclass(frozen=True)
class Capacity:
    label: str
    per_replica_rps: float  # images/s one server sustains within the constraints
    per_worker_rps: float
    concurrency: int  # the benchmark step that gave per_replica_rps
    p99_ms: float
    demand_rps: float
    replicas: int
    utilization: float  # demand / (replicas x per_replica): expected average load per pod


def per_replica(
    data: dict[str, Any], target: str = "torchserve", p99_slo_ms: float | None = None
) -> dict[str, Any]:
    """The step with the highest throughput that had no errors and met the latency objective."""
    steps = [
        s
        for s in data["steps"]
        if s["target"] == target
        and s["errors"] == 0
        and (p99_slo_ms is None or s["latency_ms"]["p99"] <= p99_slo_ms)
    ]
    if not steps:
        slo = f" with p99 <= {p99_slo_ms:g} ms" if p99_slo_ms is not None else ""
        raise ValueError(f"no error-free {target!r} step{slo} in the benchmark; nothing to size from")
    return max(steps, key=lambda s: s["throughput_rps"])


def replicas_needed(demand_rps: float, per_replica_rps: float, headroom: float, min_replicas: int) -> int:
    if demand_rps < 0 or per_replica_rps <= 0:
        raise ValueError("demand must be >= 0 and per-replica throughput > 0")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), e.g. 0.3 for 30 %; got {headroom}")
    usable = per_replica_rps * (1 - headroom)
    # round() first: 2.0000000001 replicas from float noise is 2, not 3.
    return max(min_replicas, math.ceil(round(demand_rps / usable, 9)))


def plan(
    data: dict[str, Any],
    cameras: int,
    fps: float,
    label: str = "",
    target: str = "torchserve",
    workers: int = 1,
    headroom: float = 0.30,
    min_replicas: int = 2,
    p99_slo_ms: float | None = None,
) -> Capacity:
    if cameras < 0 or fps < 0 or workers < 1:
        raise ValueError("cameras and fps must be >= 0, workers >= 1")
    best = per_replica(data, target, p99_slo_ms)
    rps = float(best["throughput_rps"])
    demand = cameras * fps
    replicas = replicas_needed(demand, rps, headroom, min_replicas)
    return Capacity(
        label=label or f"{data.get('model', '?')} {data.get('version', '?')}",
        per_replica_rps=rps,
        per_worker_rps=rps / workers,
        concurrency=best["concurrency"],
        p99_ms=float(best["latency_ms"]["p99"]),
        demand_rps=demand,
        replicas=replicas,
        utilization=demand / (replicas * rps) if replicas else 0.0,
    )


def format_table(rows: list[Capacity]) -> str:
    header = ("benchmark", "img/s/replica", "img/s/worker", "at conc", "p99 ms", "demand img/s",
              "replicas", "load/replica")  # fmt: skip
    lines = [header] + [
        (r.label, f"{r.per_replica_rps:.1f}", f"{r.per_worker_rps:.1f}", str(r.concurrency),
         f"{r.p99_ms:.0f}", f"{r.demand_rps:.1f}", str(r.replicas), f"{r.utilization:.0%}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)


def benchmark_workers(data: dict[str, Any]) -> int | None:
    """Workers per server the benchmark ran with: its ``workers`` field (scripts/bench/cli.py writes
    the archive's minWorkers), else the process count of its in-process steps (the same number);
    None when the file does not say."""
    if isinstance(data.get("workers"), int) and data["workers"] >= 1:
        return data["workers"]
    processes = {s["processes"] for s in data["steps"] if s["target"] == "inprocess" and "processes" in s}
    return processes.pop() if len(processes) == 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog("scripts.bench.capacity"), description="Replicas needed for N cameras at F fps.",
        epilog='exit codes: README.md, "Exit codes"',
    )  # fmt: skip
    parser.add_argument("benchmarks", type=Path, nargs="+", help="benchmark JSON, one per pod kind")
    parser.add_argument("--cameras", type=int, required=True, help="number of camera streams")
    parser.add_argument("--fps", type=float, required=True, help="frames per second per camera")
    parser.add_argument(
        "--target", default="torchserve", help="benchmark target to size from (default: torchserve)"
    )
    parser.add_argument(
        "--workers", type=int,
        help="TorchServe workers per replica, for the per-worker column (default: the benchmark's)",
    )  # fmt: skip
    parser.add_argument(
        "--headroom", type=float, default=0.30, help="spare capacity, 0.30 = 30 %% (default: 0.30)"
    )
    parser.add_argument("--min-replicas", type=int, default=2, help="floor for availability (default: 2)")
    parser.add_argument(
        "--p99-slo-ms", type=float, help="only steps with p99 latency within this (default: any)"
    )
    args = parser.parse_args(argv)
    return run_main(lambda: report(args), parser.prog)


def report(args: argparse.Namespace) -> None:
    rows, notes = [], []
    try:
        for path in args.benchmarks:
            data = load(path)
            workers = args.workers or benchmark_workers(data)
            if workers is None:
                notes.append(f"{path.name}: the benchmark does not say how many workers ran; assumed 1 "
                             "(pass --workers)")  # fmt: skip
            rows.append(plan(data, args.cameras, args.fps, path.stem, args.target, workers or 1,
                             args.headroom, args.min_replicas, args.p99_slo_ms))  # fmt: skip
    except (BenchmarkFormatError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(f"{args.cameras} cameras x {args.fps:g} fps = {args.cameras * args.fps:g} images/s, "
          f"headroom {args.headroom:.0%}, at least {args.min_replicas} replicas")  # fmt: skip
    print(format_table(rows))
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
