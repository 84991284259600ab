"""The noise schedule of the prior: the cosine schedule of Nichol & Dhariwal (2021, eq. 17) over 1000 steps.

Buffers are computed in float64 and stored as float32, exactly as DALLE2-pytorch 0.2.38's
``BaseGaussianDiffusion`` does (the published checkpoints and the fixtures hold the same values).
Notation (Ho et al. 2020): ``ᾱ_t = alphas_cumprod[t]``, ``q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)``,
posterior ``q(x_{t−1} | x_t, x_0) = N(c1_t x_0 + c2_t x_t, β̃_t I)`` (eq. 6–7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

COSINE_S = 0.008  # Nichol & Dhariwal's offset: keeps β small near t = 0
MAX_BETA = 0.999  # betas are clipped so that the last step is not singular


def cosine_betas(timesteps: int, s: float = COSINE_S) -> torch.Tensor:
    """float64 ``β_t = 1 − ᾱ_t/ᾱ_{t−1}`` with ``ᾱ(x) = cos²((x/T + s)/(1 + s) · π/2)``, clipped to [0, 0.999]."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    return torch.clip(1 - (f[1:] / f[:-1]), 0, MAX_BETA)


@dataclass(frozen=True)
class Schedule:
    """float32 buffers ``[T]`` of a discrete Gaussian diffusion, plus ``alphas_cumprod64`` for respacing."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    alphas_cumprod64: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: "torch.device | str") -> "Schedule":
        """A copy with every buffer on *device*."""
        return Schedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε`` (Ho et al. 2020, eq. 4); ``t`` ``(B,)`` int64 on x0's device."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = self.sqrt_alphas_cumprod.to(x0.device)[t].reshape(shape).to(x0.dtype)
        s = self.sqrt_one_minus_alphas_cumprod.to(x0.device)[t].reshape(shape).to(x0.dtype)
        return a * x0 + s * noise


def posterior_coefficients(
    betas: torch.Tensor, ac: torch.Tensor, ac_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c1, c2, β̃)`` of the posterior ``q(x_{t−1} | x_t, x_0) = N(c1 x_0 + c2 x_t, β̃ I)`` (Ho et al. 2020,
    eq. 6–7), elementwise in the dtype of the inputs: ``betas``, ``ac = ᾱ_t`` and ``ac_prev = ᾱ_{t−1}``."""
    coef1 = betas * torch.sqrt(ac_prev) / (1.0 - ac)
    coef2 = (1.0 - ac_prev) * torch.sqrt(1.0 - betas) / (1.0 - ac)
    var = betas * (1.0 - ac_prev) / (1.0 - ac)
    return coef1, coef2, var


def schedule_from_betas(betas64: torch.Tensor) -> Schedule:
    """All buffers from float64 betas, computed in float64 and stored as float32."""
    betas = betas64.to(torch.float64)
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat((torch.ones(1, dtype=torch.float64), ac[:-1]))
    coef1, coef2, post_var = posterior_coefficients(betas, ac, ac_prev)
    f32 = lambda v: v.to(torch.float32)  # noqa: E731
    return Schedule(
        betas=f32(betas),
        alphas_cumprod=f32(ac),
        alphas_cumprod_prev=f32(ac_prev),
        sqrt_alphas_cumprod=f32(torch.sqrt(ac)),
        sqrt_one_minus_alphas_cumprod=f32(torch.sqrt(1.0 - ac)),
        posterior_variance=f32(post_var),
        posterior_log_variance_clipped=f32(torch.log(post_var.clamp(min=1e-20))),
        posterior_mean_coef1=f32(coef1),
        posterior_mean_coef2=f32(coef2),
        alphas_cumprod64=ac,
    )


def cosine_schedule(timesteps: int = 1000, *, device: "torch.device | str | None" = None) -> Schedule:
    """The prior's schedule: cosine (Nichol & Dhariwal 2021, eq. 17) with *timesteps* steps."""
    sched = schedule_from_betas(cosine_betas(timesteps))
    return sched.to(device) if device is not None else sched


def make_schedule(name: str, timesteps: int, *, device: "torch.device | str | None" = None) -> Schedule:
    """A schedule by name; only ``"cosine"`` (what clip2latent used) is supported."""
    if name != "cosine":
        raise ValueError(f"unsupported beta schedule {name!r} (only 'cosine')")
    return cosine_schedule(timesteps, device=device)


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from ``T−1`` down to 0, both ends included (Nichol & Dhariwal 2021, §4).

    Descending: the order in which a sampler visits them.
    """
    if steps < 1 or steps > num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (steps - 1)
    ts = sorted({int(round(i * stride)) for i in range(steps)})
    return ts[::-1]
