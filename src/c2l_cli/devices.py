"""Device and dtype resolution: explicit parameters everywhere, resolved here once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(name: "str | torch.device | None" = None) -> "torch.device":
    """``None``/``"auto"`` → CUDA when present, else CPU; ``"cuda"`` without CUDA is a DeviceError."""
    import torch

    if isinstance(name, torch.device):
        dev = name
    elif name is None or str(name).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(str(name).strip())
        except RuntimeError as exc:
            raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(dev)!r} was asked for but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(dev)!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError("device 'mps' was asked for but is not available on this machine")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {str(dev)!r} (use auto, cpu, cuda or cuda:N)")
    return dev


def resolve_dtype(name: "str | torch.dtype | None", device: "torch.device") -> "torch.dtype":
    """``auto`` → float16 on CUDA, float32 elsewhere; half precision on the CPU is refused."""
    import torch

    if isinstance(name, torch.dtype):
        dtype = name
    else:
        key = (name or "auto").strip().lower()
        aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
        key = aliases.get(key, key)
        if key not in DTYPES:
            raise UsageError(f"unknown dtype {name!r} (use one of {', '.join(DTYPES)})")
        if key == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        dtype = getattr(torch, key)
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("float16 is not supported on the CPU; use float32 or bfloat16")
    return dtype
