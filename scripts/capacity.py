"""Alias: ``python -m scripts.capacity`` runs ``python -m scripts.bench.capacity``."""

from scripts.bench.capacity import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
