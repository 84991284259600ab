"""Environment variables c2l reads, in one place (see docs/cache.md)."""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def debug() -> bool:
    """``C2L_DEBUG=1``: show tracebacks for known errors."""
    return _flag("C2L_DEBUG")


def offline() -> bool:
    """``C2L_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: never touch the network."""
    return _flag("C2L_OFFLINE") or _flag("HF_HUB_OFFLINE")


def mirror() -> str | None:
    """``C2L_MIRROR=<base URL>``: fetch ``https://HOST/PATH`` as ``<base>/HOST/PATH``."""
    value = os.environ.get("C2L_MIRROR", "").strip()
    return value.rstrip("/") or None


def cache_dir() -> Path:
    """The root of the weight cache: ``C2L_CACHE_DIR`` or the platform's user cache dir."""
    value = os.environ.get("C2L_CACHE_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("c2l", appauthor=False))
