"""scripts/config.py: properties files, endpoints with environment overrides, token failures, keys."""

from __future__ import annotations

import pytest

from scripts.config import DEFAULT_CONFIG, Endpoints, TokenStore, is_token_failure, read_properties


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("# only a comment\n! another\n\n", {}),
        ("a=1\n b = 2 \n", {"a": "1", "b": "2"}),
        ("url=http://x:1/?q=a=b\n", {"url": "http://x:1/?q=a=b"}),  # split at the first '=' only
        ("no equals sign\nk=v\n", {"k": "v"}),
        ("k=1\nk=2\n", {"k": "2"}),  # the last one wins, as in java.util.Properties
    ],
    ids=["empty", "comments", "spaces", "equals in value", "line without =", "repeated key"],
)
def test_read_properties_table(tmp_path, text, expected):
    path = tmp_path / "config.properties"
    path.write_text(text)
    assert read_properties(path) == expected


def test_the_shipped_config_names_every_endpoint():
    props = read_properties(DEFAULT_CONFIG)
    assert {"inference_address", "management_address", "metrics_address"} <= set(props)


@pytest.mark.parametrize(
    ("props", "env", "expected"),
    [
        (
            {},
            {},
            ("http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://127.0.0.1:8082", "127.0.0.1:7070"),
        ),
        (
            {"inference_address": "http://h:1", "grpc_inference_address": "h", "grpc_inference_port": "9"},
            {},
            ("http://h:1", "http://127.0.0.1:8081", "http://127.0.0.1:8082", "h:9"),
        ),
        (
            {"inference_address": "http://h:1"},
            {"TS_INFERENCE_URL": "http://env:2", "TS_GRPC_ADDRESS": "env:3"},
            ("http://env:2", "http://127.0.0.1:8081", "http://127.0.0.1:8082", "env:3"),
        ),
    ],
    ids=["defaults", "from properties", "environment wins"],
)
def test_endpoints_from_properties_table(props, env, expected):
    endpoints = Endpoints.from_properties(props, env=env)
    assert (
        endpoints.inference,
        endpoints.management,
        endpoints.metrics,
        endpoints.grpc_inference,
    ) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}, True),
        (401, {"type": "InvalidKeyException"}, True),
        (403, {"type": "InvalidKeyException"}, True),
        (400, {"code": 400, "type": "bad_request", "message": "empty request body"}, False),
        (500, {"type": "InvalidKeyException"}, False),
        (400, "InvalidKeyException", False),  # not JSON: never taken for a token failure
        (400, None, False),
        (200, {}, False),
    ],
)
def test_is_token_failure_table(status, body, expected):
    assert is_token_failure(status, body) is expected


def test_token_store_prefers_the_environment(tmp_path, monkeypatch):
    endpoints = Endpoints.from_properties({}, env={})
    key_file = tmp_path / "key_file.json"
    key_file.write_text('{"inference": {"key": "from-file"}, "API": {"key": "api"}}')
    tokens = TokenStore(key_file, endpoints)
    assert tokens.get("inference") == "from-file"
    monkeypatch.setenv("TS_INFERENCE_KEY", "from-env")
    assert tokens.get("inference") == "from-env"
    assert tokens.get("management") is None


def test_client_names_stay_importable_from_the_client():
    from scripts import client, config

    for name in ("Endpoints", "TokenStore", "ClientError", "AuthError", "ServerUnavailable", "ModelNotReady"):
        assert getattr(client, name) is getattr(config, name)
