"""Unit tests of the soak's memory-growth check (scripts/bench/memcheck.py) and of the client's retry
policy (scripts/client.py), without a server."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from scripts.bench.memcheck import check_growth, tree_rss_mb, trend_mb_per_10min, trimmed_mean
from scripts.client import ClientError, DetectionClient, Endpoints, ServerUnavailable, TokenStore

RNG = np.random.default_rng(17)
BASE = 3000.0  # MB, about a frontend plus two workers


def noisy(n: int, noise_mb: float = 8.0) -> np.ndarray:
    return BASE + RNG.normal(0, noise_mb / 3, n)


@pytest.mark.parametrize(
    "name, samples, passes",
    [
        ("flat with noise", noisy(120), True),
        ("warm-up ramp then flat", np.concatenate([BASE - np.linspace(40, 0, 10), noisy(110)]), True),
        ("one early spike", np.concatenate([noisy(20), [BASE + 400], noisy(99)]), True),
        ("sawtooth of a garbage collector", BASE + 30 * (np.arange(120) % 10) / 10, True),
        ("linear leak of 150 MB", noisy(120) + np.linspace(0, 150, 120), False),
        ("step of 120 MB at half time", np.concatenate([noisy(60), noisy(60) + 120]), False),
        ("late spike", np.concatenate([noisy(100), [BASE + 200], noisy(19)]), False),
        ("leak of 2 MB per sample", BASE + 2.0 * np.arange(120), False),
    ],
)
def test_growth_check(name, samples, passes):
    assert check_growth(list(samples)).passed is passes, (name, check_growth(list(samples)))


def test_growth_is_second_half_max_minus_trimmed_mean():
    samples = [100.0] * 8 + [130.0, 110.0]
    check = check_growth(samples, limit_mb=25.0)
    assert check.trimmed_mean_mb == pytest.approx(trimmed_mean(samples)) == pytest.approx(101.25)
    assert check.second_half_max_mb == 130.0 and check.growth_mb == pytest.approx(28.75)
    assert not check.passed and check.to_json()["passed"] is False


def test_trend_is_reported_per_10_minutes_and_ignores_spikes():
    times = np.arange(120) * 5.0  # a sample every 5 s for 10 minutes
    leak = noisy(120, noise_mb=2.0) + np.linspace(0, 150, 120)
    leak[[30, 70, 100]] += 400  # three spikes do not tilt a median of slopes
    assert trend_mb_per_10min(leak, times) == pytest.approx(150, abs=10)
    assert abs(trend_mb_per_10min(noisy(120, noise_mb=2.0), times)) < 5
    check = check_growth(list(leak), times_s=list(times))
    assert check.to_json()["trend_mb_per_10min"] == pytest.approx(150, abs=10)
    assert check_growth(list(leak)).to_json()["trend_mb_per_10min"] is None


def test_trend_needs_one_time_per_sample():
    with pytest.raises(ValueError, match="5 samples but 4 sample times"):
        trend_mb_per_10min([1.0] * 5, [0.0, 1.0, 2.0, 3.0])


def test_trimmed_mean_cuts_both_ends():
    assert trimmed_mean([0.0] + [10.0] * 8 + [1000.0]) == 10.0


@pytest.mark.parametrize("samples", [[], [1.0], [1.0, 2.0, 3.0]])
def test_too_few_samples_is_an_error(samples):
    with pytest.raises(ValueError, match="at least 4"):
        check_growth(samples)


def test_tree_rss_of_this_process():
    import os

    assert tree_rss_mb(os.getpid()) > 10
    assert tree_rss_mb(2**22 + 12345) == 0.0  # no such process


# --- retry policy --------------------------------------------------------------------------------


class FakeSession:
    """Plays a script of outcomes: an int is an HTTP status, an exception is raised."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.calls = 0

    def request(self, method, url, **kwargs) -> requests.Response:
        self.calls += 1
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        response = requests.Response()
        response.status_code = outcome
        response._content = b'{"code": %d, "message": "scripted"}' % outcome
        return response


def client(tmp_path, script, **kwargs) -> tuple[DetectionClient, FakeSession]:
    endpoints = Endpoints("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    session = FakeSession(script)
    tokens = TokenStore(tmp_path / "absent.json", endpoints)
    return DetectionClient(endpoints, tokens, session=session, **kwargs), session


@pytest.mark.parametrize(
    "script, retries, status, calls",
    [
        ([503, 503, 200], 2, 200, 3),
        ([503, 503, 503], 2, 503, 3),  # the last 503 is returned as it came
        ([requests.ConnectionError(), 200], 1, 200, 2),
        ([500, 200], 3, 500, 1),  # "Worker died." is not retried
        ([400], 3, 400, 1),
        ([503, 200], 0, 503, 1),  # off by default
    ],
)
def test_retry_policy(tmp_path, script, retries, status, calls):
    detection, session = client(tmp_path, script, retries=retries, backoff=0.001)
    assert detection.detect_raw(b"jpeg").status_code == status
    assert session.calls == calls


def test_retries_end_with_the_same_typed_error(tmp_path):
    detection, session = client(tmp_path, [requests.ConnectionError()] * 3, retries=2, backoff=0.001)
    with pytest.raises(ServerUnavailable, match="not reachable"):
        detection.detect(b"jpeg")
    assert session.calls == 3
    detection, _ = client(tmp_path, [503, 503], retries=1, backoff=0.001)
    with pytest.raises(ClientError) as err:
        detection.detect(b"jpeg")
    assert err.value.status == 503


def test_backoff_doubles(tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("scripts.client.time.sleep", sleeps.append)
    detection, _ = client(tmp_path, [503, 503, 503, 200], retries=3, backoff=0.25)
    assert detection.detect_raw(b"jpeg").status_code == 200
    assert sleeps == [0.25, 0.5, 1.0]


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"backoff": -0.5}])
def test_negative_retry_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError, match="must be >= 0"):
        client(tmp_path, [], **kwargs)


def test_token_store_keeps_the_last_key_when_the_file_vanishes(tmp_path):
    endpoints = Endpoints("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"inference": {"key": "abc"}}')
    tokens = TokenStore(key_file, endpoints)
    assert tokens.get("inference") == "abc"
    key_file.unlink()  # what `torchserve --stop` does while requests are in flight
    assert tokens.get("inference") == "abc"
    assert TokenStore(key_file, endpoints).get("inference") is None
