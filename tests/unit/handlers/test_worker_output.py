"""What a worker writes to its stdout per request, which the frontend reads line by line: the handler
metrics of one handle() call in one write, and no "Backend received inference at" notice.

The worker's logging is set up here as TorchServe's model_service_worker sets it (root logger, a
stream handler with format ``%(message)s``); the metric lines come from TorchServe's own metrics
cache, loaded from monitoring/ts_metrics.yaml as the frontend hands it to workers.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from handlers import metrics
from handlers.errors import InputError
from handlers.schema import Detection, DetectionResult
from handlers.ts_adapter import drop_per_request_notice
from scripts.paths import REPO

TIMINGS = {"decode": 2.0, "preprocess": 3.0, "inference": 20.0, "postprocess": 1.0}
FEATURES = {"width": 640.0, "height": 480.0, "brightness": 120.0, "contrast": 50.0, "sharpness": 300.0}


class CountingStream(io.StringIO):
    """A stdout that counts write() calls, each of which is a write to the pipe in a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def clear(self) -> None:
        """Forget what was written so far (loading the metrics cache logs lines too)."""
        self.seek(0)
        self.truncate()
        self.writes = 0


@pytest.fixture
def worker_stdout() -> Iterator[CountingStream]:
    """The root logger as a TorchServe worker configures it, writing to a counting stream."""
    stream = CountingStream()
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def handler_metrics() -> metrics.HandlerMetrics:
    cache = MetricsCacheYamlImpl(config_file_path=str(REPO / "monitoring" / "ts_metrics.yaml"))
    cache.initialize_cache()
    return metrics.HandlerMetrics(cache, "face_detector", "2.0", feature_log=None)


def result(faces: int) -> DetectionResult:
    detections = [Detection("face", 0.9 - 0.1 * i, (10.0 * i, 0, 10.0 * i + 40, 40)) for i in range(faces)]
    return DetectionResult("face_detector", "2.0", 640, 480, detections, TIMINGS, FEATURES)


def test_metric_lines_of_a_batch_reach_stdout_in_one_write(worker_stdout: CountingStream) -> None:
    outcomes = [result(1), result(3), InputError("bad", 415, "unsupported_format")]
    recorder = handler_metrics()
    worker_stdout.clear()
    recorder.record_batch(outcomes)
    lines = worker_stdout.getvalue().splitlines()
    # batch size, then per image: 4 stages + request + detections + one score gap per face + 5
    # input statistics; the error counts once.
    expected = 1 + (4 + 1 + 1 + 1 + 5) + (4 + 1 + 1 + 3 + 5) + 1
    assert len(lines) == expected
    assert all(line.startswith("[METRICS]ts_handler_") for line in lines), lines
    # The whole batch is one write (then one flush), where each line was one.
    assert worker_stdout.writes == 1
    errors = [line for line in lines if line.startswith("[METRICS]ts_handler_errors.")]
    assert len(errors) == 1 and "reason:unsupported_format" in errors[0]


def test_each_batch_is_written_when_it_ends(worker_stdout: CountingStream) -> None:
    recorder = handler_metrics()
    worker_stdout.clear()
    recorder.record_batch([result(1)])
    first = worker_stdout.getvalue()
    assert first.count("\n") == 13 and first.endswith("\n")  # nothing held back for a later batch
    recorder.record_batch([result(1)])
    assert worker_stdout.getvalue().count("\n") == 26


def test_metric_logger_is_left_as_found(worker_stdout: CountingStream) -> None:
    logger = logging.getLogger(metrics.OneWrite.LOGGER)
    handlers, propagate = list(logger.handlers), logger.propagate
    recorder = handler_metrics()
    worker_stdout.clear()
    recorder.record_batch([result(2)])
    assert logger.handlers == handlers and logger.propagate == propagate
    # TorchServe's own metrics, logged after handle() returns, still go out one by one at once.
    logger.info("[METRICS]PredictionTime.Milliseconds:25.0|#ModelName:face_detector")
    assert worker_stdout.getvalue().splitlines()[-1].startswith("[METRICS]PredictionTime")


def test_nothing_is_written_where_logging_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process scoring (scripts/inprocess.py) has a metrics cache but no worker logging: the
    lines are dropped as each one was before, without an error."""
    logger = logging.getLogger(metrics.OneWrite.LOGGER)
    assert not logger.isEnabledFor(logging.INFO)
    handler_metrics().record_batch([result(1)])
    assert capsys.readouterr() == ("", "")


def test_receipt_notice_is_dropped_and_other_root_lines_kept(worker_stdout: CountingStream) -> None:
    root = logging.getLogger()
    filters = list(root.filters)
    worker_stdout.clear()
    try:
        drop_per_request_notice()
        added = len(root.filters)
        drop_per_request_notice()  # a second handler in the same process adds nothing
        assert len(root.filters) == added <= len(filters) + 1
        logging.info("Backend received inference at: %d", 1796155824)  # TorchServe's own call
        logging.info("model_name: %s, batchSize: %d", "face_detector", 1)
        assert worker_stdout.getvalue().splitlines() == ["model_name: face_detector, batchSize: 1"]
    finally:
        root.filters[:] = filters
