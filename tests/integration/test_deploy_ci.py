"""The hosted CI workflow: the jobs the project relies on exist and run what the Makefile runs."""

from __future__ import annotations

import re

import pytest
import yaml

from scripts.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + " " + str(step.get("uses", "")) for step in job["steps"])


def test_triggers(workflow):
    assert workflow["on"]["push"]["tags"] == ["v*"]
    assert "pull_request" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read"}


def test_lint_runs_ruff_and_hadolint_at_the_dev_pins(workflow):
    text = steps_text(workflow["jobs"]["lint"])
    for command in ("ruff check .", "ruff format --check .", "hadolint Dockerfile"):
        assert command in text
    dev = (REPO / "requirements-dev.txt").read_text()
    for package in re.findall(r"grep '\^([\w-]+)==' requirements-dev.txt", text):
        assert re.search(rf"^{package}==", dev, flags=re.M), (
            f"{package} is not pinned in requirements-dev.txt"
        )


def test_tests_run_through_make(workflow):
    assert re.search(r"^make test\b", steps_text(workflow["jobs"]["test"]), flags=re.M)


def test_benchmark_gate_runs_against_the_committed_baseline(workflow):
    job = workflow["jobs"]["benchmark"]
    text = steps_text(job)
    assert "-m scripts.bench " in text and '--out "$BENCHMARK_JSON"' in text
    assert '-m scripts.bench.gate "$BENCHMARK_JSON" --baseline benchmarks/baseline.json' in text
    assert (REPO / "benchmarks" / "baseline.json").is_file()


def test_images_are_pushed_only_on_tags(workflow):
    job = workflow["jobs"]["image"]
    assert set(job["needs"]) == {"lint", "test"}
    build = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action"))
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    login = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("docker/login-action"))
    assert login["if"] == "startsWith(github.ref, 'refs/tags/v')"
    matrix = job["strategy"]["matrix"]["include"]
    assert {(m["target"], m["variant"]) for m in matrix} == {
        ("runtime", "cpu"), ("runtime", "gpu"), ("kserve", "cpu"), ("kserve", "gpu"),
    }  # fmt: skip
    dockerfile = (REPO / "Dockerfile").read_text()
    for m in matrix:
        assert f" AS {m['target']}\n" in dockerfile


def test_every_build_arg_is_declared_in_the_dockerfile(workflow):
    """A build-arg the Dockerfile does not declare is ignored by the build (a warning, not an error)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, flags=re.M))
    builds = [
        s for job in workflow["jobs"].values() for s in job["steps"]
        if str(s.get("uses", "")).startswith("docker/build-push-action")
    ]  # fmt: skip
    lines = [line for b in builds for line in b["with"].get("build-args", "").splitlines() if line.strip()]
    passed = {line.split("=", 1)[0].strip() for line in lines}
    assert passed and passed <= declared, f"not declared in the Dockerfile: {passed - declared}"
