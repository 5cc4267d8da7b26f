"""Streaming client: frames from a camera, video file, RTSP stream or folder, sent to the server
over REST or gRPC, latest-frame or every-frame, with an annotated window or video as output.

Modules, in the order a frame meets them: ``frames`` (sources), ``transport`` (REST / gRPC),
``core`` (in-flight policy and latency), ``output`` (window, video, JSONL), ``cli`` (the command).
``synthetic`` writes the moving-faces clip the tests and benchmarks use.

    python -m scripts.stream 0                  # webcam 0, annotated window
    python -m scripts.stream clip.mp4 --headless --jsonl out.jsonl
"""

__all__ = ["cli", "core", "frames", "output", "synthetic", "transport"]
