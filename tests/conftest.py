"""Fixtures and tiers.

Tiers come from the path: ``tests/unit/`` (no server, no external program; `make test-unit`) and
``tests/integration/`` (real TorchServe instances on free ports with token auth on, real tools:
promtool, docker, nginx, a browser). Helpers live in ``tests/support/``, never imported from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import Server, launch, launch_variant, shutdown

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, taken from its folder, so ``-m unit`` selects by path."""
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(TESTS).parts
        tier = parts[0] if parts and parts[0] in TIERS else None
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/unit/ or tests/integration/")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The shared instance: config.properties as shipped, on free ports."""
    instance = launch(tmp_path_factory.mktemp("ts-main"))
    yield instance
    shutdown(instance)


@pytest.fixture(scope="session")
def batched_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """face_detector 2.0 with dynamic batching on one worker. The shipped CPU config hands each
    request to handle() alone (batchSize 1, measured in its comments); the GPU config batches up to
    64, and any user may raise it: batches are tested on this variant, built the way
    ``scripts.bench --set`` builds one."""
    overrides = {"batchSize": 4, "minWorkers": 1, "maxWorkers": 1}
    instance = launch_variant(tmp_path_factory.mktemp("batched"), overrides)
    yield instance
    shutdown(instance)
