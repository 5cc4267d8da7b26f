"""scripts/manage.py and scripts/versions.py without a server: tables, face matching, agreement,
the saved state, and the exit codes of failures that need no server to happen."""

from __future__ import annotations

import json

import pytest

from scripts.cli import Exit
from scripts.client import AuthError, Endpoints, TokenStore
from scripts.manage import key_file, parser, table, worker_memory
from scripts.manage import main as manage_main
from scripts.versions import Comparison, ImageAgreement, ServedState, match_faces
from tests.support.servers import free_ports


@pytest.mark.parametrize(
    "boxes_a, boxes_b, expected",
    [
        ([], [], []),
        ([(0, 0, 10, 10)], [], []),
        ([(0, 0, 10, 10)], [(0, 0, 10, 10)], [(0, 0)]),
        ([(0, 0, 10, 10)], [(5, 5, 15, 15)], []),  # IoU 0.14
        # One-to-one: the best pair first, the leftover box of b stays unmatched.
        ([(0, 0, 10, 10)], [(1, 0, 11, 10), (0, 0, 10, 10)], [(0, 1)]),
        ([(0, 0, 10, 10), (20, 20, 30, 30)], [(20, 20, 30, 31), (0, 0, 10, 11)], [(0, 1), (1, 0)]),
    ],
)
def test_match_faces(boxes_a, boxes_b, expected):
    assert sorted(match_faces(boxes_a, boxes_b, 0.5)) == expected


def row(a: int, b: int, matched: int, shift: float | None = None) -> ImageAgreement:
    return ImageAgreement("x.jpg", a, b, matched, shift, 10.0, 20.0)


@pytest.mark.parametrize(
    "rows, agreement",
    [
        ([row(0, 0, 0)], 1.0),
        ([row(1, 1, 1)], 1.0),
        ([row(1, 0, 0)], 0.0),
        ([row(2, 1, 1), row(1, 1, 1)], 0.8),
    ],
)
def test_agreement_is_f1_of_matched_faces(rows, agreement):
    assert Comparison("m", "a", "b", 0.5, rows).agreement == pytest.approx(agreement)


def test_summary_counts_differences_and_score_shift():
    summary = Comparison("m", "a", "b", 0.5, [row(2, 1, 1, 0.1), row(1, 1, 1, -0.3), row(0, 0, 0)]).summary()
    assert summary["images_with_count_difference"] == 1
    assert summary["mean_score_shift"] == pytest.approx(-0.1)
    assert summary["latency_ms_a"] == {"mean": 10.0, "p50": 10.0, "p90": 10.0}


def test_state_history_round_trip(tmp_path):
    state = ServedState.for_run_dir(tmp_path)
    state.record_default("m", "1.0", "2.0")
    state.record_default("m", "1.0", "1.0")  # no change: no history entry
    state.record_default("m", "3.0", "1.0")
    state.model("m").workers["1.0"] = {"min": 2, "max": 2}
    state.save()
    again = ServedState.for_run_dir(tmp_path).model("m")
    assert (again.default, again.history, again.workers) == (
        "3.0",
        ["2.0", "1.0"],
        {"1.0": {"min": 2, "max": 2}},
    )


def test_corrupt_state_file_says_what_to_do(tmp_path):
    (tmp_path / ".run").mkdir()
    (tmp_path / ".run" / "served_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="move it away"):
        ServedState.for_run_dir(tmp_path)


def test_table_aligns_columns_and_shows_missing_as_dash():
    text = table([{"a": "long value", "b": None}, {"a": "x", "b": 3}], ["a", "b"])
    assert text.splitlines() == ["A           B", "long value  -", "x           3"]


def run(tmp_path, capsys, *args: str) -> tuple[int, str, str]:
    (port,) = free_ports(1)
    config = tmp_path / "config.properties"
    config.write_text(
        f"management_address=http://127.0.0.1:{port}\ninference_address=http://127.0.0.1:{port}\n"
    )
    code = manage_main(["--config", str(config), "--run-dir", str(tmp_path), "--timeout", "2", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_server_is_exit_3_with_a_hint(tmp_path, capsys):
    code, out, err = run(tmp_path, capsys, "--json", "list")
    assert code == Exit.UNREACHABLE and "make serve" in err
    assert json.loads(out)["error"] == "unreachable"


def test_rollback_without_history_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(tmp_path, capsys, "rollback", "face_detector")
    assert code == Exit.USAGE and "no earlier default" in err


def test_scale_max_below_min_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(tmp_path, capsys, "scale", "face_detector", "3", "--version", "1.0", "--max", "2")
    assert code == Exit.USAGE and "--max 2" in err


def test_options_after_the_command(tmp_path, capsys):
    code, out, err = run(tmp_path, capsys, "list", "--json")
    assert code == Exit.UNREACHABLE and json.loads(out)["error"] == "unreachable" and "make serve" in err


@pytest.mark.parametrize(
    ("worker", "shown"),
    [({}, "n/a"), ({"memoryUsage": 0}, "n/a"), ({"memoryUsage": 1009528832}, "963 MiB")],
)
def test_worker_memory_is_never_shown_as_zero(worker, shown):
    assert worker_memory(worker) == shown


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, None, "run/key_file.json"),
        (None, "env.json", "env.json"),
        ("flag.json", "env.json", "flag.json"),
    ],
)
def test_key_file_flag_then_ts_key_file_then_run_dir(tmp_path, monkeypatch, flag, env, expected):
    if env is None:
        monkeypatch.delenv("TS_KEY_FILE", raising=False)
    else:
        monkeypatch.setenv("TS_KEY_FILE", str(tmp_path / env))
    argv = ["--run-dir", str(tmp_path / "run"), "list"]
    argv += ["--key-file", str(tmp_path / flag)] if flag else []
    assert key_file(parser().parse_args(argv)) == tmp_path / expected


def test_missing_key_file_is_named_with_the_way_to_get_it(tmp_path, monkeypatch):
    for kind in ("INFERENCE", "MANAGEMENT", "API"):
        monkeypatch.delenv(f"TS_{kind}_KEY", raising=False)
    missing = tmp_path / "nowhere" / "key_file.json"
    tokens = TokenStore(missing, Endpoints.from_properties({}, env={}))
    with pytest.raises(AuthError) as err:
        tokens.refresh("management")  # what a rejected request leads to; fails before any request
    assert f"{missing} does not exist" in str(err.value)
    assert "make serve" in str(err.value) and "TS_KEY_FILE" in str(err.value)
