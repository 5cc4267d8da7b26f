"""The benchmark's warm-up of TorchServe (scripts/bench/served.py): it reads the frontend JVM's JIT
compiler CPU from /proc and keeps loading the server in rounds until the compiler is quiet or the
time limit is reached. Run here against the shared TorchServe."""

from __future__ import annotations

import time

from scripts.bench.served import JIT_ROUND_S, jit_cpu, warm_up
from scripts.samples import sample_jpeg
from scripts.server import running_pid


def test_jit_compiler_time_is_read_from_the_frontend(server):
    java = running_pid(server.run_dir)
    compiled = jit_cpu(java)
    # Starting TorchServe and loading a model compiles code: the compiler threads have used CPU.
    assert compiled is not None and compiled > 0.0
    client = server.client()
    for _ in range(5):
        client.detect(sample_jpeg())
    assert jit_cpu(java) >= compiled  # a running total
    assert jit_cpu(None) is None


def test_warm_up_runs_rounds_until_quiet_or_the_limit(server):
    url = f"{server.endpoints.inference}/predictions/face_detector/2.0"
    headers = {"Authorization": f"Bearer {server.tokens.get('inference')}", "Content-Type": "image/jpeg"}
    java = running_pid(server.run_dir)
    readings: list[float] = []

    def compiler_cpu() -> float | None:
        readings.append(jit_cpu(java))
        return readings[-1]

    started = time.perf_counter()
    done = warm_up("torchserve", url, sample_jpeg(), headers, 2, 1.0, None, compiler_cpu, maximum=12.0)
    elapsed = time.perf_counter() - started
    # 1 s minimum, then rounds of JIT_ROUND_S until past the 12 s limit: one round, or two when the
    # first one ends before the limit; never more.
    assert 1 <= done["jit_rounds"] <= 2 and len(readings) == 2 * done["jit_rounds"]
    assert 1.0 + JIT_ROUND_S <= done["seconds"] <= elapsed + 0.1  # rounded to 0.1 s
    assert done["jit_cores_last"] is not None and 0.0 <= done["jit_cores_last"] < 2.0

    fixed = warm_up("torchserve", url, sample_jpeg(), headers, 2, 1.0, None, None, maximum=12.0)
    assert fixed["jit_rounds"] == 0 and fixed["jit_cores_last"] is None and fixed["seconds"] < JIT_ROUND_S
