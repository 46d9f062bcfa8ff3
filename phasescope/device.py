"""Device selection: use a GPU when there is one, the CPU otherwise."""

from __future__ import annotations

import os
from typing import Literal

import torch

from phasescope.errors import PhasescopeError

DeviceName = Literal["auto", "cpu", "cuda"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PhasescopeError("device 'cuda' was asked for but no CUDA GPU is available (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise PhasescopeError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (the CPU's available physical memory), or None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
