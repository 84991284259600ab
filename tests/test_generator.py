"""load_generator / save_generator / style_mix: sources, formats, round trips and errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import c2l_cli
from c2l_cli.errors import C2LError, FormatError, UsageError
from c2l_cli.formats import native
from c2l_cli.generator import load_generator, save_generator, style_mix

from _stylegan_pickles import rewrite_fixture


@pytest.fixture()
def sg2_pkl(fixtures_dir) -> Path:
    return fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"


@pytest.fixture()
def expected(fixtures_dir) -> dict:
    return dict(np.load(fixtures_dir / "stylegan" / "stylegan2-tiny-expected.npz"))


def _render(G, e) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(e["z"]), None, truncation_psi=0.5, truncation_cutoff=4)
        return ws, G.synthesis(ws)


def test_public_names_are_lazy_exports():
    assert c2l_cli.load_generator is load_generator
    assert c2l_cli.save_generator is save_generator
    assert c2l_cli.style_mix is style_mix


def test_load_from_str_and_path(sg2_pkl, expected):
    for source in (sg2_pkl, str(sg2_pkl)):
        G = load_generator(source, device="cpu")
        ws, img = _render(G, expected)
        assert np.abs(img.numpy() - expected["img_psi05_cut4"]).max() < 1e-4
    assert G.kind == "stylegan2"
    assert G.config["channel_base"] == 512 and G.config["mapping_kwargs"] == {"num_layers": 8}
    assert G.source_info["format"] == "nvidia-pickle" and len(G.source_info["module_src_sha256"]) == 64
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert next(G.parameters()).dtype == torch.float32 and G.compute_dtype == torch.float32


def test_source_goes_through_cache_resolve(sg2_pkl, monkeypatch):
    import c2l_cli.cache as cache

    seen = {}

    def fake_resolve(source, *, kind=None):
        seen["args"] = (source, kind)
        return sg2_pkl

    monkeypatch.setattr(cache, "resolve", fake_resolve)
    G = load_generator("stylegan2-ffhq-1024", device="cpu")
    assert seen["args"] == ("stylegan2-ffhq-1024", "generator")
    assert G.num_ws == 8


def test_native_round_trip_is_exact_and_needs_no_pickle(tmp_path, sg2_pkl, expected, monkeypatch):
    G = load_generator(sg2_pkl, device="cpu")
    ws, img = _render(G, expected)
    out = save_generator(G, tmp_path / "sg2-native")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((out / "config.json").read_text())
    assert doc["kind"] == "stylegan2" and doc["format"] == "c2l"
    assert doc["config"] == G.config
    assert doc["metadata"]["num_ws"] == 8 and doc["metadata"]["source_info"]["file"] == "stylegan2-tiny.pkl"

    def no_pickle(*a, **k):
        raise AssertionError("pickle used while loading the native format")

    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    for source in (out, out / "config.json", out / "model.safetensors"):
        G2 = load_generator(source, device="cpu")
        ws2, img2 = _render(G2, expected)
        assert torch.equal(ws, ws2) and torch.equal(img, img2)
    assert G2.kind == "stylegan2" and G2.source_info["format"] == "c2l"
    for (k, a), (k2, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_save_overwrites_atomically(tmp_path, sg2_pkl):
    G = load_generator(sg2_pkl, device="cpu")
    target = tmp_path / "g"
    save_generator(G, target)
    save_generator(G, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_native_with_wrong_weights_is_format_error(tmp_path, sg2_pkl):
    G = load_generator(sg2_pkl, device="cpu")
    sd = {k: v for k, v in G.state_dict().items() if k != "synthesis.b8.conv0.weight"}
    sd["synthesis.b8.conv9.weight"] = torch.zeros(1)
    native.save_native(tmp_path / "bad", kind="stylegan2", config=G.config, tensors=sd)
    with pytest.raises(FormatError, match=r"missing synthesis\.b8\.conv0\.weight; unexpected synthesis\.b8\.conv9\.weight"):
        load_generator(tmp_path / "bad")


def test_native_of_other_kind_is_format_error(tmp_path):
    native.save_native(tmp_path / "prior", kind="prior", config={}, tensors={"x": torch.zeros(1)})
    with pytest.raises(FormatError, match="not a StyleGAN generator"):
        load_generator(tmp_path / "prior")


def test_ada_style_nested_synthesis_kwargs(tmp_path, sg2_pkl, expected):
    """stylegan2-ada-pytorch pickles nest the synthesis kwargs; both layouts load the same network."""

    def nest(path, meta):
        if path == "G_ema":
            kw = dict(meta["state"]["_init_kwargs"])
            syn = {k: kw.pop(k) for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp")}
            syn["architecture"] = "skip"
            kw["synthesis_kwargs"] = syn
            meta["state"]["_init_kwargs"] = kw
        return meta

    path = tmp_path / "ada.pkl"
    rewrite_fixture(sg2_pkl, path, edit=nest)
    G = load_generator(path, device="cpu")
    assert "synthesis_kwargs" not in G.config and G.config["architecture"] == "skip"
    _, img = _render(G, expected)
    assert np.abs(img.numpy() - expected["img_psi05_cut4"]).max() < 1e-4


def test_not_a_generator_is_format_error(tmp_path, sg2_pkl):
    def rename(path, meta):
        if path == "G_ema":
            meta["class_name"] = "Discriminator"
        return meta

    path = tmp_path / "d.pkl"
    rewrite_fixture(sg2_pkl, path, edit=rename)
    with pytest.raises(FormatError, match="not a StyleGAN Generator"):
        load_generator(path)


def test_missing_and_odd_sources(tmp_path):
    with pytest.raises(C2LError, match="no such file"):
        load_generator(tmp_path / "nothing.pkl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FormatError, match="not a c2l model folder"):
        load_generator(tmp_path / "folder")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FormatError):
        load_generator(tmp_path / "notes.txt")


def test_dtype_and_device_arguments(sg2_pkl):
    G = load_generator(sg2_pkl, device="cpu", dtype="float32")
    assert G.compute_dtype == torch.float32
    with pytest.raises(UsageError, match="float16 is not supported on the CPU"):
        load_generator(sg2_pkl, device="cpu", dtype="float16")
    with pytest.raises(UsageError, match="unknown dtype"):
        load_generator(sg2_pkl, device="cpu", dtype="float8")


# ---------------------------------------------------------------------------------------------
# style_mix


def test_style_mix_layers():
    a = torch.zeros(2, 6, 4)
    b = torch.ones(2, 6, 4)
    m = style_mix(a, b, 2)
    assert m.shape == (2, 6, 4)
    assert torch.equal(m[:, :2], a[:, :2]) and torch.equal(m[:, 2:], b[:, 2:])
    assert torch.equal(style_mix(a, b, 0), b) and torch.equal(style_mix(a, b, 6), a)


def test_style_mix_broadcasts_batch_of_one():
    a = torch.randn(1, 6, 4)
    b = torch.randn(3, 6, 4)
    m = style_mix(a, b, 3)
    assert m.shape == (3, 6, 4)
    assert torch.equal(m[2, :3], a[0, :3]) and torch.equal(m[2, 3:], b[2, 3:])


@pytest.mark.parametrize(
    "a,b,k,msg",
    [((2, 6, 4), (2, 5, 4), 1, "must both be"), ((2, 6, 4), (2, 6, 4), 7, "k must be in 0..6"),
     ((2, 6, 4), (3, 6, 4), 1, "do not broadcast"), ((6, 4), (6, 4), 1, "must both be")],
)
def test_style_mix_errors(a, b, k, msg):
    with pytest.raises(UsageError, match=msg):
        style_mix(torch.zeros(a), torch.zeros(b), k)


def test_save_generator_refuses_foreign_modules(tmp_path):
    with pytest.raises(UsageError, match="not a generator made by c2l"):
        save_generator(torch.nn.Linear(2, 2), tmp_path / "x")


@pytest.mark.parametrize("name,kind", [("stylegan3-t-tiny", "stylegan3-t"), ("stylegan3-r-tiny", "stylegan3-r")])
def test_stylegan3_pickles_dispatch_and_round_trip(tmp_path, fixtures_dir, name, kind):
    """Dispatch only (parity of the StyleGAN3 network is tested in test_stylegan3.py)."""
    G = load_generator(fixtures_dir / "stylegan" / f"{name}.pkl", device="cpu")
    assert type(G).__module__ == "c2l_cli.nets.stylegan3"
    assert G.kind == kind and G.num_ws == 8 and G.img_resolution == 32
    assert G.config["channel_base"] in (1024, 2048)
    out = save_generator(G, tmp_path / "sg3")
    assert json.loads((out / "config.json").read_text())["kind"] == "stylegan3"
    G2 = load_generator(out, device="cpu")
    assert G2.kind == kind
    ws = torch.from_numpy(np.load(fixtures_dir / "stylegan" / f"{name}-expected.npz")["ws_psi1"])
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws), G2.synthesis(ws))


@pytest.mark.slow  # importing torch._dynamo alone takes ~20-40 s on a busy 2-core machine
def test_compile_flag_is_lazy_and_keeps_state_dict_names(sg2_pkl):
    G = load_generator(sg2_pkl, device="cpu", compile=True)
    assert G.synthesis._compiled_call_impl is not None and G.mapping._compiled_call_impl is not None
    assert "synthesis.b4.const" in G.state_dict()
