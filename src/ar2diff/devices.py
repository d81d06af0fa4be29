"""Where and in what precision models run: ``--device`` and ``--dtype`` values, checked."""

from __future__ import annotations

import os

import torch

from ar2diff.errors import Ar2DiffError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) → this process's GPU when CUDA is available (its local rank), else
    the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are checked against what this machine has."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise Ar2DiffError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise Ar2DiffError(f"--device {name}: no CUDA device is available here; "
                               "use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise Ar2DiffError(f"--device {name}: this machine has {count} CUDA device(s), "
                               f"cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise Ar2DiffError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``float32`` / ``bfloat16`` → the torch dtype; None stays None (the weights' own)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise Ar2DiffError(f"--dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
