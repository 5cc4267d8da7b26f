"""The one client library every tool here uses to talk to TorchServe.

Endpoints come from ``config.properties`` at the repository root, overridden by environment
variables (TS_INFERENCE_URL, TS_MANAGEMENT_URL, TS_METRICS_URL). Tokens come from ``key_file.json``
(TS_KEY_FILE to point elsewhere; TS_INFERENCE_KEY / TS_MANAGEMENT_KEY / TS_API_KEY to pass keys
directly). Inference and management keys expire after ``token_expiration_min``; on a token failure
the client asks the management API for a new key with the API key and retries once.

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
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from handlers.schema import DetectionResult
from scripts.paths import REPO

TOKEN_ERROR_TYPE = "InvalidKeyException"
KEY_KINDS = ("inference", "management", "API")

ImageInput = bytes | bytearray | str | Path | np.ndarray


class ClientError(Exception):
    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ServerUnavailable(ClientError):
    """Nothing answers at the endpoint, or it did not answer in time."""


class AuthError(ClientError):
    """No valid token, even after trying to renew it."""


class ModelNotReady(ClientError):
    """The model is unknown to the server or has no worker to serve it."""


class RequestRejected(ClientError):
    """The server refused this request (4xx): ``status`` and the handler's message."""


@dataclass(frozen=True)
class Endpoints:
    inference: str
    management: str
    metrics: str
    grpc_inference: str = "127.0.0.1:7070"

    @classmethod
    def from_properties(cls, props: dict[str, str], env: dict[str, str] | None = None) -> Endpoints:
        env = os.environ if env is None else env
        grpc_host = props.get("grpc_inference_address", "127.0.0.1")
        grpc_port = props.get("grpc_inference_port", "7070")
        return cls(
            inference=env.get("TS_INFERENCE_URL", props.get("inference_address", "http://127.0.0.1:8080")),
            management=env.get("TS_MANAGEMENT_URL", props.get("management_address", "http://127.0.0.1:8081")),
            metrics=env.get("TS_METRICS_URL", props.get("metrics_address", "http://127.0.0.1:8082")),
            grpc_inference=env.get("TS_GRPC_ADDRESS", f"{grpc_host}:{grpc_port}"),
        )

    @classmethod
    def default(cls) -> Endpoints:
        from scripts.server import read_properties

        config = REPO / "config.properties"
        return cls.from_properties(read_properties(config) if config.exists() else {})


class TokenStore:
    """Keys from key_file.json or the environment, renewed through the API key on expiry."""

    def __init__(self, key_file: Path | str | None, endpoints: Endpoints, timeout: float = 10.0) -> None:
        self.key_file = Path(key_file or os.environ.get("TS_KEY_FILE", REPO / "key_file.json"))
        self.endpoints = endpoints
        self.timeout = timeout
        # `torchserve --stop` deletes key_file.json before the frontend is gone: keep the last key
        # read, so that a request racing a shutdown fails as ServerUnavailable, not as AuthError.
        self._last: dict[str, str] = {}

    def get(self, kind: str) -> str | None:
        env_key = os.environ.get(f"TS_{kind.upper()}_KEY")
        if env_key:
            return env_key
        try:
            key = json.loads(self.key_file.read_text())[kind]["key"]
        except (FileNotFoundError, KeyError, ValueError):
            return self._last.get(kind)
        self._last[kind] = key
        return key

    def refresh(self, kind: str) -> str:
        """Ask TorchServe for a new ``kind`` key (it rewrites key_file.json) and return it."""
        api_key = self.get("API")
        if api_key is None:
            raise AuthError(f"token for {kind} rejected and no API key to renew it ({self.key_file})")
        try:
            response = requests.get(
                f"{self.endpoints.management}/token",
                params={"type": kind},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            raise ServerUnavailable(f"cannot renew the {kind} token: {err}") from None
        if response.status_code != 200:
            raise AuthError(
                f"renewing the {kind} token failed ({response.status_code}): {response.text.strip()}"
            )
        key = self.get(kind)
        if key is None:
            raise AuthError(f"renewed the {kind} token but cannot read it from {self.key_file}")
        return key


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
    if response.status_code not in (400, 401, 403):
        return False
    body = _body(response)
    return isinstance(body, dict) and body.get("type") == TOKEN_ERROR_TYPE


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


class DetectionClient:
    """Inference: send one image, get a :class:`DetectionResult` back."""

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        tokens: TokenStore | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        retries: int = 0,
        backoff: float = 0.5,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError(
                f"retries and backoff must be >= 0 (got {retries}, {backoff}), e.g. retries=2, backoff=0.5"
            )
        self.endpoints = endpoints or Endpoints.default()
        self.tokens = tokens or TokenStore(None, self.endpoints)
        self.api = _Api(self.endpoints.inference, "inference", self.tokens, timeout, session)
        self.retries = retries  # extra attempts after ServerUnavailable or 503 (module docstring)
        self.backoff = backoff  # seconds before the first retry, doubled for each further one

    def detect_raw(
        self, image: ImageInput, model: str = "face_detector", version: str | None = None, **settings: Any
    ) -> requests.Response:
        """POST the image; settings travel as X-<Setting-Name> headers. No status check."""
        data, content_type = encode_image(image)
        headers = {"Content-Type": content_type}
        headers.update({"X-" + k.replace("_", "-"): str(v) for k, v in settings.items()})
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


class ManagementClient:
    """Management API: list, describe, readiness, default version, scaling."""

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        tokens: TokenStore | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.endpoints = endpoints or Endpoints.default()
        self.tokens = tokens or TokenStore(None, self.endpoints)
        self.api = _Api(self.endpoints.management, "management", self.tokens, timeout, session)

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
