"""``python -m scripts.demo``: start the demo web app next to a running TorchServe and print its URL.

    make serve && make demo                       # http://127.0.0.1:8090/
    python -m scripts.demo --port 8091 --model face_detector
    DEMO_TOKEN=$(openssl rand -hex 16) python -m scripts.demo --host 0.0.0.0   # prints ...#token=...

Endpoints and tokens as every tool here (config.properties or --config, key_file.json or --key-file,
TS_* variables; see scripts/client.py). TorchServe may start before or after the app: the page says
what is missing and recovers by itself. Exit codes: README.md, "Exit codes" (2: bad option or port in
use).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from scripts.cli import UsageError, prog, run_main
from scripts.client import ClientError, DetectionClient, Endpoints
from scripts.config import DEFAULT_CONFIG, read_properties
from scripts.demo.app import DemoConfig, build_app
from scripts.demo.backend import Backend, SharedTokens

__all__ = ["build_parser", "main", "serve"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog("scripts.demo"),
        description="Browser page for the live camera: detections drawn over the video (docs/demo.md).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("DEMO_PORT", "8090")),
        help="port (default: DEMO_PORT, else 8090; 0 = any free port)",
    )  # fmt: skip
    p.add_argument(
        "--token", default=os.environ.get("DEMO_TOKEN") or None,
        help="the app's own access token, required off loopback (default: DEMO_TOKEN)",
    )  # fmt: skip
    p.add_argument("--max-in-flight", type=int, default=2, help="frames pending per page (default: 2)")
    p.add_argument("--model", default="face_detector", help="model selected first (default: face_detector)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TorchServe config.properties")
    p.add_argument(
        "--key-file", type=Path, default=None,
        help="TorchServe key_file.json (default: TS_KEY_FILE, else <repo>/key_file.json)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per TorchServe call (default: 10)")
    return p


def _endpoints(config: Path) -> Endpoints:
    if not config.is_file():
        raise UsageError(f"--config {config} does not exist: point it at TorchServe's config.properties")
    return Endpoints.from_properties(read_properties(config))


def _check_server(endpoints: Endpoints, tokens: SharedTokens) -> None:
    """One line on what TorchServe says now; the app starts either way (the page shows the state)."""
    try:
        status = DetectionClient(endpoints, tokens, timeout=3.0).ping()
        print(f"TorchServe at {endpoints.inference}: {status}")
    except ClientError as err:
        print(f"warning: {err}; the page will say so and recover once TorchServe is up", file=sys.stderr)


async def serve(config: DemoConfig, backend: Backend, ready: asyncio.Event | None = None) -> None:
    """Run the app until SIGINT / SIGTERM (or cancellation); prints the URL once it listens."""
    runner = web.AppRunner(build_app(config, backend), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as err:
            raise UsageError(
                f"cannot listen on {config.host}:{config.port} ({err.strerror}): "
                f"choose another port, e.g. DEMO_PORT={config.port + 1} make demo"
            ) from None
        port = runner.addresses[0][1] if config.port == 0 else config.port
        url = DemoConfig(**{**config.__dict__, "port": port}).url
        print(f"demo: open {url}  (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> None:
        try:
            config = DemoConfig(
                host=args.host, port=args.port, token=args.token, max_in_flight=args.max_in_flight,
                default_model=args.model, timeout=args.timeout,
            )  # fmt: skip
        except ValueError as err:
            raise UsageError(str(err)) from None
        endpoints = _endpoints(args.config)
        tokens = SharedTokens(args.key_file, endpoints)
        _check_server(endpoints, tokens)
        asyncio.run(serve(config, Backend(endpoints, tokens, config.workers, config.timeout)))
        print("demo: stopped")

    return run_main(work, prog("scripts.demo"))
