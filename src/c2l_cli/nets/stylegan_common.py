"""What the StyleGAN2 and StyleGAN3 generators share: the mapping network and the ``Generator`` wrapper.

Both follow NVlabs/stylegan3 (``training/networks_stylegan2.py`` and ``training/networks_stylegan3.py``
at commit c233a919a6faee6e36a316ddd4eddababad1adf9): the same mapping network (StyleGAN3's is
StyleGAN2's with 2 layers and feature widths of ``w_dim``), and a generator that checks and records
its init kwargs, builds ``synthesis`` then ``mapping``, and runs mapping (with truncation) then
synthesis. The synthesis networks differ and live in :mod:`.stylegan2` and :mod:`.stylegan3`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import FormatError, UsageError
from .ops import FullyConnectedLayer, normalize_2nd_moment

__all__ = ["GeneratorBase", "MappingNetwork", "check_init_kwargs", "jsonable"]


def jsonable(value: Any) -> Any:
    """Init kwargs as plain JSON types (pickled kwargs may hold numpy scalars/arrays, tuples or EasyDicts)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def check_init_kwargs(owner: str, given: dict[str, Any], known: frozenset[str], what: str) -> None:
    """FormatError naming the keys of ``given`` that are not in ``known`` (``owner``: e.g. "StyleGAN2 Generator")."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise FormatError(f"{owner}: unknown {what}: {', '.join(unknown)}")


class MappingNetwork(nn.Module):
    """z (and label c) → w, broadcast to ``num_ws`` and truncated toward ``w_avg``."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z [N, z_dim] (c [N, c_dim]) → ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None); the
        first ``truncation_cutoff`` ws (all when None) are lerped toward ``w_avg`` by ``truncation_psi``."""
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise UsageError(f"mapping: z must be [N, {self.z_dim}], got {None if z is None else tuple(z.shape)}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise UsageError(f"mapping: this generator is conditional; c must be [N, {self.c_dim}]")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # (N, num_ws, w_dim)

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise UsageError("mapping: this network tracks no w_avg; truncation is unavailable")
            w_avg = self.w_avg.to(x.dtype)
            if self.num_ws is None or truncation_cutoff is None:
                x = w_avg.lerp(x, truncation_psi)
            else:
                k = int(truncation_cutoff)
                x = torch.cat([w_avg.lerp(x[:, :k], truncation_psi), x[:, k:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class GeneratorBase(nn.Module):
    """``mapping`` then ``synthesis``, built from NVIDIA's init kwargs (checked against the known names).

    Subclasses name their networks and the kwargs those accept. ``config`` holds the JSON-safe init
    kwargs (what ``save_generator`` records); ``init_kwargs`` is a copy of it, as NVIDIA's attribute.
    """

    arch: ClassVar[str]  # "stylegan2" / "stylegan3": the native-format kind
    label: ClassVar[str]  # for error messages: "StyleGAN2" / "StyleGAN3"
    mapping_class: ClassVar[type[nn.Module]]
    synthesis_class: ClassVar[type[nn.Module]]
    mapping_kwarg_names: ClassVar[frozenset[str]]
    synthesis_kwarg_names: ClassVar[frozenset[str]]

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        check_init_kwargs(f"{self.label} Generator", mapping_kwargs, self.mapping_kwarg_names, "mapping_kwargs")
        check_init_kwargs(f"{self.label} Generator", synthesis_kwargs, self.synthesis_kwarg_names, "synthesis kwargs")
        self.z_dim = int(z_dim)
        self.c_dim = int(c_dim)
        self.w_dim = int(w_dim)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.config: dict[str, Any] = jsonable(dict(
            z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, img_resolution=self.img_resolution,
            img_channels=self.img_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs,
        ))
        self.synthesis = self.synthesis_class(w_dim=self.w_dim, img_resolution=self.img_resolution,
                                              img_channels=self.img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = self.mapping_class(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim,
                                          num_ws=self.num_ws, **mapping_kwargs)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-able), as NVIDIA's ``G.init_kwargs``."""
        return dict(self.config)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        update_emas: bool = False,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        """z [N, z_dim] → image [N, img_channels, R, R] (mapping with truncation, then synthesis; further
        keyword arguments, e.g. ``force_fp32``, go to ``synthesis``)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)
