"""Where a child trains, and what running out of memory there looks like."""

from __future__ import annotations

import gc

import torch


def pick_device(wanted: str) -> torch.device:
    """``cuda``, ``cpu``, or ``auto``: CUDA when this process sees a GPU."""
    use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or a CPU allocation the machine refused."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory(device: torch.device) -> None:
    """Give back what a failed child held, once nothing refers to it any more."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
