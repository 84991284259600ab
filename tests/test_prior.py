"""The diffusion prior: parity with the reference (DALLE2-pytorch 0.2.38 + clip2latent) on the golden
fixtures, our own format, and clear errors for bad files and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from c2l_cli.errors import C2LError, FormatError, ModelMismatchError, UsageError
from c2l_cli.formats.clip2latent_ckpt import parse_yaml, read_checkpoint, read_yaml_config
from c2l_cli.prior import Prior, PriorConfig, load_prior, save_prior

NAMES = ["prior-tiny", "prior-w3-tiny"]
TOL = 1e-4
SCHEDULE_KEYS = [
    "betas",
    "alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
]


@pytest.fixture(scope="module")
def prior_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "prior"


@pytest.fixture(scope="module")
def meta(prior_dir: Path) -> dict:
    return json.loads((prior_dir / "prior-fixtures.json").read_text())


_CACHE: dict[str, tuple[Prior, dict]] = {}


def _loaded(prior_dir: Path, name: str) -> tuple[Prior, dict]:
    if name not in _CACHE:
        prior = load_prior(prior_dir / f"{name}.ckpt", device="cpu")
        expected = dict(np.load(prior_dir / f"{name}-expected.npz"))
        _CACHE[name] = (prior, expected)
    return _CACHE[name]


def _maxdiff(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().cpu().double() - torch.from_numpy(b).double()).abs().max())


# --- parity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_loaded_shapes_match_fixture_settings(prior_dir, meta, name):
    prior, _ = _loaded(prior_dir, name)
    m = meta[name]
    c = prior.config
    assert (c.dim, c.depth, c.heads, c.dim_head, c.n_latents) == (m["dim"], m["depth"], m["heads"], m["dim_head"], m["n_latents"])
    assert list(c.latent_repeats) == m["latent_repeats"]
    assert prior.num_ws == sum(m["latent_repeats"]) == 8
    assert prior.embed_dim == prior.w_dim == m["dim"]
    assert prior.latent_shape == ((m["dim"],) if m["n_latents"] == 1 else (m["n_latents"], m["dim"]))
    assert not prior.training and not any(p.requires_grad for p in prior.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_schedule_buffers_match(prior_dir, name):
    prior, exp = _loaded(prior_dir, name)
    for key in SCHEDULE_KEYS:
        assert _maxdiff(getattr(prior.schedule, key), exp[f"schedule_{key}"]) <= TOL, key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("guidance,key", [(1.0, "net_out_cond"), (0.0, "net_out_uncond"), (2.0, "net_out_cfg2")])
def test_predict_x0_matches_reference(prior_dir, name, guidance, key):
    prior, exp = _loaded(prior_dir, name)
    x = torch.from_numpy(exp["net_x"])
    t = torch.from_numpy(exp["net_t"])
    e = torch.from_numpy(exp["net_text_embed"])
    out = prior.predict_x0(x, t, e, guidance=guidance)
    assert out.shape == x.shape
    assert _maxdiff(out, exp[key]) <= TOL


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("run", [0, 1, 2, pytest.param(3, marks=pytest.mark.slow)])  # run 3: 1000 steps
def test_reference_sampler_reproduces_recorded_runs(prior_dir, meta, name, run):
    prior, exp = _loaded(prior_dir, name)
    settings = meta[name]["runs"][run]
    assert settings["steps"] * settings["skip"] == 1000
    noise = torch.from_numpy(exp[f"run{run}_noise"])
    assert noise.shape[0] == settings["noise_draws"] == settings["steps"] + 1
    ws = prior.sample(
        torch.from_numpy(exp["net_text_embed"]),
        steps=settings["steps"],
        guidance=settings["cond_scale"],
        truncation=settings["truncation"],
        sampler="reference",
        noise=noise,
    )
    assert ws.shape == exp[f"run{run}_w"].shape == (4, prior.num_ws, prior.w_dim)
    assert _maxdiff(ws, exp[f"run{run}_w"]) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_embedding_cache_equals_the_full_pass(prior_dir, name):
    """The sampling loop reuses the embedding token's keys/values; that must not change the result."""
    prior, exp = _loaded(prior_dir, name)
    x = torch.from_numpy(exp["net_x"])
    t = torch.from_numpy(exp["net_t"])
    e = torch.from_numpy(exp["net_text_embed"])
    cache = prior.net.embed_cache(e)
    for keep in (None, torch.tensor([True, False, True, False])):
        full = prior.net(x, t, e, keep)
        fast = prior.net(x, t, e, keep, cache)
        assert (full - fast).abs().max() <= 1e-5


@pytest.mark.slow
def test_ddpm_at_1000_steps_equals_the_recorded_reference_run(prior_dir):
    """At 1000 steps the respacing is the identity, so the proper DDPM sampler is the reference one.

    Not to 1e-4 with a real network: the reference recomputes its 1000-step coefficients in float32
    (``set_timestep_skip(1)``; β_t near t = 0 loses ~1e-3 relative precision), ``ddpm`` keeps the exact
    float64-derived ones; the outputs differ by ~8e-4 here. tests/test_samplers.py shows the two
    samplers equal to 1e-4 with a smooth denoiser.
    """
    prior, exp = _loaded(prior_dir, "prior-tiny")
    ws = prior.sample(
        torch.from_numpy(exp["net_text_embed"]), steps=1000, guidance=1.0, sampler="ddpm", noise=torch.from_numpy(exp["run3_noise"])
    )
    assert _maxdiff(ws, exp["run3_w"]) <= 2e-3


def test_uses_ema_weights_not_online(prior_dir):
    prior, _ = _loaded(prior_dir, "prior-tiny")
    ckpt = read_checkpoint(prior_dir / "prior-tiny.ckpt")
    ema_q = ckpt.tensors["net.learned_query"].reshape(1, -1)
    assert torch.equal(prior.net.learned_query.cpu(), ema_q)


def test_guidance_zero_ignores_the_embedding(prior_dir):
    prior, exp = _loaded(prior_dir, "prior-w3-tiny")
    x = torch.from_numpy(exp["net_x"])
    t = torch.from_numpy(exp["net_t"])
    a = prior.predict_x0(x, t, torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), guidance=0.0)
    b = prior.predict_x0(x, t, torch.randn(4, 32, generator=torch.Generator().manual_seed(2)), guidance=0.0)
    assert torch.equal(a, b)


def test_cond_and_uncond_run_as_one_batch(prior_dir, monkeypatch):
    prior, exp = _loaded(prior_dir, "prior-tiny")
    batches: list[int] = []
    real = prior.net.forward

    def spy(x, t, e, keep=None, cache=None):
        batches.append(x.shape[0])
        return real(x, t, e, keep, cache)

    monkeypatch.setattr(prior.net, "forward", spy)
    e = torch.from_numpy(exp["net_text_embed"])
    prior.sample(e, steps=4, guidance=2.0, generator=0)
    assert batches == [8] * 4
    batches.clear()
    prior.sample(e, steps=5, guidance=1.0, sampler="ddim", generator=0)
    assert batches == [4] * 5


def test_rows_are_independent_of_batch_composition(prior_dir):
    prior, exp = _loaded(prior_dir, "prior-w3-tiny")
    e = torch.from_numpy(exp["net_text_embed"])
    noise = torch.from_numpy(exp["run2_noise"])
    full = prior.sample(e, steps=10, guidance=1.5, noise=noise)
    one = prior.sample(e[2:3], steps=10, guidance=1.5, noise=noise[:, 2:3])
    assert (full[2:3] - one).abs().max() <= 1e-4  # float32 rounding only


def test_generator_and_seed_are_reproducible(prior_dir):
    prior, exp = _loaded(prior_dir, "prior-tiny")
    e = torch.from_numpy(exp["net_text_embed"])
    a = prior.sample(e, generator=torch.Generator().manual_seed(7))
    b = prior.sample(e, generator=7)
    c = prior.sample(e, generator=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_truncation_zero_returns_the_mean(prior_dir):
    prior, exp = _loaded(prior_dir, "prior-w3-tiny")
    ws = prior.sample(torch.from_numpy(exp["net_text_embed"]), truncation=0.0, generator=0)
    assert torch.allclose(ws, prior.repeat_latents(prior.latent_mean.expand(4, 3, 32)), atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_other_samplers_run_any_step_count(prior_dir, sampler):
    prior, exp = _loaded(prior_dir, "prior-w3-tiny")
    ws = prior.sample(torch.from_numpy(exp["net_text_embed"]), steps=7, sampler=sampler, eta=0.5, generator=3)
    assert ws.shape == (4, 8, 32) and torch.isfinite(ws).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_loop_does_not_sync_on_cuda(prior_dir):
    from c2l_cli.diffusion.samplers.ddim import sample_ddim
    from c2l_cli.diffusion.samplers.reference import sample_reference

    prior = load_prior(prior_dir / "prior-w3-tiny.ckpt", device="cuda")
    _, exp = _loaded(prior_dir, "prior-w3-tiny")
    e = torch.from_numpy(exp["net_text_embed"]).cuda()
    noise = torch.from_numpy(exp["run0_noise"]).cuda()
    denoise = prior._guided(2.0, e, cached=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x_ref = sample_reference(denoise, prior._schedule_cpu, noise)
        x_ddim = sample_ddim(denoise, prior._schedule_cpu, noise, eta=0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x_ref).all() and torch.isfinite(x_ddim).all()
    ws = prior.sample(e, noise=noise, guidance=2.0)
    assert _maxdiff(ws, exp["run0_w"]) <= TOL


# --- our format -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_native_round_trip_is_exact(prior_dir, tmp_path, name):
    prior, exp = _loaded(prior_dir, name)
    out = save_prior(prior, tmp_path / "p", metadata={"source": name})
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    doc = json.loads((out / "config.json").read_text())
    assert doc["kind"] == "prior" and doc["config"]["latent_repeats"] == list(prior.config.latent_repeats)
    again = load_prior(out, device="cpu")
    assert again.config == prior.config
    noise = torch.from_numpy(exp["run0_noise"])
    e = torch.from_numpy(exp["net_text_embed"])
    assert torch.equal(again.sample(e, noise=noise), prior.sample(e, noise=noise))
    assert _maxdiff(again.sample(e, noise=noise), exp["run0_w"]) <= TOL


def test_new_prior_is_seeded_and_trainable(tmp_path):
    cfg = PriorConfig(dim=16, depth=1, heads=2, dim_head=8, latent_repeats=(4,))
    state = torch.random.get_rng_state()
    a = Prior.new(cfg, torch.zeros(16), torch.ones(16), device="cpu", seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = Prior.new(cfg, torch.zeros(16), torch.ones(16), device="cpu", seed=5)
    assert a.training and all(p.requires_grad for p in a.parameters())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    save_prior(a, tmp_path / "new")
    assert load_prior(tmp_path / "new", device="cpu").config == cfg


def test_w3_new_prior_shapes():
    cfg = PriorConfig(dim=16, depth=1, heads=2, dim_head=8, n_latents=3, latent_repeats=(2, 2, 4))
    p = Prior.new(cfg, torch.zeros(3, 16), torch.ones(3, 16), device="cpu", seed=0).eval()
    ws = p.sample(torch.randn(2, 16), steps=2, sampler="ddim", generator=0)
    assert ws.shape == (2, 8, 16)
    lat = torch.randn(2, 3, 16)
    assert torch.allclose(p.denormalise_latents(p.normalise_latents(lat)), lat, atol=1e-6)


# --- the sidecar yaml and the config reader -------------------------------------------------------------------


def test_yaml_sidecar_equals_embedded_config(prior_dir):
    for name in NAMES:
        assert read_yaml_config(prior_dir / f"{name}.yaml") == read_checkpoint(prior_dir / f"{name}.ckpt").cfg


def test_yaml_parser_handles_hydra_syntax():
    text = "model:\n  network:\n    dim: 512 # width\n  diffusion:\n    image_embed_dim: ${model.network.dim}\n" \
        "    lr: 1.0e-4\n    it: 1_000_000\n    path: 'a b'\ndata:\n  latent_repeats: [4,4,10]\n  list:\n  - 1\n  - x\n"
    cfg = read_yaml_config_from_text(text)
    assert cfg["model"]["diffusion"] == {"image_embed_dim": 512, "lr": 1e-4, "it": 1000000, "path": "a b"}
    assert cfg["data"] == {"latent_repeats": [4, 4, 10], "list": [1, "x"]}


def read_yaml_config_from_text(text: str) -> dict:
    from c2l_cli.formats.clip2latent_ckpt import resolve_interpolations

    return resolve_interpolations(parse_yaml(text))


def _rewrite_checkpoint(src: Path, dst: Path, *, drop=(), cfg="keep", only_online=False) -> Path:
    """A modified copy of a fixture checkpoint, written with plain types only."""
    ck = read_checkpoint(src)
    sd = {}
    for k, v in ck.tensors.items():
        if k in drop:
            continue
        sd[("diffusion_prior." if only_online else "ema_diffusion_prior.ema_model.") + k] = v
    obj = {"state_dict": sd}
    if cfg == "keep":
        obj["cfg"] = ck.cfg
    elif cfg is not None:
        obj["cfg"] = cfg
    torch.save(obj, dst)
    return dst


def test_sidecar_yaml_is_used_when_the_checkpoint_has_no_config(prior_dir, tmp_path):
    ck = _rewrite_checkpoint(prior_dir / "prior-tiny.ckpt", tmp_path / "x.ckpt", cfg=None)
    with pytest.raises(FormatError, match="no config"):
        load_prior(ck)
    shutil.copy(prior_dir / "prior-tiny.yaml", tmp_path / "x.yaml")
    prior = load_prior(ck, device="cpu")
    _, exp = _loaded(prior_dir, "prior-tiny")
    ws = prior.sample(torch.from_numpy(exp["net_text_embed"]), noise=torch.from_numpy(exp["run0_noise"]))
    assert _maxdiff(ws, exp["run0_w"]) <= TOL
    os.remove(tmp_path / "x.yaml")
    assert load_prior(ck, device="cpu", config=prior_dir / "prior-tiny.yaml").config == prior.config


# --- bad files ----------------------------------------------------------------------------------------------


def test_checkpoint_of_another_kind(fixtures_dir, prior_dir, tmp_path):
    torch.save({"model": torch.zeros(3)}, tmp_path / "other.ckpt")
    with pytest.raises(FormatError, match="state_dict"):
        load_prior(tmp_path / "other.ckpt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "enc.ckpt")
    with pytest.raises(FormatError, match="not a clip2latent prior"):
        load_prior(tmp_path / "enc.ckpt")
    online = _rewrite_checkpoint(prior_dir / "prior-tiny.ckpt", tmp_path / "online.ckpt", only_online=True)
    with pytest.raises(FormatError, match="EMA"):
        load_prior(online)
    with pytest.raises(FormatError):  # an NVIDIA StyleGAN pickle
        load_prior(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError):
        load_prior(tmp_path / "junk.ckpt")
    from c2l_cli.formats.native import save_native

    save_native(tmp_path / "gen", kind="stylegan", config={}, tensors={"w": torch.zeros(1)})
    with pytest.raises(FormatError, match="not a 'prior'"):
        load_prior(tmp_path / "gen")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "cfg": _Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(FormatError, match="safely"):
        load_prior(tmp_path / "evil.ckpt")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "drop,match",
    [
        (("net.causal_transformer.layers.1.1.1.weight",), "missing weights"),
        (("net.to_time_embeds.0.weight",), "missing weights"),
        (("latent_std",), "latent_std"),
    ],
)
def test_missing_keys(prior_dir, tmp_path, drop, match):
    ck = _rewrite_checkpoint(prior_dir / "prior-tiny.ckpt", tmp_path / "m.ckpt", drop=drop)
    with pytest.raises(FormatError, match=match):
        load_prior(ck)


@pytest.mark.parametrize(
    "path,value",
    [(("model", "network", "depth"), 3), (("model", "network", "heads"), 4), (("data", "n_latents"), 3), (("model", "network", "dim"), 64)],
)
def test_config_not_matching_weights(prior_dir, tmp_path, path, value):
    cfg = read_checkpoint(prior_dir / "prior-tiny.ckpt").cfg
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    if path[-1] == "n_latents":
        cfg["data"]["latent_repeats"] = [2, 2, 4]
    ck = _rewrite_checkpoint(prior_dir / "prior-tiny.ckpt", tmp_path / "c.ckpt", cfg=cfg)
    with pytest.raises(FormatError, match="does not match|differs"):
        load_prior(ck)


def test_native_config_not_matching_weights(prior_dir, tmp_path):
    prior, _ = _loaded(prior_dir, "prior-tiny")
    out = save_prior(prior, tmp_path / "p")
    doc = json.loads((out / "config.json").read_text())
    doc["config"]["depth"] = 3
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="missing weights"):
        load_prior(out)
    doc["config"]["depth"] = 2
    doc["config"]["dim_head"] = 8
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="does not match"):
        load_prior(out)
    doc["config"]["dim_head"] = 16
    doc["config"]["bogus"] = 1
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="unknown fields"):
        load_prior(out)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(C2LError):
        load_prior(tmp_path / "nope.ckpt")


# --- bad inputs -------------------------------------------------------------------------------------------


def test_bad_sampling_inputs(prior_dir):
    prior, exp = _loaded(prior_dir, "prior-tiny")
    e = torch.from_numpy(exp["net_text_embed"])
    with pytest.raises(UsageError, match="divide"):
        prior.sample(e, steps=3, sampler="reference")
    prior.sample(e, steps=3, sampler="ddpm", generator=0)  # any count for the others
    bad = e.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(UsageError, match="NaN"):
        prior.sample(bad)
    with pytest.raises(UsageError, match="NaN"):
        prior.predict_x0(torch.zeros(4, 32), 10, bad)
    with pytest.raises(UsageError, match="timesteps"):
        prior.predict_x0(torch.zeros(4, 32), 1000, e)
    with pytest.raises(UsageError, match="integer"):
        prior.predict_x0(torch.zeros(4, 32), torch.zeros(3, dtype=torch.long), e)
    with pytest.raises(ModelMismatchError, match="x_t"):
        prior.predict_x0(torch.zeros(4, 3, 32), 5, e)
    with pytest.raises(ModelMismatchError, match="size 32"):
        prior.sample(torch.randn(4, 48))
    with pytest.raises(ModelMismatchError):
        prior.sample(torch.randn(32))
    with pytest.raises(UsageError, match="sampler"):
        prior.sample(e, sampler="euler")
    with pytest.raises(UsageError, match="noise"):
        prior.sample(e, steps=4, noise=torch.zeros(4, 4, 32))
    with pytest.raises(UsageError, match="steps"):
        prior.sample(e, steps=0)
    with pytest.raises(UsageError, match="eta"):
        prior.sample(e, sampler="ddim", eta=-1.0)
    with pytest.raises(UsageError, match="guidance"):
        prior.sample(e, guidance=float("inf"))


def test_guidance_needs_a_prior_trained_with_condition_dropout():
    cfg = PriorConfig(dim=16, depth=1, heads=2, dim_head=8, latent_repeats=(2,), cond_drop_prob=0.0)
    p = Prior.new(cfg, torch.zeros(16), torch.ones(16), device="cpu", seed=0).eval()
    with pytest.raises(UsageError, match="dropout"):
        p.sample(torch.randn(2, 16), guidance=2.0, generator=0)
    assert p.sample(torch.randn(2, 16), guidance=1.0, generator=0).shape == (2, 2, 16)
