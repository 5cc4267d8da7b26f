"""scripts/bench/gate.py: the regression rules, table-driven, with the empty cases."""

from __future__ import annotations

import json

import pytest

from scripts.bench import gate as bench_gate
from scripts.cli import Exit
from scripts.paths import REPO


def step(target="torchserve", concurrency=1, rps=10.0, p99=100.0, errors=0, requests=100):
    return {
        "target": target, "concurrency": concurrency, "requests": requests, "errors": errors,
        "throughput_rps": rps, "latency_ms": {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99},
    }  # fmt: skip


def bench(*steps, model="face_detector"):
    return {"model": model, "version": "2.0", "steps": list(steps)}


BASE = bench(step(concurrency=1), step(concurrency=8, rps=40.0, p99=300.0), step("inprocess", 1, 12.0, 90.0))


@pytest.mark.parametrize(
    ("current", "passed", "failed_metrics"),
    [
        (BASE, True, []),
        (bench(step(rps=7.0)), True, []),  # exactly -30 %: allowed
        (bench(step(rps=6.99)), False, ["throughput_rps"]),
        (bench(step(rps=50.0, p99=20.0)), True, []),  # better is fine
        (bench(step(p99=130.0)), True, []),  # exactly +30 %
        (bench(step(p99=130.1)), False, ["p99_ms"]),
        (bench(step(errors=1)), False, ["errors"]),
        (
            bench(step(concurrency=8, rps=20.0, p99=500.0, errors=3)),
            False,
            ["throughput_rps", "p99_ms", "errors"],
        ),
        (bench(step(), step("flask", 1, 1.0, 9999.0)), True, []),  # flask is not in the baseline
    ],
)
def test_rules(current, passed, failed_metrics):
    checks = bench_gate.compare(current, BASE)
    assert [c.metric for c in checks if not c.ok] == failed_metrics
    assert bench_gate.gate(current, BASE)[0] is passed


def test_errors_in_the_baseline_are_not_held_against_the_run():
    base = bench(step(errors=2))
    assert bench_gate.gate(bench(step(errors=5)), base)[0] is True


@pytest.mark.parametrize(
    ("current", "baseline"),
    [
        (bench(), BASE),  # empty steps in the run
        (BASE, bench()),  # empty baseline
        (bench(), bench()),
        (bench(step(concurrency=2)), BASE),  # nothing in common
    ],
)
def test_nothing_to_compare_fails_unless_allowed(current, baseline):
    passed, report = bench_gate.gate(current, baseline)
    assert not passed and "nothing compared" in report
    assert bench_gate.gate(current, baseline, allow_empty=True)[0] is True


def test_different_model_fails():
    passed, report = bench_gate.gate(bench(step(), model="object_detector"), BASE)
    assert not passed and "model differs" in report


def test_table_lists_every_comparison_and_the_unmatched_steps():
    _, report = bench_gate.gate(bench(step(rps=5.0), step("litserve", 4)), BASE)
    assert "torchserve  1     throughput_rps  10        5        -50.0%" in report
    assert "FAIL" in report
    assert "not in the baseline (not judged): litserve@4" in report
    assert "not in the benchmark (not judged): inprocess@1, torchserve@8" in report


@pytest.mark.parametrize("tolerance", [0.1, 0.5])
def test_tolerance_is_a_parameter(tolerance):
    current = bench(step(rps=10.0 * (1 - tolerance) - 0.01))
    assert bench_gate.gate(current, BASE, tolerance)[0] is False
    assert bench_gate.gate(bench(step(rps=10.0 * (1 - tolerance))), BASE, tolerance)[0] is True


@pytest.mark.parametrize("tolerance", [-0.1, 1.0])
def test_tolerance_out_of_range(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        bench_gate.compare(BASE, BASE, tolerance)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], '"steps" list'),
        ({"model": "m"}, '"steps" list'),
        (bench({**step(), "target": "grpc"}), "target must be one of"),
        (bench({**step(), "concurrency": "4"}), "concurrency"),
        (bench({**step(), "errors": -1}), "errors"),
        (bench({**step(), "throughput_rps": None}), "throughput_rps"),
        (bench({**step(), "latency_ms": {"p50": 1, "p90": 2}}), "latency_ms"),
        (bench(step(), step()), "two steps"),
    ],
)
def test_malformed_input_is_named(data, fragment):
    with pytest.raises(bench_gate.BenchmarkFormatError, match=fragment):
        bench_gate.validate(data)
        bench_gate.index_steps(data)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("current", "code"),
    [(BASE, Exit.OK), (bench(step(rps=1.0)), Exit.FAILED_ITEMS), (bench(), Exit.FAILED_ITEMS)],
)
def test_cli_exit_codes(tmp_path, capsys, current, code):
    args = [str(write(tmp_path, "run.json", current)), "--baseline", str(write(tmp_path, "base.json", BASE))]
    assert bench_gate.main(args) == code
    assert "baseline" in capsys.readouterr().out


def test_cli_unreadable_benchmark_fails(tmp_path, capsys):
    (tmp_path / "run.json").write_text("{not json")
    code = bench_gate.main([str(tmp_path / "run.json"), "--baseline", str(tmp_path / "missing.json")])
    assert code == Exit.USAGE  # not 0: an unreadable benchmark never passes the gate
    err = capsys.readouterr().err
    assert err.startswith("python -m scripts.bench.gate: error: ") and "not JSON" in err


def test_committed_baseline_is_valid_and_marked_as_placeholder():
    data = bench_gate.load(REPO / "benchmarks" / "baseline.json")
    assert "refresh" in data["note"].lower()
    assert bench_gate.gate(data, data)[0] is True
