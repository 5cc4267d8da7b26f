"""``python -m scripts.bench.compare``: two real TorchServe instances side by side, alternating
windows. Side B batches (batchSize 4, 50 ms delay) and its workers get an extra environment
variable; the report must show both changes took effect on B only, and pair every window."""

from __future__ import annotations

import json

from scripts.bench import compare


def test_two_configurations_run_side_by_side(tmp_path):
    out = tmp_path / "compare.json"
    compare.main([
        "--b-set", "batchSize=4", "--b-set", "maxBatchDelay=50", "--b-env", "DETECTION_FEATURE_LOG=off",
        "--concurrency", "4", "--rounds", "2", "--window", "3", "--warmup", "0.5",
        "--server-warmup", "2", "--server-warmup-max", "0", "--out", str(out),
    ])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["sides"]["b"]["worker_env"] == {"DETECTION_FEATURE_LOG": "off"}
    assert report["sides"]["a"]["worker_env"] == {}
    level = report["levels"]["4"]
    assert level["a"]["errors"] == 0 and level["b"]["errors"] == 0
    assert [len(level["windows"][side]) for side in ("a", "b")] == [2, 2]
    assert all(w["requests"] > 0 for side in ("a", "b") for w in level["windows"][side])
    # The shipped CPU config hands handle() one request at a time; B's batches hold several.
    assert level["a"]["batch_size_avg_median"] == 1.0
    assert level["b"]["batch_size_avg_median"] > 1.5
    assert level["b_vs_a"]["pairs"] == 2 and level["b_vs_a"]["sign_test_p"] is not None
    assert level["a"]["frontend_cpu_ms_per_request_median"] > 0
