"""Alias: ``python -m scripts.soak`` runs ``python -m scripts.bench.soak``."""

from scripts.bench.soak import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
