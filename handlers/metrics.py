"""Handler metrics and the per-request feature log, emitted from ``DetectionHandler.handle``.

Metrics go through TorchServe's metrics cache (``context.metrics``): each observation is one
``[METRICS]`` line on the worker's stdout that the frontend turns into a Prometheus sample. The lines
of one handle() call reach stdout in one write (:class:`OneWrite`): ~13 lines per image were 13
writes, each waking the frontend's reader thread on the cores the workers need. In
prometheus mode the frontend drops every model metric that ``monitoring/ts_metrics.yaml`` (named by
``metrics_config=`` in config.properties) does not declare, so :data:`SPECS` and that file must
agree (tests/handlers/test_features.py checks it).

Buckets: TorchServe 0.12 builds every Prometheus histogram with the client's default buckets
(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10 and +Inf; the yaml has no
bucket field and the frontend never sets any: measured, see docs/monitoring.md). Each value is
therefore scaled so that its useful range falls inside them: latencies in seconds (buckets of 5 ms
to 10 s), image sides in kilopixels (5 px to 10000 px), scores as ``1 - score`` (fine resolution
near 1.0, where faces are), brightness and contrast as ratios of their maximum, sharpness in
thousands.

The feature log (one JSON line per successful request, one file per worker under
``$DETECTION_FEATURE_LOG``, else ``$LOG_LOCATION/features``, else none) keeps the exact values that the fixed
buckets cannot: scripts/drift/cli.py reads it for PSI and KS tests.

Switches (environment of ``torchserve --start``, inherited by its workers):
    DETECTION_METRICS=off        no handler metrics, no feature log, no input statistics
    DETECTION_FEATURE_LOG=off    metrics only; or a folder for the feature log
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.errors import InputError
from handlers.features import output_features
from handlers.schema import STAGES, DetectionResult

__all__ = [
    "BATCH_SIZE",
    "DETECTIONS",
    "ERRORS",
    "FEATURE_LOG_BYTES",
    "FeatureLog",
    "HandlerMetrics",
    "INPUT",
    "MAX_SCORE_SAMPLES",
    "MODEL_DIMS",
    "MetricSpec",
    "OneWrite",
    "REQUEST_LATENCY",
    "SCORE_GAP",
    "SPECS",
    "STAGE_LATENCY",
    "WORKER_STARTS",
    "enabled",
    "feature_log_dir",
    "feature_record",
]

log = logging.getLogger(__name__)

MODEL_DIMS = ["model_name", "model_version"]
MAX_SCORE_SAMPLES = 20  # per image: the top scores (detections are sorted); bounds lines per request
FEATURE_LOG_BYTES = 16 * 1024 * 1024  # per worker file before it rotates (one old file is kept)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "histogram" | "counter", as in the metrics yaml
    unit: str
    dims: tuple[str, ...] = tuple(MODEL_DIMS)
    scale: float = 1.0  # value emitted = raw value * scale (fits the default buckets)


STAGE_LATENCY = MetricSpec(
    "ts_handler_stage_latency_seconds", "histogram", "seconds", (*MODEL_DIMS, "stage"), 1e-3
)
REQUEST_LATENCY = MetricSpec("ts_handler_request_latency_seconds", "histogram", "seconds", scale=1e-3)
BATCH_SIZE = MetricSpec("ts_handler_batch_size", "histogram", "count")
DETECTIONS = MetricSpec("ts_handler_detections_per_image", "histogram", "count")
SCORE_GAP = MetricSpec("ts_handler_detection_score_gap", "histogram", "ratio")
# Input statistics (handlers/features.py) keyed by feature name.
INPUT = {
    "width": MetricSpec("ts_handler_input_width_kilopixels", "histogram", "kilopixels", scale=1e-3),
    "height": MetricSpec("ts_handler_input_height_kilopixels", "histogram", "kilopixels", scale=1e-3),
    "brightness": MetricSpec("ts_handler_input_brightness_ratio", "histogram", "ratio", scale=1 / 255),
    "contrast": MetricSpec("ts_handler_input_contrast_ratio", "histogram", "ratio", scale=1 / 127.5),
    "sharpness": MetricSpec("ts_handler_input_sharpness_thousands", "histogram", "thousands", scale=1e-3),
}
ERRORS = MetricSpec("ts_handler_errors", "counter", "count", (*MODEL_DIMS, "reason"))
WORKER_STARTS = MetricSpec("ts_handler_worker_starts", "counter", "count")

SPECS = (
    STAGE_LATENCY,
    REQUEST_LATENCY,
    BATCH_SIZE,
    DETECTIONS,
    SCORE_GAP,
    *INPUT.values(),
    ERRORS,
    WORKER_STARTS,
)


def enabled() -> bool:
    return os.environ.get("DETECTION_METRICS", "on").strip().lower() not in ("off", "0", "false", "no")


def feature_log_dir() -> Path | None:
    """Where this worker writes its feature log, or None when it is switched off."""
    if not enabled():
        return None
    configured = os.environ.get("DETECTION_FEATURE_LOG", "").strip()
    if configured.lower() in ("off", "0", "false", "no"):
        return None
    if configured:
        return Path(configured)
    # Next to TorchServe's own logs; a process that is no server (the in-process scorer) writes none.
    log_location = os.environ.get("LOG_LOCATION", "").strip()
    return Path(log_location) / "features" if log_location else None


class FeatureLog:
    """One JSON line per successful request, appended to ``features-<pid>.jsonl`` in ``folder``.

    One file per worker process: no two processes ever append to the same file, and a file rotates
    by itself at :data:`FEATURE_LOG_BYTES`.
    """

    def __init__(self, folder: Path, max_bytes: int = FEATURE_LOG_BYTES) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"features-{os.getpid()}.jsonl"
        self._logger = logging.getLogger(f"{__name__}.features.{os.getpid()}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=1)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.handlers = [handler]

    def write(self, record: dict[str, Any]) -> None:
        self._logger.info(json.dumps(record, separators=(",", ":")))

    def close(self) -> None:
        for handler in self._logger.handlers:
            handler.close()
        self._logger.handlers = []


def feature_record(result: DetectionResult, now: float | None = None) -> dict[str, Any]:
    """The feature log line of one result: time, model, input statistics and output features."""
    record: dict[str, Any] = {
        "ts": round(time.time() if now is None else now, 3),
        "model": result.model,
        "version": result.version,
    }
    record.update({k: round(v, 4) for k, v in (result.features or {}).items()})
    for key, value in output_features(result.detections, result.width, result.height).items():
        record[key] = [round(v, 5) for v in value] if isinstance(value, list) else value
    return record


class OneWrite(logging.Handler):
    """While active, holds the records of TorchServe's metric logger and then hands them on as ONE
    record whose message is their lines joined: the worker's stdout handler (format
    ``%(message)s``) writes and flushes once per handle() call instead of once per metric, and the
    frontend, which reads stdout line by line, parses the same lines."""

    LOGGER = "ts.metrics.caching_metric"  # where CachingMetric.emit_metrics logs each line

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(self.LOGGER)
        self.lines: list[str] = []
        self.level_seen = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.level_seen = max(self.level_seen, record.levelno)

    def __enter__(self) -> OneWrite:
        self.lines, self.level_seen = [], logging.NOTSET  # one instance serves every handle() call
        self.logger.addHandler(self)
        self._propagate, self.logger.propagate = self.logger.propagate, False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self._propagate
        if self.lines and self.logger.isEnabledFor(self.level_seen):
            self.logger.log(self.level_seen, "%s", "\n".join(self.lines))


class HandlerMetrics:
    """Emits the metrics of :data:`SPECS` for one model version through a TorchServe metrics cache."""

    def __init__(self, cache: Any, model_name: str, version: str, feature_log: FeatureLog | None) -> None:
        from ts.metrics.metric_type_enum import MetricTypes  # TorchServe-only import, kept local

        types = {"histogram": MetricTypes.HISTOGRAM, "counter": MetricTypes.COUNTER}
        # add_metric_to_cache returns the metric declared by the yaml, or defines it when the yaml
        # lacks it (then the frontend drops its samples in prometheus mode, but nothing breaks).
        self._metrics = {
            spec.name: cache.add_metric_to_cache(spec.name, spec.unit, list(spec.dims), types[spec.kind])
            for spec in SPECS
        }
        self._model = [model_name, version]
        self.feature_log = feature_log
        self._one_write = OneWrite()  # reused by every record_batch: no handler made per request

    @classmethod
    def from_context(cls, context: Any, model_name: str, version: str) -> HandlerMetrics | None:
        """None when DETECTION_METRICS=off or the context has no metrics cache."""
        cache = getattr(context, "metrics", None)
        if not enabled() or cache is None:
            return None
        folder = feature_log_dir()
        return cls(cache, model_name, version, FeatureLog(folder) if folder else None)

    def _emit(self, spec: MetricSpec, value: float, *extra_dims: str) -> None:
        self._metrics[spec.name].add_or_update(value * spec.scale, [*self._model, *extra_dims])

    def worker_started(self) -> None:
        self._emit(WORKER_STARTS, 1)

    def record_batch(self, outcomes: Sequence[DetectionResult | InputError]) -> None:
        """All metrics of one handle() call, in one write; never raises (monitoring must not fail
        requests)."""
        try:
            with self._one_write:
                self._emit(BATCH_SIZE, len(outcomes))
                for outcome in outcomes:
                    if isinstance(outcome, InputError):
                        self._emit(ERRORS, 1, outcome.reason)
                    else:
                        self._record_result(outcome)
        except Exception:  # noqa: BLE001
            log.exception("emitting handler metrics failed")

    def _record_result(self, result: DetectionResult) -> None:
        for stage in STAGES:
            self._emit(STAGE_LATENCY, result.timings_ms.get(stage, 0.0), stage)
        self._emit(REQUEST_LATENCY, sum(result.timings_ms.get(stage, 0.0) for stage in STAGES))
        self._emit(DETECTIONS, len(result.detections))
        for det in result.detections[:MAX_SCORE_SAMPLES]:
            self._emit(SCORE_GAP, max(0.0, 1.0 - float(det.score)))
        for name, value in (result.features or {}).items():
            if name in INPUT:
                self._emit(INPUT[name], value)
        if self.feature_log is not None:
            self.feature_log.write(feature_record(result))
