"""Every path-valued property of every rendered container config is absolute: TorchServe resolves a
relative one against its working directory, an empty folder in a container (the server test that
proves it: tests/integration/test_container_configs.py)."""

from __future__ import annotations

import pytest

from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.paths import REPO


@pytest.mark.parametrize("target", container_config.TARGETS)
def test_every_path_in_a_rendered_config_is_absolute(target, tmp_path):
    props = read_properties(container_config.render(target, tmp_path / "config.properties"))
    paths = {k: v for k, v in props.items() if k in container_config.PATH_KEYS}
    assert {"model_store", "metrics_config"} <= paths.keys()
    assert {k: v for k, v in paths.items() if not v.startswith("/")} == {}


@pytest.mark.parametrize("target", container_config.TARGETS)
def test_metrics_declaration_is_the_one_the_images_copy(target, tmp_path):
    props = read_properties(container_config.render(target, tmp_path / "config.properties"))
    source = read_properties(REPO / "config.properties")["metrics_config"]
    assert props["metrics_config"] == f"{container_config.APP_DIR}/{source}"
    assert (REPO / source).is_file()


@pytest.mark.parametrize("key", container_config.PATH_KEYS)
@pytest.mark.parametrize("target", container_config.TARGETS)
def test_a_relative_path_of_the_source_is_anchored_in_the_app_dir(key, target, tmp_path):
    source = tmp_path / "source.properties"
    source.write_text(
        (REPO / "config.properties").read_text() + f"\n{key}=some/dir/file.txt\nkeystore_pass=x/y\n"
    )
    props = read_properties(container_config.render(target, tmp_path / "out.properties", source))
    overridden = container_config.target_settings(target, read_properties(source))
    expected = overridden.get(key, f"{container_config.APP_DIR}/some/dir/file.txt")
    assert props[key] == expected and props[key].startswith("/")
    assert props["keystore_pass"] == "x/y"  # not a path: left alone


@pytest.mark.parametrize("target", container_config.TARGETS)
def test_an_absolute_path_of_the_source_is_kept(target, tmp_path):
    source = tmp_path / "source.properties"
    source.write_text((REPO / "config.properties").read_text() + "\ncertificate_file=/etc/ssl/ts.pem\n")
    props = read_properties(container_config.render(target, tmp_path / "out.properties", source))
    assert props["certificate_file"] == "/etc/ssl/ts.pem"
