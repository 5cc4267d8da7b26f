"""KServe predictor in front of TorchServe: KServe's v1 protocol on :8080, each request forwarded to
TorchServe's inference API (``POST /v1/models/<name>:predict``, answered through TorchServe's
``kserve`` envelope). A model is ready while every worker of its default version is READY in
TorchServe's management API, so a pod whose TorchServe lost its workers turns unready instead of
failing requests.

Runs in its own venv (/opt/kserve-venv, requirements-kserve.txt: kserve caps psutil and protobuf
below the project's pins) and talks to TorchServe over HTTP only. entrypoint.sh starts it after
TorchServe. It does what TorchServe 0.12.0's kserve_wrapper does (pytorch/serve at tag v0.12.0,
commit 6bdb1baf7254c2bfc40a6669b0d922c08ba5f37a, kubernetes/kserve/kserve_wrapper/), written anew
for kserve 0.21's API: that wrapper sets kserve 0.13's ``predictor_host`` attribute, which kserve
0.21 no longer reads (the host comes from ``PredictorConfig``), and imports ``kserve.storage`` and
TorchServe's gRPC stubs, which a REST predictor whose models KServe already downloaded does not need.

    CONFIG_PATH=/mnt/models/config/config.properties /opt/kserve-venv/bin/python serve.py [--http_port N]

What travels: the request body as KServe received it (``{"instances": [...]}``), kserve's own
forwarded headers and the handler's setting headers (FORWARDED_HEADERS: X-Score-Threshold, ...),
which apply to every instance. TorchServe's answer comes back as is when it is 2xx; a 4xx (every
instance of the request failed, or no ``instances`` list) becomes kserve's 400 ``{"error": message}``
with the first instance's message, instead of the 500 kserve makes of any predictor error.

Environment (the names of TorchServe's wrapper): CONFIG_PATH, PROTOCOL_VERSION, MODEL_LOAD_MAX_TRY
(default 60), MODEL_LOAD_DELAY (s between tries, default 5), MODEL_LOAD_TIMEOUT (s per request, 5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
from kserve import Model, ModelServer, PredictorConfig
from kserve.errors import InvalidInput
from kserve.model import append_forwardable_headers
from settings import FORWARDED_HEADERS, WrapperSettings, read_settings

__all__ = ["TorchServeModel", "first_error_message", "main"]

log = logging.getLogger("torchserve-kserve")


class TorchServeModel(Model):
    """One TorchServe model behind KServe. ``predict`` is kserve's own: it posts the request to the
    predictor host of the ``PredictorConfig`` given to the ModelServer (TorchServe)."""

    def __init__(self, name: str, management_url: str, request_timeout: float = 5.0) -> None:
        super().__init__(name)
        self.management_url = management_url
        self.request_timeout = request_timeout

    def workers_ready(self) -> bool:
        """Every worker of the default version READY, and at least one: ``GET /models/<name>``.

        The default version is the one KServe's v1 protocol reaches. It is also all that REST shows
        here: with inference and management on one port (the kserve config), TorchServe routes
        ``/models/<name>/<version>`` (``/all`` included) to the inference API, which answers 404."""
        url = f"{self.management_url}/models/{self.name}"
        try:
            with urllib.request.urlopen(url, timeout=self.request_timeout) as response:
                versions = json.load(response)
        except (OSError, ValueError) as err:  # refused, timed out, 404 before registration, bad JSON
            log.info("%s: TorchServe not ready (%s)", self.name, err)
            return False
        workers = [w for version in versions for w in version.get("workers", [])]
        return bool(workers) and all(w.get("status") == "READY" for w in workers)

    def load(self, tries: int | None = None, delay: float | None = None) -> bool:
        """Wait for TorchServe to have the model's workers READY (it loads every archive at start)."""
        tries = int(os.environ.get("MODEL_LOAD_MAX_TRY", 60)) if tries is None else tries
        delay = float(os.environ.get("MODEL_LOAD_DELAY", 5)) if delay is None else delay
        for attempt in range(1, tries + 1):
            if self.workers_ready():
                self.ready = True
                log.info("%s: ready after %d tries", self.name, attempt)
                return True
            if attempt < tries:
                time.sleep(delay)
        log.error("%s: workers not READY after %d tries, %.0f s apart", self.name, tries, delay)
        return False

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """kserve's REST predict (Model._http_predict) plus the setting headers, and TorchServe's 4xx
        as a 400 with its message. ``headers``: the incoming request's, lower-cased by Starlette."""
        forwarded = append_forwardable_headers(headers, {"Content-Type": "application/json"})
        forwarded.update({k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED_HEADERS})
        try:
            return await self._http_client.infer(
                self.predictor_config.predictor_base_url,
                model_name=self.name,
                data=payload,
                headers=forwarded,
                response_headers=response_headers,
            )
        except httpx.HTTPStatusError as err:
            if 400 <= err.response.status_code < 500:
                raise InvalidInput(first_error_message(err.response)) from None
            raise

    async def healthy(self) -> bool:
        """Readiness of ``GET /v1/models/<name>``: TorchServe's workers now, not at start only."""
        self.ready = await asyncio.to_thread(self.workers_ready)
        return self.ready


def first_error_message(response: httpx.Response) -> str:
    """The message of TorchServe's 4xx: the first instance's error object under the KServe envelope
    (``{"predictions": [{"code": 400, "type": ..., "message": ...}, ...]}``), else the body's text."""
    try:
        first = response.json()["predictions"][0]
        return f"{first['message']} (instance 0, {first['type']})"
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text[:1000] or f"TorchServe answered {response.status_code}"


def build_models(settings: WrapperSettings) -> list[TorchServeModel]:
    timeout = float(os.environ.get("MODEL_LOAD_TIMEOUT", 5))
    return [TorchServeModel(name, settings.management_url, timeout) for name in settings.models]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = read_settings()
    log.info("models %s, TorchServe at %s (%s)", settings.models, settings.predictor_host, settings.protocol)
    models = build_models(settings)
    for model in models:
        model.load()
    # Ports: kserve's defaults 8080 (REST) and 8081 (gRPC), where KServe routes; TorchServe is on 8085.
    # kserve's own flags (--http_port, --grpc_port, ...) are read from the command line at its import.
    config = PredictorConfig(predictor_host=settings.predictor_host, predictor_protocol=settings.protocol)
    ModelServer(predictor_config=config).start(models)


if __name__ == "__main__":
    main()
