"""A stand-in for TorchServe's ``ts.context.Context`` so a handler's ``initialize``/``handle`` run
without a frontend (as pytorch/serve's own unit tests do with their mock_context). It mirrors the
real one where handlers can tell: headers are strings per request index, statuses are set per
index, the metrics cache hands out metrics whose ``add_or_update`` calls are recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FakeContext", "FakeMetrics"]


class FakeMetrics:
    """``context.metrics``: every ``add_or_update`` lands in ``calls`` as (name, value, dims)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, list[str]]] = []

    def add_metric_to_cache(self, name: str, unit: str, dimension_names: list[str], metric_type: Any) -> Any:
        calls = self.calls

        class _Metric:
            def add_or_update(self, value: float, dimension_values: list[str]) -> None:
                calls.append((name, value, list(dimension_values)))

        return _Metric()


class FakeContext:
    def __init__(
        self,
        model_dir: Path,
        model_yaml_config: dict[str, Any],
        name: str = "face_detector",
        version: str = "2.0",
        headers: dict[int, dict[str, str]] | None = None,
    ) -> None:
        self.model_name = name
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 8}
        self.model_yaml_config = model_yaml_config
        self.manifest = {"model": {"modelName": name, "modelVersion": version}}
        self.metrics = FakeMetrics()  # one cache for the worker's life, as in TorchServe
        self.new_batch(headers)

    def new_batch(self, headers: dict[int, dict[str, str]] | None = None) -> FakeContext:
        """Per-request state for the next handle() call; TorchServe reuses one context per worker."""
        self.headers = headers or {}  # request index -> header name -> value, as the frontend sends them
        self.statuses: dict[int, tuple[int, str]] = {}  # request index -> (code, phrase) set by the handler
        self.content_types: dict[int, str] = {}
        return self

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.headers.get(idx, {}).get(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.headers.get(idx, {}))

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value
