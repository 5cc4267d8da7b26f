"""Batched JPEG decoding with torchvision.io straight into tensors, on the GPU when it serves one, and
the rest of the device path's plumbing: EXIF orientation, host->device copies, device faults.

nvJPEG decodes a whole batch on the device, so the host never holds the pixels and the host->device
copy shrinks to the compressed bytes. The same functions run on the CPU (libjpeg), which is how they
are tested on machines without CUDA. Headers are validated with ``probe_image`` beforehand, so only
size-checked JPEGs reach the decoder.

- ``decode_jpeg(device="cuda")`` ignores ``apply_exif_orientation`` (CPU only, per its docstring):
  orientation is applied here, on the tensor, the same way on every device (:func:`orient`).
- A JPEG the device decoder refuses is not the client's fault until the host decoder (PIL) refuses
  it too: :func:`decode_jpegs` answers ``None`` for it and the pipeline decodes it on the host, which
  either succeeds (CMYK, some progressive files) or gives the same 400 as the host path.
- A device failure (out of memory, a broken CUDA context) is a server fault: :class:`DeviceFault`
  is raised, never turned into a client's 400 (see :func:`is_device_fault`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

__all__ = [
    "EXIF_ORIENTATION",
    "DeviceFault",
    "HostStaging",
    "decode_jpegs",
    "host_staging",
    "is_broken_context",
    "is_device_fault",
    "orient",
]

EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 1-8, 1 = as stored

# Messages of device failures that are not a specific exception type: CUDA runtime errors
# ("CUDA error: an illegal memory access was encountered"), cuBLAS/cuDNN failing to initialise
# (close to out of memory), nvJPEG's allocator or execution failures.
_DEVICE_WORDS = ("CUDA", "CUBLAS", "CUDNN", "out of memory", "ALLOCATOR_FAILURE", "EXECUTION_FAILED")


class DeviceFault(RuntimeError):
    """The device failed while decoding: a server fault (5xx), never a client's 400. The message
    keeps "CUDA" when the cause had it, so TorchServe answers 507 for it."""


def is_device_fault(err: BaseException) -> bool:
    """True for failures of the device itself (out of memory, CUDA runtime errors), as opposed to
    a decoder refusing bad data."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError, DeviceFault)):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch >= 2.8
    if accelerator_error is not None and isinstance(err, accelerator_error):
        return True
    text = str(err)
    return any(word in text for word in _DEVICE_WORDS)


def is_broken_context(err: BaseException) -> bool:
    """A device fault after which the worker's CUDA context cannot be trusted (every later call
    fails too): the worker must exit so that TorchServe starts a fresh one. Out of memory is not
    one of them: the next batch may fit."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # the cause may be wrapped (DeviceFault)
        seen.add(id(err))
        if isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(err):
            return False
        err = err.__cause__
    return True


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) as stored -> as a viewer sees it, for EXIF orientation 1-8 (PIL's exif_transpose:
    2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
    counter-clockwise); any other value leaves the image as stored, as PIL does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def decode_jpegs(
    payloads: list[bytes], device: torch.device | str, orientations: list[int] | None = None
) -> list[torch.Tensor | None]:
    """JPEG bytes -> RGB uint8 (3, H, W) tensors on ``device`` with EXIF orientation applied
    (``orientations``, one per payload; 1 when not given), or ``None`` for a payload the decoder
    refused (decode it on the host instead); one outcome per payload, same order.

    Raises :class:`DeviceFault` when the device fails (out of memory, CUDA errors)."""
    if not payloads:
        return []
    orientations = orientations or [1] * len(payloads)
    encoded = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
    try:
        decoded: list[torch.Tensor | None] = list(_decode(encoded, device))
    except RuntimeError as err:
        _raise_if_device_fault(err)
        # One corrupt file fails the whole batched call: retry one by one to find it.
        decoded = [_decode_one(data, device) for data in encoded]
    return [None if image is None else orient(image, o) for image, o in zip(decoded, orientations)]


def _decode_one(data: torch.Tensor, device: torch.device | str) -> torch.Tensor | None:
    try:
        return _decode([data], device)[0]
    except RuntimeError as err:
        _raise_if_device_fault(err)
        return None


def _raise_if_device_fault(err: RuntimeError) -> None:
    if is_device_fault(err):
        raise DeviceFault(f"device failure while decoding JPEGs: {err}") from err


def _decode(encoded: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    # Orientation is applied by orient(): the CUDA decoder would ignore the flag.
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=False)


class HostStaging:
    """One reusable host buffer per worker for host->device copies, page-locked on CUDA.

    ``tensor.pin_memory()`` per batch allocates a new page-locked block each time, and PyTorch's
    host allocator caches those blocks for reuse by size, so a worker's host memory grew with every
    new batch x canvas size it saw. Here one buffer, grown in powers of two up to ``limit_bytes``,
    carries every copy; on growth the allocator's cache is emptied so the old block is released.
    Anything larger than the limit is copied from pageable memory (slower, nothing pinned).
    """

    def __init__(self, limit_bytes: int = 256 << 20, pin: bool | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.buffer: torch.Tensor | None = None  # (capacity,) uint8
        self._copied: torch.cuda.Event | None = None  # set when the last copy out of the buffer ends

    def to_device(self, tensor: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
        """``tensor`` (on the host) -> a copy on ``device``; the input itself when it is there. A
        numpy array (decoded images are read-only ones) becomes a tensor of its shape and dtype."""
        device = torch.device(device)
        if isinstance(tensor, np.ndarray) and device.type == "cpu":
            return torch.from_numpy(tensor if tensor.flags.writeable else tensor.copy())
        if isinstance(tensor, torch.Tensor) and (tensor.device == device or device.type == "cpu"):
            return tensor.to(device)
        staged = self.stage(tensor)
        if staged is None:  # over the limit: a copy from pageable memory
            pageable = torch.from_numpy(tensor.copy()) if isinstance(tensor, np.ndarray) else tensor
            return pageable.to(device)
        moved = staged.to(device, non_blocking=self.pin)
        if self.pin and device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(device))
        return moved

    def stage(self, tensor: torch.Tensor | np.ndarray) -> torch.Tensor | None:
        """``tensor`` copied into the buffer (a view of it, same shape and dtype), or None when it
        is larger than the limit."""
        nbytes = tensor.nbytes
        if nbytes > self.limit_bytes:
            return None
        if self._copied is not None:
            self._copied.synchronize()  # the previous copy has left the buffer
            self._copied = None
        if self.buffer is None or self.buffer.numel() < nbytes:
            capacity = min(self.limit_bytes, max(1 << 20, 1 << (nbytes - 1).bit_length()))
            self.buffer = None
            empty_host_cache = getattr(torch._C, "_host_emptyCache", None)
            if self.pin and empty_host_cache is not None:
                empty_host_cache()  # release the old block instead of caching it
            self.buffer = torch.empty(capacity, dtype=torch.uint8, pin_memory=self.pin)
        if isinstance(tensor, np.ndarray):
            # numpy copies the bytes (a read-only array never gets a writable tensor over it); the
            # result stays a view of the buffer itself, so the copy to the device sees pinned memory.
            self.buffer[:nbytes].numpy()[...] = np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)
            dtype = torch.from_numpy(np.empty(0, tensor.dtype)).dtype
            return self.buffer[:nbytes].view(dtype).view(tensor.shape)
        staged = self.buffer[:nbytes].view(tensor.dtype).view(tensor.shape)
        staged.copy_(tensor)
        return staged


@lru_cache(maxsize=1)
def host_staging() -> HostStaging:
    """The worker's one staging buffer, shared by every host->device copy of its pipeline."""
    return HostStaging()
