"""Throughput / latency benchmark of the served model against its ceiling and its alternatives.

Targets, all on the same JPEG and the same pipeline code (decode + preprocess + model + postprocess):
  torchserve  this deployment: a fresh TorchServe on free ports from config.properties
  inprocess   the pipeline called directly, no server: the ceiling on this machine
  single      one image at a time in one process with the worker's thread budget: the c=1 floor
  flask       the simplest alternative: Flask, one request at a time
  litserve    LitServe with the same batch size and batch delay
Each server target gets a closed-loop sweep (concurrency 1, 2, 4, 8, 16, 32 by default) with
warm-up; the TorchServe steps also carry the server's own view of the same window (queue time,
inference latency, average batch size), and every step the load generator's own CPU (it shares the
cores). Output: a table, ratios, the goals met / not met (scripts/bench/goals.py), and JSON (--out).
``--set KEY=VALUE`` rebuilds the archive with model-config keys changed, and ``--property KEY=VALUE``
starts TorchServe with a config.properties key changed, to measure a setting.

Usage: python -m scripts.bench [--targets torchserve,inprocess,single,flask,litserve] [--duration 10]
       [--concurrency 1,2,4,8,16,32] [--set batchSize=1] [--out benchmarks/latest.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from scripts.bench.goals import evaluate, format_goals, parse_properties, parse_settings, variant_archive
from scripts.bench.load import Auth, StepResult, TokenAuth, run_step
from scripts.client import ManagementClient
from scripts.paths import REPO
from scripts.samples import sample_jpeg
from scripts.server import free_ports, launch

__all__ = [
    "DEFAULT_ARCHIVE",
    "archive_workers",
    "at",
    "bench_inprocess",
    "bench_subprocess_server",
    "bench_torchserve",
    "best",
    "format_row",
    "main",
    "process_cpu",
    "scrape",
    "server_view",
    "stop_group",
    "summarize",
    "sweep",
    "wait_port",
]

DEFAULT_ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"
BATCH_LINE = re.compile(r"batch of (\d+):")
WORKER_DEVICE = re.compile(r"loaded \S+ \S+ on (\S+) \(pid")


def scrape(metrics_url: str) -> dict[str, float]:
    """Sum of every sample per metric name from the Prometheus endpoint."""
    text = requests.get(f"{metrics_url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def server_view(before: dict, after: dict, log_slice: str) -> dict:
    requests_done = after.get("ts_inference_requests_total", 0) - before.get("ts_inference_requests_total", 0)
    batches = [int(n) for n in BATCH_LINE.findall(log_slice)]

    def per_request_ms(name: str) -> float | None:
        name += "_total"  # the text parser names counter samples with the _total suffix
        delta = after.get(name, 0) - before.get(name, 0)
        return round(delta / requests_done / 1000.0, 2) if requests_done else None

    return {
        "requests": int(requests_done),
        "queue_ms_avg": per_request_ms("ts_queue_latency_microseconds"),
        "inference_ms_avg": per_request_ms("ts_inference_latency_microseconds"),
        "batch_size_avg": round(float(np.mean(batches)), 2) if batches else None,
        "batches": len(batches),
    }


def process_cpu(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the Java frontend and of the Python workers under ``root_pid``."""
    import psutil

    totals = {"frontend": 0.0, "workers": 0.0}
    try:
        processes = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return totals
    for proc in processes:
        try:
            name, times = " ".join(proc.cmdline()), proc.cpu_times()
        except psutil.Error:
            continue
        if "model_service_worker" in name:
            totals["workers"] += times.user + times.system
        elif "java" in name:
            totals["frontend"] += times.user + times.system
    return totals


def wait_port(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def sweep(
    target,
    url,
    body,
    headers,
    levels,
    duration,
    warmup,
    on_step=None,
    auth: Auth | None = None,
    server_warmup: float = 0.0,
) -> list[dict]:
    """One closed-loop step per concurrency level; prints a row per step and returns their summaries.
    ``server_warmup`` seconds at the highest level come first, unmeasured: TorchServe's JVM compiles
    its hot paths during the first ~25 s of load (its JIT threads took 17 % of a core, then 1 %),
    which a short per-step warm-up would bill to the first steps."""
    if server_warmup > 0:
        print(f"{target}: warming up for {server_warmup:g} s at c={max(levels)}", flush=True)
        run_step(target, url, body, headers, max(levels), 0.5, server_warmup, auth)
    steps = []
    for concurrency in levels:
        context = on_step() if on_step else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result: StepResult = run_step(target, url, body, headers, concurrency, duration, warmup, auth)
        summary = result.summary()
        # The load generator shares the cores with the server: report what it used (warm-up included).
        summary["loadgen_cores"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 2)
        if context is not None:
            summary["server"] = context()
        if result.error_samples:
            summary["error_samples"] = result.error_samples
        print(format_row(summary), flush=True)
        steps.append(summary)
    return steps


def bench_torchserve(
    archive: Path,
    body: bytes,
    levels,
    duration,
    warmup,
    run_dir: Path,
    workers: int | None = None,
    properties: dict[str, str] | None = None,
    server_warmup: float = 0.0,
) -> list[dict]:
    settings = {**(properties or {}), "model_store": str(archive.parent), "load_models": archive.name}
    instance = launch(run_dir, **settings)
    try:
        if workers is not None:
            ManagementClient(instance.endpoints, instance.tokens).scale("face_detector", workers, workers)
        url = f"{instance.endpoints.inference}/predictions/face_detector"
        headers = {"Content-Type": "image/jpeg"}
        auth = TokenAuth(instance.tokens)  # the inference key, renewed if it expires mid-sweep

        def on_step():
            before, offset = scrape(instance.endpoints.metrics), len(instance.log())
            cpu_before, started = process_cpu(instance.process.pid), time.perf_counter()

            def view() -> dict:
                result = server_view(before, scrape(instance.endpoints.metrics), instance.log()[offset:])
                wall = time.perf_counter() - started
                cpu_after = process_cpu(instance.process.pid)
                # Cores busy on average in the window, per role: where a 2-core machine's time goes.
                result["cores_busy"] = {
                    role: round((cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0)) / wall, 2)
                    for role in ("frontend", "workers")
                }
                # Where the workers run ("loaded face_detector 2.0 on cuda:0 ..."): a GPU model
                # config on a machine whose GPU TorchServe cannot see would silently run on CPU.
                result["worker_devices"] = sorted(set(WORKER_DEVICE.findall(instance.log())))
                return result

            return view

        return sweep("torchserve", url, body, headers, levels, duration, warmup, on_step, auth, server_warmup)
    finally:
        instance.shutdown()


def bench_subprocess_server(
    target, module, archive, body, levels, duration, warmup, run_dir, server_warmup: float = 0.0
) -> list[dict]:
    port = free_ports(1)[0]
    log = open(run_dir / f"{target}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--archive", str(archive), "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # LitServe forks inference workers: stop the whole group
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_port(base + "/", proc=proc)
        if target == "litserve":  # LitServe reads JSON bodies (see scripts/bench/baselines/litserve_app.py)
            payload = json.dumps({"image": base64.b64encode(body).decode()}).encode()
            headers = {"Content-Type": "application/json"}
        else:
            payload, headers = body, {"Content-Type": "image/jpeg"}
        return sweep(
            target, f"{base}/predict", payload, headers, levels, duration, warmup, server_warmup=server_warmup
        )
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, 0)  # children may outlive the leader
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--image", type=Path, help="JPEG to send (default: 640x480 astronaut)")
    parser.add_argument("--targets", default="torchserve,inprocess,single,flask,litserve")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="model-config.yaml override for this run, repeatable: batchSize=1, handler.torch_threads=1",
    )  # fmt: skip
    parser.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE",
        help="config.properties override for the torchserve target, repeatable: async_logging=true",
    )  # fmt: skip
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per step")
    parser.add_argument(
        "--server-warmup", type=float, default=30.0,
        help="seconds of unmeasured load on each server before its first step (JVM JIT; default 30)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)

    body = args.image.read_bytes() if args.image else sample_jpeg()
    levels = [int(c) for c in args.concurrency.split(",")]
    targets = args.targets.split(",")
    steps: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run_dir = Path(tmp)
        overrides = parse_settings(args.set)
        properties = parse_properties(args.property)
        # --set: the same archive with model-config keys changed (batchSize, maxBatchDelay, ...).
        archive = variant_archive(overrides, run_dir / "variant") if overrides else args.archive
        for target in targets:
            print(f"--- {target}", flush=True)
            if target == "torchserve":
                steps += bench_torchserve(
                    archive, body, levels, args.duration, args.warmup, run_dir / "ts",
                    properties=properties, server_warmup=args.server_warmup,
                )  # fmt: skip
            elif target == "inprocess":
                steps += bench_inprocess(archive, body, args.duration, args.warmup)
            elif target == "single":  # one image at a time, one process: what c=1 could be
                steps += bench_inprocess(archive, body, args.duration, args.warmup, (1,), 1, "single")
            elif target in ("flask", "litserve"):
                module = f"scripts.bench.baselines.{target}_app"
                steps += bench_subprocess_server(
                    target, module, archive, body, levels, args.duration, args.warmup, run_dir,
                    server_warmup=args.server_warmup,
                )  # fmt: skip
            else:
                sys.exit(
                    f"unknown target {target}; choose from torchserve, inprocess, single, flask, litserve"
                )

    report = {
        "model": "face_detector",
        "version": "2.0",
        "image_bytes": len(body),
        "workers": archive_workers(args.archive),  # per server, as started: scripts.bench.capacity's default
        "settings": overrides,
        "properties": properties,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cuda": torch.cuda.is_available(),
        },  # fmt: skip
        "duration_s": args.duration,
        "server_warmup_s": args.server_warmup,
        "steps": steps,
        "summary": summarize(steps),
        "goals": evaluate(steps),
    }
    print(json.dumps(report["summary"], indent=2))
    print(format_goals(report["goals"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
