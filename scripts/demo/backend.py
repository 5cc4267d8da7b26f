"""The demo app's side of TorchServe: the blocking client library run in a thread pool, its answers and
failures turned into (HTTP status, JSON body) pairs for the page.

Tokens never leave this module: :class:`~scripts.client.DetectionClient` and
:class:`~scripts.client.ManagementClient` read ``key_file.json`` and renew an expired key with the API
key; the page only ever sees detections and readable error messages.

Error bodies have the server's shape, ``{"code": status, "type": reason, "message": text}``
(handlers/errors.py). The reasons added here, for what the page must tell apart:

    server_unavailable  503  TorchServe does not answer (stopped, restarting)
    model_not_ready     503  the model is loading or has no worker
    token_error         502  no valid TorchServe token, even after renewal
    upstream_error      502  TorchServe failed (5xx other than 503)
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from scripts.client import (
    AuthError,
    ClientError,
    DetectionClient,
    Endpoints,
    ManagementClient,
    ModelNotReady,
    ServerUnavailable,
    TokenStore,
)

__all__ = ["Backend", "Reply", "SharedTokens", "error_body"]

Reply = tuple[int, dict[str, Any]]  # (HTTP status for the page, JSON body)
RENEW_GRACE_S = 2.0  # a key renewed this recently is taken as is instead of being renewed again


class SharedTokens(TokenStore):
    """A TokenStore for many threads: one renewal at a time.

    Each renewal makes TorchServe issue a new key and revoke the previous one, so two pool threads
    whose requests both met an expired key must not both renew: the second would revoke the key the
    first just got. A thread that waited for another's renewal takes the fresh key from key_file.json.
    """

    def __init__(self, key_file: Any, endpoints: Endpoints, timeout: float = 10.0) -> None:
        super().__init__(key_file, endpoints, timeout)
        self._lock = threading.Lock()
        self._renewed_at: dict[str, float] = {}

    def refresh(self, kind: str) -> str:
        with self._lock:
            if time.monotonic() - self._renewed_at.get(kind, float("-inf")) < RENEW_GRACE_S:
                key = self.get(kind)
                if key is not None:
                    return key
            key = super().refresh(kind)
            self._renewed_at[kind] = time.monotonic()
            return key


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    """The server's error shape (handlers/errors.py InputError.to_json)."""
    return {"code": status, "type": reason, "message": message}


def _failure(err: ClientError) -> Reply:
    """A client-library exception -> what the page is told."""
    if isinstance(err, ServerUnavailable):
        return 503, error_body(503, "server_unavailable", str(err))
    if isinstance(err, AuthError):
        return 502, error_body(
            502, "token_error", f"the demo app has no valid TorchServe token and could not renew it: {err}"
        )
    if isinstance(err, ModelNotReady):
        return 503, error_body(503, "model_not_ready", str(err))
    if err.status is not None and err.status < 500:
        return err.status, error_body(err.status, "bad_request", str(err))
    return 502, error_body(502, "upstream_error", str(err))


def _from_response(response: requests.Response) -> Reply:
    """TorchServe's answer to a prediction: 2xx and 4xx pass through, 5xx become the reasons above."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if status < 400 and isinstance(body, dict):
        return status, body
    message = body.get("message", "") if isinstance(body, dict) else response.text.strip()[:300]
    if 400 <= status < 500:
        if isinstance(body, dict) and {"code", "type", "message"} <= body.keys():
            return status, body  # the handler's own 4xx (bad image, bad setting) or TorchServe's 404
        return status, error_body(status, "bad_request", message or f"TorchServe answered {status}")
    if status == 503:
        message = f"TorchServe has no worker free for the model: {message}"
        return 503, error_body(503, "model_not_ready", message)
    return 502, error_body(502, "upstream_error", f"TorchServe answered {status}: {message}")


class Backend:
    """TorchServe calls for the web app, each on a pool thread with that thread's own clients.

    ``requests.Session`` is not meant to be shared between threads, so every pool thread keeps its
    own DetectionClient / ManagementClient; they share one TokenStore (it re-reads key_file.json).
    """

    def __init__(
        self, endpoints: Endpoints, tokens: TokenStore, workers: int = 4, timeout: float = 10.0
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.endpoints, self.tokens, self.timeout = endpoints, tokens, timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-ts")
        self._local = threading.local()

    def _clients(self) -> tuple[DetectionClient, ManagementClient]:
        local = self._local
        if not hasattr(local, "detection"):
            local.detection = DetectionClient(self.endpoints, self.tokens, timeout=self.timeout)
            local.management = ManagementClient(self.endpoints, self.tokens, timeout=self.timeout)
        return local.detection, local.management

    async def _run(self, fn: Any, *args: Any) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def detect(
        self, image: bytes, model: str, version: str | None, settings: dict[str, Any] | None = None
    ) -> Reply:
        """One frame; ``settings`` ({"score_threshold": 0.5, "small_faces": True}) travel as X-<Setting>."""
        return await self._run(self._detect, image, model, version, settings or {})

    async def models(self) -> Reply:
        return await self._run(self._models)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _detect(self, image: bytes, model: str, version: str | None, settings: dict[str, Any]) -> Reply:
        detection, _ = self._clients()
        try:  # booleans travel as true|false (scripts.client.setting_value)
            return _from_response(detection.detect_raw(image, model, version, **settings))
        except ClientError as err:
            return _failure(err)

    def _models(self) -> Reply:
        """{"models": [{"name", "default", "versions": [{"version", "ready", "workers"}]}]}"""
        _, management = self._clients()
        try:
            out = []
            for entry in management.list_models():
                name = entry["modelName"]
                default = str(management.describe(name)[0]["modelVersion"])
                versions = []
                for described in management.versions(name):
                    workers = described.get("workers", [])
                    ready = bool(workers) and all(w.get("status") == "READY" for w in workers)
                    versions.append(
                        {"version": str(described["modelVersion"]), "ready": ready, "workers": len(workers)}
                    )
                out.append({"name": name, "default": default, "versions": versions})
        except ClientError as err:
            return _failure(err)
        return 200, {"models": out}
