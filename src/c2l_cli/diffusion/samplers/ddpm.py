"""Ancestral DDPM sampling on a properly respaced schedule (any number of steps).

Ho et al. 2020, Alg. 2 with the posterior of eq. 6–7 and the "small" variance β̃; respacing as
Nichol & Dhariwal 2021 ("Improved DDPM", §4): keep ``steps`` evenly spaced timesteps from ``T−1`` to 0,
set ``β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}`` and use that schedule's posterior mean *and* variance.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..schedule import Schedule, spaced_timesteps

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddpm_coefficients(schedule: Schedule, steps: int) -> tuple[list[int], list[float], list[float], list[float]]:
    """``(timesteps, coef1, coef2, sigma)`` per step in visiting order, computed in float64."""
    ts = spaced_timesteps(schedule.num_timesteps, steps)[::-1]  # ascending
    ac_all = schedule.alphas_cumprod64.detach().to("cpu", torch.float64)
    ac = ac_all[ts]
    ac_prev = torch.cat((torch.ones(1, dtype=torch.float64), ac[:-1]))
    betas = 1 - ac / ac_prev
    coef1 = betas * torch.sqrt(ac_prev) / (1 - ac)
    coef2 = (1 - ac_prev) * torch.sqrt(1 - betas) / (1 - ac)
    var = betas * (1 - ac_prev) / (1 - ac)
    sigma = torch.sqrt(var)
    sigma[0] = 0.0  # the last step returns the posterior mean
    return ts[::-1], coef1.flip(0).tolist(), coef2.flip(0).tolist(), sigma.flip(0).tolist()


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """Respaced ancestral DDPM (Ho et al. 2020 Alg. 2; Nichol & Dhariwal 2021 §4); ``steps = noise.shape[0] − 1``.

    *noise* ``[steps+1, B, …]``: index 0 is ``x_T``, index k the noise of step k. Returns x0 ``[B, …]``.
    """
    steps = noise.shape[0] - 1
    ts, c1, c2, sig = ddpm_coefficients(schedule, steps)
    x = noise[0]
    b = x.shape[0]
    for k, t in enumerate(ts, start=1):
        tt = torch.full((b,), t, dtype=torch.long, device=x.device)
        x0 = denoise(x, tt)
        x = c1[k - 1] * x0 + c2[k - 1] * x + sig[k - 1] * noise[k]
    return x
