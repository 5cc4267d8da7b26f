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

Endpoints come from --config (config.properties), tokens from <run dir>/key_file.json or the
TS_*_KEY variables, as in scripts/client.py. Changes of default and workers are saved in
<run dir>/.run/served_state.json and re-applied by `make serve` (scripts/server.py).
Tables by default, --json for machines. Exit codes are listed in EXIT below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scripts.client import (
    AuthError,
    ClientError,
    DetectionClient,
    Endpoints,
    ServerUnavailable,
    TokenStore,
)
from scripts.server import DEFAULT_CONFIG, REPO, read_properties
from scripts.versions import ModelAdmin, ServedState, compare, image_files

EXIT = {
    "ok": 0,
    "disagreement": 1,  # compare below --min-agreement, or promote refused
    "usage": 2,  # bad arguments (argparse), missing folder, nothing to roll back
    "unreachable": 3,  # no server at the management / inference address
    "auth": 4,  # token rejected and could not be renewed
    "refused": 5,  # the server refused the operation (unknown model/version, model API off, ...)
}


class UsageError(Exception):
    """A request this tool cannot carry out as asked (exit code 2)."""


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain fixed-width table; column widths fit the longest cell."""
    cells = [[("-" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


class Manager:
    def __init__(self, args: argparse.Namespace) -> None:
        props = read_properties(args.config) if args.config.exists() else {}
        self.model_api = props.get("enable_model_api", "false").lower() == "true"
        endpoints = Endpoints.from_properties(props)
        tokens = TokenStore(args.key_file or args.run_dir / "key_file.json", endpoints)
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
        return rows, text, EXIT["ok"]

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
                 "gpu": w.get("gpu"), "memory": w.get("memoryUsage")}
                for w in v.get("workers", [])
            ]  # fmt: skip
            blocks.append(head + "\n" + table(workers, ["id", "pid", "status", "started", "gpu", "memory"]))
        return described, "\n\n".join(blocks), EXIT["ok"]

    def set_default(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version
        previous = self.admin.default_version(model)
        if previous != version:
            self.admin.set_default(model, version)
        self.state.record_default(model, version, previous)
        self.state.save()
        payload = {"model": model, "default": version, "previous": previous}
        return payload, f"{model}: default {previous} -> {version}", EXIT["ok"]

    def scale(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version or self.admin.default_version(self.args.model)
        maximum = self.args.max if self.args.max is not None else self.args.workers
        if maximum < self.args.workers:
            raise UsageError(f"--max {maximum} is below the {self.args.workers} workers asked for")
        status = self.admin.scale(model, self.args.workers, maximum, version=version)
        self.state.model(model).workers[version] = {"min": self.args.workers, "max": maximum}
        self.state.save()
        payload = {"model": model, "version": version, "min": self.args.workers, "max": maximum}
        return payload, status, EXIT["ok"]

    def register(self) -> tuple[Any, str, int]:
        status = self.admin.register(self.args.archive, self.args.workers)
        self.state.snapshot(self.admin, {m["modelName"] for m in self.admin.list_models()})
        self.state.save()
        return {"archive": self.args.archive, "status": status}, status, EXIT["ok"]

    def unregister(self) -> tuple[Any, str, int]:
        model, version = self.args.model, self.args.version
        status = self.admin.unregister(model, version)
        entry = self.state.model(model)
        entry.registered.pop(version, None)
        entry.workers.pop(version, None)
        entry.history = [v for v in entry.history if v != version]
        self.state.save()
        return {"model": model, "version": version, "status": status}, status, EXIT["ok"]

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
        if code != EXIT["ok"]:
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
        return payload, f"{model}: default {current} -> {target} (rolled back)", EXIT["ok"]

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
        return summary, text, EXIT["ok"] if passed else EXIT["disagreement"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m scripts.manage", description=__doc__.splitlines()[0])
    top.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="config.properties with the endpoints"
    )
    top.add_argument(
        "--run-dir", type=Path, default=REPO, help="where the server runs (key_file.json, state)"
    )
    top.add_argument("--key-file", type=Path, help="key file (default: <run dir>/key_file.json)")
    top.add_argument("--json", action="store_true", help="machine-readable output")
    top.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="models, versions, default, workers")
    p = sub.add_parser("describe", help="workers (pid, status), queue and settings of a model")
    p.add_argument("model")
    p.add_argument("version", nargs="?")
    p = sub.add_parser("set-default", help="make VERSION what /predictions/MODEL serves")
    p.add_argument("model")
    p.add_argument("version")
    p = sub.add_parser("scale", help="set the worker count of a version (default: the default version)")
    p.add_argument("model")
    p.add_argument("workers", type=int)
    p.add_argument("--version")
    p.add_argument("--max", type=int, help="max workers (default: same as WORKERS)")
    p = sub.add_parser("register", help="load an archive from the model store (model API on)")
    p.add_argument("archive", help="file name in the server's model store, e.g. face_detector-3.0.mar")
    p.add_argument("--workers", type=int, default=1)
    p = sub.add_parser("unregister", help="unload a version (model API on; not the default one)")
    p.add_argument("model")
    p.add_argument("version")
    helps = {
        "compare": "agreement and latency of two versions on a folder of images",
        "promote": "compare CANDIDATE with the default; set-default only if they agree",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("model")
        if name == "compare":
            p.add_argument("baseline")
        p.add_argument("candidate")
        if name == "promote":
            p.add_argument("--baseline", help="version to compare with (default: the current default)")
        p.add_argument("--images", type=Path, required=True, help="folder of .jpg/.png/.bmp/.webp images")
        p.add_argument("--iou", type=float, default=0.5, help="IoU at which two faces match")
        p.add_argument("--min-agreement", type=float, default=0.9, help="pass mark for the agreement (F1)")
        p.add_argument("--score-threshold", type=float, help="per-request threshold sent to both versions")
    p = sub.add_parser("rollback", help="restore the default version in place before the last change")
    p.add_argument("model")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    command = args.command.replace("-", "_")
    try:
        manager = Manager(args)
        payload, text, code = getattr(manager, command)()
    except UsageError as err:
        return _fail(args, "usage", str(err))
    except ServerUnavailable as err:
        return _fail(args, "unreachable", str(err))
    except AuthError as err:
        hint = f"check the key file ({args.key_file or args.run_dir / 'key_file.json'}) or TS_*_KEY variables"
        return _fail(args, "auth", f"authentication failed: {err}; {hint}")
    except ClientError as err:
        return _fail(args, "refused", str(err))
    except ValueError as err:  # a corrupt state file
        return _fail(args, "usage", str(err))
    print(json.dumps(payload, indent=2) if args.json else text)
    return code


def _fail(args: argparse.Namespace, kind: str, message: str) -> int:
    if args.json:
        print(json.dumps({"error": kind, "message": message}))
    print(f"error: {message}", file=sys.stderr)
    return EXIT[kind]


if __name__ == "__main__":
    sys.exit(main())
