"""Alternative ways to serve the same pipeline, for the benchmark's comparisons."""
