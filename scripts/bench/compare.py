"""Two TorchServe configurations side by side: both servers run at once and take turns, in short
alternating windows, so that a shared machine's drift (±10 % over minutes here) falls on both alike.

Separate benchmark runs minutes apart cannot show a change of a few percent on such a machine; pairs
of windows a few seconds apart can. Each side is the shipped configuration plus its own changes:
model-config keys (``--a-set`` / ``--b-set``, the archive rebuilt as ``scripts.bench --set`` does),
config.properties keys (``--a-property`` / ``--b-property``), and environment variables for the
server and its workers (``--a-env`` / ``--b-env``: LOG4J_CONFIGURATION_FILE, DETECTION_METRICS,
MALLOC_*), or another archive (``--a-archive`` / ``--b-archive``). Each server is warmed until its
JVM's JIT is quiet (scripts/bench/served.py), then for each concurrency level the sides alternate
``--rounds`` times (the order flips every round). Printed and written (``--out``): per side the
median throughput and p50, frontend CPU per request and batch size; per level the B / A ratios of
each pair, their median, and in how many pairs B was ahead (with a two-sided sign test).

    python -m scripts.bench.compare --b-env DETECTION_METRICS=off --concurrency 1,16 --out b.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import binomtest

from scripts.bench.cli import DEFAULT_ARCHIVE
from scripts.bench.goals import parse_properties, parse_settings, variant_archive
from scripts.bench.load import TokenAuth, run_step
from scripts.bench.report import write_report
from scripts.bench.served import jit_reader, warm_up, window_probe
from scripts.samples import sample_jpeg
from scripts.server import Instance, launch

__all__ = ["Side", "compare", "main", "pair_summary"]

SIDES = ("a", "b")


@dataclass
class Side:
    """One configuration: what it changes, and once started its server."""

    name: str
    archive: Path
    properties: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    instance: Instance | None = None
    windows: dict[int, list[dict]] = field(default_factory=dict)  # concurrency -> windows


@contextmanager
def _environment(values: dict[str, str]):
    """``values`` in os.environ while a server starts (scripts/server.py hands it the environment)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _window(side: Side, body: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    instance = side.instance
    url = f"{instance.endpoints.inference}/predictions/face_detector"
    probe = window_probe(instance)
    step = run_step(
        side.name, url, body, {"Content-Type": "image/jpeg"}, concurrency, seconds, warmup,
        TokenAuth(instance.tokens),
    ).summary()  # fmt: skip
    view = probe()
    served = view["requests"] or 1
    for role in ("frontend", "workers"):
        step[f"{role}_cpu_ms_per_request"] = round(1000 * view["cpu_s"][role] / served, 3)
    step["batch_size_avg"] = view["batch_size_avg"]
    step["wall_s"] = view["wall_s"]
    return step


def _worker_env(side: Side) -> dict[str, str | None]:
    """The side's environment keys as one of its workers sees them: proof the change reached it."""
    import psutil

    for proc in psutil.Process(side.instance.process.pid).children(recursive=True):
        try:
            if "model_service_worker" in " ".join(proc.cmdline()):
                environ = proc.environ()
                return {key: environ.get(key) for key in side.env}
        except psutil.Error:
            continue
    return {key: None for key in side.env}


def pair_summary(a: list[dict], b: list[dict]) -> dict:
    """B / A per pair of windows (throughput and p50), their medians, and the sign test of
    "B's throughput is ahead" over the pairs (ties dropped)."""
    throughput = [wb["throughput_rps"] / wa["throughput_rps"] for wa, wb in zip(a, b) if wa["throughput_rps"]]
    p50 = [
        wb["latency_ms"]["p50"] / wa["latency_ms"]["p50"] for wa, wb in zip(a, b) if wa["latency_ms"]["p50"]
    ]
    ahead = sum(r > 1 for r in throughput)
    decided = sum(r != 1 for r in throughput)
    return {
        "pairs": len(throughput),
        "throughput_b_over_a": [round(r, 3) for r in throughput],
        "throughput_ratio_median": round(statistics.median(throughput), 3) if throughput else None,
        "p50_ratio_median": round(statistics.median(p50), 3) if p50 else None,
        "b_ahead_in": ahead,
        "sign_test_p": round(float(binomtest(ahead, decided).pvalue), 4) if decided else None,
    }


def _side_summary(windows: list[dict]) -> dict:
    def median(key):
        values = [w[key] for w in windows if w.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "throughput_rps_median": median("throughput_rps"),
        "p50_ms_median": round(statistics.median(w["latency_ms"]["p50"] for w in windows), 2),
        "frontend_cpu_ms_per_request_median": median("frontend_cpu_ms_per_request"),
        "workers_cpu_ms_per_request_median": median("workers_cpu_ms_per_request"),
        "batch_size_avg_median": median("batch_size_avg"),
        "errors": sum(w["errors"] for w in windows),
    }


def compare(
    sides: list[Side],
    levels: list[int],
    rounds: int,
    window: float,
    warmup: float,
    server_warmup: float,
    server_warmup_max: float,
    run_dir: Path,
) -> dict:
    body = sample_jpeg()
    try:
        for side in sides:
            with _environment(side.env):
                side.instance = launch(
                    run_dir / side.name,
                    model_store=str(side.archive.parent),
                    load_models=side.archive.name,
                    **side.properties,
                )
        worker_env = {side.name: _worker_env(side) for side in sides}
        warmed = {}
        for side in sides:
            instance = side.instance
            url = f"{instance.endpoints.inference}/predictions/face_detector"
            warmed[side.name] = warm_up(
                side.name,
                url,
                body,
                {"Content-Type": "image/jpeg"},
                max(levels),
                server_warmup,
                TokenAuth(instance.tokens),
                jit_reader(instance, server_warmup, server_warmup_max),
                server_warmup_max,
            )
            print(f"{side.name}: warmed up {warmed[side.name]}", flush=True)
        for concurrency in levels:
            for number in range(rounds):
                for side in sides if number % 2 == 0 else reversed(sides):
                    result = _window(side, body, concurrency, window, warmup)
                    side.windows.setdefault(concurrency, []).append(result)
                    print(
                        f"{side.name} c={concurrency} round {number + 1}: {result['throughput_rps']} img/s, "
                        f"p50 {result['latency_ms']['p50']} ms, frontend "
                        f"{result['frontend_cpu_ms_per_request']} ms/request",
                        flush=True,
                    )
    finally:
        for side in sides:
            if side.instance is not None:
                side.instance.shutdown()
    a, b = sides
    return {
        "sides": {
            s.name: {
                "archive": str(s.archive),
                "properties": s.properties,
                "env": s.env,
                "worker_env": worker_env[s.name],
                "warm_up": warmed[s.name],
            }
            for s in sides
        },
        "levels": {
            str(c): {
                "a": _side_summary(a.windows[c]),
                "b": _side_summary(b.windows[c]),
                "b_vs_a": pair_summary(a.windows[c], b.windows[c]),
                "windows": {s.name: s.windows[c] for s in sides},
            }
            for c in levels
        },
        "window_s": window,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.compare", description=__doc__.splitlines()[0]
    )
    for side in SIDES:
        parser.add_argument(f"--{side}-archive", type=Path, default=DEFAULT_ARCHIVE)
        parser.add_argument(f"--{side}-set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument(f"--{side}-property", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument(f"--{side}-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=4, help="windows per side and level (default 4)")
    parser.add_argument("--window", type=float, default=8.0, help="seconds per window (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per window")
    parser.add_argument("--server-warmup", type=float, default=30.0)
    parser.add_argument(
        "--server-warmup-max", type=float, default=180.0, help="JIT wait, as in scripts.bench"
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        run_dir = Path(tmp)
        sides = []
        for name in SIDES:
            options = vars(args)
            archive = options[f"{name}_archive"]
            overrides = parse_settings(options[f"{name}_set"])
            if overrides:
                archive = variant_archive(overrides, run_dir / f"variant-{name}")
            env = parse_properties(options[f"{name}_env"])
            sides.append(Side(name, archive, parse_properties(options[f"{name}_property"]), env))
        levels = [int(c) for c in args.concurrency.split(",")]
        report = compare(
            sides,
            levels,
            args.rounds,
            args.window,
            args.warmup,
            args.server_warmup,
            args.server_warmup_max,
            run_dir,
        )
    for level, result in report["levels"].items():
        print(f"c={level}: A {result['a']}\n      B {result['b']}\n      B/A {result['b_vs_a']}")
    write_report(args.out, report)


if __name__ == "__main__":
    main()
