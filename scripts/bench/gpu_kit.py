"""The GPU kit: everything a bare GPU machine lacks to serve and check this project, in one folder.

The lent GPU machine has Python, torch, torchvision and the usual wheels, but no Java, no TorchServe,
no skimage or matplotlib (the sample images), and nothing can be fetched there; only the working
tree and a few carried paths (64 MiB in all) travel. ``pack`` builds, under 50 MiB:

    jre.tar.xz          a jlink'ed Java 17 runtime (the modules TorchServe's frontend uses), stripped
    torchserve.tar.xz   the ``ts`` Python package without its jar + the jar's entries (a jar is a zip:
                        its deflated entries barely shrink, so they travel as plain files under xz)
    models.tar          model_store/ as shipped (CPU configs) and model_store_gpu/face_detector-2.0.mar,
                        built with model_configs/gpu/face_detector-2.0.yaml merged over the CPU config
    samples.tar         the public test images as files + stand-ins for skimage.data / matplotlib.cbook
    kit.json            what is inside, sizes, versions

``unpack`` (run there by scripts/bench/gpu_check.sh) extracts it, rebuilds the jar, puts a
``torchserve`` command on PATH, extracts the weights from the archives into build/, and prints the
environment (JAVA_HOME, PATH, PYTHONPATH) for the shell to ``eval``.

Usage: python -m scripts.bench.gpu_kit pack [--out build/gpu-kit]
       eval "$(python -m scripts.bench.gpu_kit unpack --kit build/gpu-kit --dest /tmp/gpu-kit)"
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

from scripts.packaging.build_archives import ARCHIVES, BUILD, ArchiveSpec, build
from scripts.paths import REPO

__all__ = ["GPU_CONFIG", "JAVA_MODULES", "KIT", "LIMIT_BYTES", "main", "merged_config", "pack", "unpack"]

KIT = BUILD / "gpu-kit"
LIMIT_BYTES = 50 << 20
GPU_CONFIG = REPO / "model_configs" / "gpu" / "face_detector-2.0.yaml"
# TorchServe 0.12.0's frontend (Netty, gRPC, log4j, gson, its metrics); jdeps cannot walk the fat jar
# (test-only modules inside), so the list is what was needed to start it, serve and stop here.
JAVA_MODULES = (
    "java.base", "java.logging", "java.management", "java.naming", "java.scripting", "java.sql",
    "java.xml", "java.desktop", "java.prefs", "java.security.jgss", "java.instrument", "java.net.http",
    "jdk.unsupported", "jdk.crypto.ec", "jdk.crypto.cryptoki", "jdk.zipfs", "jdk.management", "jdk.net",
    "jdk.sctp", "jdk.naming.dns",
)  # fmt: skip
SAMPLES = ("astronaut", "camera", "coffee", "chelsea", "rocket")
SHIMS = {
    "skimage/__init__.py": '"""Stand-in for scikit-image on the GPU kit: the sample images only."""\n',
    "skimage/data.py": (
        '"""skimage.data\'s images from the files the GPU kit carries (same pixels)."""\n'
        "from pathlib import Path\n\nimport numpy as np\nfrom PIL import Image\n\n"
        "_DIR = Path(__file__).resolve().parents[2] / 'samples'\n\n\n"
        "def _load(name):\n    return np.asarray(Image.open(_DIR / f'{name}.png'))\n\n\n"
        + "".join(f"def {name}():\n    return _load('{name}')\n\n\n" for name in SAMPLES)
    ),
    "matplotlib/__init__.py": '"""Stand-in for matplotlib on the GPU kit: cbook.get_sample_data only."""\n',
    "matplotlib/cbook.py": (
        "from pathlib import Path\n\n_DIR = Path(__file__).resolve().parents[2] / 'samples'\n\n\n"
        "def get_sample_data(name):\n    return open(_DIR / name, 'rb')\n"
    ),
}


def merged_config(base: Path, overrides: Path) -> dict:
    """``overrides`` over ``base``: top-level keys replaced, ``handler:`` merged key by key."""
    config = yaml.safe_load(base.read_text())
    extra = yaml.safe_load(overrides.read_text()) or {}
    handler = {**config.get("handler", {}), **extra.pop("handler", {})}
    return {**config, **extra, "handler": handler}


def _java17_home() -> Path:
    candidates = [os.environ.get("JAVA_HOME", ""), *sorted(map(str, Path("/usr/lib/jvm").glob("*17*")))]
    for home in filter(None, candidates):
        release = Path(home) / "release"
        if (Path(home) / "jmods").is_dir() and release.exists() and 'JAVA_VERSION="17' in release.read_text():
            return Path(home)
    raise SystemExit(
        "no JDK 17 with jmods/ found (JAVA_HOME or /usr/lib/jvm): install openjdk-17-jdk-headless"
    )


def _runtime(stage: Path) -> None:
    jdk = _java17_home()
    subprocess.run(
        [str(jdk / "bin" / "jlink"), "--add-modules", ",".join(JAVA_MODULES), "--strip-debug",
         "--no-header-files", "--no-man-pages", "--compress=0", "--output", str(stage / "jre")],
        check=True,
    )  # fmt: skip
    # --compress=0: the modules file then compresses far better under xz than jlink's own zip.
    if shutil.which("strip"):
        libraries = [str(p) for p in (stage / "jre").rglob("*.so")]
        subprocess.run(["strip", "--strip-unneeded", *libraries], check=True)


def _torchserve(stage: Path) -> str:
    spec = importlib.util.find_spec("ts")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchserve is not installed here: make install")
    source = Path(spec.submodule_search_locations[0])
    jar = source / "frontend" / "model-server.jar"
    shutil.copytree(source, stage / "python" / "ts", ignore=shutil.ignore_patterns("__pycache__", "*.jar"))
    with zipfile.ZipFile(jar) as archive:
        archive.extractall(stage / "jar")
        (stage / "jar-order.txt").write_text("\n".join(archive.namelist()) + "\n")  # entry order kept
    return (source / "version.txt").read_text().strip()


def _models(stage: Path) -> None:
    store = stage / "model_store"
    store.mkdir()
    for key in ("face_detector-2.0", "face_detector-1.0"):
        shutil.copy2(REPO / "model_store" / ARCHIVES[key].filename, store)
    base = ARCHIVES["face_detector-2.0"]
    config = stage / "face_detector-2.0-gpu.yaml"
    config.write_text(yaml.safe_dump(merged_config(base.config, GPU_CONFIG), sort_keys=False))
    spec = ArchiveSpec(
        base.name, base.version, base.handler, base.weights, config, base.description + " (GPU)"
    )
    gpu_store = stage / "model_store_gpu"
    gpu_store.mkdir()
    build(spec, gpu_store)  # validates the merged handler section as a worker would
    config.unlink()


def _samples(stage: Path) -> None:
    from PIL import Image
    from skimage import data

    folder = stage / "samples"
    folder.mkdir()
    for name in SAMPLES:
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png", optimize=True)
    from scripts.samples import grace_hopper_bytes

    (folder / "grace_hopper.jpg").write_bytes(grace_hopper_bytes())
    for path, text in SHIMS.items():
        (stage / "pyshim" / path).parent.mkdir(parents=True, exist_ok=True)
        (stage / "pyshim" / path).write_text(text)


def _xz(stage: Path, names: list[str], out: Path) -> None:
    """tar | xz -T0: multi-threaded, far quicker than Python's single-threaded lzma here."""
    with open(out, "wb") as sink:
        tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", *names], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-T0", "-6", "-c"], stdin=tar.stdout, stdout=sink, check=True)
        if tar.wait() != 0:
            raise SystemExit(f"tar failed for {names}")


def pack(out: Path = KIT) -> dict:
    """Build the kit into ``out`` (replaced); returns its manifest. Fails above LIMIT_BYTES."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as tmp:
        stage = Path(tmp)
        _runtime(stage)
        ts_version = _torchserve(stage)
        _models(stage)
        _samples(stage)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        _xz(stage, ["jre"], out / "jre.tar.xz")
        _xz(stage, ["python", "jar", "jar-order.txt"], out / "torchserve.tar.xz")
        for name, folders in (
            ("models.tar", ["model_store", "model_store_gpu"]),
            ("samples.tar", ["samples", "pyshim"]),
        ):
            subprocess.run(["tar", "-C", str(stage), "-cf", str(out / name), *folders], check=True)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    manifest = {
        "torchserve": ts_version,
        "java": "17 (jlink: " + ", ".join(JAVA_MODULES) + ")",
        "gpu_config": str(GPU_CONFIG.relative_to(REPO)),
        "bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "limit_bytes": LIMIT_BYTES,
        "pack_s": round(time.perf_counter() - started, 1),
    }
    (out / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if manifest["total_bytes"] > LIMIT_BYTES:
        raise SystemExit(f"kit is {manifest['total_bytes']:,} bytes, over {LIMIT_BYTES:,}: {sizes}")
    return manifest


def _rebuild_jar(dest: Path) -> Path:
    jar = dest / "python" / "ts" / "frontend" / "model-server.jar"
    names = (dest / "jar-order.txt").read_text().split("\n")
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_STORED) as archive:  # stored: quick, size is no matter here
        for name in filter(None, names):
            path = dest / "jar" / name
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            elif path.is_file():
                archive.write(path, name)
    shutil.rmtree(dest / "jar")
    return jar


def _weights(models: Path) -> list[str]:
    """The weights inside the shipped archives -> build/, where the tests and benchmarks read them."""
    BUILD.mkdir(exist_ok=True)
    written = []
    for mar in sorted(models.glob("*.mar")):
        with zipfile.ZipFile(mar) as archive:
            for name in archive.namelist():
                if name.endswith((".pt", ".onnx")) and "/" not in name and not (BUILD / name).exists():
                    (BUILD / name).write_bytes(archive.read(name))
                    written.append(name)
    return written


def unpack(kit: Path, dest: Path) -> dict[str, str]:
    """Extract the kit into ``dest``; returns the environment to run TorchServe and the checks."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("jre.tar.xz", "torchserve.tar.xz", "models.tar", "samples.tar"):
        with tarfile.open(kit / name) as archive:
            archive.extractall(dest, filter="tar")
    _rebuild_jar(dest)
    _weights(dest / "model_store")
    bin_dir = dest / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "torchserve"
    shim.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from ts.model_server import start; start()" "$@"\n'
    )
    shim.chmod(0o755)
    paths = [str(REPO), str(dest / "python")]
    if importlib.util.find_spec("skimage") is None or importlib.util.find_spec("matplotlib") is None:
        paths.append(str(dest / "pyshim"))
    return {
        "JAVA_HOME": str(dest / "jre"),
        "PATH": f"{bin_dir}:{dest / 'jre' / 'bin'}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": ":".join(paths),
        "KIT_MODELS": str(dest / "model_store"),
        "KIT_GPU_MODELS": str(dest / "model_store_gpu"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.gpu_kit", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="build the kit (here, with Java 17 and torchserve installed)")
    packer.add_argument("--out", type=Path, default=KIT)
    unpacker = commands.add_parser("unpack", help="extract it; prints `export` lines for eval")
    unpacker.add_argument("--kit", type=Path, default=KIT)
    unpacker.add_argument("--dest", type=Path, default=Path(tempfile.gettempdir()) / "gpu-kit")
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.out)
        print(json.dumps(manifest, indent=2))
        return
    env = unpack(args.kit, args.dest)
    out = io.StringIO()
    for key, value in env.items():
        out.write(f"export {key}='{value}'\n")
    sys.stdout.write(out.getvalue())


if __name__ == "__main__":
    main()
