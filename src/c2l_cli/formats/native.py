"""c2l's own weight format: a folder holding ``config.json`` and ``model.safetensors``.

``config.json`` is ``{"format": "c2l", "kind": KIND, "version": 1, "config": {...}, "metadata": {...}}``;
``model.safetensors`` holds every tensor by name. Nothing in either file is executable. Written
atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FormatError
from ..fsutil import atomic_dir

if TYPE_CHECKING:
    import torch

FORMAT = "c2l"
VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class NativeFile:
    """The content of a native file: its kind (``"stylegan"``, ``"prior"``, …), config and tensors."""

    kind: str
    config: dict[str, Any]
    tensors: "dict[str, torch.Tensor]"
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def native_root(path: str | Path) -> Path | None:
    """The folder of a native file given the folder, its config.json or its model.safetensors; else None."""
    p = Path(path)
    if p.is_dir() and (p / CONFIG_NAME).is_file():
        return p
    if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME) and (p.parent / CONFIG_NAME).is_file():
        return p.parent
    return None


def is_native(path: str | Path) -> bool:
    """True when *path* is (or is inside) a c2l native folder."""
    return native_root(path) is not None


def save_native(
    path: str | Path,
    *,
    kind: str,
    config: dict[str, Any],
    tensors: "dict[str, torch.Tensor]",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a native folder at *path* (replacing one that is there) and return its path."""
    from safetensors.torch import save_file

    doc = {"format": FORMAT, "kind": kind, "version": VERSION, "config": config, "metadata": metadata or {}}
    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    target = Path(path)
    with atomic_dir(target) as tmp:
        save_file(flat, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT, "kind": kind})
        (tmp / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return target


def load_native(path: str | Path, *, kind: str | None = None, device: "str | torch.device" = "cpu") -> NativeFile:
    """Read a native folder; with *kind*, a folder of another kind is a FormatError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = native_root(path)
    if root is None:
        raise FormatError(f"{path}: not a c2l model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        doc = json.loads((root / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{root / CONFIG_NAME}: unreadable config ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError(f"{root / CONFIG_NAME}: not a c2l config (missing \"format\": \"{FORMAT}\")")
    if int(doc.get("version", 0)) > VERSION:
        raise FormatError(f"{root}: written by a newer c2l (format version {doc.get('version')})")
    if kind is not None and doc.get("kind") != kind:
        raise FormatError(f"{root}: holds a {doc.get('kind')!r} model, not a {kind!r} model")
    weights = root / WEIGHTS_NAME
    if not weights.is_file():
        raise FormatError(f"{root}: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{weights}: corrupt or truncated safetensors file ({exc})") from exc
    return NativeFile(
        kind=str(doc.get("kind")),
        config=dict(doc.get("config") or {}),
        tensors=tensors,
        metadata=dict(doc.get("metadata") or {}),
        path=root,
    )
