"""Stream a camera, video file, RTSP/HTTP stream or image folder to TorchServe and show detections.

    python -m scripts.stream 0                                  # webcam 0, window, latest-frame
    python -m scripts.stream rtsp://cam/stream --transport grpc --headless --jsonl out.jsonl
    python -m scripts.stream clip.mp4 --output annotated.mp4   # file: every-frame by default

Endpoints and tokens as every tool here (config.properties, key_file.json, TS_* variables; see
scripts/client.py). Prints a summary at exit (also on Ctrl-C): frames read / sent / dropped / failed,
fps, p50 / p90 / p99 end-to-end latency. Details and measurements: docs/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from scripts.client import ClientError, Endpoints, TokenStore
from scripts.stream.core import Policy, StreamAborted, StreamConfig, StreamRunner, StreamStats
from scripts.stream.frames import Backoff, Source, read_frames, source_fps
from scripts.stream.output import AnnotatedView, JsonlSink
from scripts.stream.transport import TRANSPORTS, EncodeOptions, ModelOptions, make_transport, parse_resize

log = logging.getLogger("stream")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m scripts.stream", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("source", help="camera index (0), video file, rtsp:// or http(s):// URL, or image folder")
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="rest",
        help="REST (keep-alive) or gRPC (one HTTP/2 channel)",
    )
    p.add_argument(
        "--policy",
        choices=[x.value for x in Policy],
        default=None,
        help="latest-frame drops stale frames; every-frame sends all. Default: latest-frame for "
        "cameras and URLs, every-frame for files and folders",
    )
    p.add_argument("--max-in-flight", type=int, default=2, help="requests pending at once")
    p.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay a file/folder at its frame rate like a camera (default: on with latest-frame)",
    )
    p.add_argument(
        "--source-fps",
        type=float,
        default=None,
        help="frame rate for --realtime and --output (default: the source's)",
    )
    p.add_argument(
        "--resize", default=None, help="send frames resized to WxH (640x480) or to this longest side (640)"
    )
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 of sent frames")
    p.add_argument("--model", default="face_detector")
    p.add_argument(
        "--model-version", default=None, help="model version (default: the server's default version)"
    )
    p.add_argument("--score-threshold", type=float, default=None, help="minimum score (default: the model's)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument(
        "--give-up-after",
        type=float,
        default=0.0,
        help="seconds without server or camera before exiting; 0 = never",
    )
    p.add_argument(
        "--max-frames", type=int, default=0, help="stop after reading this many frames; 0 = no limit"
    )
    p.add_argument("--headless", action="store_true", help="no window (use --output and/or --jsonl)")
    p.add_argument(
        "--output", type=Path, default=None, help="write annotated processed frames to this .mp4/.avi"
    )
    p.add_argument("--jsonl", type=Path, default=None, help="write one JSON line per frame result")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the summary as JSON")
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="TorchServe key_file.json (default: repo root or TS_KEY_FILE)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def limited(frames, max_frames: int):
    for count, frame in enumerate(frames, start=1):
        yield frame
        if max_frames and count >= max_frames:
            return


def run(args: argparse.Namespace, endpoints: Endpoints | None = None) -> StreamStats:
    source = Source.parse(args.source)
    policy = Policy(args.policy) if args.policy else (
        Policy.LATEST_FRAME if source.kind.is_live else Policy.EVERY_FRAME
    )  # fmt: skip
    if args.headless and not (args.output or args.jsonl):
        log.warning("headless without --output or --jsonl: only the summary will be printed")
    config = StreamConfig(
        policy=policy,
        max_in_flight=args.max_in_flight,
        encode=EncodeOptions(parse_resize(args.resize), args.jpeg_quality),
        give_up_after=args.give_up_after,
    )
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be between 0 and 1 (e.g. 0.6), got {args.score_threshold}")
    settings = {} if args.score_threshold is None else {"score_threshold": args.score_threshold}
    fps = args.source_fps or source_fps(source)
    realtime = args.realtime if args.realtime is not None else policy is Policy.LATEST_FRAME
    pace = fps if realtime and not source.kind.is_live else None

    sinks, closers = [], []
    if args.jsonl:
        jsonl = JsonlSink(args.jsonl)
        sinks.append(jsonl)
        closers.append(jsonl.close)
    view = None
    if args.output or not args.headless:
        view = AnnotatedView(args.output, fps, display=not args.headless)
        sinks.append(view)
        closers.append(view.close)
    endpoints = endpoints or Endpoints.default()
    model = ModelOptions(args.model, args.model_version, settings)
    transport = make_transport(
        args.transport, endpoints, TokenStore(args.key_file, endpoints), model, args.timeout
    )
    runner = StreamRunner(transport, config, sinks)
    if view is not None and view.display:
        runner.sinks.append(lambda _: view.quit_requested and runner.stop())

    log.info(
        "streaming %s (%s) over %s to %s, %s, %d in flight%s",
        source.spec, source.kind.value, args.transport, args.model, policy.value, config.max_in_flight,
        f", replayed at {pace:.1f} fps" if pace else "",
    )  # fmt: skip
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop()) if in_main_thread else None
    frames = read_frames(source, pace, Backoff(*config.backoff), args.give_up_after, runner.stop_event)
    try:
        return runner.run(limited(frames, args.max_frames))
    except KeyboardInterrupt:
        log.warning("interrupted; finishing pending requests")
        return runner.stats
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        for close in closers:
            close()
        transport.close()
        print(runner.stats.summary(), file=sys.stderr)
        if args.summary_json:
            args.summary_json.write_text(json.dumps(runner.stats.to_json(), indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        stats = run(args)
    except (ValueError, RuntimeError, ClientError, ConnectionError) as err:
        kind = "stream aborted" if isinstance(err, StreamAborted) else "error"
        sys.exit(f"{kind}: {err}")
    if stats.processed == 0 and stats.sent:
        sys.exit("no frame was processed: see the errors above")


if __name__ == "__main__":
    main()
