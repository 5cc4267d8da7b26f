"""Manage the models of a running TorchServe: versions, defaults, workers, comparisons, rollbacks.

    python -m scripts.manage list
    python -m scripts.manage describe face_detector [1.0]
    python -m scripts.manage set-default face_detector 1.0
    python -m scripts.manage scale face_detector 2 --version 1.0
    python -m scripts.manage compare face_detector 2.0 1.0 --images DIR
    python -m scripts.manage promote face_detector 1.0 --images DIR
    python -m scripts.manage rollback face_detector
    python -m scripts.manage register face_detector-3.0.mar        (admin instance: model API on)
    python -m scripts.manage unregister face_detector 3.0          (admin instance: model API on)

Endpoints come from --config (config.properties); tokens from --key-file, else TS_KEY_FILE, else
<run dir>/key_file.json, or the TS_*_KEY variables, as in scripts/client.py. Changes of default and
workers are saved in <run dir>/.run/served_state.json and re-applied by `make serve`
(scripts/server.py). Tables by default, --json for machines; the options of the tool (--json,
--config, ...) go before or after the command. Exit codes: README.md, "Exit codes" (scripts/cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from scripts.cli import Exit, ToolError, UsageError, prog, run_main
from scripts.client import AuthError, DetectionClient, Endpoints, TokenStore
from scripts.config import DEFAULT_CONFIG, read_properties
from scripts.paths import REPO
from scripts.versions import ModelAdmin, ServedState, compare, image_files

__all__ = ["Manager", "global_options", "key_file", "main", "parser", "table", "worker_memory"]


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain fixed-width table; column widths fit the longest cell."""
    cells = [[("-" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def key_file(args: argparse.Namespace) -> Path:
    """--key-file, else TS_KEY_FILE (as every tool here), else <run dir>/key_file.json."""
    from_env = os.environ.get("TS_KEY_FILE", "").strip()
    return args.key_file or (Path(from_env) if from_env else args.run_dir / "key_file.json")


def worker_memory(worker: dict[str, Any]) -> str:
    """A worker's resident memory as TorchServe reports it (``memoryUsage``, bytes). TorchServe
    samples it with its system metrics, every ``metric_time_interval`` s (60 by default): until the
    first sample after a worker starts it reports 0, shown as n/a rather than as no memory."""
    used = worker.get("memoryUsage") or 0
    return f"{used / 2**20:.0f} MiB" if used > 0 else "n/a"


class Manager:
    def __init__(self, args: argparse.Namespace) -> None:
        props = read_properties(args.config) if args.config.exists() else {}
        self.model_api = props.get("enable_model_api", "false").lower() == "true"
        endpoints = Endpoints.from_properties(props)
        tokens = TokenStore(key_file(args), endpoints)
        self.admin = ModelAdmin(endpoints, tokens, timeout=args.timeout)
        self.client = DetectionClient(endpoints, tokens, timeout=args.timeout)
        self.state = ServedState.for_run_dir(args.run_dir)
        self.args = args

    # Each command returns (payload for --json, text for people, exit code).

    def list(self) -> tuple[Any, str, int]:
        rows = []
        for entry in self.admin.list_models():
            model = entry["modelName"]
            default = self.admin.default_version(model)
            for v in self.admin.versions(model):
                workers = v.get("workers", [])
                rows.append({
                    "model": model,
                    "version": str(v["modelVersion"]),
                    "default": str(v["modelVersion"]) == default,
                    "ready": f"{sum(w.get('status') == 'READY' for w in workers)}/{len(workers)}",
                    "min": v["minWorkers"], "max": v["maxWorkers"], "batch": v["batchSize"],
                    "archive": v.get("modelUrl"),
                })  # fmt: skip
        text = table(
            [{**r, "default": "*" if r["default"] else ""} for r in rows],
            ["model", "version", "default", "ready", "min", "max", "batch", "archive"],
        )
        return rows, text, Exit.OK

    def describe(self) -> tuple[Any, str, int]:
        described = (
            self.admin.describe(self.args.model, self.args.version)
            if self.args.version
            else self.admin.versions(self.args.model)
        )
        default = self.admin.default_version(self.args.model)
        blocks = []
        for v in described:
            queue = v.get("jobQueueStatus", {})
            marker = " (default)" if str(v["modelVersion"]) == default else ""
            head = (
                f"{v['modelName']} {v['modelVersion']}{marker}"
                f"  archive={v.get('modelUrl')}  workers={v['minWorkers']}..{v['maxWorkers']}"
                f"  batch={v['batchSize']}/{v['maxBatchDelay']}ms  queue: {queue.get('pendingRequests', '?')}"
                f" pending, {queue.get('remainingCapacity', '?')} free"
            )
            workers = [
                {"id": w["id"], "pid": w.get("pid"), "status": w.get("status"), "started": w.get("startTime"),
                 "gpu": w.get("gpu"), "memory": worker_memory(w)}
                for w in v.get("workers", [])
            ]  # fmt: skip
            blocks.append(head + "\n" + table(workers, ["id", "pid", "status", "started", "gpu", "memory"]))
        return described, "\n\n".join(blocks), Exit.OK

    def set_default(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version
        previous = self.admin.default_version(model)
        if previous != version:
            self.admin.set_default(model, version)
        self.state.record_default(model, version, previous)
        self.state.save()
        payload = {"model": model, "default": version, "previous": previous}
        return payload, f"{model}: default {previous} -> {version}", Exit.OK

    def scale(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version or self.admin.default_version(self.args.model)
        maximum = self.args.max if self.args.max is not None else self.args.workers
        if maximum < self.args.workers:
            raise UsageError(f"--max {maximum} is below the {self.args.workers} workers asked for")
        status = self.admin.scale(model, self.args.workers, maximum, version=version)
        self.state.model(model).workers[version] = {"min": self.args.workers, "max": maximum}
        self.state.save()
        payload = {"model": model, "version": version, "min": self.args.workers, "max": maximum}
        return payload, status, Exit.OK

    def register(self) -> tuple[Any, str, int]:
        status = self.admin.register(self.args.archive, self.args.workers)
        self.state.snapshot(self.admin, {m["modelName"] for m in self.admin.list_models()})
        self.state.save()
        return {"archive": self.args.archive, "status": status}, status, Exit.OK

    def unregister(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version
        status = self.admin.unregister(model, version)
        entry = self.state.model(model)
        entry.registered.pop(version, None)
        entry.workers.pop(version, None)
        entry.history = [v for v in entry.history if v != version]
        self.state.save()
        return {"model": model, "version": version, "status": status}, status, Exit.OK

    def compare(self) -> tuple[Any, str, int]:
        a, b = self.args.baseline, self.args.candidate
        return self._compare(self.args.model, a, b)

    def promote(self) -> tuple[Any, str, int]:
        model, candidate = self.args.model, self.args.candidate
        current = self.admin.default_version(model)
        baseline = self.args.baseline or current
        if baseline == candidate:
            raise UsageError(f"{model} {candidate} is already the baseline; name another --baseline")
        payload, text, code = self._compare(model, baseline, candidate)
        if code != Exit.OK:
            payload["promoted"] = False
            return payload, text + f"\npromotion refused: {model} stays on {baseline}", code
        self.admin.set_default(model, candidate)
        self.state.record_default(model, candidate, current)
        self.state.save()
        payload["promoted"] = True
        return payload, text + f"\npromoted: {model} default {current} -> {candidate}", code

    def rollback(self) -> tuple[Any, str, int]:
        model = self.args.model
        entry = self.state.model(model)
        if not entry.history:
            raise UsageError(
                f"no earlier default of {model} recorded in {self.state.path}; use set-default instead"
            )
        target = entry.history[-1]
        current = self.admin.default_version(model)
        self.admin.set_default(model, target)
        entry.history.pop()
        entry.default = target
        self.state.save()
        payload = {"model": model, "default": target, "previous": current}
        return payload, f"{model}: default {current} -> {target} (rolled back)", Exit.OK

    def _compare(self, model: str, a: str, b: str) -> tuple[dict[str, Any], str, int]:
        settings = {} if self.args.score_threshold is None else {"score_threshold": self.args.score_threshold}
        try:
            images = image_files(self.args.images)
            result = compare(self.client, model, a, b, images, self.args.iou, **settings)
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        summary = result.summary()
        passed = result.agreement >= self.args.min_agreement
        summary.update(min_agreement=self.args.min_agreement, passed=passed,
                       per_image=[vars(i) for i in result.images])  # fmt: skip
        rows = [
            {"image": i.image, f"faces {a}": i.faces_a, f"faces {b}": i.faces_b, "matched": i.matched,
             "score shift": None if i.score_shift is None else f"{i.score_shift:+.4f}",
             f"ms {a}": f"{i.latency_ms_a:.1f}", f"ms {b}": f"{i.latency_ms_b:.1f}"}
            for i in result.images
        ]  # fmt: skip
        lat_a, lat_b = summary["latency_ms_a"], summary["latency_ms_b"]
        text = "\n".join([
            table(rows, list(rows[0])),
            "",
            f"agreement (F1 of faces matched at IoU >= {result.iou}): {result.agreement:.3f} "
            f"({summary['matched']} matched; {summary['faces_a']} faces in {a}, {summary['faces_b']} in {b})",
            f"images with a different face count: {summary['images_with_count_difference']} of {len(rows)}",
            f"mean score shift {b} - {a}: {summary['mean_score_shift']}",
            f"latency ms {a}: p50 {lat_a['p50']} p90 {lat_a['p90']} mean {lat_a['mean']}",
            f"latency ms {b}: p50 {lat_b['p50']} p90 {lat_b['p90']} mean {lat_b['mean']}",
            f"{'PASS' if passed else 'FAIL'}: agreement {result.agreement:.3f} "
            f"{'>=' if passed else '<'} {self.args.min_agreement}",
        ])  # fmt: skip
        return summary, text, Exit.OK if passed else Exit.FAILED_ITEMS


def global_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """The tool's own options. They are accepted before the command (manage --json list) and after
    it (manage list --json): each command repeats them without defaults (SUPPRESS), so that a value
    given before the command is not reset by the command's parser."""

    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--config", type=Path, default=default(DEFAULT_CONFIG),
        help="config.properties with the endpoints (default: the repository's)",
    )  # fmt: skip
    parser.add_argument(
        "--run-dir", type=Path, default=default(REPO),
        help="where the server runs: key_file.json, saved state (default: the repository)",
    )  # fmt: skip
    parser.add_argument(
        "--key-file", type=Path, default=default(None),
        help="key file (default: TS_KEY_FILE, else <run dir>/key_file.json)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    parser.add_argument(
        "--timeout", type=float, default=default(120.0), help="seconds per HTTP request (default: 120)"
    )


def parser() -> argparse.ArgumentParser:
    common, after = argparse.ArgumentParser(add_help=False), argparse.ArgumentParser(add_help=False)
    global_options(common, with_defaults=True)
    global_options(after, with_defaults=False)
    top = argparse.ArgumentParser(
        prog=prog("scripts.manage"), description=__doc__.splitlines()[0], parents=[common],
        epilog='exit codes: README.md, "Exit codes"; 1 = compare/promote under --min-agreement',
    )  # fmt: skip
    sub = top.add_subparsers(dest="command", required=True, title="commands")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[after])

    command("list", "models, versions, default, workers")
    p = command("describe", "workers (pid, status, memory), queue and settings of a model")
    p.add_argument("model", help="model name, e.g. face_detector")
    p.add_argument("version", nargs="?", help="one version (default: every version)")
    p = command("set-default", "make VERSION what /predictions/MODEL serves")
    p.add_argument("model", help="model name")
    p.add_argument("version", help="version to serve by default")
    p = command("scale", "set the worker count of a version (default: the default version)")
    p.add_argument("model", help="model name")
    p.add_argument("workers", type=int, help="minimum (and, without --max, maximum) workers")
    p.add_argument("--version", help="version to scale (default: the default version)")
    p.add_argument("--max", type=int, help="max workers (default: same as WORKERS)")
    p = command("register", "load an archive from the model store (model API on)")
    p.add_argument("archive", help="file name in the server's model store, e.g. face_detector-3.0.mar")
    p.add_argument("--workers", type=int, default=1, help="workers to start (default: 1)")
    p = command("unregister", "unload a version (model API on; not the default one)")
    p.add_argument("model", help="model name")
    p.add_argument("version", help="version to unload")
    helps = {
        "compare": "agreement and latency of two versions on a folder of images",
        "promote": "compare CANDIDATE with the default; set-default only if they agree",
    }
    for name, text in helps.items():
        p = command(name, text)
        p.add_argument("model", help="model name")
        if name == "compare":
            p.add_argument("baseline", help="version A")
        p.add_argument("candidate", help="version B" if name == "compare" else "version to promote")
        if name == "promote":
            p.add_argument("--baseline", help="version to compare with (default: the current default)")
        p.add_argument("--images", type=Path, required=True, help="folder of .jpg/.png/.bmp/.webp images")
        p.add_argument("--iou", type=float, default=0.5, help="IoU at which two faces match (default: 0.5)")
        p.add_argument(
            "--min-agreement", type=float, default=0.9, help="pass mark for the agreement, F1 (default: 0.9)"
        )
        p.add_argument(
            "--score-threshold", type=float, help="per-request threshold sent to both (default: each one's)"
        )
    p = command("rollback", "restore the default version in place before the last change")
    p.add_argument("model", help="model name")
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    command = args.command.replace("-", "_")

    def work() -> int:
        try:
            manager = Manager(args)
            payload, text, code = getattr(manager, command)()
        except ValueError as err:  # a corrupt state file
            raise UsageError(str(err)) from None
        except AuthError as err:
            hint = f"check the key file ({key_file(args)}) or the TS_*_KEY variables"
            raise ToolError(f"authentication failed: {err}; {hint}", Exit.AUTH) from None
        print(json.dumps(payload, indent=2) if args.json else text)
        return code

    def report(code: Exit, message: str) -> None:
        if args.json:
            print(json.dumps({"error": code.name.lower(), "message": message}))

    return run_main(work, top.prog, report)


if __name__ == "__main__":
    sys.exit(main())
