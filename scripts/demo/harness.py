"""The demo app as a process and the page in a headless Chromium with a fake camera, for the browser
tests (tests/integration/test_demo_browser.py) and scripts/demo/measure.py.

Chromium is Debian's (``/usr/bin/chromium``, ``DEMO_CHROMIUM`` to change), driven by Playwright for
Python; Playwright never downloads a browser here. A recorder script is added to the page before its
own script runs: it keeps every ``demo:result`` event (seq, latencyMs, detections) and, when asked, the
JPEG body of the first ``keep_frames`` frames sent, so a test can tell which clip frame each answer
was for. It watches the page; it changes nothing the page does.

    with start_app(port, config, key_file) as app, browser_page(clip_y4m, profile) as page:
        page.goto(app.url); ...; demo_state(page)
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from scripts.paths import REPO

__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "AppProcess",
    "browser_page",
    "chromium_flags",
    "demo_state",
    "recorded_frames",
    "recorded_results",
    "start_app",
    "wait_for",
]

CHROMIUM = Path(os.environ.get("DEMO_CHROMIUM", "/usr/bin/chromium"))
# As root in a container: no sandbox, no GPU; nothing reaches out to the network on its own.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",  # grant the camera without a prompt
)

RECORDER_JS = """
(() => {
  const record = { results: [], frames: new Map(), keep: %d };
  window.__demoRecord = record;
  window.addEventListener("demo:result", (event) => record.results.push(event.detail));
  const fetchOriginal = window.fetch;
  window.fetch = function (input, init) {
    const seq = init && init.headers && Number(init.headers["X-Frame-Seq"]);
    const keep = seq && record.frames.size < record.keep && init.body instanceof Blob;
    if (keep) record.frames.set(seq, init.body);
    return fetchOriginal.apply(this, arguments);
  };
})();
"""


def chromium_flags(fake_video: Path | None) -> list[str]:
    """Flags for a run with ``fake_video`` (.y4m) as the camera, or with no camera at all (None)."""
    flags = list(CHROMIUM_FLAGS)
    if fake_video is not None:
        flags += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake_video}"]
    return flags


@dataclass
class AppProcess:
    """``python -m scripts.demo`` running on loopback."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def start_app(
    port: int, config: Path, key_file: Path, *extra: str, log_path: Path | None = None, timeout: float = 30.0
) -> Iterator[AppProcess]:
    """Start the demo app for the TorchServe of ``config`` / ``key_file``; stopped on exit."""
    log_path = log_path or config.parent / f"demo-{port}.log"
    cmd = [sys.executable, "-m", "scripts.demo", "--port", str(port), "--config", str(config),
           "--key-file", str(key_file), *extra]  # fmt: skip
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    app = AppProcess(process, port, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"the demo app exited with code {code}:\n{app.log()[-3000:]}")
            try:
                if requests.get(f"{app.url}api/config", timeout=2).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the demo app did not answer within {timeout:.0f}s:\n{app.log()[-3000:]}")
            time.sleep(0.2)
        yield app
    finally:
        app.stop()


@contextmanager
def browser_page(
    fake_video: Path | None, profile_dir: Path, keep_frames: int = 0, size: tuple[int, int] = (1280, 800)
) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium profile; ``fake_video`` None = no camera."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium (make test-tools does)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=chromium_flags(fake_video),
            viewport={"width": size[0], "height": size[1]},
        )
        try:
            context.add_init_script(RECORDER_JS % keep_frames)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def demo_state(page: Any) -> dict[str, Any]:
    """A copy of ``window.demoState``."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.demoState))")


def recorded_results(page: Any) -> list[dict[str, Any]]:
    """Every ``demo:result`` so far: {seq, latencyMs, detections}."""
    return page.evaluate("() => window.__demoRecord.results")


def recorded_frames(page: Any) -> dict[int, bytes]:
    """The JPEG bodies kept by the recorder, by frame seq."""
    encoded = page.evaluate(
        """async () => {
          const out = {};
          for (const [seq, blob] of window.__demoRecord.frames) {
            const url = await new Promise((resolve) => {
              const reader = new FileReader();
              reader.onload = () => resolve(reader.result);
              reader.readAsDataURL(blob);
            });
            out[seq] = url.slice(url.indexOf(",") + 1);
          }
          return out;
        }"""
    )
    return {int(seq): base64.b64decode(data) for seq, data in encoded.items()}


def wait_for(page: Any, condition: str, timeout: float = 30.0, arg: Any = None) -> Any:
    """Wait until the JS ``condition`` (a function of ``arg``) is truthy in the page; its value."""
    return page.wait_for_function(condition, arg=arg, timeout=timeout * 1000).json_value()
