"""Which torch device to run on: "auto" picks CUDA, then Apple's MPS, then the CPU.

On a GPU the model runs in torch under autocast (float16, or bfloat16 where the GPU has
it); the ONNX Runtime and bfloat16 fast paths of `posture.serving` are for the CPU.
"""

from __future__ import annotations

import torch

from posture.errors import UsageError

__all__ = ["DEVICES", "autocast_dtype", "available_devices", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The device kinds this machine has, fastest first (always ends with "cpu")."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" (None too), "cpu", "cuda", "cuda:1" or "mps" -> a torch.device that exists here.

    Raises UsageError naming the devices this machine has when the one asked for is absent.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    have = available_devices()
    if kind == "auto":
        return torch.device(have[0])
    if kind not in have:
        raise UsageError(f"device {name!r} is not available on this machine; available: {', '.join(have)}")
    if kind == "cuda" and ":" in name:
        try:
            index = int(name.split(":", 1)[1])
        except ValueError:
            raise UsageError(f"device {name!r}: the CUDA index must be a number") from None
        if not 0 <= index < torch.cuda.device_count():
            raise UsageError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for a GPU (bfloat16 where supported, else float16); None on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None
