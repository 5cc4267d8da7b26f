"""Browser page for the live camera: the page sends JPEG frames of the camera to a small web app, which
asks TorchServe and answers with the detections the page draws over the video (docs/demo.md).

Modules: ``app`` (aiohttp routes, input checks, access), ``backend`` (the blocking client library in a
thread pool; tokens stay there), ``cli`` (the command), ``fakecam`` (the synthetic clip as a Y4M file
for Chromium's fake camera), ``harness`` (the app and a headless Chromium for tests and ``measure``),
``measure`` (processed fps, end-to-end latency and drops in the browser). static/ holds the page:
plain HTML, JS and CSS, no build step.

    make serve && make demo          # then open http://127.0.0.1:8090/
"""

__all__ = ["app", "backend", "cli", "fakecam", "harness", "measure"]
