"""Shared test helpers: where the golden fixtures live, and an isolated cache per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared_dir() -> Path:
    env = os.environ.get("C2L_SHARED_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "shared", here.parent / "shared"):
        if (candidate / "fixtures").is_dir():
            return candidate
    return here.parent / "shared"


SHARED = _shared_dir()
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` (the golden files written by the reference implementations)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES} (set C2L_SHARED_DIR)")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_models(fixtures_dir) -> dict[str, str]:
    """The tiny fixture models as command-line sources: ``generator`` stylegan2-tiny (w_dim 32, 8 ws),
    ``prior`` prior-tiny, ``clip`` clip-tiny32."""
    return {
        "generator": str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
        "prior": str(fixtures_dir / "prior" / "prior-tiny.ckpt"),
        "clip": f"local-dir:{fixtures_dir / 'clip-tiny32'}",
    }


@pytest.fixture
def server(monkeypatch):
    """A local :class:`httpserver.FileServer` behind every download URL (``C2L_MIRROR``), with short retry back-off."""
    from httpserver import FileServer

    from c2l_cli import cache

    with FileServer() as srv:
        monkeypatch.setenv("C2L_MIRROR", srv.base_url)
        monkeypatch.setattr(cache, "BACKOFF_S", 0.01)
        yield srv


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache and no network settings from the caller's shell."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("C2L_CACHE_DIR", str(cache))
    for var in ("C2L_OFFLINE", "HF_HUB_OFFLINE", "C2L_MIRROR", "C2L_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    yield
