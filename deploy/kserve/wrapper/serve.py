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

from kserve import Model, ModelServer, PredictorConfig
from settings import WrapperSettings, read_settings

__all__ = ["TorchServeModel", "main"]

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

    async def healthy(self) -> bool:
        """Readiness of ``GET /v1/models/<name>``: TorchServe's workers now, not at start only."""
        self.ready = await asyncio.to_thread(self.workers_ready)
        return self.ready


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
