"""Input / output drift monitoring: PSI and KS statistics (``stats``) of the features the handlers
log, against a reference profile (``profile``) built from a seeded image set (``images``); ``cli``
reports once or serves the figures to Prometheus.

    python -m scripts.drift report --window 1h
"""

__all__ = ["cli", "images", "profile", "stats"]
