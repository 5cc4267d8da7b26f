"""deploy/: Kubernetes manifests validated offline against the Kubernetes schemas (kubernetes-validate),
the KServe InferenceService against the committed subset of its CRD schema (jsonschema), and the
wiring between them (labels, ports, probes, Secret, the proxy in front of TorchServe)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.packaging import container_config
from scripts.paths import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30.0"  # oldest Kubernetes this is written for (autoscaling/v2, policy/v1, sidecars)
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}
SECRET = "face-detector-tokens"


# --- a small kustomize: the subset the overlays use, and a test failure for anything else ----------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - KUSTOMIZE_KEYS
    assert not unsupported, f"{directory}: kustomization uses {unsupported}; extend tests/test_deploy.py"
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        docs += kustomize(path) if path.is_dir() else load_all(path)
    for image in spec.get("images", []):
        for container in containers(docs):
            name, _, _ = container["image"].rpartition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for patch in spec.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load((directory / patch["path"]).read_text())
        matched = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert len(matched) == 1, f"patch {patch['path']} matches {len(matched)} resources"
        apply_json6902(matched[0], ops)
    return docs


def apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "replace":
            assert (key < len(node)) if isinstance(node, list) else (key in node), f"nothing at {op['path']}"
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
            else:
                node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        else:
            raise AssertionError(f"unsupported patch op {op['op']}")


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


VARIANTS = {"cpu": DEPLOY / "base", "gpu": DEPLOY / "overlays" / "gpu"}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(VARIANTS[request.param])


# --- schema validation --------------------------------------------------------------------------


def test_every_core_resource_is_valid_kubernetes(variant):
    name, docs = variant
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {err.message} at {list(err.path)}")


@pytest.mark.parametrize(
    ("kind", "mutation"),
    [
        ("Service", lambda d: d["spec"]["ports"][0].update(prot="TCP")),
        ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=1)),
        ("HorizontalPodAutoscaler", lambda d: d["spec"].update(minReplicas="two")),
    ],
)
def test_validation_catches_mistakes(kind, mutation):
    doc = copy.deepcopy(by_kind(kustomize(VARIANTS["cpu"]), kind))
    mutation(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_servicemonitor_selects_the_service_metrics_port():
    (monitor,) = load_all(DEPLOY / "monitoring" / "servicemonitor.yaml")
    service = by_kind(kustomize(VARIANTS["cpu"]), "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])


KSERVE_FILES = sorted((DEPLOY / "kserve").glob("inferenceservice*.yaml"))


@pytest.fixture(scope="module")
def kserve_schema() -> dict[str, Any]:
    schema = json.loads((DEPLOY / "kserve" / "inferenceservice.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("path", KSERVE_FILES, ids=lambda p: p.name)
def test_inferenceservice_matches_the_crd_schema(path, kserve_schema):
    (doc,) = load_all(path)
    errors = sorted(jsonschema.Draft202012Validator(kserve_schema).iter_errors(doc), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("mutation", "fragment"),
    [
        (lambda d: d["spec"]["predictor"]["model"].pop("storageUri"), "storageUri"),
        (lambda d: d["spec"]["predictor"]["model"].update(storageUri="/local/path"), "does not match"),
        (lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"), "v3"),
        (lambda d: d["spec"]["predictor"].update(minReplica=1), "minReplica"),
        (lambda d: d["spec"]["predictor"]["model"]["resources"]["limits"].update(cpu="two"), "two"),
        (lambda d: d.update(kind="Deployment"), "InferenceService"),
    ],
)
def test_the_schema_catches_mistakes(kserve_schema, mutation, fragment):
    (doc,) = load_all(KSERVE_FILES[0])
    mutation(doc)
    messages = [e.message for e in jsonschema.Draft202012Validator(kserve_schema).iter_errors(doc)]
    assert any(fragment in m for m in messages), messages


@pytest.mark.parametrize("path", KSERVE_FILES, ids=lambda p: p.name)
def test_inferenceservice_uses_the_torchserve_runtime_with_the_kserve_envelope(path):
    (doc,) = load_all(path)
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch" and model["protocolVersion"] == "v1"
    assert model["runtime"] == "kserve-torchserve"
    rendered = container_config.overrides_for("kserve", {"load_models": "m-1.0.mar"})
    # The runtime hands this label to TorchServe as TS_SERVICE_ENVELOPE, which overrides the config.
    assert doc["metadata"]["labels"]["serviceEnvelope"] == rendered["service_envelope"]
    assert model["image"].endswith("-kserve-gpu" if "gpu" in path.name else "-kserve-cpu")
    gpus = model["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus is not None) == ("gpu" in path.name)


# --- wiring -------------------------------------------------------------------------------------


def test_selectors_and_ports_line_up(variant):
    _, docs = variant
    deployment, service = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        by_kind(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    )
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    named = {p["name"]: p["containerPort"] for c in containers(docs) for p in c.get("ports", [])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= named.keys()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == named["metrics"] == 8082


def test_torchserve_runs_the_k8s_config_with_readiness_probes(variant):
    _, docs = variant
    torchserve = next(c for c in containers(docs) if c["name"] == "torchserve")
    args = torchserve["args"]
    assert args[args.index("--ts-config") + 1] == f"{container_config.APP_DIR}/config-k8s.properties"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = torchserve[probe]["exec"]["command"]
        assert command[:6] == [
            "env", f"PYTHONPATH={container_config.APP_DIR}",
        "python", "-m", "scripts.packaging.container_config", "healthcheck",
        ]  # fmt: skip
        assert not any(e["name"] == "PYTHONPATH" for e in torchserve.get("env", []))
        assert command[command.index("--config") + 1] == args[args.index("--ts-config") + 1]
    assert "--live" in torchserve["livenessProbe"]["exec"]["command"]
    assert "--live" not in torchserve["readinessProbe"]["exec"]["command"]
    security = torchserve["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    mounts = {m["mountPath"] for m in torchserve["volumeMounts"]}
    assert {container_config.WORK_DIR, "/tmp"} <= mounts


def test_tokens_come_from_the_secret(variant):
    _, docs = variant
    proxy = next(c for c in containers(docs) if c["name"] == "auth-proxy")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in proxy["env"]}
    assert refs == {
        "INFERENCE_TOKEN": {"name": SECRET, "key": "inference"},
        "MANAGEMENT_TOKEN": {"name": SECRET, "key": "management"},
    }
    assert not any("key_file" in json.dumps(d) for d in docs)


def proxy_template() -> str:
    configmap = load_all(DEPLOY / "base" / "auth-proxy-configmap.yaml")[0]
    return configmap["data"]["default.conf.template"]


def test_proxy_forwards_to_the_pod_local_torchserve_ports():
    template = proxy_template()
    internal = container_config.K8S_INTERNAL
    assert f"127.0.0.1:{internal['inference']}" in template
    assert f"127.0.0.1:{internal['management']}" in template
    assert f"grpc://127.0.0.1:{internal['grpc_inference']}" in template
    listens = sorted(int(p) for p in re.findall(r"listen (\d+)(?: http2)?;", template))
    proxy = next(c for c in containers(kustomize(VARIANTS["cpu"])) if c["name"] == "auth-proxy")
    assert listens == sorted(p["containerPort"] for p in proxy["ports"])
    assert not set(listens) & set(internal.values())


def test_proxy_checks_a_token_on_every_forwarding_location():
    template = proxy_template()
    servers = re.split(r"\n\s*server \{", template)[1:]
    assert len(servers) == 3
    for server in servers:
        for location in re.findall(r"location / \{(.*?)\n        \}", server, flags=re.S):
            assert re.search(
                r'if \(\$http_authorization != "Bearer \$\{(INFERENCE|MANAGEMENT)_TOKEN\}"\)', location
            )
            assert "return 401" in location
    # The envsubst step fills in only these; nginx's own $variables must stay as they are.
    assert set(re.findall(r"\$\{(\w+)\}", template)) == {"INFERENCE_TOKEN", "MANAGEMENT_TOKEN"}
    assert 'proxy_set_header Authorization ""' in template


def test_proxy_body_limit_matches_torchserve():
    props = container_config.read_properties(REPO / "config.properties")
    limit_mib = int(re.search(r"client_max_body_size (\d+)m;", proxy_template()).group(1))
    assert limit_mib * 1024 * 1024 == int(props["max_request_size"])


def test_gpu_overlay_only_adds_gpu_resources_scheduling_and_image():
    cpu, gpu = kustomize(VARIANTS["cpu"]), kustomize(VARIANTS["gpu"])
    cpu_pod = by_kind(cpu, "Deployment")["spec"]["template"]["spec"]
    gpu_pod = by_kind(gpu, "Deployment")["spec"]["template"]["spec"]
    torchserve = gpu_pod["containers"][0]
    assert torchserve["name"] == "torchserve" and torchserve["image"].endswith("-gpu")
    assert torchserve["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_pod["tolerations"])
    for key in ("args", "startupProbe", "readinessProbe", "livenessProbe", "volumeMounts"):
        assert torchserve[key] == cpu_pod["containers"][0][key]
    assert gpu_pod["containers"][1] == cpu_pod["containers"][1]  # the proxy is the same
    metric = by_kind(gpu, "HorizontalPodAutoscaler")["spec"]["metrics"][0]
    assert metric["type"] == "Pods"


# --- review findings (docs/deployment.md, "Kubernetes") ---------------------------------------


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * units.get(unit, 1)


SOAK_RSS_BYTES = 3.3e9  # frontend + 3 workers after the 10-minute soak (docs/reliability.md)


def test_torchserve_memory_limit_leaves_room_over_the_soak(variant):
    name, docs = variant
    (torchserve, _) = containers(docs)
    for kind in ("requests", "limits"):
        assert _bytes(torchserve["resources"][kind]["memory"]) >= 1.2 * SOAK_RSS_BYTES, (name, kind)
    for path in KSERVE_FILES:
        (doc,) = load_all(path)
        assert (
            _bytes(doc["spec"]["predictor"]["model"]["resources"]["limits"]["memory"]) >= 1.2 * SOAK_RSS_BYTES
        )


def test_the_autoscaler_alone_sets_the_replica_count(variant):
    _, docs = variant
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == by_kind(docs, "Deployment")["metadata"]["name"]
    assert "replicas" not in by_kind(docs, "Deployment")["spec"]


def test_torchserve_outlives_the_proxy_and_the_endpoint_removal(variant):
    _, docs = variant
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    sleeps = {
        c["name"]: int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        for c in pod["containers"]
        if c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    }
    assert sleeps["torchserve"] > sleeps["auth-proxy"] >= 5, sleeps
    assert pod["terminationGracePeriodSeconds"] >= sleeps["torchserve"] + 20


def test_pdb_evicts_one_pod_at_a_time(variant):
    _, docs = variant
    spec = by_kind(docs, "PodDisruptionBudget")["spec"]
    assert spec == {**spec, "maxUnavailable": 1} and "minAvailable" not in spec


def test_gpu_overlay_schedules_on_the_gpu_resource_not_a_discovery_label():
    pod = by_kind(kustomize(VARIANTS["gpu"]), "Deployment")["spec"]["template"]["spec"]
    assert not any("nvidia.com" in k for k in pod.get("nodeSelector", {}))
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("path", KSERVE_FILES, ids=lambda p: p.name)
def test_inferenceservice_names_its_own_services_and_pins_serverless(path):
    (doc,) = load_all(path)
    base_services = {d["metadata"]["name"] for d in kustomize(VARIANTS["cpu"]) if d["kind"] == "Service"}
    # KServe creates <name>, <name>-predictor, ... Services: none may be a Service of deploy/base.
    assert not {doc["metadata"]["name"], f"{doc['metadata']['name']}-predictor"} & base_services
    if doc["spec"]["predictor"].get("scaleMetric") in ("concurrency", "rps"):
        assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
