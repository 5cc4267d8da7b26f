"""The in-process targets of the benchmark: the archive's pipeline with no server, in as many
processes as TorchServe runs workers (the ceiling) or in one process one image at a time (the floor)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from scripts.bench.load import StepResult
from scripts.bench.report import format_row

__all__ = ["archive_workers", "bench_inprocess"]


def archive_workers(archive: Path) -> int:
    """minWorkers from the archive's own model-config.yaml (what TorchServe starts)."""
    import zipfile

    import yaml

    with zipfile.ZipFile(archive) as mar:
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        config = yaml.safe_load(mar.read(manifest["model"]["configFile"])) or {}
    return int(config.get("minWorkers", 1))


def _inprocess_worker(archive, body, batch, warmup, duration, barrier, results) -> None:
    """One process: the archive's pipeline (its own thread budget) in a closed loop."""
    from scripts.inprocess import ArchivedModel

    model = ArchivedModel(archive)
    requests_ = [{"body": body}] * batch
    stop = time.perf_counter() + warmup
    while time.perf_counter() < stop:
        model.process(requests_)
    barrier.wait()  # all processes measure the same window
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < duration:
        t0 = time.perf_counter()
        model.process(requests_)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    results.put((latencies, time.perf_counter() - start))


def bench_inprocess(
    archive: Path,
    body: bytes,
    duration: float,
    warmup: float,
    batch_sizes=(1, 8),
    processes: int | None = None,
    target: str = "inprocess",
) -> list[dict]:
    """The ceiling: the pipeline in a closed loop, no server, in as many processes as TorchServe
    runs workers (each with the archive's thread budget), best of batch sizes 1 and 8."""
    import multiprocessing

    processes = processes or archive_workers(archive)
    context = multiprocessing.get_context("spawn")
    steps = []
    for batch in batch_sizes:
        barrier, results = context.Barrier(processes), context.Queue()
        args = (str(archive), body, batch, warmup, duration, barrier, results)
        procs = [context.Process(target=_inprocess_worker, args=args) for _ in range(processes)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        latencies = [ms for lat, _ in outcomes for ms in lat]
        elapsed = max(seconds for _, seconds in outcomes)
        summary = StepResult(target, batch, elapsed, latencies_ms=latencies).summary()
        summary.update(batch_size=batch, processes=processes, requests=len(latencies) * batch)
        summary["throughput_rps"] = round(len(latencies) * batch / elapsed, 2)
        print(format_row(summary), flush=True)
        steps.append(summary)
    return steps
