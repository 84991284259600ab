"""c2l: text to high-resolution images with a pre-trained StyleGAN and a CLIP-conditioned diffusion prior.

The public API is imported lazily so that ``import c2l_cli`` (and ``c2l --help``) does not import torch::

    import c2l_cli
    G = c2l_cli.load_generator("stylegan2-ffhq-1024")      # registry name, path or URL
    prior = c2l_cli.load_prior("prior-ffhq-sg2-510")
    clip = c2l_cli.load_clip("ViT-B-32:openai")
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_LAZY = {
    "load_generator": "generator",
    "save_generator": "generator",
    "style_mix": "generator",
    "load_prior": "prior",
    "save_prior": "prior",
    "load_clip": "clip",
    "Pipeline": "pipeline",
    "load_latents": "latents",
    "load_direction": "latents",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'c2l_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
