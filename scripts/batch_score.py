"""Alias for cron lines written before the ``batch`` package: ``python -m scripts.batch_score``."""

from scripts.batch.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
