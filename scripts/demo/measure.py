"""Measure the browser demo as a person would run it: headless Chromium, a 640x480 30 fps fake camera
playing the synthetic moving-faces clip, the demo app, TorchServe. A benchmark, not a test.

Printed (and written with --json): processed fps, end-to-end latency p50 / p99 (capture to overlay,
from the page's own ``demo:result`` events), dropped share, next to the archive's in-process
single-image latency and 2-process throughput measured in the same run (absolute figures drift
between machines; the ratios are what docs/demo.md compares against its goals).

    make serve && python -m scripts.demo.measure                    # against `make serve`
    python -m scripts.demo.measure --launch --screenshot docs/images/demo.png   # its own TorchServe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from scripts.config import DEFAULT_CONFIG
from scripts.demo.fakecam import DEMO_CLIP, write_y4m
from scripts.demo.harness import browser_page, demo_state, recorded_results, start_app, wait_for
from scripts.latency import percentiles
from scripts.paths import REPO
from scripts.server import free_ports

__all__ = ["format_report", "inprocess_reference", "main", "measure_page", "save_screenshot"]

OUT = REPO / "build" / "demo"
ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"


def inprocess_reference(archive: Path, seconds: float) -> dict[str, float]:
    """Single-image latency p50 (one process, batch 1) and throughput of 2 processes (TorchServe's
    2 workers) of ``archive``'s own pipeline on one JPEG frame of the clip, no server."""
    import cv2

    from scripts.bench.ceiling import bench_inprocess

    _, jpeg = cv2.imencode(".jpg", DEMO_CLIP.frame(0), [cv2.IMWRITE_JPEG_QUALITY, 80])  # as the page sends
    body = jpeg.tobytes()
    single = bench_inprocess(archive, body, seconds, 2.0, batch_sizes=(1,), processes=1)[0]
    pair = bench_inprocess(archive, body, seconds, 2.0, batch_sizes=(1,), processes=2)[0]
    return {
        "single_image_p50_ms": single["latency_ms"]["p50"],
        "two_process_fps": pair["throughput_rps"],
    }


def measure_page(page: Any, url: str, warmup: float, seconds: float, in_flight: int = 2) -> dict[str, Any]:
    """Open ``url`` with ``in_flight`` frames in flight, let it warm up, then count over ``seconds``."""
    page.goto(url)
    wait_for(page, "() => window.demoState.framesProcessed > 0", timeout=120)
    page.fill("#inflight", str(in_flight))  # after the page has set it from /api/config
    time.sleep(warmup)
    before, start = demo_state(page), time.monotonic()
    first = len(recorded_results(page))
    time.sleep(seconds)
    after, elapsed = demo_state(page), time.monotonic() - start
    results = recorded_results(page)[first:]
    latencies = [r["latencyMs"] for r in results]
    sent = after["framesSent"] - before["framesSent"]
    dropped = after["framesDropped"] - before["framesDropped"]
    spread = percentiles(latencies, (50, 99), digits=1)
    return {
        "seconds": round(elapsed, 1),
        "camera_fps": round((sent + dropped) / elapsed, 1),  # camera frames the page saw
        "processed_fps": round((after["framesProcessed"] - before["framesProcessed"]) / elapsed, 1),
        "latency_p50_ms": spread["p50"],
        "latency_p99_ms": spread["p99"],
        "dropped_share": round(dropped / max(1, sent + dropped), 3),
        "in_flight": in_flight,
        "errors": after["error"],
        # p50 of each part of the end-to-end latency (demo.js, "stages")
        "stages_p50_ms": {
            name: percentiles([r["stages"][name] for r in results], (50,), digits=1)["p50"]
            for name in ("waitMs", "encodeMs", "requestMs", "handlerMs")
        },
    }


def save_screenshot(page: Any, path: Path, width: int = 900) -> Path:
    """The page as shown, scaled to ``width`` pixels and reduced to 256 colours (a small PNG)."""
    import io

    from PIL import Image

    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
    png = page.screenshot(clip={"x": 80, "y": 0, "width": 1120, "height": 600})
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def _run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if not args.no_inprocess:
        print("in-process reference (no server) ...", flush=True)
        report["inprocess"] = inprocess_reference(args.archive, args.inprocess_seconds)
    OUT.mkdir(parents=True, exist_ok=True)
    clip = write_y4m(DEMO_CLIP, OUT / "faces.y4m")
    server = None
    if args.launch:
        from scripts.server import launch

        print("starting TorchServe on free ports ...", flush=True)
        server = launch(OUT / "ts")
        args.config, args.key_file = server.run_dir / "config.properties", server.run_dir / "key_file.json"
    app_log, profile = OUT / "measure-app.log", OUT / "measure-profile"
    try:
        with (
            start_app(free_ports(1)[0], args.config, args.key_file, log_path=app_log) as app,
            browser_page(clip, profile, size=(1280, 800)) as page,
        ):
            print(f"browser: {args.warmup:.0f} s warm-up, {args.seconds:.0f} s measured ...", flush=True)
            report["browser"] = [
                measure_page(page, app.url, args.warmup, args.seconds, n) for n in args.in_flight
            ]
            if args.screenshot:
                report["screenshot"] = str(save_screenshot(page, args.screenshot))
    finally:
        if server is not None:
            server.shutdown()
    return report


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def format_report(report: dict[str, Any]) -> str:
    lines = [
        "| camera | in flight | processed fps | e2e p50 | e2e p99 | dropped "
        "| p50 wait / encode / request / handler |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in report["browser"]:
        stages = " / ".join(f"{v:.0f}" for v in b["stages_p50_ms"].values())
        lines.append(
            f"| 640x480 {b['camera_fps']} fps | {b['in_flight']} | {b['processed_fps']} "
            f"| {b['latency_p50_ms']:.0f} ms | {b['latency_p99_ms']:.0f} ms "
            f"| {100 * b['dropped_share']:.1f} % | {stages} ms |"
        )
    if "inprocess" in report:
        ref = report["inprocess"]
        fps_goal = 0.9 * min(30.0, ref["two_process_fps"])
        p50_goal = 1.5 * ref["single_image_p50_ms"]
        lines += [
            "",
            f"in-process: single image p50 {ref['single_image_p50_ms']:.0f} ms, "
            f"2 processes {ref['two_process_fps']:.1f} fps",
        ]
        for b in report["browser"]:
            lines.append(
                f"in flight {b['in_flight']}: goal processed fps >= {fps_goal:.1f} "
                f"{_verdict(b['processed_fps'] >= fps_goal)}; goal e2e p50 <= {p50_goal:.0f} ms "
                f"{_verdict(b['latency_p50_ms'] <= p50_goal)}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m scripts.demo.measure",
        description="Measure the browser demo with a fake 640x480 30 fps camera.",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds (default: 30)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default: 5)")
    p.add_argument(
        "--in-flight", type=int, nargs="+", default=[2], choices=(1, 2),
        help="frames in flight, one run per value in the same session (default: 2)",
    )  # fmt: skip
    p.add_argument("--launch", action="store_true", help="start a TorchServe of its own on free ports")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config.properties of `make serve`")
    p.add_argument("--key-file", type=Path, default=REPO / "key_file.json", help="its key_file.json")
    p.add_argument("--archive", type=Path, default=ARCHIVE, help="archive of the in-process reference")
    p.add_argument("--inprocess-seconds", type=float, default=10.0, help="seconds per in-process step")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process reference")
    p.add_argument(
        "--screenshot", type=Path, help="also save a small PNG of the page, e.g. docs/images/demo.png"
    )
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    report = _run(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
