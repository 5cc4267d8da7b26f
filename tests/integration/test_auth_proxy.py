"""The pod's auth proxy (deploy/base) in front of the pod's TorchServe, both run for real on loopback.

TorchServe runs the k8s target as its container does (tests/support/containers.py: the image's files,
config-k8s.properties, its own key check off, an empty working directory); nginx renders the template
of the ConfigMap the Deployment mounts (tests/support/auth_proxy.py), with the Secret's keys in the
container's environment. Only ports move to free loopback ones.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time

import grpc
import pytest
import requests
import yaml

from handlers.schema import DetectionResult
from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.packaging.grpc_stubs import OUT as STUBS_DIR
from scripts.packaging.grpc_stubs import ensure as ensure_grpc_stubs
from scripts.paths import REPO
from tests.support.auth_proxy import DEPLOYMENT, proxy_container, proxy_ports, start_proxy, template
from tests.support.containers import lay_out_target, start_target
from tests.support.images import encode, grace_hopper
from tests.support.servers import STARTUP_TIMEOUT_S

MAX_BODY = 16 * 1024 * 1024  # client_max_body_size 16m == max_request_size of config.properties
INTERNAL = container_config.K8S_INTERNAL


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[-1])


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """The Secret face-detector-tokens as docs/deployment.md creates it (openssl rand -hex 32)."""
    return {"INFERENCE_TOKEN": secrets.token_hex(32), "MANAGEMENT_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def pod(tmp_path_factory, tokens):
    run = start_target("k8s", tmp_path_factory.mktemp("torchserve"))
    try:
        run.wait_ready(timeout=STARTUP_TIMEOUT_S)
    except (TimeoutError, RuntimeError) as err:
        run.shutdown()
        pytest.fail(f"k8s TorchServe: {err}\n{run.logs()}")
    upstreams = {
        INTERNAL["inference"]: _port(run.props["inference_address"]),
        INTERNAL["management"]: _port(run.props["management_address"]),
        INTERNAL["grpc_inference"]: int(run.props["grpc_inference_port"]),
    }
    try:
        proxy = start_proxy(tmp_path_factory.mktemp("proxy"), upstreams, tokens)
    except Exception:
        run.shutdown()
        raise
    yield run, proxy
    proxy.stop()
    run.shutdown()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _jpeg() -> bytes:
    return encode(grace_hopper())


# --- what the manifests say, checked without a server ------------------------------------------


def test_torchserve_of_the_pod_listens_on_loopback_only_except_metrics(tmp_path):
    """Reachable only through the proxy: REST and gRPC of config-k8s.properties on 127.0.0.1 at the
    internal ports the template forwards to; the Service targets the proxy's ports and metrics."""
    props = read_properties(lay_out_target("k8s", tmp_path).config)
    assert props["inference_address"] == f"http://127.0.0.1:{INTERNAL['inference']}"
    assert props["management_address"] == f"http://127.0.0.1:{INTERNAL['management']}"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "true"
    assert props["metrics_address"] == "http://0.0.0.0:8082"
    _, text = template()
    for port in (INTERNAL["inference"], INTERNAL["management"], INTERNAL["grpc_inference"]):
        assert f"127.0.0.1:{port}" in text
    service = next(d for d in yaml.safe_load_all((REPO / "deploy/base/service.yaml").read_text()) if d)
    targets = {p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == set(proxy_ports()) | {"metrics"}, targets


def test_the_proxy_gets_exactly_the_variables_the_template_uses():
    container, _ = proxy_container()
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {
        "INFERENCE_TOKEN": {"name": "face-detector-tokens", "key": "inference"},
        "MANAGEMENT_TOKEN": {"name": "face-detector-tokens", "key": "management"},
    }
    _, text = template()
    assert "${INFERENCE_TOKEN}" in text and "${MANAGEMENT_TOKEN}" in text
    assert "deploy/base/deployment.yaml" in str(DEPLOYMENT)


# --- the running proxy --------------------------------------------------------------------------


def test_health_endpoint_is_open(pod):
    _, proxy = pod
    r = requests.get(f"{proxy.url('http')}/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        "management",  # the management key on the inference port
        "lowercase",  # "bearer <key>": the comparison is exact
        "suffix",  # the key with one more character
    ],
)
def test_inference_without_the_inference_key_is_401_json(pod, tokens, headers):
    _, proxy = pod
    key = tokens["INFERENCE_TOKEN"]
    headers = {
        "management": _auth(tokens["MANAGEMENT_TOKEN"]),
        "lowercase": {"Authorization": f"bearer {key}"},
        "suffix": _auth(key + "0"),
    }.get(headers, headers) if isinstance(headers, str) else headers  # fmt: skip
    r = requests.post(
        f"{proxy.url('http')}/predictions/face_detector", data=_jpeg(), headers=headers, timeout=30
    )
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["code"] == 401 and "inference key" in r.json()["message"]


def test_the_secrets_inference_key_gets_detections(pod, tokens):
    _, proxy = pod
    r = requests.post(
        f"{proxy.url('http')}/predictions/face_detector",
        data=_jpeg(),
        headers={**_auth(tokens["INFERENCE_TOKEN"]), "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    result = DetectionResult.from_json(r.json())
    assert result.model == "face_detector" and len(result.detections) == 1


def test_body_over_the_limit_is_413_json(pod, tokens):
    _, proxy = pod
    body = b"\xff" * (MAX_BODY + 1)
    r = requests.post(
        f"{proxy.url('http')}/predictions/face_detector",
        data=body,
        headers=_auth(tokens["INFERENCE_TOKEN"]),
        timeout=60,
    )
    assert r.status_code == 413, r.text[:200]
    assert r.json()["code"] == 413


def test_management_only_with_the_management_key(pod, tokens):
    _, proxy = pod
    url = f"{proxy.url('management')}/models/face_detector/all"
    for headers in ({}, _auth(tokens["INFERENCE_TOKEN"]), _auth("wrong")):
        r = requests.get(url, headers=headers, timeout=10)
        assert r.status_code == 401 and "management key" in r.json()["message"], (headers, r.text)
    r = requests.get(url, headers=_auth(tokens["MANAGEMENT_TOKEN"]), timeout=10)
    assert r.status_code == 200, r.text
    assert sorted(v["modelVersion"] for v in r.json()) == ["1.0", "2.0"]
    # Management paths are not served on the inference port, key or not.
    r = requests.get(f"{proxy.url('http')}/models", headers=_auth(tokens["INFERENCE_TOKEN"]), timeout=10)
    assert r.status_code in (404, 405), r.text


def test_grpc_inference_through_the_proxy_needs_the_key(pod, tokens):
    _, proxy = pod
    ensure_grpc_stubs()
    if str(STUBS_DIR) not in sys.path:
        sys.path.insert(0, str(STUBS_DIR))
    from torchserve_grpc import inference_pb2, inference_pb2_grpc

    request = inference_pb2.PredictionsRequest(model_name="face_detector", input={"data": _jpeg()})
    with grpc.insecure_channel(f"127.0.0.1:{proxy.ports['grpc']}") as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.Predictions(request, timeout=30)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Predictions(
            request, metadata=[("authorization", f"Bearer {tokens['INFERENCE_TOKEN']}")], timeout=60
        )
    assert len(json.loads(reply.prediction)["detections"]) == 1


def test_the_client_header_is_not_forwarded_and_torchserve_keys_are_off(pod, tokens):
    """TorchServe behind the proxy answers without any key (its check is off), so the proxy is the only
    gate; and it writes no key file a client could use."""
    run, _ = pod
    r = requests.post(f"{run.endpoints.inference}/predictions/face_detector", data=_jpeg(), timeout=60)
    assert r.status_code == 200
    assert not (run.workdir / "key_file.json").exists()


def test_proxy_overhead_is_small(pod, tokens):
    """p50 latency of one inference through the proxy vs straight to TorchServe (same run, same image),
    printed for docs/deployment.md; the proxy may add at most a few milliseconds."""
    run, proxy = pod
    jpeg = _jpeg()
    direct_url = f"{run.endpoints.inference}/predictions/face_detector"
    proxied_url = f"{proxy.url('http')}/predictions/face_detector"
    headers = _auth(tokens["INFERENCE_TOKEN"])

    # Interleaved (direct, proxied, direct, ...) so that load from elsewhere on the machine hits both alike.
    times: dict[str, list[float]] = {direct_url: [], proxied_url: []}
    with requests.Session() as session:
        for i in range(61):
            for url in (direct_url, proxied_url):
                start = time.perf_counter()
                assert session.post(url, data=jpeg, headers=headers, timeout=60).status_code == 200
                if i:  # the first round warms both paths
                    times[url].append((time.perf_counter() - start) * 1000)
    direct, proxied = (statistics.median(times[u]) for u in (direct_url, proxied_url))
    print(f"\np50 direct {direct:.1f} ms, through the proxy {proxied:.1f} ms ({proxied - direct:+.1f} ms)")
    assert proxied - direct < max(10.0, 0.25 * direct), (direct, proxied)
