"""DDIM sampling (Song, Meng & Ermon 2021), deterministic at eta 0, any number of steps.

Eq. 12: ``x_{t'} = √ᾱ_{t'} x̂0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z`` with ``ε̂ = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t)`` and
eq. 16: ``σ = eta · √((1 − ᾱ_{t'})/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_{t'})``. Timesteps as the ``ddpm`` sampler
(evenly spaced from ``T−1`` to 0); eta 1 equals that sampler.
"""

from __future__ import annotations

import math
import torch

from ..schedule import Schedule, spaced_timesteps
from .common import Denoiser


def ddim_coefficients(
    schedule: Schedule, steps: int, eta: float
) -> tuple[list[int], list[float], list[float], list[float]]:
    """``(timesteps, coef_x0, coef_xt, sigma)`` per step in visiting order: ``x' = a·x̂0 + b·x_t + σ z``."""
    ts = spaced_timesteps(schedule.num_timesteps, steps)
    ac = schedule.alphas_cumprod64.detach().to("cpu", torch.float64)[ts].tolist()
    cx0, cxt, sig = [], [], []
    for i in range(len(ts)):
        a_t = ac[i]
        a_p = ac[i + 1] if i + 1 < len(ts) else 1.0
        s = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(max(0.0, 1 - a_t / a_p))
        d = math.sqrt(max(0.0, 1 - a_p - s * s))  # coefficient of ε̂
        # x' = √a_p x̂0 + d (x_t − √a_t x̂0)/√(1 − a_t) + σ z
        cxt.append(d / math.sqrt(1 - a_t))
        cx0.append(math.sqrt(a_p) - d * math.sqrt(a_t) / math.sqrt(1 - a_t))
        sig.append(s)
    return ts, cx0, cxt, sig


@torch.no_grad()
def sample_ddim(denoise: Denoiser, schedule: Schedule, noise: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12 and 16); ``steps = noise.shape[0] − 1``; ``eta`` 0 is deterministic.

    *noise* ``[steps+1, B, …]``: index 0 is ``x_T``, index k the noise of step k (unused at eta 0).
    """
    steps = noise.shape[0] - 1
    ts, cx0, cxt, sig = ddim_coefficients(schedule, steps, float(eta))
    x = noise[0]
    b = x.shape[0]
    for k, t in enumerate(ts, start=1):
        tt = torch.full((b,), t, dtype=torch.long, device=x.device)
        x0 = denoise(x, tt)
        x = cx0[k - 1] * x0 + cxt[k - 1] * x
        if sig[k - 1] != 0.0:  # a Python float from the precomputed table, not a tensor
            x = x + sig[k - 1] * noise[k]
    return x
