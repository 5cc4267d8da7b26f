"""scripts/bench/goals.py: the serving goals from one run's steps, and --set overrides."""

from __future__ import annotations

import pytest

from scripts.bench.goals import GOALS, evaluate, parse_properties, parse_settings


def step(target: str, concurrency: int, rps: float, p50: float = 50.0, p99: float = 100.0) -> dict:
    return {"target": target, "concurrency": concurrency, "throughput_rps": rps,
            "latency_ms": {"p50": p50, "p90": p99, "p99": p99}}  # fmt: skip


RUN = [
    step("single", 1, 25.0, p50=40.0),
    step("inprocess", 1, 60.0),
    step("torchserve", 1, 20.0, p50=46.0),
    step("torchserve", 2, 36.0),
    step("torchserve", 4, 37.0),
    step("torchserve", 16, 57.0, p99=300.0),
    step("flask", 16, 22.0, p99=800.0),
    step("litserve", 16, 40.0, p99=400.0),
]


@pytest.mark.parametrize(
    ("goal", "value", "state"),
    [
        ("c1_latency", 1.15, "met"),  # 46 / 40
        ("c2_scaling", 1.8, "met"),  # 36 / 20
        ("c4_scaling", 1.85, "not met"),  # 37 / 20 < 1.9
        ("ceiling", 0.95, "met"),  # 57 / 60
        ("c16_throughput", 1.425, "not met"),  # 57 / max(22, 40)
        ("c16_p99", 0.75, "not met"),  # 300 / min(800, 400)
    ],
)
def test_each_goal_is_a_same_run_ratio(goal, value, state):
    result = evaluate(RUN)[goal]
    assert result["value"] == value and result["state"] == state


@pytest.mark.parametrize("steps", [[], [step("torchserve", 8, 50.0)]])
def test_unmeasured_goals_are_never_met(steps):
    results = evaluate(steps)
    assert set(results) == set(GOALS)
    assert all(r["state"] == "not measured" and r["value"] is None for r in results.values())


def test_parse_settings():
    assert parse_settings(["batchSize=1", "maxBatchDelay=0", "handler.torch_threads=2"]) == {
        "batchSize": 1, "maxBatchDelay": 0, "handler": {"torch_threads": 2},
    }  # fmt: skip
    assert parse_settings([]) == {}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_settings(["batchSize"])


def test_parse_properties():
    assert parse_properties(["async_logging=true", "job_queue_size = 1000"]) == {
        "async_logging": "true", "job_queue_size": "1000",
    }  # fmt: skip
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_properties(["async_logging"])
