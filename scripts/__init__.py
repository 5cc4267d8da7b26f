"""Command-line tools and the client library of the detection service."""
