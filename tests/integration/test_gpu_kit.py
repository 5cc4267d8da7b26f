"""The GPU kit (``make gpu-kit``) proven on this machine: a copy of the working tree as it travels
(tracked and untracked-not-ignored files, no build/ or model_store/) plus the kit, the system Java
hidden (PATH without it, JAVA_HOME unset), scripts/bench/gpu_check.sh run on its CPU side. It must
start TorchServe from what it unpacked, serve, and pass its checks; the kit must stay under 50 MiB.

Builds the kit first when it is missing or older than what goes into it (about 3 minutes here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from scripts.bench.gpu_kit import GPU_CONFIG, KIT, LIMIT_BYTES, pack
from scripts.paths import REPO

JAVA_TOOLS = {"java", "javac", "jar", "jlink", "jdeps", "jcmd", "jps", "jshell", "keytool"}


def _kit_is_stale() -> bool:
    manifest = KIT / "kit.json"
    if not manifest.exists():
        return True
    inputs = [GPU_CONFIG, *(REPO / "model_store").glob("face_detector-*.mar")]
    return any(p.stat().st_mtime > manifest.stat().st_mtime for p in inputs)


@pytest.fixture(scope="module")
def kit() -> Path:
    if _kit_is_stale():
        pack(KIT)
    return KIT


def _hidden_java_path(folder: Path) -> str:
    """PATH with this venv and every /usr/bin tool except Java's (/bin is /usr/bin here)."""
    folder.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name not in JAVA_TOOLS and not tool.name.startswith(("java", "jar")):
            (folder / tool.name).symlink_to(tool)
    return f"{Path(sys.executable).parent}:{folder}"


def test_kit_is_under_the_limit(kit):
    manifest = json.loads((kit / "kit.json").read_text())
    on_disk = sum(p.stat().st_size for p in kit.iterdir() if p.name != "kit.json")
    assert manifest["total_bytes"] == on_disk < LIMIT_BYTES


def test_gpu_check_runs_from_the_kit_without_system_java(kit, tmp_path):
    repo = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    assert not (repo / "model_store").exists() and not (repo / "build").exists()
    shutil.copytree(kit, repo / "build" / "gpu-kit")
    path = _hidden_java_path(tmp_path / "bin")
    assert shutil.which("java", path=path) is None
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    out = tmp_path / "out"
    env |= {"PATH": path, "PYTHON": sys.executable, "OUT": str(out), "KIT_DEST": str(tmp_path / "kit"),
            "GPU_CHECK_TESTS": "0", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    run = subprocess.run(
        ["bash", "scripts/bench/gpu_check.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=420
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert f"torchserve from {tmp_path / 'kit'}" in log and 'openjdk version "17' in log
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["passed"] and summary["worker_devices"] == ["cpu"]
    served = json.loads((out / "gpu_served.json").read_text())
    assert all(s["errors"] == 0 and s["throughput_rps"] > 0 for s in served["steps"])
    assert json.loads((out / "jpegs.json").read_text())["all_ok"]
    assert (repo / "build" / "retinaface_mobile0.25.pt").exists()  # taken out of the archive


def test_sample_stand_ins_give_the_same_pixels(kit, tmp_path):
    """Where skimage and matplotlib are missing (the GPU machine), the kit's stand-ins serve the
    same images from files."""
    with tarfile.open(kit / "samples.tar") as archive:
        archive.extractall(tmp_path, filter="tar")
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from skimage import data; from matplotlib import cbook;"
        "assert data.__file__.startswith(sys.argv[1]);"
        "np.save(sys.argv[2], data.astronaut());"
        "sys.stdout.buffer.write(cbook.get_sample_data('grace_hopper.jpg').read())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pyshim"), str(tmp_path / "a.npy")],
        cwd=REPO, capture_output=True, check=True,
    )  # fmt: skip
    from scripts.samples import astronaut, grace_hopper_bytes

    assert np.array_equal(np.load(tmp_path / "a.npy"), astronaut())
    assert run.stdout == grace_hopper_bytes()
