"""The demo web app (aiohttp): the page and its static files, and a small JSON API in front of TorchServe.

    GET  /                 the page (static/index.html); static/ holds plain HTML, JS and CSS
    GET  /api/config       {"maxInFlight", "maxBytes", "defaultModel", "tokenRequired"}
    GET  /api/models       models and versions from the management API, default and readiness
    POST /api/frame        one frame (image/jpeg, image/png, image/webp or image/bmp body)
                           ?model=face_detector&version=2.0&threshold=0.5&small_faces=true
                           (all but model optional; threshold and small_faces are passed to
                           TorchServe as the per-request settings score_threshold and small_faces)
                           -> TorchServe's detection JSON (handlers/schema.py), or an error

Errors have the server's shape ``{"code", "type", "message"}``: bad input is answered here before it
reaches TorchServe (wrong Content-Type 415, not an image 415, empty 400, over ``max_bytes`` 413, bad
query 400), more than ``max_in_flight`` frames pending for one client 429, and TorchServe's own
answers pass through or become the reasons listed in scripts/demo/backend.py.

Access: on a loopback address the API needs no token, but requests must name a loopback host (a
page of another site cannot reach it through DNS rebinding, and a cross-site POST of an image body
needs a CORS preflight, which this app never grants). On any other address every /api/ request needs
``Authorization: Bearer <demo token>`` (the page takes it from the ``#token=`` part of the URL).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from handlers.errors import REASON_BAD_REQUEST, REASON_TOO_LARGE, REASON_UNSUPPORTED, InputError
from handlers.settings import DetectorSettings
from scripts.demo.backend import Backend, error_body

__all__ = ["ACCEPTED_TYPES", "BACKEND", "CONFIG", "STATIC", "DemoConfig", "build_app", "is_loopback"]

STATIC = Path(__file__).resolve().parent / "static"
# Content-Type -> leading bytes of that format; the formats the handlers decode (handlers/image_decode.py).
ACCEPTED_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),  # RIFF....WEBP, checked in _sniff
    "image/bmp": (b"BM",),
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # model names and versions: one URL segment
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the app, checked at construction (the message says what to write instead)."""

    host: str = "127.0.0.1"  # loopback by default; anything else needs ``token``
    port: int = 8090
    token: str | None = None  # the app's own access token, never a TorchServe key
    max_in_flight: int = 2  # frames pending per client; the page uses the same bound
    max_bytes: int = 4 * 1024 * 1024  # largest frame accepted (a 640x480 JPEG is ~30-60 kB)
    default_model: str = "face_detector"
    workers: int = 4  # threads calling TorchServe (the client library is blocking)
    timeout: float = 10.0  # seconds per TorchServe call

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"--host {self.host} is not a loopback address: give the demo its own access token "
                "with --token <secret> or DEMO_TOKEN=<secret> (e.g. DEMO_TOKEN=$(openssl rand -hex 16))"
            )
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the demo token is too short: use 8 characters or more (openssl rand -hex 16)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0-65535, got {self.port}")
        if not 1 <= self.max_in_flight <= 16:
            raise ValueError(f"--max-in-flight must be 1-16, got {self.max_in_flight}; 2 is the default")
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {self.max_bytes}")
        if not NAME.match(self.default_model):
            raise ValueError(f"--model {self.default_model!r} is not a model name like face_detector")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"#token={self.token}" if self.token else "")


CONFIG = web.AppKey("config", DemoConfig)
BACKEND = web.AppKey("backend", Backend)
IN_FLIGHT = web.AppKey("in_flight", Counter)  # client key -> frames pending


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response(error_body(status, reason, message), status=status)


def _sniff(body: bytes) -> bool:
    """True when ``body`` starts like one of the accepted image formats."""
    if body[:4] == b"RIFF":
        return body[8:12] == b"WEBP"
    return any(body.startswith(magic) for magics in ACCEPTED_TYPES.values() for magic in magics)


def _client_key(request: web.Request) -> tuple[str, str]:
    """One page = one client: its peer address and the id it sends (X-Demo-Client), if any."""
    return request.remote or "?", request.headers.get("X-Demo-Client", "")[:64]


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Host check on loopback, token check elsewhere; JSON for every /api/ failure."""
    config: DemoConfig = request.app[CONFIG]
    if request.path.startswith("/api/"):
        if config.token:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {config.token}".encode()):
                return _error(
                    401, "unauthorized", "this demo needs its access token: open the URL the app printed "
                    "at start (it ends with #token=...)",
                )  # fmt: skip
        elif not is_loopback(request.url.host or ""):
            message = f"the demo answers on loopback names only, not {request.host}"
            return _error(403, "forbidden_host", message)
    response = await handler(request)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _config(request: web.Request) -> web.Response:
    config: DemoConfig = request.app[CONFIG]
    return web.json_response(
        {
            "maxInFlight": config.max_in_flight,
            "maxBytes": config.max_bytes,
            "defaultModel": config.default_model,
            "tokenRequired": bool(config.token),
        }
    )


async def _models(request: web.Request) -> web.Response:
    status, body = await request.app[BACKEND].models()
    return web.json_response(body, status=status)


def _query(request: web.Request, config: DemoConfig) -> tuple[str, str | None, dict[str, Any]]:
    """model, version and TorchServe settings from the query string; ValueError with the fix otherwise.

    The settings are those asked for, e.g. {"score_threshold": 0.5, "small_faces": True}; one left
    out (or empty) is not sent, so the model's own default applies.
    """
    model = request.query.get("model", config.default_model)
    version = request.query.get("version") or None
    for what, value in (("model", model), ("version", version)):
        if value is not None and not NAME.match(value):
            raise ValueError(f"{what}={value!r} is not a {what} name (letters, digits, '_', '.', '-')")
    settings: dict[str, Any] = {}
    threshold = request.query.get("threshold")
    if threshold:
        try:
            value = float(threshold)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:  # also false for nan
            raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
        settings["score_threshold"] = value
    small_faces = request.query.get("small_faces")
    if small_faces:
        try:  # the handlers' own reading of a flag: true|false (also 1|0, yes|no, on|off)
            settings["small_faces"] = (
                DetectorSettings().with_overrides({"small_faces": small_faces}).small_faces
            )
        except InputError as err:
            raise ValueError(err.message) from None
    return model, version, settings


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` bytes (the rest is not read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _frame(request: web.Request) -> web.Response:
    config: DemoConfig = request.app[CONFIG]
    content_type = request.content_type.lower()  # without parameters
    if content_type not in ACCEPTED_TYPES:
        return _error(
            415, REASON_UNSUPPORTED, f"Content-Type {content_type or '(none)'} is not accepted: send the "
            f"frame as {', '.join(ACCEPTED_TYPES)} (the page sends image/jpeg)",
        )  # fmt: skip
    try:
        model, version, settings = _query(request, config)
    except ValueError as err:
        return _error(400, REASON_BAD_REQUEST, str(err))
    in_flight: Counter = request.app[IN_FLIGHT]
    key = _client_key(request)
    if in_flight[key] >= config.max_in_flight:
        return _error(
            429, "too_many_frames", f"{in_flight[key]} frames of this client are still pending (at most "
            f"{config.max_in_flight}): send the next frame when one is answered",
        )  # fmt: skip
    in_flight[key] += 1  # counted while the body is read too: that is when a slow client holds a slot
    try:
        body = await _read_body(request, config.max_bytes)
        if body is None:
            return _error(
                413, REASON_TOO_LARGE, f"the frame is larger than {config.max_bytes} bytes: send a smaller "
                "JPEG (a 640x480 frame at quality 0.8 is about 50 kB)",
            )  # fmt: skip
        if not body:
            return _error(400, REASON_BAD_REQUEST, "empty request body: send the frame's JPEG bytes")
        if not _sniff(body):
            return _error(
                415, REASON_UNSUPPORTED, f"the body is not a recognised image ({content_type} was declared): "
                "send JPEG, PNG, BMP or WebP bytes",
            )  # fmt: skip
        status, reply = await request.app[BACKEND].detect(body, model, version, settings)
        return web.json_response(reply, status=status)
    finally:
        in_flight[key] -= 1
        if in_flight[key] <= 0:
            del in_flight[key]


async def _close_backend(app: web.Application) -> None:
    app[BACKEND].close()


def build_app(config: DemoConfig, backend: Backend) -> web.Application:
    """The aiohttp application; ``backend`` talks to TorchServe (closed with the app)."""
    # Bodies are read by _read_body with the configured limit; aiohttp's own limit only backs it up.
    app = web.Application(middlewares=[_guard], client_max_size=config.max_bytes + 1024)
    app[CONFIG], app[BACKEND], app[IN_FLIGHT] = config, backend, Counter()
    app.router.add_get("/", _index)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/models", _models)
    app.router.add_post("/api/frame", _frame)
    app.router.add_static("/static/", STATIC)
    app.on_cleanup.append(_close_backend)
    return app
