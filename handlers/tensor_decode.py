"""Batched JPEG decoding with torchvision.io straight into tensors, on the GPU when it serves one.

nvJPEG decodes a whole batch on the device, so the host never holds the pixels and the host->device
copy shrinks to the compressed bytes. The same function runs on the CPU (libjpeg), which is how it
is tested on machines without CUDA. Headers are validated with :func:`probe_image` beforehand, so
only size-checked JPEGs reach the decoder.
"""

from __future__ import annotations

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from handlers.errors import REASON_DECODE, InputError

__all__ = ["decode_jpegs"]


def decode_jpegs(payloads: list[bytes], device: torch.device | str) -> list[torch.Tensor | InputError]:
    """JPEG bytes -> RGB uint8 (3, H, W) tensors on ``device`` (EXIF orientation applied), or the
    InputError of the payload that failed; one outcome per payload, same order."""
    if not payloads:
        return []
    encoded = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
    try:
        return list(_decode(encoded, device))
    except RuntimeError:
        # One corrupt file fails the whole batched call: retry one by one to find it.
        outcomes: list[torch.Tensor | InputError] = []
        for data in encoded:
            try:
                outcomes.append(_decode([data], device)[0])
            except RuntimeError as err:
                outcomes.append(InputError(f"cannot decode JPEG image: {err}", reason=REASON_DECODE))
        return outcomes


def _decode(encoded: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
