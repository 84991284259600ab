"""c2l_cli.pipeline: seeds, embedding mixing, validation, shape checks and the sampling pipeline (tiny fixtures)."""

from __future__ import annotations

import json

import pytest
import torch

from c2l_cli.errors import ModelMismatchError, UsageError
from c2l_cli.pipeline import (
    Pipeline,
    SampleSettings,
    candidate_seed,
    derive_seed,
    mix_embeddings,
    style_seed,
    validate_settings,
)


@pytest.fixture(scope="module")
def pipe(request) -> Pipeline:
    fx = request.getfixturevalue("fixtures_dir")
    return Pipeline.from_sources(
        generator=fx / "stylegan" / "stylegan2-tiny.pkl",
        prior=fx / "prior" / "prior-tiny.ckpt",
        clip=f"local-dir:{fx / 'clip-tiny32'}",
        device="cpu",
    )


def test_seeds_are_stable_and_distinct():
    # pinned: recipes written today must replay with future versions
    import hashlib

    assert derive_seed(0, "prior", 0, 0) == candidate_seed(0, 0, 0) == 4702391708266618246
    digest = hashlib.sha256(b"c2l/7/style/1/2").digest()
    assert style_seed(7, 1, 2) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert 0 <= candidate_seed(2**63 - 1, 5, 9) < 2**63
    seeds = {candidate_seed(7, p, c) for p in range(4) for c in range(16)}
    seeds |= {style_seed(7, p, c) for p in range(4) for c in range(16)}
    assert len(seeds) == 128
    assert candidate_seed(7, 0, 1) != candidate_seed(8, 0, 1)


def test_mix_embeddings_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 8, generator=g) * 4
    i = torch.randn(1, 8, generator=g) * 9
    torch.testing.assert_close(mix_embeddings(t, i, 0.0), t)
    torch.testing.assert_close(mix_embeddings(t, i, 1.0), i.expand(3, -1))
    m = mix_embeddings(t, i, 0.25)
    torch.testing.assert_close(m.norm(dim=-1), 0.75 * t.norm(dim=-1) + 0.25 * i.norm(dim=-1))
    want = 0.75 * t / t.norm(dim=-1, keepdim=True) + 0.25 * i / i.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(m / m.norm(dim=-1, keepdim=True), want / want.norm(dim=-1, keepdim=True))
    with pytest.raises(UsageError):
        mix_embeddings(t, i, 1.5)


@pytest.mark.parametrize(
    "kw,fragment",
    [
        ({"num_images": 0}, "--num-images"),
        ({"candidates": 2, "num_images": 3}, "--candidates"),
        ({"guidance": -1.0}, "--guidance"),
        ({"guidance": float("nan")}, "--guidance"),
        ({"truncation": 2.01}, "--truncation"),
        ({"steps": 3}, "does not divide"),
        ({"steps": 1001, "sampler": "ddim"}, "more than"),
        ({"sampler": "plms"}, "--sampler"),
        ({"eta": -0.1}, "--eta"),
        ({"batch_size": 0}, "--batch-size"),
        ({"style_mix": 0}, "--style-mix"),
    ],
)
def test_validate_settings(kw, fragment):
    with pytest.raises(UsageError, match=fragment.replace("-", r"\-")):
        validate_settings(SampleSettings(**kw))


def test_validate_settings_model_dependent():
    validate_settings(SampleSettings(steps=3, sampler="ddim"))
    validate_settings(SampleSettings(steps=5), timesteps=1000)
    with pytest.raises(UsageError, match="divide"):
        validate_settings(SampleSettings(steps=4), timesteps=10)
    with pytest.raises(UsageError, match="below"):
        validate_settings(SampleSettings(style_mix=8), num_ws=8)
    validate_settings(SampleSettings(style_mix=7), num_ws=8)


def test_shape_checks(pipe):
    from c2l_cli.generator import build_generator

    small = build_generator("stylegan2", dict(
        z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
        mapping_kwargs={"num_layers": 2}, channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=256,
    ))
    with pytest.raises(ModelMismatchError, match="6 ws"):
        Pipeline(small, pipe.prior, pipe.clip, "cpu")

    class Clip16:  # only the attribute the check reads
        dim = 16

    with pytest.raises(ModelMismatchError, match="embedding size"):
        Pipeline(pipe.generator, pipe.prior, Clip16(), "cpu")
    Pipeline(pipe.generator, None, None, "cpu")  # generator-only pipelines are allowed (c2l edit)


def test_noise_rows_come_from_their_own_seed(pipe):
    noise = pipe.noise_for([3, 4, 5], steps=4)
    assert noise.shape == (5, 3, 32)
    want = torch.randn((5, 32), generator=torch.Generator().manual_seed(4))
    assert torch.equal(noise[:, 1], want)


def test_sample_ws_does_not_depend_on_batch_composition(pipe):
    e = pipe.embed_texts(["a", "b c", "d"])
    ws = pipe.sample_ws(e, [10, 11, 12], steps=4, guidance=2.0)
    assert ws.shape == (3, 8, 32)
    alone = pipe.sample_ws(e[1:2], [11], steps=4, guidance=2.0)
    torch.testing.assert_close(ws[1:2], alone, atol=1e-5, rtol=0)
    other = pipe.sample_ws(e[1:2], [99], steps=4, guidance=2.0)
    assert (other - alone).abs().max() > 1e-3


def test_prior_chunking_keeps_results(pipe, monkeypatch):
    import c2l_cli.pipeline as pl

    e = pipe.embed_texts(["a", "b", "c", "d", "e"])
    whole = pipe.sample_ws(e, [1, 2, 3, 4, 5], steps=10, sampler="ddim")
    monkeypatch.setattr(pl, "NOISE_BUDGET", 2 * 11 * 32)  # two rows per chunk
    chunked = pipe.sample_ws(e, [1, 2, 3, 4, 5], steps=10, sampler="ddim")
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_sample_api(pipe):
    res = pipe.sample(["an old man", "a young woman"], num_images=2, candidates=4, seed=3)
    assert res.images.shape == (4, 3, 32, 32) and res.ws.shape == (4, 8, 32)
    assert res.candidate_scores.shape == (2, 4) and res.seed == 3 and len(res.pil()) == 4
    assert [(it.prompt_index, it.rank) for it in res.items] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for p in range(2):
        row = res.candidate_scores[p]
        kept = [it.candidate_index for it in res.items if it.prompt_index == p]
        assert kept == torch.argsort(row, descending=True)[:2].tolist()
        for it in res.items[2 * p : 2 * p + 2]:
            assert it.score == pytest.approx(float(row[it.candidate_index]), abs=1e-5)
            assert it.candidate_seed == candidate_seed(3, p, it.candidate_index)
    # adding a prompt after a prompt does not change its images
    alone = pipe.sample("an old man", num_images=2, candidates=4, seed=3)
    assert torch.equal(alone.images, res.images[:2])
    # different seed → different images; same seed → identical
    assert not torch.equal(pipe.sample("an old man", candidates=2, seed=4).images, alone.images[:1])
    assert torch.equal(pipe.sample("an old man", candidates=4, seed=3).images, alone.images[:1])


def test_recipe_and_replay(pipe, tmp_path):
    res = pipe.sample(["a red car"], num_images=2, candidates=3, seed=12, style_mix=4, truncation=0.9,
                      batch_size=2)
    for i in range(2):
        recipe = json.loads(json.dumps(pipe.recipe(res, i)))  # JSON round trip
        assert recipe["settings"]["style_mix"] == 4 and recipe["style_seed"] == style_seed(12, 0, res.items[i].candidate_index)
        again = pipe.replay(recipe)
        assert torch.equal(again.images[0], res.images[i])
        assert torch.equal(again.ws[0], res.ws[i])
    varied = pipe.replay(pipe.recipe(res, 0), overrides={"style_mix": None})
    assert torch.equal(varied.ws[0, :4], res.ws[0, :4]) and not torch.equal(varied.ws[0, 4:], res.ws[0, 4:])


def test_conditions(pipe, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(img)
    labels, cond = pipe.conditions(None, str(img))
    assert labels == [None] and cond.shape == (1, 32)
    labels, mixed = pipe.conditions(["a", "b"], str(img), 0.0)
    torch.testing.assert_close(mixed, pipe.embed_texts(["a", "b"]))
    with pytest.raises(UsageError, match="nothing to condition on"):
        pipe.conditions(None, None)
    with pytest.raises(UsageError, match="needs --image"):
        pipe.conditions(["a"], None, 0.5)
    with pytest.raises(UsageError, match="empty prompt"):
        pipe.embed_texts(["ok", " "])
    res = pipe.sample(None, image=str(img), candidates=2, seed=1)
    assert res.prompts == [None] and res.image_condition["weight"] == 1.0
    assert len(res.image_condition["sha256"]) == 64


def test_inexact_mode_keeps_the_batched_renders(pipe):
    exact = pipe.sample(["a dog", "a cat"], num_images=2, candidates=3, seed=5, batch_size=4)
    fast = pipe.sample(["a dog", "a cat"], num_images=2, candidates=3, seed=5, batch_size=4, exact=False)
    assert [it.candidate_index for it in fast.items] == [it.candidate_index for it in exact.items]
    torch.testing.assert_close(fast.images, exact.images, atol=1e-3, rtol=0)
    torch.testing.assert_close(fast.ws, exact.ws, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.scores, exact.scores, atol=1e-4, rtol=0)
