"""Load, save and mix StyleGAN2/StyleGAN3 generators.

``load_generator(source)`` accepts a registry name, a path or a URL (resolved by
:func:`c2l_cli.cache.resolve`) to either an NVIDIA network pickle (read with the restricted
unpickler of :mod:`c2l_cli.formats.nvidia_pickle`; its ``G_ema``; no code from the file runs) or our
own format (a folder with ``config.json`` + ``model.safetensors``, written by :func:`save_generator`).
It returns our own ``nn.Module`` (:class:`c2l_cli.nets.stylegan2.Generator` or
:class:`c2l_cli.nets.stylegan3.Generator`) with NVIDIA's API: ``G.mapping(z, c, truncation_psi,
truncation_cutoff)``, ``G.synthesis(ws, noise_mode)``, ``G(z, ...)``, ``z_dim``, ``w_dim``,
``num_ws``, ``img_resolution``, ``mapping.w_avg``; plus ``G.kind`` (``"stylegan2"``,
``"stylegan3-t"``, ``"stylegan3-r"``), ``G.config`` (the init kwargs) and ``G.source_info``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FormatError, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["build_generator", "load_generator", "save_generator", "style_mix"]

#: Native-format kinds written by :func:`save_generator`.
NATIVE_KINDS = ("stylegan2", "stylegan3")


def _resolve_source(source: str | os.PathLike) -> Path:
    """Registry name / path / URL → local path (plain path when ``c2l_cli.cache`` is unavailable)."""
    try:
        from .cache import resolve
    except ImportError:  # pragma: no cover - only while the cache module does not exist yet
        path = Path(source).expanduser()
        if not path.exists():
            raise FormatError(f"no such file: {source}") from None
        return path
    return resolve(source, kind="generator")


def build_generator(arch: str, config: dict[str, Any]) -> "nn.Module":
    """A randomly initialised generator of ``arch`` (``"stylegan2"``/``"stylegan3"``) from NVIDIA's init kwargs."""
    if arch == "stylegan2":
        from .nets.stylegan2 import Generator
    elif arch == "stylegan3":
        from .nets.stylegan3 import Generator
    else:
        raise FormatError(f"unknown generator architecture {arch!r} (stylegan2 or stylegan3)")
    try:
        return Generator(**dict(config))  # sets kind ("stylegan2", "stylegan3-t"/"-r") and config itself
    except TypeError as exc:
        raise FormatError(f"{arch} generator: bad init arguments ({exc})") from exc


def _finish(G: "nn.Module", device: Any, dtype: Any, compile: bool) -> "nn.Module":
    import torch

    from .devices import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    G.eval().requires_grad_(False)
    G.to(dev)
    # Parameters stay float32 (as the reference); ``dt`` picks what the num_fp16_res blocks compute in.
    if hasattr(G, "set_precision"):
        G.set_precision(dt)
    G.compute_dtype = dt if dev.type == "cuda" else torch.float32
    if compile:
        G.mapping.compile()
        G.synthesis.compile()
    return G


def load_generator(
    source: str | os.PathLike,
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = None,
    *,
    compile: bool = False,
) -> "nn.Module":
    """A StyleGAN2/3 generator from an NVIDIA ``.pkl`` (``G_ema``) or our own folder; eval mode, no grads.

    ``dtype``: ``None``/``"auto"`` = float16 for the top ``num_fp16_res`` resolutions on CUDA (as the
    reference) and float32 on the CPU; ``"float32"`` = float32 everywhere; ``"bfloat16"`` = bfloat16 for
    those blocks on CUDA. Parameters are kept in float32. ``compile=True`` applies ``torch.compile``.
    """
    from .formats import native
    from .formats.nvidia_pickle import load_state_dict_strict, read_network_pickle

    path = _resolve_source(source)
    if native.is_native(path):
        nf = native.load_native(path)
        if nf.kind not in NATIVE_KINDS:
            raise FormatError(f"{path}: holds a {nf.kind!r} model, not a StyleGAN generator")
        G = build_generator(nf.kind, nf.config)
        load_state_dict_strict(G, nf.tensors, what=str(path))
        G.source_info = dict(nf.metadata.get("source_info") or {}, format="c2l")
        return _finish(G, device, dtype, compile)

    if path.is_dir():
        raise FormatError(f"{path}: a folder, but not a c2l model folder (no config.json)")
    # Anything else is read as a pickle: the restricted unpickler is safe on any input.
    net = read_network_pickle(path, key="G_ema")
    if net.class_name != "Generator":
        raise FormatError(f"{path}: G_ema is a {net.class_name}, not a StyleGAN Generator")
    if net.arch is None:
        raise FormatError(f"{path}: cannot tell whether G_ema is a StyleGAN2 or StyleGAN3 generator")
    G = build_generator(net.arch, net.init_kwargs)
    load_state_dict_strict(G, net.state_dict, what=str(path))
    G.source_info = {
        "format": "nvidia-pickle",
        "file": path.name,
        "class_name": net.class_name,
        "module_src_sha256": net.record.module_src_sha256,
    }
    return _finish(G, device, dtype, compile)


def save_generator(G: "nn.Module", path: str | os.PathLike) -> Path:
    """Write ``G`` in our own format (``config.json`` + ``model.safetensors``); reload with :func:`load_generator`."""
    from .formats.native import save_native

    kind = str(getattr(G, "kind", ""))
    arch = "stylegan2" if kind == "stylegan2" else "stylegan3" if kind.startswith("stylegan3") else None
    config = getattr(G, "config", None)
    if arch is None or not isinstance(config, dict):
        raise UsageError("save_generator: not a generator made by c2l (load it with load_generator first)")
    mod = getattr(G, "_orig_mod", G)
    tensors = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in mod.state_dict().items()}
    metadata = {
        "generator_kind": kind,
        "num_ws": int(G.num_ws),
        "img_resolution": int(G.img_resolution),
        "source_info": dict(getattr(G, "source_info", {}) or {}),
    }
    return save_native(path, kind=arch, config=config, tensors=tensors, metadata=metadata)


def style_mix(ws_a: "torch.Tensor", ws_b: "torch.Tensor", k: int) -> "torch.Tensor":
    """Style mixing (paper §5.2.2): ws layers ``[:k]`` from ``ws_a``, ``[k:]`` from ``ws_b`` → [N, num_ws, w_dim].

    Both are ``[N, num_ws, w_dim]``; a batch of 1 on either side broadcasts to the other's batch.
    """
    import torch

    if ws_a.ndim != 3 or ws_b.ndim != 3 or ws_a.shape[1:] != ws_b.shape[1:]:
        raise UsageError(f"style_mix: ws must both be [N, num_ws, w_dim], got {tuple(ws_a.shape)} and {tuple(ws_b.shape)}")
    num_ws = ws_a.shape[1]
    k = int(k)
    if not 0 <= k <= num_ws:
        raise UsageError(f"style_mix: k must be in 0..{num_ws}, got {k}")
    n = max(ws_a.shape[0], ws_b.shape[0])
    if ws_a.shape[0] not in (1, n) or ws_b.shape[0] not in (1, n):
        raise UsageError(f"style_mix: batch sizes {ws_a.shape[0]} and {ws_b.shape[0]} do not broadcast")
    a = ws_a[:, :k].expand(n, -1, -1)
    b = ws_b[:, k:].to(ws_a.device, ws_a.dtype).expand(n, -1, -1)
    return torch.cat([a, b], dim=1)  # (N, num_ws, w_dim)
