"""The KServe wrapper's settings (deploy/kserve/wrapper/settings.py) read from the config that
``container_config render --target kserve`` writes: the models of model_snapshot, TorchServe's
address as reached from inside the pod, and the refusals with the fix in the message."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.paths import REPO
from tests.support.dockerfile import parse_stages

WRAPPER = REPO / "deploy" / "kserve" / "wrapper"


def load_settings_module():
    spec = importlib.util.spec_from_file_location("kserve_wrapper_settings", WRAPPER / "settings.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


settings = load_settings_module()


@pytest.fixture
def kserve_config(tmp_path):
    return container_config.render("kserve", tmp_path / "config" / "config.properties")


def test_reads_the_rendered_kserve_config(kserve_config):
    read = settings.read_settings(kserve_config, env={})
    snapshot = json.loads(read_properties(kserve_config)["model_snapshot"])
    assert read.models == tuple(snapshot["models"]) and read.models
    assert read.predictor_host == "127.0.0.1:8085"  # 0.0.0.0:8085 is where it listens, not a destination
    assert read.management_url == "http://127.0.0.1:8085"
    assert read.protocol == "v1"


def test_config_path_comes_from_the_environment(kserve_config):
    assert settings.read_settings(env={"CONFIG_PATH": str(kserve_config)}).models


def test_default_path_is_the_config_the_kserve_image_starts_torchserve_with():
    command = parse_stages()["kserve"].exec_form("CMD")
    assert f"--ts-config={settings.DEFAULT_CONFIG_PATH}" in command


@pytest.mark.parametrize("snapshot", ["", "model_snapshot={}", 'model_snapshot={"models": {}}'])
def test_a_config_without_models_names_the_render_command(tmp_path, snapshot):
    config = tmp_path / "config.properties"
    config.write_text(f"inference_address=http://0.0.0.0:8085\n{snapshot}\n")
    with pytest.raises(ValueError, match="render --target kserve"):
        settings.read_settings(config, env={})


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2", "V1"])
def test_protocols_other_than_v1_are_refused(kserve_config, protocol):
    with pytest.raises(ValueError, match="protocolVersion: v1"):
        settings.read_settings(kserve_config, env={"PROTOCOL_VERSION": protocol})


def test_the_inferenceservices_use_the_protocol_the_wrapper_serves():
    import yaml

    for path in sorted((REPO / "deploy" / "kserve").glob("inferenceservice*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["spec"]["predictor"]["model"]["protocolVersion"] in settings.PROTOCOLS, path.name
