"""Closed-loop async HTTP load: ``concurrency`` clients on keep-alive connections, each sending the
next request as soon as the previous answer arrives, for a fixed duration after a warm-up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass
class StepResult:
    target: str
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": round(len(self.latencies_ms) / self.duration_s, 2),
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 90, 99)},
        }


async def _client(session, url, body, headers, stop_at, result: StepResult, record: bool) -> None:
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
                detail = f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError) as err:
            ok, detail = False, type(err).__name__
        if not record:
            continue
        if ok:
            result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        else:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(detail)


async def _run(target, url, body, headers, concurrency, duration_s, warmup_s) -> StepResult:
    result = StepResult(target, concurrency, duration_s)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for stop_in, record in ((warmup_s, False), (duration_s, True)):
            stop_at = time.perf_counter() + stop_in
            started = time.perf_counter()
            await asyncio.gather(
                *(_client(session, url, body, headers, stop_at, result, record) for _ in range(concurrency))
            )
            if record:  # in-flight requests finish after stop_at: count the real window
                result.duration_s = time.perf_counter() - started
    return result


def run_step(
    target: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> StepResult:
    return asyncio.run(_run(target, url, body, headers, concurrency, duration_s, warmup_s))
