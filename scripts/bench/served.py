"""The served targets of the benchmark: a fresh TorchServe on free ports, and the baseline servers
(Flask, LitServe) in subprocesses, each swept with the closed-loop load generator (scripts/bench/load.py).
TorchServe steps also carry the server's own view of the same window: queue time and inference latency
from its Prometheus endpoint, batch size from the worker log, and the cores busy in the frontend and the
workers."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts.bench.load import Auth, StepResult, TokenAuth, run_step
from scripts.bench.report import format_row
from scripts.client import ManagementClient
from scripts.paths import REPO
from scripts.server import free_ports, launch

__all__ = [
    "bench_subprocess_server",
    "bench_torchserve",
    "process_cpu",
    "scrape",
    "server_view",
    "stop_group",
    "sweep",
    "wait_port",
]

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
