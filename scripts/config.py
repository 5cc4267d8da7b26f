"""Where the server is and how to get in: properties files, endpoints, tokens, and the typed errors.

The bottom of the client library's import graph (config <- client <- server, versions, tools):
everything here depends on the standard library, ``requests`` and :mod:`scripts.paths` only.

Endpoints come from ``config.properties`` at the repository root, overridden by environment
variables (TS_INFERENCE_URL, TS_MANAGEMENT_URL, TS_METRICS_URL, TS_GRPC_ADDRESS). Tokens come from
``key_file.json`` (TS_KEY_FILE to point elsewhere; TS_INFERENCE_KEY / TS_MANAGEMENT_KEY / TS_API_KEY
to pass keys directly); an expired inference or management key is renewed with the API key.

The error types live here because :meth:`TokenStore.refresh` raises them; :mod:`scripts.client`
re-exports them, and that is where callers import them from.

    >>> from scripts.config import Endpoints
    >>> Endpoints.from_properties({"inference_address": "http://10.0.0.5:8080"}, env={}).inference
    'http://10.0.0.5:8080'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from scripts.paths import REPO

__all__ = [
    "DEFAULT_CONFIG",
    "KEY_KINDS",
    "TOKEN_ERROR_TYPE",
    "TOKEN_FAILURE_STATUSES",
    "AuthError",
    "ClientError",
    "Endpoints",
    "ModelNotReady",
    "RequestRejected",
    "ServerUnavailable",
    "TokenStore",
    "is_token_failure",
    "read_properties",
]

DEFAULT_CONFIG = REPO / "config.properties"
TOKEN_ERROR_TYPE = "InvalidKeyException"  # the "type" of TorchServe's answer to a missing/expired key
TOKEN_FAILURE_STATUSES = (400, 401, 403)  # 0.12.0 answers 400; the others guard against a proxy in front
KEY_KINDS = ("inference", "management", "API")


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


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines of a Java properties file; ``#`` / ``!`` comments and blank lines skipped."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def is_token_failure(status: int, body: Any) -> bool:
    """True when an answer says the key was missing or expired (``body``: the decoded JSON)."""
    if status not in TOKEN_FAILURE_STATUSES:
        return False
    return isinstance(body, dict) and body.get("type") == TOKEN_ERROR_TYPE


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
        """The repository's config.properties (built-in defaults when absent) and TS_* overrides."""
        return cls.from_properties(read_properties(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {})


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
        if api_key is None and not self.key_file.exists():
            source = " (from TS_KEY_FILE)" if os.environ.get("TS_KEY_FILE") else ""
            raise AuthError(
                f"no {kind} key: the key file {self.key_file}{source} does not exist. TorchServe writes "
                "key_file.json in the folder it starts in (`make serve`: the repository root); point "
                f"TS_KEY_FILE or --key-file at it, or pass the key itself in TS_{kind.upper()}_KEY"
            )
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
