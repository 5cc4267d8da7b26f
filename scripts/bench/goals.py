"""The CPU serving goals as same-run ratios, and model-config variants to measure settings against.

Goals (docs/benchmarks.md), each from the steps of one ``python -m scripts.bench`` run, because
absolute figures on a shared 2-core machine drift between runs while ratios within a run hold:

    c1_latency          c=1 served p50 <= 1.2x the in-process single-image p50 (one process, the
                        worker's thread budget: target ``single``)
    c2_scaling          c=2 served throughput >= 1.7x c=1 (both workers busy)
    c4_scaling          c=4 served throughput >= 1.9x c=1
    ceiling             best served throughput >= 0.9x the in-process ceiling (target ``inprocess``)
    c16_throughput      c=16 served throughput >= 1.5x the better of Flask and LitServe
    c16_p99             c=16 served p99 <= 0.7x the better (lower) p99 of Flask and LitServe

A goal whose steps were not measured in the run is reported as such, never as met.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from scripts.bench.report import at
from scripts.packaging.build_archives import ARCHIVES, ArchiveSpec, build

__all__ = ["GOALS", "evaluate", "format_goals", "parse_properties", "parse_settings", "variant_archive"]

# name -> (what is compared, comparison, bound)
GOALS = {
    "c1_latency": ("c=1 served p50 / in-process single-image p50", "<=", 1.2),
    "c2_scaling": ("c=2 / c=1 served throughput", ">=", 1.7),
    "c4_scaling": ("c=4 / c=1 served throughput", ">=", 1.9),
    "ceiling": ("best served / in-process ceiling throughput", ">=", 0.9),
    "c16_throughput": ("c=16 served / best alternative throughput", ">=", 1.5),
    "c16_p99": ("c=16 served p99 / best alternative p99", "<=", 0.7),
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _values(steps: list[dict]) -> dict[str, float | None]:
    served = [s for s in steps if s["target"] == "torchserve"]
    c1, c2, c4, c16 = (at(steps, "torchserve", c) for c in (1, 2, 4, 16))
    single = next((s for s in steps if s["target"] == "single"), None)
    ceiling = max((s["throughput_rps"] for s in steps if s["target"] == "inprocess"), default=None)
    rivals = [s for s in (at(steps, "flask", 16), at(steps, "litserve", 16)) if s]

    def rps(step: dict | None) -> float | None:
        return step["throughput_rps"] if step else None

    def p(step: dict | None, q: str) -> float | None:
        return step["latency_ms"][q] if step else None

    return {
        "c1_latency": _ratio(p(c1, "p50"), p(single, "p50")),
        "c2_scaling": _ratio(rps(c2), rps(c1)),
        "c4_scaling": _ratio(rps(c4), rps(c1)),
        "ceiling": _ratio(max((s["throughput_rps"] for s in served), default=None), ceiling),
        "c16_throughput": _ratio(rps(c16), max((s["throughput_rps"] for s in rivals), default=None)),
        "c16_p99": _ratio(p(c16, "p99"), min((s["latency_ms"]["p99"] for s in rivals), default=None)),
    }


def evaluate(steps: list[dict]) -> dict[str, dict]:
    """Each goal: its value (a ratio), the bound, and met / not met / not measured."""
    results = {}
    for name, value in _values(steps).items():
        label, op, bound = GOALS[name]
        if value is None:
            state = "not measured"
        else:
            state = "met" if (value <= bound if op == "<=" else value >= bound) else "not met"
        results[name] = {"label": label, "value": value, "goal": f"{op} {bound}", "state": state}
    return results


def format_goals(results: dict[str, dict]) -> str:
    return "\n".join(
        f"{r['label']:<48} {r['value']!s:>7}  goal {r['goal']:<7} {r['state']}" for r in results.values()
    )


def parse_settings(pairs: list[str]) -> dict:
    """``["batchSize=1", "maxBatchDelay=0", "handler.torch_threads=1"]`` -> yaml overrides (values
    parsed as YAML scalars; ``handler.`` keys go into the handler section)."""
    overrides: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE (e.g. batchSize=1), got {pair!r}")
        if key.startswith("handler."):
            overrides.setdefault("handler", {})[key.removeprefix("handler.")] = yaml.safe_load(value)
        else:
            overrides[key] = yaml.safe_load(value)
    return overrides


def parse_properties(pairs: list[str]) -> dict[str, str]:
    """``["async_logging=true"]`` -> config.properties overrides (values kept as text)."""
    properties: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--property takes KEY=VALUE (e.g. async_logging=true), got {pair!r}")
        properties[key.strip()] = value.strip()
    return properties


def variant_archive(overrides: dict, folder: Path, key: str = "face_detector-2.0") -> Path:
    """The shipped archive ``key`` rebuilt in ``folder`` with ``overrides`` merged into its
    model-config.yaml (same name and version, so the benchmark's URLs stay the same)."""
    base = ARCHIVES[key]
    config = yaml.safe_load(base.config.read_text())
    handler = {**config.get("handler", {}), **overrides.get("handler", {})}
    config = {**config, **{k: v for k, v in overrides.items() if k != "handler"}, "handler": handler}
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    store = folder / "store"
    if store.exists():
        shutil.rmtree(store)
    store.mkdir()
    spec = ArchiveSpec(
        base.name, base.version, base.handler, base.weights, config_file, base.description, base.extras
    )
    return build(spec, store)
