"""What the KServe wrapper reads from TorchServe's config.properties. No kserve import: the project's
tests read a rendered config with it in the project's own venv.

KServe's TorchServe runtime mounts the InferenceService's storageUri at /mnt/models; the config there
(``python -m scripts.packaging.container_config render --target kserve``) lists the models in
``model_snapshot`` and holds TorchServe's addresses. The wrapper serves KServe's protocol for each of
those models and forwards every request to TorchServe's inference address.

    settings = read_settings("/mnt/models/config/config.properties")
    settings.models            # ("face_detector",)
    settings.predictor_host    # "127.0.0.1:8085"
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CONFIG_PATH", "FORWARDED_HEADERS", "PROTOCOLS", "WrapperSettings", "read_settings"]

DEFAULT_CONFIG_PATH = "/mnt/models/config/config.properties"  # where KServe's runtime points TorchServe
DEFAULT_ADDRESS = "http://127.0.0.1:8085"  # TorchServe's inference and management address under KServe
# v1 only: the config sets service_envelope=kserve, TorchServe's envelope for KServe's v1 protocol.
# (v2 needs the kservev2 envelope; grpc-v2 needs TorchServe's gRPC stubs. Neither is set up here.)
PROTOCOLS = ("v1",)
# Request headers the wrapper passes on to TorchServe besides kserve's own (x-request-id, x-b3-traceid,
# authorization): the handler's per-request settings (handlers/ts_adapter.py SETTING_HEADERS; a unit
# test keeps the two lists equal). They apply to every instance of the request; an instance's own
# fields ({"data": {"image": ..., "score_threshold": 0.8}}) win.
FORWARDED_HEADERS = (
    "x-score-threshold",
    "x-nms-iou",
    "x-max-detections",
    "x-inference-size",
    "x-small-faces",
)


@dataclass(frozen=True)
class WrapperSettings:
    models: tuple[str, ...]  # model names, the keys of model_snapshot["models"]
    predictor_host: str  # host:port of TorchServe's inference API, e.g. "127.0.0.1:8085"
    management_url: str  # TorchServe's management API, e.g. "http://127.0.0.1:8085"
    protocol: str  # KServe protocol version the wrapper serves and forwards ("v1")


def read_settings(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> WrapperSettings:
    """Settings from the config at ``path`` (default: $CONFIG_PATH, else DEFAULT_CONFIG_PATH) and
    $PROTOCOL_VERSION (KServe sets it from the InferenceService's protocolVersion; default v1)."""
    env = os.environ if env is None else env
    config = Path(path or env.get("CONFIG_PATH") or DEFAULT_CONFIG_PATH)
    props = _properties(config)
    snapshot = json.loads(props.get("model_snapshot") or "{}")
    models = tuple(snapshot.get("models", {}))
    if not models:
        raise ValueError(
            f"{config}: model_snapshot lists no model; render the config with "
            "`python -m scripts.packaging.container_config render --target kserve`"
        )
    protocol = env.get("PROTOCOL_VERSION") or "v1"
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"PROTOCOL_VERSION={protocol!r} is not served; use {' or '.join(PROTOCOLS)} "
            "(protocolVersion: v1 in the InferenceService)"
        )
    inference = _reachable(props.get("inference_address", DEFAULT_ADDRESS))
    management = _reachable(props.get("management_address", DEFAULT_ADDRESS))
    return WrapperSettings(models, inference.split("://", 1)[-1], management, protocol)


def _properties(path: Path) -> dict[str, str]:
    """config.properties as a dict: Java properties read as one INI section (no project import here)."""
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#", "!"), interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string("[properties]\n" + path.read_text())
    return dict(parser["properties"])


def _reachable(address: str) -> str:
    """A listen address as a client reaches it from the same pod: 0.0.0.0 is not a destination."""
    return address.rstrip("/").replace("0.0.0.0", "127.0.0.1")
