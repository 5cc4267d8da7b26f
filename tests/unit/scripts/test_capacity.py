"""scripts/bench/capacity.py: replicas for N cameras at F fps from a benchmark JSON."""

from __future__ import annotations

import json

import pytest

from scripts.bench import capacity
from scripts.cli import Exit


def step(target="torchserve", concurrency=1, rps=10.0, p99=100.0, errors=0):
    return {
        "target": target, "concurrency": concurrency, "requests": 100, "errors": errors,
        "throughput_rps": rps, "latency_ms": {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99},
    }  # fmt: skip


BENCH = {
    "model": "face_detector",
    "version": "2.0",
    "steps": [
        step(concurrency=1, rps=10.0, p99=110.0),
        step(concurrency=8, rps=20.0, p99=450.0),
        step(concurrency=32, rps=25.0, p99=1500.0, errors=3),  # errors: never sized from
        step("inprocess", 1, rps=50.0, p99=30.0),
    ],
}


@pytest.mark.parametrize(
    ("demand", "per_replica", "headroom", "min_replicas", "expected"),
    [
        (0.0, 10.0, 0.3, 2, 2),  # no cameras: the availability floor
        (0.0, 10.0, 0.3, 0, 0),
        (14.0, 10.0, 0.3, 1, 2),  # 14 / 7 = exactly 2
        (14.1, 10.0, 0.3, 1, 3),
        (100.0, 20.0, 0.0, 1, 5),
        (200.0, 16.0, 0.3, 2, 18),  # 200 / 11.2 = 17.9
        (0.7 * 3 * 10.0, 10.0, 0.3, 1, 3),  # float noise must not add a replica
    ],
)
def test_replicas_needed(demand, per_replica, headroom, min_replicas, expected):
    assert capacity.replicas_needed(demand, per_replica, headroom, min_replicas) == expected


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((10.0, 0.0, 0.3, 1), "per-replica"),
        ((-1.0, 10.0, 0.3, 1), "demand"),
        ((1.0, 10.0, 1.0, 1), "headroom"),
    ],
)
def test_replicas_needed_rejects_nonsense(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        capacity.replicas_needed(*args)


@pytest.mark.parametrize(
    ("slo", "rps", "concurrency"),
    [(None, 20.0, 8), (500.0, 20.0, 8), (200.0, 10.0, 1)],
)
def test_per_replica_takes_the_best_error_free_step_within_the_slo(slo, rps, concurrency):
    best = capacity.per_replica(BENCH, "torchserve", slo)
    assert (best["throughput_rps"], best["concurrency"]) == (rps, concurrency)


@pytest.mark.parametrize(
    ("data", "target", "slo"),
    [
        ({"steps": []}, "torchserve", None),  # empty steps
        (BENCH, "litserve", None),  # target not measured
        (BENCH, "torchserve", 50.0),  # nothing meets the SLO
        ({"steps": [step(errors=1)]}, "torchserve", None),  # only failing steps
    ],
)
def test_nothing_to_size_from(data, target, slo):
    with pytest.raises(ValueError, match="nothing to size from"):
        capacity.per_replica(data, target, slo)


def test_plan_cpu_and_gpu_rows():
    cpu = capacity.plan(BENCH, cameras=40, fps=5, label="cpu", workers=2)
    assert (cpu.demand_rps, cpu.per_replica_rps, cpu.per_worker_rps) == (200.0, 20.0, 10.0)
    assert cpu.replicas == 15  # 200 / (20 x 0.7) = 14.3
    assert cpu.utilization == pytest.approx(200 / (15 * 20))
    gpu_bench = {**BENCH, "steps": [step(concurrency=16, rps=220.0, p99=140.0)]}
    gpu = capacity.plan(gpu_bench, cameras=40, fps=5, label="gpu")
    assert gpu.replicas == 2  # 200 / 154 = 1.3, and the floor of 2


def test_cli(tmp_path, capsys):
    path = tmp_path / "bench-cpu.json"
    path.write_text(json.dumps(BENCH))
    assert capacity.main([str(path), "--cameras", "40", "--fps", "5", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "40 cameras x 5 fps = 200 images/s" in out
    assert "bench-cpu" in out and " 15 " in out


def test_cli_reports_errors(tmp_path, capsys):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"model": "m", "version": "1", "steps": []}))
    assert capacity.main([str(path), "--cameras", "1", "--fps", "1"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.startswith("python -m scripts.bench.capacity: error: ") and "nothing to size from" in err


@pytest.mark.parametrize(
    ("data", "workers"),
    [
        (BENCH, None),  # not recorded
        ({**BENCH, "workers": 2}, 2),  # written by scripts/bench/cli.py
        ({**BENCH, "steps": [*BENCH["steps"][:3], {**step("inprocess", 1), "processes": 3}]}, 3),
        ({**BENCH, "workers": 2, "steps": [{**step("inprocess", 1), "processes": 3}]}, 2),
    ],
)
def test_benchmark_workers(data, workers):
    assert capacity.benchmark_workers(data) == workers


@pytest.mark.parametrize(
    ("recorded", "flag", "per_worker", "note"),
    [(None, [], "20.0", True), (2, [], "10.0", False), (2, ["--workers", "4"], "5.0", False)],
)
def test_cli_takes_the_worker_count_of_the_benchmark(tmp_path, capsys, recorded, flag, per_worker, note):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH if recorded is None else {**BENCH, "workers": recorded}))
    assert capacity.main([str(path), "--cameras", "40", "--fps", "5", *flag]) == Exit.OK
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("bench "))
    assert row[1:3] == ["20.0", per_worker]
    assert ("assumed 1" in out) is note
