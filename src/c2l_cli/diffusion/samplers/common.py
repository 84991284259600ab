"""What the samplers share: the denoiser signature and the ancestral update loop."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

#: ``denoise(x_t [B, …], t [B] long) -> x̂0 [B, …]``: the network (and guidance) behind a sampler.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ancestral_loop(
    denoise: Denoiser,
    noise: torch.Tensor,
    ts: Sequence[int],
    coef1: Sequence[float],
    coef2: Sequence[float],
    sigma: Sequence[float],
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2 with the posterior mean of eq. 7): at step k (from 1),
    ``x ← c1·x̂0(x, t_k) + c2·x + σ·noise[k]``; ``noise[0]`` is ``x_T``. Returns x0 ``[B, …]``."""
    x = noise[0]
    b = x.shape[0]
    for k, t in enumerate(ts, start=1):
        tt = torch.full((b,), t, dtype=torch.long, device=x.device)
        x0 = denoise(x, tt)
        x = coef1[k - 1] * x0 + coef2[k - 1] * x + sigma[k - 1] * noise[k]
    return x
