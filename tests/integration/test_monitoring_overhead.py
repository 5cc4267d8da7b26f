"""The DETECTION_METRICS=off switch, and the cost of the handler metrics on latency: the same
requests against two servers started alike, one with the metrics on (config.properties as shipped)
and one with DETECTION_METRICS=off, interleaved request by request so that both see the same load.

The latency figures are printed, not asserted (timings on a shared machine make flaky tests); the
switch itself is asserted: the "off" server writes no feature log and exports no handler metrics."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import cv2
import pytest
import requests

from scripts.drift.images import generate
from scripts.samples import encode_jpeg
from tests.support import images
from tests.support.servers import launch

ROUNDS = 10  # enough for the printed comparison; docs/monitoring.md has longer runs


def test_metrics_overhead_on_latency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETECTION_METRICS", raising=False)
    servers = {"on": launch(tmp_path / "on")}
    try:
        monkeypatch.setenv("DETECTION_METRICS", "off")  # inherited by that server's workers
        servers["off"] = launch(tmp_path / "off")
        monkeypatch.delenv("DETECTION_METRICS")
        frame = cv2.resize(images.astronaut(), (1920, 1080), interpolation=cv2.INTER_LINEAR)
        payloads = [*generate("reference", 4, seed=3), encode_jpeg(frame)]
        clients = {name: server.client(timeout=120.0) for name, server in servers.items()}
        for client in clients.values():  # warm-up
            client.detect(payloads[0])
        wall: dict[str, list[float]] = {"on": [], "off": []}
        handler: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(ROUNDS):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for data in payloads:
                for name in order:
                    start = time.perf_counter()
                    result = clients[name].detect(data)
                    wall[name].append((time.perf_counter() - start) * 1000.0)
                    handler[name].append(sum(result.timings_ms.values()))
        assert not list((tmp_path / "off" / "logs" / "features").glob("*.jsonl"))
        assert list((tmp_path / "on" / "logs" / "features").glob("*.jsonl"))
        exported = {
            name: requests.get(f"{s.endpoints.metrics}/metrics", timeout=10).text
            for name, s in servers.items()
        }
        assert "ts_handler_stage_latency_seconds_count" in exported["on"]
        assert "ts_handler_stage_latency_seconds_count" not in exported["off"]
    finally:
        for server in servers.values():
            server.shutdown()

    med = {name: statistics.median(values) for name, values in wall.items()}
    med_handler = {name: statistics.median(values) for name, values in handler.items()}
    pairs = [on - off for on, off in zip(wall["on"], wall["off"])]
    print(
        f"\nclient latency median: metrics on {med['on']:.1f} ms, off {med['off']:.1f} ms, "
        f"median paired difference {statistics.median(pairs):+.2f} ms over {len(pairs)} pairs; "
        f"handler stages median: on {med_handler['on']:.1f} ms, off {med_handler['off']:.1f} ms"
    )
