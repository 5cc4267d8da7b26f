"""Soak test: steady load for a long time with malformed requests mixed in, memory watched.

    make soak                                   10 minutes, concurrency 8, 100 malformed requests
    python -m scripts.bench.soak --duration 60        a shorter run of the same check

Starts its own TorchServe from config.properties on free ports (scripts/server.py), warms it up,
then runs ``concurrency`` closed-loop clients posting a real JPEG to face_detector 2.0 while
``malformed`` hostile requests (random bytes, truncated JPEG, decompression-bomb header, bad JSON,
...) are spread evenly over the run. The resident memory of the frontend and all workers is sampled
every few seconds. It passes when no good request failed, every malformed one got a 4xx, and memory
growth (scripts/bench/memcheck.py: second-half max minus trimmed mean) is at most --limit-mb (50).
Exit code 0 on pass, 1 on fail; the report is printed as JSON (and written to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scripts.bench.load import Answer, LoadGenerator, TokenAuth, open_session
from scripts.bench.memcheck import DEFAULT_LIMIT_MB, GrowthCheck, MemorySampler, check_growth
from scripts.config import Endpoints, TokenStore
from scripts.latency import percentiles
from scripts.samples import encode, png_claiming, sample_jpeg

__all__ = ["MALFORMED_SAMPLES", "Hostile", "SoakReport", "main", "malformed_requests", "run_soak"]

MALFORMED_SAMPLES = 5  # non-4xx answers kept in the report
Hostile = tuple[str, bytes, str]  # a malformed request: name, body, content type


def malformed_requests(jpeg: bytes) -> list[Hostile]:
    """(name, body, content type) of hostile requests; each must get a 4xx and leave the worker alive."""
    png = bytearray(encode(np.full((48, 64, 3), (90, 120, 30), np.uint8), "PNG"))
    png[len(png) // 2] ^= 0xFF  # a flipped byte inside IDAT: CRC / zlib error
    gif = encode(np.zeros((8, 8, 3), np.uint8), "GIF")
    bomb = png_claiming(30000, 30000)  # claims 900 MP, holds a few bytes
    json_type = "application/json"
    return [
        ("random_bytes", os.urandom(4096), "application/octet-stream"),
        ("text", b"definitely not an image", "application/octet-stream"),
        ("empty", b"", "application/octet-stream"),
        ("truncated_jpeg", jpeg[: len(jpeg) // 3], "image/jpeg"),
        ("bit_flipped_png", bytes(png), "image/png"),
        ("png_header_30000x30000", bomb, "image/png"),
        ("gif", gif, "image/gif"),
        ("bad_base64", b'{"image": "!!not base64!!"}', json_type),
        ("json_list", b"[1, 2, 3]", json_type),
        ("json_image_number", b'{"image": 5}', json_type),
        ("deeply_nested_json", b"[" * 50000 + b"]" * 50000, json_type),
        (
            "unknown_parameter",
            json.dumps({"image": base64.b64encode(jpeg).decode(), "x": 1}).encode(),
            json_type,
        ),
    ]


@dataclass
class SoakReport:
    duration_s: float
    concurrency: int
    good_ok: int = 0
    good_failed: int = 0
    failure_samples: list[str] = field(default_factory=list)
    malformed_4xx: int = 0
    malformed_other: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    memory_samples_mb: list[float] = field(default_factory=list)
    frontend_samples_mb: list[float] = field(default_factory=list)
    sample_times_s: list[float] = field(default_factory=list)
    memory: GrowthCheck | None = None
    frontend: GrowthCheck | None = None  # the same check on the frontend (java) alone
    workers: GrowthCheck | None = None  # and on the workers alone

    @property
    def passed(self) -> bool:
        memory_ok = self.memory is not None and self.memory.passed
        return self.good_failed == 0 and not self.malformed_other and self.good_ok > 0 and memory_ok

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "duration_s": round(self.duration_s, 1),
            "concurrency": self.concurrency,
            "good_ok": self.good_ok,
            "good_failed": self.good_failed,
            "failure_samples": self.failure_samples,
            "malformed_4xx": self.malformed_4xx,
            "malformed_not_4xx": self.malformed_other,
            "latency_ms": percentiles(self.latencies_ms, (50, 99), digits=1),
            "memory": self.memory.to_json() if self.memory else None,
            "memory_mb_first_last": _first_last(self.memory_samples_mb),
            # Where growth happens: the frontend (java) alone, and everything else (the workers).
            "frontend_mb_first_last": _first_last(self.frontend_samples_mb),
            "workers_mb_first_last": _first_last(self.worker_samples_mb),
            "frontend_memory": self.frontend.to_json() if self.frontend else None,
            "workers_memory": self.workers.to_json() if self.workers else None,
            # The series themselves, to plot or to look for a slow creep by eye.
            "memory_series": {
                "t_s": [round(t, 1) for t in self.sample_times_s],
                "total_mb": [round(v, 1) for v in self.memory_samples_mb],
                "frontend_mb": [round(v, 1) for v in self.frontend_samples_mb],
            },
        }

    @property
    def worker_samples_mb(self) -> list[float]:
        return [t - f for t, f in zip(self.memory_samples_mb, self.frontend_samples_mb)]

    def record_good(self, answer: Answer) -> None:
        """A well-formed request's answer: anything but HTTP 200 is a failure."""
        if answer.status == 200:
            self.good_ok += 1
            self.latencies_ms.append(answer.latency_ms)
            return
        self.good_failed += 1
        if len(self.failure_samples) < MALFORMED_SAMPLES:
            if answer.error:  # no answer came: the exception
                self.failure_samples.append(f"{answer.error}: {answer.text}")
            else:
                self.failure_samples.append(f"HTTP {answer.status}: {answer.text[:120]}")

    def record_malformed(self, name: str, answer: Answer) -> None:
        """A hostile request's answer: it must be a 4xx (the worker refused it and lives on)."""
        if 400 <= answer.status < 500:
            self.malformed_4xx += 1
        elif len(self.malformed_other) < MALFORMED_SAMPLES:
            self.malformed_other.append(f"{name}: HTTP {answer.status} {answer.text[:120]}")


def _first_last(values: list[float]) -> list[float]:
    return [round(v, 1) for v in values[:1] + values[-1:]]


async def _hostile_client(
    load: LoadGenerator, requests: list[Hostile], count: int, seconds: float, report: SoakReport
) -> None:
    """``count`` hostile requests spread evenly over ``seconds``, beside the closed-loop clients."""
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + (i + 0.5) * seconds / count - time.monotonic()))
        name, body, content_type = requests[i % len(requests)]
        report.record_malformed(name, await load.post(body, {"Content-Type": content_type}))


async def _soak(
    url, tokens, body, pid, concurrency, duration_s, warmup_s, malformed, interval_s, limit_mb
) -> SoakReport:
    report = SoakReport(duration_s, concurrency)
    hostile = malformed_requests(body)
    async with open_session(concurrency + 1) as session:  # one more connection: the hostile client
        load = LoadGenerator(session, url, body, {"Content-Type": "image/jpeg"}, TokenAuth(tokens))
        await load.closed_loop(concurrency, warmup_s)
        started = time.monotonic()
        with MemorySampler(pid, interval_s) as sampler:
            await asyncio.gather(
                load.closed_loop(concurrency, duration_s, report.record_good),
                _hostile_client(load, hostile, malformed, duration_s, report),
            )
        report.duration_s = time.monotonic() - started
    report.memory_samples_mb = sampler.samples_mb
    report.frontend_samples_mb = sampler.root_samples_mb
    report.sample_times_s = sampler.times_s
    if len(sampler.samples_mb) >= 4:
        times = sampler.times_s
        report.memory = check_growth(sampler.samples_mb, limit_mb, times)
        report.frontend = check_growth(report.frontend_samples_mb, limit_mb, times)
        report.workers = check_growth(report.worker_samples_mb, limit_mb, times)
    return report


def run_soak(
    endpoints: Endpoints,
    tokens: TokenStore,
    server_pid: int,
    model: str = "face_detector",
    version: str | None = "2.0",
    duration_s: float = 600.0,
    concurrency: int = 8,
    malformed: int = 100,
    warmup_s: float = 20.0,
    sample_every_s: float = 5.0,
    image: bytes | None = None,
    limit_mb: float = DEFAULT_LIMIT_MB,
) -> SoakReport:
    """Soak a running server; ``server_pid`` is the frontend (java), whose children are the workers."""
    url = f"{endpoints.inference}/predictions/{model}" + (f"/{version}" if version else "")
    body = image or sample_jpeg()
    report = asyncio.run(
        _soak(
            url,
            tokens,
            body,
            server_pid,
            concurrency,
            duration_s,
            warmup_s,
            malformed,
            sample_every_s,
            limit_mb,
        )
    )
    return report


def main(argv: list[str] | None = None) -> int:
    from scripts.server import launch, running_pid

    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.soak",
        description="Soak TorchServe: long load + malformed requests + memory.",
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--malformed", type=int, default=100, help="hostile requests spread over the run")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--limit-mb", type=float, default=DEFAULT_LIMIT_MB, help="allowed memory growth")
    parser.add_argument("--model", default="face_detector")
    parser.add_argument("--version", default="2.0")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args(argv)
    if args.duration < 4 * args.sample_every:
        parser.error("--duration must allow at least 4 memory samples (4 x --sample-every)")

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        instance = launch(Path(tmp) / "run")
        try:
            pid = running_pid(instance.run_dir)
            print(f"soaking {args.model} {args.version} for {args.duration:.0f}s at concurrency "
                  f"{args.concurrency}, {args.malformed} malformed requests", file=sys.stderr)  # fmt: skip
            report = run_soak(
                instance.endpoints, instance.tokens, pid, args.model, args.version, args.duration,
                args.concurrency, args.malformed, args.warmup, args.sample_every, limit_mb=args.limit_mb,
            )  # fmt: skip
        finally:
            instance.shutdown()
    result = json.dumps(report.to_json(), indent=2)
    print(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(result + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
