"""Stream a camera, video file, RTSP/HTTP stream or image folder to TorchServe and show detections.

    python -m scripts.stream 0                                  # webcam 0, window, latest-frame
    python -m scripts.stream rtsp://cam/stream --transport grpc --headless --jsonl out.jsonl
    python -m scripts.stream clip.mp4 --video-out annotated.mp4   # file: every-frame by default

Endpoints and tokens as every tool here (config.properties, key_file.json, TS_* variables; see
scripts/client.py). Prints a summary at exit (also on Ctrl-C): frames read / sent / dropped / failed,
fps, p50 / p90 / p99 end-to-end latency. A camera, stream or server that cannot be reached at start
is tried ``--connect-attempts`` times, then the client gives up (exit 3). Details and measurements:
docs/streaming.md; exit codes: README.md, "Exit codes".
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import cv2

from scripts.cli import Exit, ToolError, UsageError, add_alias, prog, run_main
from scripts.client import Endpoints, ServerUnavailable, TokenStore
from scripts.stream.core import Policy, StreamAborted, StreamConfig, StreamRunner, StreamStats
from scripts.stream.frames import (
    Backoff,
    Source,
    SourceKind,
    camera_problem,
    open_capture,
    read_frames,
    source_fps,
)
from scripts.stream.output import AnnotatedView, JsonlSink, display_problem
from scripts.stream.transport import (
    TRANSPORTS,
    EncodeOptions,
    ModelOptions,
    Transport,
    make_transport,
    parse_resize,
)

__all__ = ["build_parser", "connect_server", "limited", "main", "outcome", "probe_source", "run", "stream"]

log = logging.getLogger("stream")

T = TypeVar("T")
CONNECT_BACKOFF = (0.5, 2.0, 4.0)  # first wait (s), factor, longest wait between start-up attempts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("scripts.stream"), description=__doc__.split("\n\n")[0],
        epilog='exit codes: README.md, "Exit codes" (1: some frames failed, 3: camera or server '
        "unreachable, 130: Ctrl-C)",
    )  # fmt: skip
    p.add_argument("source", help="camera index (0), video file, rtsp:// or http(s):// URL, or image folder")
    p.add_argument(
        "--transport", choices=TRANSPORTS, default="rest",
        help="rest: HTTP keep-alive (default); grpc: one HTTP/2 channel",
    )  # fmt: skip
    p.add_argument(
        "--policy", choices=[x.value for x in Policy],
        help="latest-frame drops stale frames; every-frame sends all (default: latest-frame for "
        "cameras and URLs, every-frame for files and folders)",
    )  # fmt: skip
    p.add_argument("--max-in-flight", type=int, default=2, help="requests pending at once (default: 2)")
    p.add_argument(
        "--realtime", action=argparse.BooleanOptionalAction,
        help="replay a file/folder at its frame rate like a camera (default: on with latest-frame)",
    )  # fmt: skip
    p.add_argument(
        "--source-fps", type=float, help="frame rate for --realtime and --video-out (default: the source's)"
    )
    p.add_argument(
        "--resize", help="send frames resized to WxH (640x480) or to this longest side (default: as captured)"
    )
    p.add_argument(
        "--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 of sent frames (default: 90)"
    )
    p.add_argument("--model", default="face_detector", help="model name (default: face_detector)")
    p.add_argument("--version", help="model version (default: the server's default version)")
    add_alias(p, "--model-version", "version")
    p.add_argument("--score-threshold", type=float, help="minimum score 0-1 (default: the model's)")
    p.add_argument(
        "--small-faces", action="store_true", help="face_detector 2.0: tiles for faces under ~24 px (slower)"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: 30)")
    p.add_argument(
        "--connect-attempts", type=int, default=5,
        help="attempts to reach the camera/stream and the server at start before giving up with exit 3 "
        "(default: 5, about 10 s)",
    )  # fmt: skip
    p.add_argument(
        "--give-up-after", type=float, default=0.0,
        help="seconds without server or camera, once streaming, before exiting (default: 0 = never)",
    )  # fmt: skip
    p.add_argument(
        "--max-frames",
        type=int,
        default=0,
        help="stop after reading this many frames (default: 0 = no limit)",
    )
    p.add_argument("--headless", action="store_true", help="no window (use --video-out and/or --jsonl)")
    p.add_argument("--video-out", type=Path, help="write annotated processed frames to this .mp4/.avi")
    add_alias(p, "--output", "video_out", type=Path)
    p.add_argument("--jsonl", type=Path, help="write one JSON line per frame result")
    p.add_argument("--summary-json", type=Path, help="also write the summary as JSON")
    p.add_argument(
        "--key-file",
        type=Path,
        help="TorchServe key_file.json (default: TS_KEY_FILE, else <repo>/key_file.json)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="more detail: the stream set-up and every reconnect attempt",
    )
    return p


def limited(frames: Iterable[T], max_frames: int) -> Iterator[T]:
    for count, frame in enumerate(frames, start=1):
        yield frame
        if max_frames and count >= max_frames:
            return


def _attempts(what: str, attempts: int) -> Iterator[int]:
    """Yield 1..attempts, sleeping with backoff between them and logging each retry."""
    backoff = Backoff(*CONNECT_BACKOFF)
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            delay = backoff.next()
            log.warning("%s: attempt %d of %d in %.1fs", what, attempt, attempts, delay)
            time.sleep(delay)
        yield attempt


def probe_source(source: Source, attempts: int) -> float | None:
    """Reach a live source (one frame read) within ``attempts``; its frame rate, None when unknown.

    Files and folders need no probe. ToolError(UNREACHABLE) when the source never delivers a frame:
    an unplugged camera or a wrong URL must not be retried forever before anything ever worked.
    """
    if not source.kind.is_live:
        return None
    what = f"camera {source.spec}" if source.kind is SourceKind.CAMERA else source.spec
    problem = None
    for _ in _attempts(f"{what} delivers no frames", attempts):
        problem = camera_problem(source)  # a camera plugged in meanwhile is found on the next attempt
        if problem:
            continue
        capture = open_capture(source)
        try:
            if capture.isOpened() and capture.read()[0]:
                fps = capture.get(cv2.CAP_PROP_FPS)
                return fps if 0 < fps < 1000 else None
        finally:
            capture.release()
    raise ToolError(
        f"cannot read a frame from {what} after {attempts} attempts: "
        + (problem or "check the camera index or the URL (and that nothing else holds the camera)"),
        Exit.UNREACHABLE,
    )


def connect_server(transport: Transport, where: str, attempts: int) -> None:
    """Ping the server within ``attempts``; ToolError(UNREACHABLE) when it never answers.

    A token or model problem is not retried: its ClientError goes up at once (exit 4 / 5).
    """
    error: ServerUnavailable | None = None
    for _ in _attempts(f"server at {where} not reachable", attempts):
        try:
            transport.ping()
            return
        except ServerUnavailable as err:
            error = err
    raise ToolError(f"{error} (gave up after {attempts} attempts)", Exit.UNREACHABLE)


def run(args: argparse.Namespace, endpoints: Endpoints | None = None) -> StreamStats:
    try:
        source = Source.parse(args.source)
        encode = EncodeOptions(parse_resize(args.resize), args.jpeg_quality)
        if args.connect_attempts < 1:
            raise ValueError(f"--connect-attempts must be at least 1, got {args.connect_attempts}")
        if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
            raise ValueError(
                f"--score-threshold must be between 0 and 1 (e.g. 0.6), got {args.score_threshold}"
            )
    except ValueError as err:
        raise UsageError(str(err)) from None
    policy = Policy(args.policy) if args.policy else (
        Policy.LATEST_FRAME if source.kind.is_live else Policy.EVERY_FRAME
    )  # fmt: skip
    if args.headless and not (args.video_out or args.jsonl):
        log.warning("headless without --video-out or --jsonl: only the summary will be printed")
    if not args.headless and (problem := display_problem()):  # before waiting for camera and server
        raise UsageError(problem)
    try:
        config = StreamConfig(policy, args.max_in_flight, encode, args.give_up_after)
    except ValueError as err:
        raise UsageError(str(err)) from None
    settings = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    if args.small_faces:
        settings["small_faces"] = "true"
    endpoints = endpoints or Endpoints.default()
    model = ModelOptions(args.model, args.version, settings)
    transport = make_transport(
        args.transport, endpoints, TokenStore(args.key_file, endpoints), model, args.timeout
    )
    try:
        where = endpoints.grpc_inference if args.transport == "grpc" else endpoints.inference
        connect_server(transport, where, args.connect_attempts)
        probed = probe_source(source, args.connect_attempts)  # live sources: one frame, or exit 3
        fps = args.source_fps or probed or source_fps(source)
        return stream(args, source, policy, config, fps, transport)
    finally:
        transport.close()


def stream(
    args: argparse.Namespace,
    source: Source,
    policy: Policy,
    config: StreamConfig,
    fps: float,
    transport: Transport,
) -> StreamStats:
    """Run the stream to its end (or Ctrl-C / SIGTERM / q); the summary is printed in any case."""
    realtime = args.realtime if args.realtime is not None else policy is Policy.LATEST_FRAME
    pace = fps if realtime and not source.kind.is_live else None
    sinks, closers = [], []
    if args.jsonl:
        jsonl = JsonlSink(args.jsonl)
        sinks.append(jsonl)
        closers.append(jsonl.close)
    view = None
    if args.video_out or not args.headless:
        try:
            view = AnnotatedView(args.video_out, fps, display=not args.headless)
        except RuntimeError as err:  # no window support in this OpenCV build, or no display
            raise UsageError(str(err)) from None
        sinks.append(view)
        closers.append(view.close)
    runner = StreamRunner(transport, config, sinks)
    if view is not None and view.display:
        runner.sinks.append(lambda _: view.quit_requested and runner.stop())

    log.info(
        "streaming %s (%s) over %s to %s, %s, %d in flight%s",
        source.spec, source.kind.value, args.transport, args.model, policy.value, config.max_in_flight,
        f", replayed at {pace:.1f} fps" if pace else "",
    )  # fmt: skip
    terminated = threading.Event()

    def on_sigterm(*_: object) -> None:
        terminated.set()
        runner.stop()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    frames = read_frames(source, pace, Backoff(*config.backoff), args.give_up_after, runner.stop_event)
    try:
        runner.run(limited(frames, args.max_frames))
    except KeyboardInterrupt:
        log.warning("interrupted; finishing pending requests")
        terminated.set()
    except (StreamAborted, ConnectionError) as err:  # server or live source gone past --give-up-after
        raise ToolError(f"stream aborted: {err}", Exit.UNREACHABLE) from None
    except (ValueError, RuntimeError) as err:  # a file OpenCV cannot read, a video it cannot write
        raise UsageError(str(err)) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        for close in closers:
            close()
        print(runner.stats.summary(), file=sys.stderr)
        if args.summary_json:
            args.summary_json.write_text(json.dumps(runner.stats.to_json(), indent=2) + "\n")
    if terminated.is_set():
        raise ToolError("stopped by Ctrl-C / SIGTERM (summary above)", Exit.INTERRUPTED)
    return runner.stats


def outcome(stats: StreamStats) -> Exit:
    """FAILED_ITEMS when a frame failed; the run itself ended normally."""
    if stats.processed == 0 and stats.sent:
        raise ToolError("no frame was processed: see the errors above", Exit.FAILED_ITEMS)
    if stats.failed:
        log.warning("%d of %d frames sent failed", stats.failed, stats.sent)
        return Exit.FAILED_ITEMS
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return run_main(lambda: outcome(run(args)), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
