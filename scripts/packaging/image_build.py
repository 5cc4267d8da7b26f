"""Build a container image of the Dockerfile with this machine's pip sources; report size and time.

pip inside ``docker build`` knows nothing of the host's pip configuration: local index folders
(``file://`` URLs, ``find-links`` directories), the CA bundle of a TLS-intercepting proxy. This tool
reads ``pip config list`` (files and ``PIP_*`` variables), serves every local folder it names over
HTTP on 127.0.0.1 for the duration of the build (the build runs with ``--network host``), and passes
the rewritten sources as a pip configuration file (BuildKit secret ``pip_conf``) and the CA bundle as
the secret ``pip_cert``. Secrets never land in a layer nor in the cache key, so the served ports,
which change from build to build, do not defeat the layer cache. Nothing of this machine is written
into the Dockerfile or the repository.

    python -m scripts.packaging.image_build                         face-detection:cpu
    python -m scripts.packaging.image_build --variant gpu           face-detection:gpu
    python -m scripts.packaging.image_build --target kserve         face-detection-kserve:cpu
    python -m scripts.packaging.image_build --base-image face-detection-base:bookworm --torch-index-url pip

The report (tag, size in bytes and MB, build seconds) is printed and written to
``build/image-<name>-<variant>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from scripts.paths import REPO

__all__ = ["BuildReport", "LocalSources", "build", "docker_command", "main", "pip_settings"]

DEFAULT_BASE = "python:3.11-slim-bookworm"
IMAGE_NAMES = {"runtime": "face-detection", "kserve": "face-detection-kserve"}


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """``pip config list`` as ``{key: value}`` with the scope dropped (``global.cert`` -> ``cert``);
    environment variables (``:env:.x``) win over files, as in pip."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, eq, value = line.partition("=")
        if not eq:
            continue
        scope, _, name = key.rpartition(".")
        (env if scope == ":env:" else files)[name] = value.strip().strip("'\"")
    return {**files, **env}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


class LocalSources:
    """Local folders named by pip sources, each served read-only on its own 127.0.0.1 port."""

    def __init__(self) -> None:
        self._servers: dict[Path, ThreadingHTTPServer] = {}

    def url(self, source: str, index: bool = False) -> str:
        """``source`` (URL or path) as a URL the build can fetch: local ones over loopback HTTP.
        An index folder (``.../simple``) is served from its parent, since its pages link files
        beside it (``../../files/x.whl``)."""
        parsed = urlparse(source)
        if parsed.scheme not in ("", "file"):
            return source
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else source).resolve()
        root = path.parent if index or not path.is_dir() else path
        server = self._servers.get(root)
        if server is None:
            handler = functools.partial(_QuietHandler, directory=str(root))
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers[root] = server
        rest = "" if path == root else path.relative_to(root).as_posix()
        return f"http://127.0.0.1:{server.server_address[1]}/{rest}".rstrip("/") + "/"

    @property
    def served(self) -> bool:
        return bool(self._servers)

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()


def docker_command() -> str:
    """A docker client that can run BuildKit builds with secrets: $DOCKER, else ``docker`` when it
    has buildx or is a client whose own ``build`` speaks BuildKit (DOCKER_BUILDKIT=1), else
    Debian's /usr/bin/docker."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    docker = shutil.which("docker") or "docker"
    has_buildx = (
        subprocess.run([docker, "buildx", "version"], capture_output=True, check=False).returncode == 0
    )
    version = subprocess.run(
        [docker, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    legacy_buildkit = version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23
    if has_buildx or legacy_buildkit or not Path("/usr/bin/docker").exists():
        return docker
    return "/usr/bin/docker"


class BuildReport(dict):
    """``{"tag", "target", "variant", "base_image", "size_bytes", "size_mb", "build_seconds"}``."""


def build(
    target: str = "runtime",
    variant: str = "cpu",
    base_image: str = DEFAULT_BASE,
    torch_index_url: str = "",
    tag: str | None = None,
    version: str = "dev",
    host_pip: bool = True,
) -> BuildReport:
    """``docker build`` of ``target``; raises CalledProcessError when the build fails."""
    tag = tag or f"{IMAGE_NAMES[target]}:{variant}"
    docker = docker_command()
    args = [docker, "build", "--network", "host", "--target", target, "--tag", tag]
    build_args = {"PYTHON_IMAGE": base_image, "VARIANT": variant, "VERSION": version}
    if torch_index_url:
        build_args["TORCH_INDEX_URL"] = torch_index_url
    sources = LocalSources()
    conf_dir = tempfile.TemporaryDirectory(prefix="pip-conf-")
    try:
        if host_pip:
            settings = pip_settings()
            lines = ["[global]"]
            if settings.get("index-url"):
                lines.append(f"index-url = {sources.url(settings['index-url'], index=True)}")
            for key in ("extra-index-url", "find-links"):
                if settings.get(key):
                    urls = [sources.url(s, index=key.endswith("index-url")) for s in settings[key].split()]
                    lines.append(f"{key} = {' '.join(urls)}")
            trusted = settings.get("trusted-host", "").split() + (["127.0.0.1"] if sources.served else [])
            if trusted:
                lines.append(f"trusted-host = {' '.join(trusted)}")  # plain HTTP on loopback
            if len(lines) > 1:
                conf = Path(conf_dir.name) / "pip.conf"
                conf.write_text("\n".join(lines) + "\n")
                print(conf.read_text(), end="", flush=True)
                args += ["--secret", f"id=pip_conf,src={conf}"]
            cert = settings.get("cert") or os.environ.get("PIP_CERT")
            if cert and Path(cert).is_file():
                args += ["--secret", f"id=pip_cert,src={cert}"]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        args.append(str(REPO))
        print("+", " ".join(args), flush=True)
        start = time.monotonic()
        subprocess.run(args, check=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        seconds = time.monotonic() - start
    finally:
        sources.close()
        conf_dir.cleanup()
    size = int(subprocess.run([docker, "image", "inspect", "--format", "{{.Size}}", tag],
                              capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    return BuildReport(tag=tag, target=target, variant=variant, base_image=base_image, size_bytes=size,
                       size_mb=round(size / 1e6), build_seconds=round(seconds, 1))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.image_build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--target", choices=sorted(IMAGE_NAMES), default="runtime")
    parser.add_argument("--variant", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--base-image", default=DEFAULT_BASE)
    parser.add_argument("--torch-index-url", default="",
                        help="index for torch/torchvision; 'pip' = this machine's pip sources "
                        "(default: PyTorch's CPU index for cpu, PyPI for gpu)")  # fmt: skip
    parser.add_argument("--tag", help="default: face-detection[-kserve]:<variant>")
    parser.add_argument("--version", default="dev", help="image label org.opencontainers.image.version")
    parser.add_argument("--no-host-pip", action="store_true", help="ignore this machine's pip configuration")
    ns = parser.parse_args(argv)
    try:
        report = build(ns.target, ns.variant, ns.base_image, ns.torch_index_url, ns.tag, ns.version,
                       host_pip=not ns.no_host_pip)  # fmt: skip
    except subprocess.CalledProcessError as err:
        sys.exit(f"docker build failed (exit {err.returncode})")
    out = REPO / "build" / f"image-{IMAGE_NAMES[ns.target]}-{ns.variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    size, seconds = report["size_mb"], report["build_seconds"]
    print(f"{report['tag']}: {size} MB, built in {seconds:.0f} s ({out.relative_to(REPO)})")


if __name__ == "__main__":
    main()
