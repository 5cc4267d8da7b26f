"""Alternative ways to serve the same pipeline, for the benchmark's comparisons."""

__all__ = ["flask_app", "litserve_app"]
