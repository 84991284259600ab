"""Ancestral DDPM sampling on a properly respaced schedule (any number of steps).

Ho et al. 2020, Alg. 2 with the posterior of eq. 6–7 and the "small" variance β̃; respacing as
Nichol & Dhariwal 2021 ("Improved DDPM", §4): keep ``steps`` evenly spaced timesteps from ``T−1`` to 0,
set ``β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}`` and use that schedule's posterior mean *and* variance.
"""

from __future__ import annotations

import torch

from ..schedule import Schedule, posterior_coefficients, spaced_timesteps
from .common import Denoiser, ancestral_loop


def ddpm_coefficients(schedule: Schedule, steps: int) -> tuple[list[int], list[float], list[float], list[float]]:
    """``(timesteps, coef1, coef2, sigma)`` per step in visiting order, computed in float64."""
    ts = spaced_timesteps(schedule.num_timesteps, steps)[::-1]  # ascending
    ac_all = schedule.alphas_cumprod64.detach().to("cpu", torch.float64)
    ac = ac_all[ts]
    ac_prev = torch.cat((torch.ones(1, dtype=torch.float64), ac[:-1]))
    betas = 1 - ac / ac_prev
    coef1, coef2, var = posterior_coefficients(betas, ac, ac_prev)
    sigma = torch.sqrt(var)
    sigma[0] = 0.0  # the last step returns the posterior mean
    return ts[::-1], coef1.flip(0).tolist(), coef2.flip(0).tolist(), sigma.flip(0).tolist()


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """Respaced ancestral DDPM (Ho et al. 2020 Alg. 2; Nichol & Dhariwal 2021 §4); ``steps = noise.shape[0] − 1``.

    *noise* ``[steps+1, B, …]``: index 0 is ``x_T``, index k the noise of step k. Returns x0 ``[B, …]``.
    """
    steps = noise.shape[0] - 1
    return ancestral_loop(denoise, noise, *ddpm_coefficients(schedule, steps))
