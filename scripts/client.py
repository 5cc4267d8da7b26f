"""The one client library every tool here uses to talk to TorchServe.

Endpoints and tokens come from :mod:`scripts.config` (``config.properties`` at the repository root,
``key_file.json``, TS_* environment overrides); the names are importable from here too. Inference
and management keys expire after ``token_expiration_min``; on a token failure the client asks the
management API for a new key with the API key and retries once.

Errors are typed and readable: ServerUnavailable (nothing listening / timed out), AuthError (no
valid token), ModelNotReady (unknown model or no worker), RequestRejected (the handler's 4xx).

Retry policy (inference only, off by default): ``DetectionClient(retries=N, backoff=B)`` repeats a
request that failed with ServerUnavailable or HTTP 503 (queue full, no worker, server stopping) up
to N more times, sleeping B, 2B, 4B, ... seconds in between; then the last error is raised (or the
last 503 returned by ``detect_raw``) exactly as without retries. Detection requests are idempotent,
so a repeat is safe. Nothing else is retried: 4xx, 500 ("Worker died.") and 507 surface at once.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from handlers.schema import DetectionResult
from scripts.config import (
    KEY_KINDS,
    TOKEN_ERROR_TYPE,
    AuthError,
    ClientError,
    Endpoints,
    ModelNotReady,
    RequestRejected,
    ServerUnavailable,
    TokenStore,
    is_token_failure,
)

__all__ = [
    "KEY_KINDS",
    "TOKEN_ERROR_TYPE",
    "AuthError",
    "BaseClient",
    "ClientError",
    "DetectionClient",
    "Endpoints",
    "ImageInput",
    "ManagementClient",
    "ModelNotReady",
    "RequestRejected",
    "ServerUnavailable",
    "TokenStore",
    "encode_image",
    "raise_for_error",
    "setting_value",
]

ImageInput = bytes | bytearray | str | Path | np.ndarray


def setting_value(value: Any) -> str:
    """A per-request setting as a header value: booleans as true / false (what the handlers
    document), anything else as its text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Api:
    """HTTP with keep-alive, bearer token, one renew-and-retry on token failure, typed errors."""

    def __init__(
        self, base: str, kind: str, tokens: TokenStore, timeout: float, session: requests.Session | None
    ) -> None:
        self.base = base.rstrip("/")
        self.kind = kind
        self.tokens = tokens
        self.timeout = timeout
        self.session = session or requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._send(method, path, self.tokens.get(self.kind), **kwargs)
        if _is_token_failure(response):
            response = self._send(method, path, self.tokens.refresh(self.kind), **kwargs)
            if _is_token_failure(response):
                raise AuthError(
                    f"{self.kind} token rejected by {self.base}", response.status_code, _body(response)
                )
        return response

    def _send(self, method: str, path: str, key: str | None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            return self.session.request(
                method, f"{self.base}{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.ConnectionError as err:
            raise ServerUnavailable(
                f"TorchServe is not reachable at {self.base} ({type(err).__name__}); "
                "is it running? try `make serve`"
            ) from None
        except requests.Timeout:
            raise ServerUnavailable(
                f"TorchServe at {self.base} did not answer within {self.timeout}s"
            ) from None


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _is_token_failure(response: requests.Response) -> bool:
    return is_token_failure(response.status_code, _body(response))


def raise_for_error(response: requests.Response, what: str) -> None:
    if response.status_code < 400:
        return
    body = _body(response)
    message = body.get("message", response.text) if isinstance(body, dict) else str(body)
    status = response.status_code
    if status == 404 or (status == 503 and "worker" in message.lower()):
        raise ModelNotReady(f"{what}: {message}", status, body)
    if status < 500:
        raise RequestRejected(f"{what} rejected ({status}): {message}", status, body)
    raise ClientError(f"{what} failed ({status}): {message}", status, body)


def encode_image(image: ImageInput, quality: int = 90) -> tuple[bytes, str]:
    """Bytes, a file path, or an RGB array (H, W, 3) / grey (H, W) -> (bytes, content type)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "application/octet-stream"
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes(), "application/octet-stream"
    if isinstance(image, np.ndarray):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue(), "image/jpeg"
    raise TypeError(f"cannot send {type(image).__name__}; pass bytes, a path or a numpy image")


class BaseClient:
    """What both clients share: endpoints, a token store and one keep-alive session to one API.

    ``KIND`` names the API: the :class:`Endpoints` field it talks to and the key it sends.
    """

    KIND = "inference"

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        tokens: TokenStore | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints.default()
        self.tokens = tokens or TokenStore(None, self.endpoints)
        self.api = _Api(getattr(self.endpoints, self.KIND), self.KIND, self.tokens, timeout, session)


class DetectionClient(BaseClient):
    """Inference: send one image, get a :class:`DetectionResult` back.

    Example: ``DetectionClient(retries=2).detect("photo.jpg", score_threshold=0.8).detections``
    """

    KIND = "inference"

    def __init__(self, *args: Any, retries: int = 0, backoff: float = 0.5, **kwargs: Any) -> None:
        """``BaseClient``'s arguments (endpoints, tokens, timeout, session), then the retry policy."""
        if retries < 0 or backoff < 0:
            raise ValueError(
                f"retries and backoff must be >= 0 (got {retries}, {backoff}), e.g. retries=2, backoff=0.5"
            )
        super().__init__(*args, **kwargs)
        self.retries = retries  # extra attempts after ServerUnavailable or 503 (module docstring)
        self.backoff = backoff  # seconds before the first retry, doubled for each further one

    def detect_raw(
        self, image: ImageInput, model: str = "face_detector", version: str | None = None, **settings: Any
    ) -> requests.Response:
        """POST the image; settings travel as X-<Setting-Name> headers. No status check."""
        data, content_type = encode_image(image)
        headers = {"Content-Type": content_type}
        headers.update({"X-" + k.replace("_", "-"): setting_value(v) for k, v in settings.items()})
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        return self._with_retries(lambda: self.api.request("POST", path, data=data, headers=headers))

    def _with_retries(self, send: Any) -> requests.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = send()
            except ServerUnavailable:
                if last:
                    raise
            else:
                if response.status_code != 503 or last:
                    return response
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def detect(
        self, image: ImageInput, model: str = "face_detector", version: str | None = None, **settings: Any
    ) -> DetectionResult:
        response = self.detect_raw(image, model, version, **settings)
        raise_for_error(response, f"predict {model}{'/' + version if version else ''}")
        return DetectionResult.from_json(response.json())

    def ping(self) -> str:
        response = self.api.request("GET", "/ping")
        raise_for_error(response, "ping")
        return response.json().get("status", "")


class ManagementClient(BaseClient):
    """Management API: list, describe, readiness, default version, scaling."""

    KIND = "management"

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        raise_for_error(response, what)
        return response.json()

    def list_models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/models", "list models").get("models", [])

    def describe(self, model: str, version: str | None = None) -> list[dict[str, Any]]:
        suffix = f"/{version}" if version else ""
        return self._json("GET", f"/models/{model}{suffix}", f"describe {model}{suffix}")

    def versions(self, model: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/models/{model}/all", f"list versions of {model}")

    def is_ready(self, model: str) -> bool:
        """True when every version of ``model`` has at least one worker and all are READY."""
        try:
            described = self.versions(model)
        except ModelNotReady:
            return False
        workers = [w for version in described for w in version.get("workers", [])]
        return bool(workers) and all(w.get("status") == "READY" for w in workers)

    def set_default(self, model: str, version: str) -> str:
        return self._json("PUT", f"/models/{model}/{version}/set-default", "set-default")["status"]

    def scale(
        self, model: str, min_worker: int, max_worker: int | None = None, version: str | None = None
    ) -> str:
        params = {"min_worker": min_worker, "synchronous": "true"}
        if max_worker is not None:
            params["max_worker"] = max_worker
        suffix = f"/{version}" if version else ""
        return self._json("PUT", f"/models/{model}{suffix}", f"scale {model}", params=params)["status"]
