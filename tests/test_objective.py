"""The training objective (x0-prediction MSE with condition dropout) and the embedding augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from c2l_cli.diffusion.objective import augment_embedding, training_loss
from c2l_cli.diffusion.schedule import cosine_schedule
from c2l_cli.prior import Prior, PriorConfig


def _tiny_prior(seed: int = 0, dim: int = 16) -> Prior:
    cfg = PriorConfig(dim=dim, depth=1, heads=2, dim_head=8, latent_repeats=(4,), timesteps=1000)
    return Prior.new(cfg, torch.zeros(dim), torch.ones(dim), device="cpu", seed=seed)


def test_q_sample_formula():
    s = cosine_schedule(1000)
    x0 = torch.randn(3, 4)
    eps = torch.randn(3, 4)
    t = torch.tensor([0, 500, 999])
    x_t = s.q_sample(x0, t, eps)
    ac = s.alphas_cumprod64[t][:, None]
    expected = ac.sqrt() * x0.double() + (1 - ac).sqrt() * eps.double()
    assert torch.allclose(x_t.double(), expected, atol=1e-5)


def test_loss_is_reproducible_from_the_generator():
    prior = _tiny_prior()
    x0, e = torch.randn(8, 16), torch.randn(8, 16)
    a = training_loss(prior.net, x0, e, prior.schedule, generator=torch.Generator().manual_seed(3))
    b = training_loss(prior.net, x0, e, prior.schedule, generator=torch.Generator().manual_seed(3))
    c = training_loss(prior.net, x0, e, prior.schedule, generator=torch.Generator().manual_seed(4))
    assert a.ndim == 0 and torch.equal(a, b) and not torch.equal(a, c)


def test_dropped_condition_ignores_the_embedding():
    prior = _tiny_prior()
    x0 = torch.randn(8, 16)
    losses = [
        training_loss(prior.net, x0, torch.randn(8, 16), prior.schedule, generator=torch.Generator().manual_seed(1), cond_drop_prob=1.0)
        for _ in range(2)
    ]
    assert torch.equal(losses[0], losses[1])
    kept = [
        training_loss(prior.net, x0, torch.randn(8, 16), prior.schedule, generator=torch.Generator().manual_seed(1), cond_drop_prob=0.0)
        for _ in range(2)
    ]
    assert not torch.equal(kept[0], kept[1])


def test_loss_decreases_on_a_toy_problem():
    """Latents are a fixed linear function of the embedding: the prior must learn to predict them."""
    g = torch.Generator().manual_seed(0)
    dim = 16
    proj = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    embeds = torch.randn(256, dim, generator=g)
    latents = embeds @ proj
    mean, std = latents.mean(0), latents.std(0)
    cfg = PriorConfig(dim=dim, depth=1, heads=2, dim_head=8, latent_repeats=(4,))
    prior = Prior.new(cfg, mean, std, device="cpu", seed=0)
    x0_all = prior.normalise_latents(latents)
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-2)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(
                training_loss(prior.net, x0_all, embeds, prior.schedule, generator=torch.Generator().manual_seed(99), cond_drop_prob=0.0)
            )

    before = eval_loss()
    for _ in range(40):
        idx = torch.randint(0, 256, (64,), generator=g)
        loss = training_loss(prior.net, x0_all[idx], embeds[idx], prior.schedule, generator=g, cond_drop_prob=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.75 * before, (before, after)


def test_augmentation_cosine_and_norm():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(512, 512, generator=g) * 3.0
    out = augment_embedding(e, scale=1.0, generator=g)
    cos = torch.nn.functional.cosine_similarity(out, e, dim=-1)
    assert float(cos.mean()) == pytest.approx(1 / math.sqrt(2), abs=0.01)  # ≈0.707 at scale 1 in 512 dims
    assert float(cos.std()) < 0.03
    assert torch.allclose(out.norm(dim=-1), e.norm(dim=-1), rtol=1e-5)
    cos75 = torch.nn.functional.cosine_similarity(augment_embedding(e, scale=0.75, generator=g), e, dim=-1)
    assert float(cos75.mean()) == pytest.approx(1 / math.sqrt(1 + 0.75**2), abs=0.01)
    assert torch.allclose(augment_embedding(e, scale=0.0, generator=g), e, atol=1e-5)


def test_augmentation_reproducible():
    e = torch.randn(4, 32)
    a = augment_embedding(e, generator=torch.Generator().manual_seed(5))
    b = augment_embedding(e, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, e)
