"""Capacity model: replicas needed for N cameras at F frames/s, from a benchmark JSON.

    demand      = cameras x fps                                    images/s to serve
    per_replica = best throughput_rps of one server (one pod) among the benchmark steps of the
                  target with no errors and, with --p99-slo-ms, p99 within the latency objective
    per_worker  = per_replica / workers                            (workers = minWorkers of the model)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replicas needed for N cameras at F fps.")
    parser.add_argument("benchmarks", type=Path, nargs="+", help="benchmark JSON, one per pod kind")
    parser.add_argument("--cameras", type=int, required=True)
    parser.add_argument("--fps", type=float, required=True, help="frames per second per camera")
    parser.add_argument("--target", default="torchserve")
    parser.add_argument("--workers", type=int, default=1, help="TorchServe workers per replica")
    parser.add_argument("--headroom", type=float, default=0.30, help="spare capacity, 0.30 = 30 %%")
    parser.add_argument("--min-replicas", type=int, default=2, help="floor for availability")
    parser.add_argument("--p99-slo-ms", type=float, help="only steps with p99 latency within this")
    args = parser.parse_args(argv)
    try:
        rows = [
            plan(load(path), args.cameras, args.fps, path.stem, args.target, args.workers,
                 args.headroom, args.min_replicas, args.p99_slo_ms)
            for path in args.benchmarks
        ]  # fmt: skip
    except (BenchmarkFormatError, ValueError) as err:
        print(f"capacity: {err}", file=sys.stderr)
        return 1
    print(f"{args.cameras} cameras x {args.fps:g} fps = {args.cameras * args.fps:g} images/s, "
          f"headroom {args.headroom:.0%}, at least {args.min_replicas} replicas")  # fmt: skip
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
