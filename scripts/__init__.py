"""Command-line tools and the client library of the detection service.

The library, bottom up (each imports only what is above it): ``paths`` (repository root, image
files), ``config`` (properties, endpoints, tokens, typed errors), ``client`` (REST inference and
management) and ``grpc_client``, ``versions`` (model versions), ``server`` (start / stop /
readiness). Beside them: ``latency`` (percentile summaries), ``samples`` (public images with known
faces), ``inprocess`` (an archive run without a server) and ``cli`` (exit codes of every tool).
Tools, one package each: ``batch``, ``bench``, ``demo``, ``drift``, ``packaging``, ``stream``;
``manage`` is the versions command. ``batch_score``, ``soak`` and ``capacity`` are aliases of
older entry points.

    from scripts.client import DetectionClient
    result = DetectionClient().detect("photo.jpg", score_threshold=0.8)
"""

__all__ = [
    "batch",
    "bench",
    "cli",
    "client",
    "config",
    "demo",
    "drift",
    "grpc_client",
    "inprocess",
    "latency",
    "manage",
    "packaging",
    "paths",
    "samples",
    "server",
    "stream",
    "versions",
]
