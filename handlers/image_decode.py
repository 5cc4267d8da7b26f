"""Safe image decoding: format allow-list, size limits read from the header before any pixel is
decoded, EXIF orientation applied, every mode normalised to RGB uint8 (H, W, 3)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.errors import REASON_DECODE, REASON_TOO_LARGE, REASON_UNSUPPORTED, InputError

__all__ = [
    "ACCEPTED_FORMATS",
    "DecodeLimits",
    "HIGH_BIT_MODES",
    "decode_image",
    "decode_probed",
    "probe_image",
]

ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000  # width * height; 4K frames are 8.3 MP
    max_side: int = 10_000  # longest side in pixels
    formats: tuple[str, ...] = ACCEPTED_FORMATS


def probe_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Parse the header only and apply every check that needs no pixels; InputError if unsafe."""
    if not data:
        raise InputError("empty request body: send image bytes (JPEG, PNG, BMP or WebP)")
    try:
        # Image.open only parses the header: the size is checked before any pixel is decoded.
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise InputError(
            f"image header claims more pixels than allowed ({err}); the limit is "
            f"{limits.max_pixels:,} pixels: downscale it before sending",
            status=413,
            reason=REASON_TOO_LARGE,
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            f"body is not a recognised image; accepted formats: {', '.join(limits.formats)}",
            status=415,
            reason=REASON_UNSUPPORTED,
        ) from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types on hostile headers
        raise InputError(f"cannot read image header: {err}", reason=REASON_DECODE) from None
    if image.format not in limits.formats:
        raise InputError(
            f"image format {image.format} is not accepted; send one of: {', '.join(limits.formats)}",
            status=415,
            reason=REASON_UNSUPPORTED,
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})", reason=REASON_DECODE)
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise InputError(
            f"image is {width}x{height}; the limit is {limits.max_pixels:,} pixels and "
            f"{limits.max_side} px per side: downscale it before sending",
            status=413,
            reason=REASON_TOO_LARGE,
        )
    if image.format == "PNG":  # after the size checks: an oversized file is refused unread
        _verify_png_checksums(data)
    return image


def _verify_png_checksums(data: bytes) -> None:
    """Every PNG chunk carries a CRC: a damaged file (a flipped bit) is refused instead of decoded
    into wrong pixels. PIL's verify() walks the chunks without decompressing anything."""
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as err:  # noqa: BLE001 - SyntaxError, OSError, struct.error on damaged chunks
        raise InputError(
            f"PNG data is damaged ({err}); send the original file", reason=REASON_DECODE
        ) from None


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Bytes -> RGB uint8 array (H, W, 3) as a viewer sees it; InputError for anything unsafe."""
    return decode_probed(probe_image(data, limits))


def decode_probed(image: Image.Image) -> np.ndarray:
    """Decode the pixels of an image that passed :func:`probe_image`."""
    fmt = image.format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
            return _to_rgb(image)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated/corrupt data raises OSError, ValueError, ...
        raise InputError(f"cannot decode {fmt} image: {err}", reason=REASON_DECODE) from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in HIGH_BIT_MODES:
        # 16-bit / 32-bit grey: rescale to 8 bits instead of clipping everything above 255 to white.
        grey = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey8 = np.clip(grey * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[..., None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, LA, P, RGBA, CMYK, YCbCr, 1 -> RGB (alpha dropped)
    return np.asarray(image, dtype=np.uint8)
