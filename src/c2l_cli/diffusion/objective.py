"""The prior's training objective and the CLIP-embedding augmentation of the paper.

``training_loss``: x0-prediction MSE (DALL-E 2 §2.2; DALLE2-pytorch ``DiffusionPrior.p_losses`` with
``predict_x_start=True``) at timesteps drawn uniformly from ``[0, T)``, with the condition dropped with
probability ``cond_drop_prob`` so that classifier-free guidance works (Ho & Salimans 2021).
``augment_embedding``: clip2latent Appendix A.1 (as LAFITE, and clip2latent's ``data.add_noise``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .schedule import Schedule

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def training_loss(
    net: Net,
    x0: torch.Tensor,
    embed: torch.Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None,
    cond_drop_prob: float = 0.2,
) -> torch.Tensor:
    """Scalar ``mean ‖net(q_sample(x0, t, ε), t, embed, keep) − x0‖²`` with ``t ~ U{0..T−1}``, ``ε ~ N(0, I)``.

    ``x0`` ``[B, *latent_shape]``: latents already normalised (``Prior.normalise_latents``); ``embed``
    ``[B, D]`` (already augmented). ``keep[b]`` is False with probability ``cond_drop_prob``. All random draws
    come from *generator* (on its own device, then moved to ``x0``'s device).
    """
    b = x0.shape[0]
    device = x0.device
    gen_device = generator.device if generator is not None else device
    T = schedule.num_timesteps
    t = torch.randint(0, T, (b,), generator=generator, device=gen_device).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)
    if cond_drop_prob <= 0:
        keep = None
    elif cond_drop_prob >= 1:
        keep = torch.zeros(b, dtype=torch.bool, device=device)
    else:
        keep = (torch.rand(b, generator=generator, device=gen_device) >= cond_drop_prob).to(device)
    x_t = schedule.q_sample(x0, t, noise)
    pred = net(x_t, t, embed, keep)
    return F.mse_loss(pred, x0)


def augment_embedding(embed: torch.Tensor, scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Paper App. A.1: ``‖e‖ · normalize(ê + scale · n̂)``, ``ê = e/‖e‖``, ``n̂`` a unit Gaussian direction.

    In D dimensions the result's cosine to ``e`` is about ``1/√(1 + scale²)`` (≈0.71 at scale 1).
    """
    norm = embed.norm(dim=-1, keepdim=True)
    unit = embed / norm
    gen_device = generator.device if generator is not None else embed.device
    n = torch.randn(embed.shape, generator=generator, device=gen_device, dtype=embed.dtype).to(embed.device)
    n = n / n.norm(dim=-1, keepdim=True)
    out = unit + scale * n
    return out / out.norm(dim=-1, keepdim=True) * norm
