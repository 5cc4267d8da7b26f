"""Load (issue 9, case 16): 4 clients for 2 minutes on face_detector 2.0 -> 0 errors and a p99
within a budget taken from a benchmark measured in the same run.

The budget: a 15 s benchmark step at the same concurrency, after a 10 s warm-up and right before the
long run, measures what this machine delivers now (benchmarks/baseline.json holds placeholders from
another machine, so it cannot be the reference). Its p90 is the reference, not its p99: 15 s give
~250 samples, so their p99 is the 3rd-worst request, one stray first-call of a new batch shape. The
2-minute p99 must stay within BUDGET_FACTOR x that p90: queue build-up, a leak that slows the
worker, a multi-second stall or a worker restart all push it far beyond, while scheduling noise on
2 shared CPU cores stays inside (measured here: p90 ~160 ms in calibration, p99 ~190 ms over 2 min).
"""

from __future__ import annotations

from scripts.bench.load import run_step
from scripts.samples import sample_jpeg

CONCURRENCY = 4
DURATION_S = 120.0
CALIBRATION_S = 15.0
BUDGET_FACTOR = 3.0


def test_four_clients_for_two_minutes(server):
    url = f"{server.endpoints.inference}/predictions/face_detector/2.0"
    headers = {"Authorization": f"Bearer {server.tokens.get('inference')}", "Content-Type": "image/jpeg"}
    body = sample_jpeg(640, 480)
    calibration = run_step("torchserve", url, body, headers, CONCURRENCY, CALIBRATION_S, warmup_s=10.0)
    assert calibration.errors == 0, calibration.error_samples
    budget_ms = BUDGET_FACTOR * calibration.summary()["latency_ms"]["p90"]

    result = run_step("torchserve", url, body, headers, CONCURRENCY, DURATION_S, warmup_s=0.0)
    summary = result.summary()
    print(f"\ncalibration {calibration.summary()}\nload {summary}\np99 budget {budget_ms:.0f} ms")
    assert result.errors == 0, result.error_samples
    assert summary["requests"] >= 4 * DURATION_S, "fewer than 4 requests per second: the server stalled"
    assert summary["latency_ms"]["p99"] <= budget_ms, (summary, budget_ms)
