"""The Kubernetes auth proxy of deploy/base run for real: Debian's nginx with the pod's template.

The template is read from the ConfigMap the Deployment mounts on /etc/nginx/templates, and rendered
the way the nginx image renders it at start (its 20-envsubst-on-templates.sh: ``envsubst`` with the
names of every variable defined in the container's environment, so nginx's own ``$variables`` stay).
Only the ports move: ``listen <pod port>`` -> ``listen 127.0.0.1:<free port>`` and TorchServe's
internal ports (container_config.K8S_INTERNAL) -> the ports of the TorchServe under test. Every port
the template names must be one the manifests name, so a template and manifest that disagree fail here.

    proxy = start_proxy(tmp_path, upstreams={18080: 41234, ...}, tokens={"INFERENCE_TOKEN": "..."})
    requests.get(f"{proxy.url('http')}/healthz")
    proxy.stop()
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from scripts.paths import REPO
from scripts.server import free_ports

__all__ = [
    "CONFIGMAP",
    "DEPLOYMENT",
    "Proxy",
    "main_config",
    "proxy_container",
    "proxy_ports",
    "render_template",
    "start_proxy",
    "template",
]

CONFIGMAP = REPO / "deploy" / "base" / "auth-proxy-configmap.yaml"
DEPLOYMENT = REPO / "deploy" / "base" / "deployment.yaml"
TEMPLATE_DIR = "/etc/nginx/templates"  # where the nginx image looks for *.template


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def proxy_container() -> tuple[dict, dict]:
    """(the auth-proxy container, the pod spec) of the Deployment."""
    pod = next(d for d in _docs(DEPLOYMENT) if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "auth-proxy"), pod


def proxy_ports() -> dict[str, int]:
    """Port name -> containerPort of the auth-proxy container (http, management, grpc)."""
    container, _ = proxy_container()
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def template() -> tuple[str, str]:
    """(file name, text) of the template the pod renders: the ConfigMap volume mounted on
    /etc/nginx/templates, checked to be that ConfigMap."""
    container, pod = proxy_container()
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == TEMPLATE_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = next(d for d in _docs(CONFIGMAP) if d["kind"] == "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"], "the pod mounts another ConfigMap"
    templates = {k: v for k, v in configmap["data"].items() if k.endswith(".template")}
    assert len(templates) == 1, f"expected one template, found {sorted(templates)}"
    return next(iter(templates.items()))


def render_template(text: str, env: dict[str, str]) -> str:
    """``envsubst`` as the nginx image runs it: every name defined in ``env`` is substituted."""
    defined = " ".join(f"${{{name}}}" for name in sorted(env))
    done = subprocess.run(
        ["envsubst", defined], input=text, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def move_ports(conf: str, listen: dict[int, int], upstream: dict[int, int]) -> str:
    """Pod ports -> loopback test ports; a port the maps do not name raises (template drift)."""

    def _listen(m: re.Match) -> str:
        port = int(m.group(1))
        if port not in listen:
            raise AssertionError(
                f"the template listens on {port}, which the auth-proxy container does not declare"
            )
        return f"listen 127.0.0.1:{listen[port]}"

    def _upstream(m: re.Match) -> str:
        port = int(m.group(1))
        if port not in upstream:
            raise AssertionError(
                f"the template forwards to 127.0.0.1:{port}, not a TorchServe port of the pod"
            )
        return f"127.0.0.1:{upstream[port]}"

    conf = re.sub(r"127\.0\.0\.1:(\d+)", _upstream, conf)  # first: the moved listens name 127.0.0.1 too
    return re.sub(r"listen\s+(\d+)", _listen, conf)


def main_config(prefix: Path, conf_d: Path) -> str:
    """The nginx-unprivileged image's nginx.conf, reduced to what matters here, with its /tmp paths
    under ``prefix``: the template is included inside ``http {}`` from conf.d/ as in the image."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers need the temp folders below
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\nerror_log {prefix}/error.log notice;\npid {prefix}/nginx.pid;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"{temp}\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {prefix}/access.log;\n"
        "    sendfile on;\n    keepalive_timeout 65;\n"
        f"    include {conf_d}/*.conf;\n"
        "}\n"
    )


@dataclass
class Proxy:
    prefix: Path
    ports: dict[str, int]  # port name (http, management, grpc) -> loopback port of this proxy
    process: subprocess.Popen

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise FileNotFoundError("nginx not found: apt-get install -y nginx (make test-tools installs it)")
    return found


def start_proxy(tmp: Path, upstreams: dict[int, int], tokens: dict[str, str], timeout: float = 20.0) -> Proxy:
    """Render the pod's template with ``tokens`` (the Secret's keys as the container's env), move its
    ports (``upstreams``: TorchServe's pod-internal port -> its port under test) and start nginx."""
    prefix = tmp / "nginx"
    conf_d = prefix / "conf.d"
    conf_d.mkdir(parents=True)
    name, text = template()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", **tokens}
    pod_ports = proxy_ports()
    fresh = dict(zip(sorted(pod_ports.values()), free_ports(len(pod_ports))))
    conf = move_ports(render_template(text, env), fresh, upstreams)
    (conf_d / name.removesuffix(".template")).write_text(conf)
    (prefix / "nginx.conf").write_text(main_config(prefix, conf_d))
    nginx = nginx_binary()
    base = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    subprocess.run([*base, "-t", "-q"], check=True, capture_output=True, text=True)
    process = subprocess.Popen(
        [*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    proxy = Proxy(prefix, {n: fresh[p] for n, p in pod_ports.items()}, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {process.stderr.read().decode()}")
        try:
            requests.get(f"{proxy.url('http')}/healthz", timeout=2)
            return proxy
        except requests.ConnectionError:
            time.sleep(0.2)
    proxy.stop()
    raise TimeoutError(f"nginx did not answer within {timeout:.0f}s\n{proxy.log()}")
