"""The served targets of the benchmark: a fresh TorchServe on free ports, and the baseline servers
(Flask, LitServe) in subprocesses, each swept with the closed-loop load generator (scripts/bench/load.py).
TorchServe steps also carry the server's own view of the same window: queue time and inference latency
from its Prometheus endpoint, batch size from the worker log, and the cores busy in the frontend (its JIT
compiler apart) and the workers.

Warm-up: the frontend's JIT compiler (HotSpot C1/C2) keeps compiling for about two minutes of load on
a 2-core machine, at 5-10 % of a core that the workers then lack (measured: c=16 rose from 66 to 79
img/s between the first and the second minute). TorchServe is therefore warmed until its compiler
threads go quiet (:func:`warm_up`), not for a fixed time; the baselines run no JIT and get the fixed
minimum."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts.bench.load import Auth, StepResult, TokenAuth, run_step
from scripts.bench.report import format_row
from scripts.client import ManagementClient
from scripts.paths import REPO
from scripts.server import Instance, free_ports, launch, running_pid

__all__ = [
    "JIT_QUIET_CORES",
    "JIT_ROUND_S",
    "bench_subprocess_server",
    "bench_torchserve",
    "jit_cpu",
    "jit_reader",
    "process_cpu",
    "scrape",
    "server_view",
    "stop_group",
    "sweep",
    "wait_port",
    "warm_up",
    "window_probe",
]

JIT_ROUND_S = 10.0  # warm-up rounds after the minimum, each checked for JIT compiler work
JIT_QUIET_CORES = 0.02  # compiler threads busier than this (share of one core, last 2 rounds) -> go on
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's names, cut to 15 chars by Linux

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


def jit_cpu(pid: int | None) -> float | None:
    """CPU seconds the JIT compiler threads of the JVM ``pid`` (TorchServe's frontend) have used so
    far, from Linux /proc; None where that cannot be read."""
    if pid is None:
        return None
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            if Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() not in JIT_THREADS:
                continue
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended in between
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime, fields 14 and 15 of stat
    return total


def warm_up(
    target, url, body, headers, level, minimum, auth=None, compiler_cpu=None, maximum: float = 180.0
) -> dict:
    """Unmeasured load at ``level`` for ``minimum`` seconds; with ``compiler_cpu`` (a JIT compiler's
    CPU seconds so far), then on in rounds of :data:`JIT_ROUND_S` until the last two rounds kept the
    compiler under :data:`JIT_QUIET_CORES` of a core, or ``maximum`` seconds in all. Returns what it
    did: seconds, rounds and the compiler's share of a core in the last rounds."""
    started = time.perf_counter()
    if minimum > 0:
        run_step(target, url, body, headers, level, 0.5, minimum, auth)
    shares: list[float] = []
    while compiler_cpu is not None and time.perf_counter() - started < maximum:
        before, round_start = compiler_cpu(), time.perf_counter()
        run_step(target, url, body, headers, level, 0.5, JIT_ROUND_S, auth)
        after = compiler_cpu()
        if before is None or after is None:
            break
        shares.append((after - before) / (time.perf_counter() - round_start))
        if len(shares) >= 2 and sum(shares[-2:]) / 2 < JIT_QUIET_CORES:
            break
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "jit_rounds": len(shares),
        "jit_cores_last": round(sum(shares[-2:]) / len(shares[-2:]), 3) if shares else None,
    }


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
    compiler_cpu=None,
    warmup_max: float = 180.0,
) -> list[dict]:
    """One closed-loop step per concurrency level; prints a row per step and returns their summaries.
    First, unmeasured, :func:`warm_up` at the highest level: ``server_warmup`` seconds, and with
    ``compiler_cpu`` until the JIT compiler is quiet (module docstring); the first step records it."""
    warmed = None
    if server_warmup > 0 or compiler_cpu is not None:
        print(f"{target}: warming up at c={max(levels)}", flush=True)
        warmed = warm_up(
            target, url, body, headers, max(levels), server_warmup, auth, compiler_cpu, warmup_max
        )  # fmt: skip
        print(f"{target}: warmed up {warmed}", flush=True)
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
        if warmed is not None and not steps:
            summary["server_warmup"] = warmed
        print(format_row(summary), flush=True)
        steps.append(summary)
    return steps


def jit_reader(instance: Instance, server_warmup: float, server_warmup_max: float):
    """What :func:`warm_up` reads to wait for ``instance``'s JIT (its compiler CPU so far), or None
    when ``server_warmup_max`` leaves no time past the fixed ``server_warmup``."""
    if server_warmup_max <= server_warmup:
        return None
    return lambda: jit_cpu(running_pid(instance.run_dir))


def window_probe(instance: Instance) -> Callable[[], dict]:
    """Call when a measured window starts; the function it returns, called when the window ends,
    gives the server's own view of it: :func:`server_view` (requests, queue and inference time,
    batch size), CPU seconds and cores busy per role (the JIT compiler apart), worker devices."""
    before, offset = scrape(instance.endpoints.metrics), len(instance.log())
    cpu_before, started = process_cpu(instance.process.pid), time.perf_counter()
    jit_before = jit_cpu(running_pid(instance.run_dir))

    def view() -> dict:
        result = server_view(before, scrape(instance.endpoints.metrics), instance.log()[offset:])
        wall = time.perf_counter() - started
        cpu_after = process_cpu(instance.process.pid)
        spent = {role: cpu_after[role] - cpu_before[role] for role in ("frontend", "workers")}
        result["cpu_s"] = {role: round(seconds, 3) for role, seconds in spent.items()}
        result["wall_s"] = round(wall, 2)
        # Cores busy on average in the window, per role: where a 2-core machine's time goes.
        result["cores_busy"] = {role: round(seconds / wall, 2) for role, seconds in spent.items()}
        jit_after = jit_cpu(running_pid(instance.run_dir))
        if jit_before is not None and jit_after is not None:  # part of "frontend"
            result["cores_busy"]["frontend_jit"] = round((jit_after - jit_before) / wall, 3)
        # Where the workers run ("loaded face_detector 2.0 on cuda:0 ..."): a GPU model
        # config on a machine whose GPU TorchServe cannot see would silently run on CPU.
        result["worker_devices"] = sorted(set(WORKER_DEVICE.findall(instance.log())))
        return result

    return view


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
    server_warmup_max: float = 180.0,
) -> list[dict]:
    """The TorchServe target: warmed ``server_warmup`` s, then on until its JIT is quiet, at most
    ``server_warmup_max`` s in all (no JIT wait when that is not above ``server_warmup``)."""
    settings = {**(properties or {}), "model_store": str(archive.parent), "load_models": archive.name}
    instance = launch(run_dir, **settings)
    try:
        if workers is not None:
            ManagementClient(instance.endpoints, instance.tokens).scale("face_detector", workers, workers)
        url = f"{instance.endpoints.inference}/predictions/face_detector"
        headers = {"Content-Type": "image/jpeg"}
        auth = TokenAuth(instance.tokens)  # the inference key, renewed if it expires mid-sweep

        return sweep(
            "torchserve", url, body, headers, levels, duration, warmup, lambda: window_probe(instance),
            auth, server_warmup, jit_reader(instance, server_warmup, server_warmup_max), server_warmup_max,
        )  # fmt: skip
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
