"""Samplers as functions of a denoiser: checked with the exact x0 predictor of Gaussian data, for which
a correct sampler must return samples from that Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from c2l_cli.diffusion.samplers.ddim import ddim_coefficients, sample_ddim
from c2l_cli.diffusion.samplers.ddpm import ddpm_coefficients, sample_ddpm
from c2l_cli.diffusion.samplers.reference import reference_coefficients, sample_reference
from c2l_cli.diffusion.schedule import cosine_schedule, spaced_timesteps

SCHED = cosine_schedule(1000)
MU, SD = 1.5, 0.5  # data: x0 ~ N(MU, SD²) per coordinate


def gaussian_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(MU, SD²): the exact x0 prediction."""
    a = SCHED.alphas_cumprod64.to(x_t.device)[t].reshape(-1, *([1] * (x_t.dim() - 1)))
    gain = a.sqrt() * SD**2 / (a * SD**2 + 1 - a)
    return (MU + gain * (x_t - a.sqrt() * MU)).to(x_t.dtype)


def noise(steps: int, batch: int = 4, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(steps + 1, batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_spaced_timesteps():
    assert spaced_timesteps(1000, 1) == [999]
    assert spaced_timesteps(1000, 4) == [999, 666, 333, 0]
    ts = spaced_timesteps(1000, 50)
    assert len(set(ts)) == 50 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert spaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 1001)


def test_reference_visits_the_published_timesteps():
    ts, c1, c2, sig = reference_coefficients(SCHED, 250)
    assert ts == [750, 500, 250, 0]
    assert c1[-1] == pytest.approx(1.0) and c2[-1] == pytest.approx(0.0) and sig[-1] == 0.0
    # the quirk: the noise scale is the original 1000-step posterior std at t, not the respaced one
    for t, s in zip(ts[:-1], sig[:-1]):
        assert s == pytest.approx(math.exp(0.5 * float(SCHED.posterior_log_variance_clipped[t])), rel=1e-6)
    _, _, _, sig_ddpm = ddpm_coefficients(SCHED, 4)
    assert sig_ddpm[0] > 3 * sig[0]


def test_ddpm_at_1000_steps_equals_reference_at_1000_steps():
    n = noise(1000, batch=3, dim=5)
    a = sample_reference(gaussian_denoiser, SCHED, n.float())
    b = sample_ddpm(gaussian_denoiser, SCHED, n.float())
    assert (a - b).abs().max() <= 1e-4


def test_ddim_eta0_is_deterministic():
    n = noise(20)
    a = sample_ddim(gaussian_denoiser, SCHED, n, eta=0.0)
    other = n.clone()
    other[1:] = torch.randn_like(other[1:])  # different step noise, same x_T
    b = sample_ddim(gaussian_denoiser, SCHED, other, eta=0.0)
    c = sample_ddim(gaussian_denoiser, SCHED, n, eta=0.0)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, sample_ddim(gaussian_denoiser, SCHED, n, eta=0.5))


def test_ddim_eta1_equals_ddpm():
    for steps in (3, 10, 64):
        n = noise(steps)
        assert (sample_ddim(gaussian_denoiser, SCHED, n, eta=1.0) - sample_ddpm(gaussian_denoiser, SCHED, n)).abs().max() < 1e-9


def test_last_step_returns_the_x0_prediction():
    for coeffs in (ddpm_coefficients(SCHED, 5), ddim_coefficients(SCHED, 5, 0.3)):
        ts, c_x0, c_xt, sig = coeffs
        assert ts[-1] == 0 and c_x0[-1] == pytest.approx(1.0) and c_xt[-1] == pytest.approx(0.0) and sig[-1] == 0.0


@pytest.mark.parametrize(
    "sampler,steps,rel",
    [("ddpm", 200, 0.04), ("ddpm", 50, 0.1), ("ddim", 50, 0.1), ("ddim_eta05", 50, 0.1)],
)
def test_exact_denoiser_gives_the_data_distribution(sampler, steps, rel):
    n = noise(steps, batch=4000, dim=1, seed=1)
    if sampler == "ddpm":
        x = sample_ddpm(gaussian_denoiser, SCHED, n)
    elif sampler == "ddim":
        x = sample_ddim(gaussian_denoiser, SCHED, n, eta=0.0)
    else:
        x = sample_ddim(gaussian_denoiser, SCHED, n, eta=0.5)
    assert float(x.mean()) == pytest.approx(MU, abs=0.04)
    assert float(x.std()) == pytest.approx(SD, rel=rel)


def test_reference_quirk_under_disperses():
    """With the 1000-step noise scale at 50 respaced steps, the reference's spread collapses (docs/prior.md)."""
    n = noise(50, batch=4000, dim=1, seed=1)
    ref = sample_reference(gaussian_denoiser, SCHED, n)
    ddpm = sample_ddpm(gaussian_denoiser, SCHED, n)
    assert float(ref.std()) < 0.5 * float(ddpm.std())
    assert float(ref.mean()) == pytest.approx(MU, abs=0.05)


def test_samplers_keep_device_and_dtype():
    n = noise(4).float()
    for out in (
        sample_reference(gaussian_denoiser, SCHED, n),
        sample_ddpm(gaussian_denoiser, SCHED, n),
        sample_ddim(gaussian_denoiser, SCHED, n, eta=0.2),
    ):
        assert out.dtype == torch.float32 and out.shape == n.shape[1:]


def test_reference_rejects_steps_not_dividing():
    with pytest.raises(ValueError):
        sample_reference(gaussian_denoiser, SCHED, noise(3))
