"""Where things are: the repository root and the image files a tool is pointed at.

One home for paths every tool needs, so that moving a module never changes what
``REPO`` means.

    >>> from scripts.paths import REPO, is_image
    >>> (REPO / "config.properties").is_file(), is_image("a.JPG")
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "REPO", "is_image", "iter_images"]

REPO = Path(__file__).resolve().parent.parent
# Formats the handlers decode (handlers/image_decode.py); lower case, with the dot.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image(path: str | Path) -> bool:
    """True when the file name has one of the accepted image suffixes (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def iter_images(folder: str | Path, recursive: bool = True) -> Iterator[Path]:
    """Image files under ``folder`` in sorted order, lazily (folders can hold millions)."""
    pattern = "**/*" if recursive else "*"
    for path in sorted(Path(folder).glob(pattern)):
        if path.is_file() and is_image(path):
            yield path
