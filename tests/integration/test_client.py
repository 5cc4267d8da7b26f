"""scripts/client.py against real servers: token renewal across expiry, typed, readable errors."""

from __future__ import annotations

import json
import time

import pytest

from scripts.bench.load import Auth, TokenAuth, run_step
from scripts.client import (
    AuthError,
    DetectionClient,
    Endpoints,
    ManagementClient,
    ModelNotReady,
    RequestRejected,
    ServerUnavailable,
    TokenStore,
)
from tests.support.images import grace_hopper_bytes
from tests.support.servers import free_ports, launch, shutdown

EXPIRY_MIN = 0.1  # TorchServe accepts fractions: 6 seconds


@pytest.fixture(scope="module")
def short_token_server(tmp_path_factory):
    instance = launch(tmp_path_factory.mktemp("ts-expiry"), token_expiration_min=str(EXPIRY_MIN))
    yield instance
    shutdown(instance)


def test_client_keeps_working_across_token_expiry(short_token_server):
    server = short_token_server
    client, management = server.client(), server.management()
    first_key = server.tokens.get("inference")
    assert client.detect(grace_hopper_bytes()).detections
    time.sleep(EXPIRY_MIN * 60 + 2)
    # The old key is really dead...
    stale = client.api._send("POST", "/predictions/face_detector", first_key, data=grace_hopper_bytes())
    assert stale.status_code == 400 and stale.json()["type"] == "InvalidKeyException"
    # ...yet the client renews it through the API key and carries on, for both APIs.
    assert client.detect(grace_hopper_bytes()).detections
    assert server.tokens.get("inference") != first_key
    assert management.is_ready("face_detector")


def test_load_generator_renews_the_token_across_expiry(short_token_server):
    """scripts/bench/load.py with TokenAuth: a run longer than a key lives has no failed request."""
    server = short_token_server
    url = f"{server.endpoints.inference}/predictions/face_detector"
    headers = {"Content-Type": "image/jpeg"}
    first = {"Authorization": f"Bearer {server.tokens.get('inference')}"}
    seconds = EXPIRY_MIN * 60 * 1.5 + 2  # the key read at the start expires during the run
    body = grace_hopper_bytes()
    renewed = run_step("torchserve", url, body, headers, 2, seconds, 0.0, TokenAuth(server.tokens))
    assert renewed.errors == 0 and renewed.latencies_ms, renewed.error_samples
    assert {"Authorization": f"Bearer {server.tokens.get('inference')}"} != first
    # The check can fail: with the first key fixed (expired by now) every request is refused.
    fixed = run_step("torchserve", url, body, headers, 2, 1.0, 0.0, Auth(first))
    assert fixed.errors > 0 and not fixed.latencies_ms and fixed.error_samples[0] == "HTTP 400"


def test_wrong_token_is_auth_error(server, tmp_path):
    keys = json.loads((server.run_dir / "key_file.json").read_text())
    for kind in keys:
        keys[kind]["key"] = "wrong"
    bad_file = tmp_path / "key_file.json"
    bad_file.write_text(json.dumps(keys))
    client = DetectionClient(server.endpoints, TokenStore(bad_file, server.endpoints))
    with pytest.raises(AuthError, match="renewing the inference token failed"):
        client.detect(grace_hopper_bytes())


def test_missing_key_file_is_auth_error(server, tmp_path):
    client = DetectionClient(server.endpoints, TokenStore(tmp_path / "absent.json", server.endpoints))
    with pytest.raises(AuthError, match=r"absent\.json.* does not exist"):
        client.detect(grace_hopper_bytes())


def test_server_down_is_server_unavailable(tmp_path):
    port = free_ports(1)[0]
    endpoints = Endpoints(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    with pytest.raises(ServerUnavailable, match="not reachable .*make serve"):
        DetectionClient(endpoints, TokenStore(tmp_path / "k.json", endpoints)).detect(b"x")
    with pytest.raises(ServerUnavailable):
        ManagementClient(endpoints, TokenStore(tmp_path / "k.json", endpoints)).list_models()


def test_unknown_model_is_model_not_ready(server):
    with pytest.raises(ModelNotReady, match="no_such_model"):
        server.client().detect(grace_hopper_bytes(), model="no_such_model")
    assert server.management().is_ready("no_such_model") is False


def test_handler_4xx_is_request_rejected_with_message(server):
    with pytest.raises(RequestRejected, match=r"\(415\): body is not a recognised image") as err:
        server.client().detect(b"definitely not an image")
    assert err.value.body["type"] == "unsupported_format"


def test_ping_and_list(server):
    assert server.client().ping() == "Healthy"
    assert [m["modelName"] for m in server.management().list_models()] == ["face_detector"]
