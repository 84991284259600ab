"""The published clip2latent sampler, reproduced exactly (quirk included).

Ported behaviour (no code) from justinpinkney/clip2latent ``clip2latent/latent_prior.py`` at commit
fc18ab19ec03f8a4fd4d6ac0e04f2b34db696946 (``LatentPrior.set_timestep_skip`` and ``p_sample_loop``)
and lucidrains/DALLE2-pytorch ``dalle2_pytorch/dalle2_pytorch.py`` at tag 0.2.38, commit
ecf9e8027d89ea840f6822182a014224e660c9df (``p_sample``, ``q_posterior``):
https://github.com/justinpinkney/clip2latent/blob/fc18ab19ec03f8a4fd4d6ac0e04f2b34db696946/clip2latent/latent_prior.py

With ``skip = T / steps`` it visits ``t = T − skip, …, skip, 0`` and uses the DDPM posterior mean
(Ho et al. 2020, eq. 7) of a schedule respaced to ``ᾱ_0, ᾱ_skip, ᾱ_2skip, …`` — but the noise it adds
uses the *original* 1000-step ``posterior_log_variance_clipped[t]``, not the respaced one. It also starts
from pure noise at ``t = T − skip`` rather than ``T − 1``. The published images were made this way.
"""

from __future__ import annotations

import torch

from ..schedule import Schedule, posterior_coefficients
from .common import Denoiser, ancestral_loop


def reference_coefficients(schedule: Schedule, skip: int) -> tuple[list[int], list[float], list[float], list[float]]:
    """``(timesteps, coef1, coef2, sigma)`` per step, in visiting order, computed in float32 as upstream."""
    T = schedule.num_timesteps
    if skip < 1 or T % skip:
        raise ValueError(f"{T} timesteps do not divide evenly by skip {skip}")
    ac = schedule.alphas_cumprod.detach().to("cpu", torch.float32)
    kept = ac[::skip]  # ᾱ at t = 0, skip, 2·skip, …
    prev = torch.cat((torch.ones(1, dtype=torch.float32), kept[:-1]))
    betas = 1 - kept / prev  # float32 as upstream
    ac_r = torch.cumprod(1.0 - betas, dim=0)  # the respaced ᾱ, re-accumulated in float32 as upstream
    ac_r_prev = torch.cat((torch.ones(1, dtype=torch.float32), ac_r[:-1]))
    coef1, coef2, _ = posterior_coefficients(betas, ac_r, ac_r_prev)
    # The quirk: the noise scale comes from the original schedule's log-variance at t.
    logvar = schedule.posterior_log_variance_clipped.detach().to("cpu", torch.float32)[::skip]
    sigma = (0.5 * logvar).exp()
    sigma[0] = 0.0  # no noise is added at t == 0
    order = list(range(len(kept)))[::-1]
    ts = [i * skip for i in order]
    return ts, coef1[order].tolist(), coef2[order].tolist(), sigma[order].tolist()


@torch.no_grad()
def sample_reference(denoise: Denoiser, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """clip2latent's respaced ancestral DDPM (Ho et al. 2020, Alg. 2) with ``steps = noise.shape[0] − 1``.

    *noise* ``[steps+1, B, …]``: index 0 is ``x_T``, index k the noise of step k. Returns x0 ``[B, …]``.
    """
    steps = noise.shape[0] - 1
    T = schedule.num_timesteps
    if steps < 1 or T % steps:
        raise ValueError(f"the reference sampler needs steps dividing {T}, got {steps}")
    return ancestral_loop(denoise, noise, *reference_coefficients(schedule, T // steps))
