"""Where a child trains, in what precision, and what running out of memory there looks like."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Optional

import torch

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(wanted: str) -> torch.device:
    """``cuda``, ``cpu``, or ``auto``: CUDA when this process sees a GPU."""
    use_cuda = wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


@dataclass(frozen=True)
class Precision:
    """How a child's steps compute: ``name`` is bf16, fp16 (autocast to that type) or fp32.
    fp16 comes with a gradient scaler, as its small gradients would underflow to zero; bf16
    has fp32's range and needs none."""

    name: str
    device_type: str

    def autocast(self) -> torch.autocast:
        dtype = LOW_PRECISION.get(self.name)
        return torch.autocast(self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def pick_precision(wanted: str, device: torch.device, bf16_supported: Optional[bool] = None) -> Precision:
    """``auto``: bf16 on a GPU that computes in it (Ampere and later), else fp16 (V100, T4:
    their bf16 is emulated and slow), fp32 on a CPU. Any other name is taken as it is."""
    if wanted == "auto":
        if device.type != "cuda":
            wanted = "fp32"
        else:
            if bf16_supported is None:
                bf16_supported = torch.cuda.is_bf16_supported(including_emulation=False)
            wanted = "bf16" if bf16_supported else "fp16"
    return Precision(wanted, device.type)


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
