"""c2l_cli.clip: loading specs, text/image embeddings, open_clip preprocessing parity, cosine helpers."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from c2l_cli import clip as C
from c2l_cli.errors import C2LError, FormatError, ModelMismatchError, OfflineError, UsageError

MEAN = torch.tensor(C._OPENAI_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(C._OPENAI_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tiny_dir(fixtures_dir):
    path = fixtures_dir / "clip-tiny32"
    if not path.is_dir():
        pytest.fail(f"fixture {path} missing")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return C.load_clip(f"local-dir:{tiny_dir}", device="cpu")


def _rand_images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1  # generator-like, in [-1, 1]


def _pil(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _write_tiny_model(folder, *, image_size=32, patch_size=8, embed_dim=16, preprocess=None, seed=0):
    """A tiny random-weight open_clip model folder (config + safetensors), as open_clip would save it."""
    import open_clip
    from safetensors.torch import save_file

    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "head_width": 16, "patch_size": patch_size},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
    }
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


# ---- loading ----------------------------------------------------------------------------------


def test_load_fixture_attributes(tiny, tiny_dir):
    assert tiny.dim == 32
    assert tiny.image_size == 32
    assert tiny.context_length == 77
    assert tiny.spec == f"local-dir:{tiny_dir}"
    assert tiny.device == torch.device("cpu")
    assert tiny.dtype == torch.float32
    assert tiny.weights_path == tiny_dir / "open_clip_model.safetensors"
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())


def test_parse_spec():
    assert C.parse_spec("ViT-B-32:openai") == C.ClipSpec("builtin", "ViT-B-32", "openai")
    assert C.parse_spec(" ViT-B/32:openai ") == C.ClipSpec("builtin", "ViT-B-32", "openai")
    assert C.parse_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == C.ClipSpec(
        "hf-hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    )
    assert C.parse_spec("local-dir:/x/y").kind == "local-dir"
    assert str(C.parse_spec("ViT-L-14:openai")) == "ViT-L-14:openai"
    for bad in ("", "   ", "ViT-B-32", "ViT-B-32:", ":openai", "hf-hub:", "hf-hub:noslash", "local-dir:"):
        with pytest.raises(UsageError):
            C.parse_spec(bad)


def test_unknown_architecture_suggests():
    with pytest.raises(UsageError, match="did you mean.*ViT-B-32"):
        C.load_clip("ViT-B-3:openai", device="cpu")


def test_unknown_tag_lists_known_tags():
    with pytest.raises(UsageError, match="unknown pretrained weights 'nope'.*openai"):
        C.load_clip("ViT-B-32:nope", device="cpu")


def test_offline_missing_model_is_offline_error(monkeypatch):
    monkeypatch.setenv("C2L_OFFLINE", "1")
    before = os.environ.get("HF_HUB_OFFLINE")
    with pytest.raises(OfflineError, match="ViT-B-32:openai"):
        C.load_clip("ViT-B-32:openai", device="cpu")
    with pytest.raises(OfflineError, match="hf-hub:someone/some-clip"):
        C.load_clip("hf-hub:someone/some-clip", device="cpu")
    assert os.environ.get("HF_HUB_OFFLINE") == before  # restored after loading
    import huggingface_hub.constants as hc

    assert hc.HF_HUB_OFFLINE is False


def test_local_dir_errors(tmp_path, tiny_dir):
    with pytest.raises(FormatError, match="not found"):
        C.load_clip(f"local-dir:{tmp_path / 'nope'}", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match="open_clip_config.json"):
        C.load_clip(f"local-dir:{empty}", device="cpu")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(tiny_dir / "open_clip_config.json", no_weights)
    with pytest.raises(FormatError, match="no weight file"):
        C.load_clip(f"local-dir:{no_weights}", device="cpu")
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "open_clip_config.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        C.load_clip(f"local-dir:{bad_json}", device="cpu")


@pytest.mark.parametrize("native", [True, False])
def test_weights_that_do_not_fit_the_config(tmp_path, tiny_dir, monkeypatch, native):
    monkeypatch.setattr(C, "_USE_NATIVE_LOCAL_DIR", native)
    folder = tmp_path / "mismatch"
    folder.mkdir()
    cfg = json.loads((tiny_dir / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 48
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    shutil.copy(tiny_dir / "open_clip_model.safetensors", folder)
    with pytest.raises(ModelMismatchError, match="do not fit"):
        C.load_clip(f"local-dir:{folder}", device="cpu")


def test_fallback_loader_matches_open_clip_local_dir(tiny, tiny_dir, monkeypatch):
    """Our loader for open_clip versions without ``local-dir:`` gives the same model."""
    monkeypatch.setattr(C, "_USE_NATIVE_LOCAL_DIR", False)
    ours = C.load_clip(f"local-dir:{tiny_dir}", device="cpu")
    texts = ["a photo of a face", "an old man with a beard"]
    imgs = _rand_images(2, 40, 40)
    assert torch.equal(ours.embed_text(texts), tiny.embed_text(texts))
    assert torch.equal(ours.embed_image(imgs), tiny.embed_image(imgs))
    assert ours.image_size == tiny.image_size and ours.dim == tiny.dim


def test_bfloat16_path_on_cpu(tiny, tiny_dir):
    low = C.load_clip(f"local-dir:{tiny_dir}", device="cpu", dtype="bfloat16")
    assert low.dtype == torch.bfloat16
    t = low.embed_text(["a smiling woman"])
    i = low.embed_image(_rand_images(1, 32, 32))
    assert t.dtype == torch.float32 and i.dtype == torch.float32  # embeddings are always float32
    assert C.cosine(t, tiny.embed_text(["a smiling woman"])).item() > 0.99
    assert C.cosine(i, tiny.embed_image(_rand_images(1, 32, 32))).item() > 0.99
    with pytest.raises(UsageError):
        C.load_clip(f"local-dir:{tiny_dir}", device="cpu", dtype="float16")


# ---- text -------------------------------------------------------------------------------------


def test_embed_text_shape_determinism_and_batching(tiny):
    texts = ["a photo of a cat", "an old man", "a landscape with mountains", "a smiling child"]
    a = tiny.embed_text(texts)
    assert a.shape == (4, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, tiny.embed_text(texts))
    torch.testing.assert_close(tiny.embed_text(texts, batch_size=1), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.embed_text(texts[1]), a[1:2], atol=1e-5, rtol=0)
    assert not a.is_inference()  # usable as conditioning in a graph that needs gradients
    assert not torch.allclose(a.norm(dim=-1), torch.ones(4))  # un-normalised
    assert tiny.embed_text([]).shape == (0, 32)


def test_embed_text_matches_open_clip(tiny, tiny_dir):
    import open_clip

    model = open_clip.create_model(f"local-dir:{tiny_dir}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{tiny_dir}")
    with torch.no_grad():
        ref = model.encode_text(tok(["a photo of a face", "Two Dogs!"]))
    torch.testing.assert_close(tiny.embed_text(["a photo of a face", "Two Dogs!"]), ref, atol=1e-5, rtol=0)


def test_long_prompt_is_truncated_with_a_warning(tiny, recwarn):
    long = "word " * 100  # 100 tokens + start/end > 77
    with pytest.warns(C.PromptTruncatedWarning, match=r"77-token context \(102 tokens\): 'word word"):
        got = tiny.embed_text([long])
    # Truncation keeps the first 75 tokens (+ start and end): the same as the 75-word prompt.
    exact = "word " * 75
    recwarn.clear()
    torch.testing.assert_close(got, tiny.embed_text([exact]), atol=1e-5, rtol=0)
    assert not [w for w in recwarn if issubclass(w.category, C.PromptTruncatedWarning)]


@pytest.mark.parametrize("bad", [[""], ["ok", "   "], ["ok", None], "\n"])
def test_empty_or_bad_prompt_is_usage_error(tiny, bad):
    with pytest.raises(UsageError):
        tiny.embed_text(bad)


# ---- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(32, 32), (64, 64), (48, 80), (80, 48), (17, 23), (256, 256)])
def test_generator_outputs_of_any_size(tiny, hw):
    x = _rand_images(3, *hw)
    pix = tiny.preprocess(x)
    assert pix.shape == (3, 3, 32, 32) and pix.dtype == torch.float32
    emb = tiny.embed_image(x)
    assert emb.shape == (3, 32) and torch.isfinite(emb).all()
    assert not emb.is_inference()
    # one batch or one image at a time: the same embeddings
    single = torch.cat([tiny.embed_image(x[i]) for i in range(3)])
    torch.testing.assert_close(single, emb, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.embed_image(x, batch_size=2), emb, atol=1e-5, rtol=0)
    assert torch.equal(tiny.embed_image(x), emb)  # deterministic


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (80, 48), (17, 23), (33, 35)])
def test_resize_and_crop_follow_open_clip(tiny, hw):
    """Shortest side → 32 with antialiased bicubic, then the centre crop (torchvision's arithmetic)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x01 = (_rand_images(2, *hw) + 1) / 2
    ref = TF.resize(x01, 32, interpolation=InterpolationMode.BICUBIC, antialias=True)
    ref = TF.center_crop(ref.clamp(0, 1), [32, 32])
    ours = tiny._resize_crop(x01.clone())
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_normalised_once(tiny):
    """At the model's size: pixels → (x+1)/2 → CLIP mean/std exactly once (not twice, as the reference)."""
    x = _rand_images(2, 32, 32)
    expected = ((x + 1) / 2 - MEAN) / STD
    torch.testing.assert_close(tiny.preprocess(x), expected, atol=1e-5, rtol=0)
    twice = (expected.clamp(0, 1) - MEAN) / STD  # clip2latent's Clipper.embed_image
    assert (tiny.preprocess(x) - twice).abs().max() > 0.5


def test_out_of_range_generator_values_are_clamped(tiny):
    x = _rand_images(1, 32, 32) * 1.5
    torch.testing.assert_close(tiny.embed_image(x), tiny.embed_image(x.clamp(-1, 1)), atol=1e-5, rtol=0)


def test_pil_at_model_size_matches_open_clip_preprocess(tiny, tiny_dir):
    """Our embed_image(PIL) == open_clip's own transform + encode_image, when no resize is needed."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_dir}")
    model.eval()
    imgs = [_pil(32, 32, seed=s) for s in range(3)]
    with torch.no_grad():
        ref_pix = torch.stack([preprocess(im) for im in imgs])
        ref = model.encode_image(ref_pix)
    torch.testing.assert_close(tiny._prepare_list(imgs), ref_pix, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.embed_image(imgs), ref, atol=1e-5, rtol=0)


def test_pil_other_sizes_close_to_open_clip(tiny, tiny_dir):
    """Resized: PIL's 8-bit bicubic vs ours in float — the same picture up to rounding."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_dir}")
    model.eval()
    yy, xx = np.mgrid[0:90, 0:130]
    smooth = (127 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] * np.ones(3)
    img = Image.fromarray(smooth.astype(np.uint8))
    with torch.no_grad():
        ref_pix = preprocess(img).unsqueeze(0)
        ref = model.encode_image(ref_pix)
    pix = tiny._prepare_list([img])
    assert ((pix - ref_pix) * STD).abs().max() < 2.5 / 255  # under 3 grey levels
    assert C.cosine(tiny.embed_image(img), ref).item() > 0.999


def test_paths_pil_and_tensors_agree(tiny, tmp_path):
    img = _pil(32, 32, seed=4)
    path = tmp_path / "a.png"
    img.save(path)
    as_tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W) in [-1, 1]
    e_pil = tiny.embed_image([img])
    torch.testing.assert_close(tiny.embed_image(str(path)), e_pil, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.embed_image([path]), e_pil, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.embed_image(as_tensor), e_pil, atol=1e-5, rtol=0)
    mixed = tiny.embed_image([img, path, as_tensor, _pil(50, 70)])
    assert mixed.shape == (4, 32)
    torch.testing.assert_close(mixed[:3], e_pil.expand(3, -1), atol=1e-5, rtol=0)
    grey = img.convert("L")
    assert tiny.embed_image(grey).shape == (1, 32)  # converted to RGB like open_clip


def test_bad_image_inputs(tiny, tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        tiny.embed_image([tmp_path / "missing.png"])
    txt = tmp_path / "notes.png"
    txt.write_text("not an image")
    with pytest.raises(FormatError, match="not an image file"):
        tiny.embed_image(str(txt))
    trunc = tmp_path / "trunc.png"
    _pil(64, 64).save(tmp_path / "full.png")
    trunc.write_bytes((tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(FormatError, match="truncated"):
        C.read_image(trunc)
    with pytest.raises(UsageError, match="3 channels"):
        tiny.embed_image(torch.zeros(1, 4, 32, 32))
    with pytest.raises(UsageError, match="floating point"):
        tiny.embed_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(UsageError):
        tiny.embed_image(torch.zeros(32, 32))
    with pytest.raises(UsageError, match="cannot embed"):
        tiny.embed_image([42])
    assert tiny.embed_image([]).shape == (0, 32)


def test_non_square_and_other_resize_modes(tmp_path):
    """A tiny model with a non-square input and open_clip's 'longest' / 'squash' resize modes."""
    folder = _write_tiny_model(tmp_path / "ns", image_size=[16, 32], patch_size=8,
                               preprocess={"resize_mode": "shortest"})
    m = C.load_clip(f"local-dir:{folder}", device="cpu")
    assert m.image_size == (16, 32) and m.dim == 16
    assert m.preprocess(_rand_images(2, 40, 40)).shape == (2, 3, 16, 32)
    assert m.embed_image(_rand_images(2, 40, 40)).shape == (2, 16)

    folder = _write_tiny_model(tmp_path / "longest", preprocess={"resize_mode": "longest", "fill_color": 0})
    m = C.load_clip(f"local-dir:{folder}", device="cpu")
    white = torch.ones(1, 3, 32, 64)  # wide image: fit 16 x 32, pad 8 rows above and below
    pix = m.preprocess(white) * STD + MEAN
    assert torch.allclose(pix[..., :8, :], torch.zeros(()), atol=1e-6)
    assert torch.allclose(pix[..., 8:24, :], torch.ones(()), atol=1e-5)
    assert torch.allclose(pix[..., 24:, :], torch.zeros(()), atol=1e-6)

    folder = _write_tiny_model(tmp_path / "squash", preprocess={"resize_mode": "squash", "interpolation": "bilinear"})
    m = C.load_clip(f"local-dir:{folder}", device="cpu")
    x = _rand_images(1, 20, 50)
    expected = torch.nn.functional.interpolate((x + 1) / 2, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(m.preprocess(x) * STD + MEAN, expected.clamp(0, 1), atol=1e-5, rtol=0)


def test_wrap_an_open_clip_model():
    import open_clip

    model = open_clip.model.CLIP(
        embed_dim=8,
        vision_cfg={"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 1, "layers": 1},
    )
    clip = C.Clip(model, spec="random-tiny")
    assert clip.dim == 8 and clip.image_size == 16 and clip.device.type == "cpu" and clip.dtype == torch.float32
    assert clip.embed_image(_rand_images(2, 64, 64)).shape == (2, 8)
    assert clip.embed_text(["hello"]).shape == (1, 8)


# ---- similarity -------------------------------------------------------------------------------


def test_cosine_helpers():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(3, 7, generator=g)
    m = C.cosine_matrix(a, b)
    assert m.shape == (5, 3)
    torch.testing.assert_close(m, torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(C.cosine(a[:3], b), m.diagonal()[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(C.cosine(a, b[0]), m[:, 0], atol=1e-5, rtol=0)  # one row broadcasts
    torch.testing.assert_close(C.cosine(3.0 * a, 0.5 * a), torch.ones(5), atol=1e-5, rtol=0)
    with pytest.raises(UsageError):
        C.cosine(a, b)  # 5 rows vs 3 rows
    with pytest.raises(UsageError):
        C.cosine_matrix(a, torch.randn(2, 6))


def test_clip_score_and_score_files(tiny, tmp_path):
    imgs = [_pil(32, 32, seed=s) for s in range(3)]
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    (tmp_path / "bad.png").write_text("nope")
    texts = ["a cat", "a dog", "a cat"]
    direct = tiny.score(imgs, texts)
    torch.testing.assert_close(direct, C.cosine(tiny.embed_image(imgs), tiny.embed_text(texts)))
    seen = []
    rows = C.score_files(tiny, [paths[0], tmp_path / "bad.png", paths[1], paths[2]], ["a cat", "x", "a dog", "a cat"],
                         batch_size=2, workers=2, progress=seen.append)
    assert sum(seen) == 4
    assert [r.error is None for r in rows] == [True, False, True, True]
    assert "not an image" in rows[1].error and rows[1].cosine is None
    got = [r.cosine for r in rows if r.error is None]
    np.testing.assert_allclose(got, direct.tolist(), atol=1e-5)
    with pytest.raises(UsageError):
        C.score_files(tiny, paths, ["a", "b"])


def test_errors_are_c2l_errors():
    for exc in (OfflineError, FormatError, ModelMismatchError, UsageError):
        assert issubclass(exc, C2LError)


# ---- ARCH:PRETRAINED without the network: a tiny architecture registered with open_clip ---------


@pytest.fixture()
def tiny_builtin(monkeypatch, tiny_dir):
    """Register the fixture's config as open_clip architecture 'C2L-Tiny-32' with offline tags."""
    from open_clip import factory, pretrained

    if not hasattr(factory, "_MODEL_CONFIGS") or not hasattr(pretrained, "_PRETRAINED"):
        pytest.skip("this open_clip keeps its registries elsewhere")
    cfg = json.loads((tiny_dir / "open_clip_config.json").read_text())["model_cfg"]
    weights = str(tiny_dir / "open_clip_model.safetensors")
    monkeypatch.setitem(factory._MODEL_CONFIGS, "C2L-Tiny-32", cfg)
    monkeypatch.setitem(
        pretrained._PRETRAINED,
        "C2L-Tiny-32",
        {
            "fixture": pretrained._pcfg(file=weights),
            "fixture_qg": pretrained._pcfg(file=weights, quick_gelu=True),
            "web": pretrained._pcfg(url="https://example.invalid/c2l-tiny.pt"),
        },
    )
    return weights


def test_arch_and_tag(tiny_builtin, tiny):
    clip = C.load_clip("C2L-Tiny-32:fixture", device="cpu")
    assert clip.spec == "C2L-Tiny-32:fixture" and clip.dim == 32 and clip.image_size == 32
    assert str(clip.weights_path) == tiny_builtin
    texts, imgs = ["a red car"], _rand_images(2, 50, 50)
    torch.testing.assert_close(clip.embed_text(texts), tiny.embed_text(texts), atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.embed_image(imgs), tiny.embed_image(imgs), atol=1e-5, rtol=0)
    from_file = C.load_clip(f"C2L-Tiny-32:{tiny_builtin}", device="cpu")
    torch.testing.assert_close(from_file.embed_text(texts), tiny.embed_text(texts), atol=1e-5, rtol=0)

def test_tag_trained_with_quickgelu_gets_quickgelu(tiny_builtin, tiny):
    """As OpenAI's weights: the tag's activation is used, not the architecture config's GELU."""
    from open_clip.transformer import QuickGELU

    clip = C.load_clip("C2L-Tiny-32:fixture-qg", device="cpu")
    assert any(isinstance(m, QuickGELU) for m in clip.model.modules())
    assert not any(isinstance(m, QuickGELU) for m in tiny.model.modules())
    assert not torch.allclose(clip.embed_text(["a red car"]), tiny.embed_text(["a red car"]), atol=1e-4)


def test_offline_url_tag_is_checked_before_any_download(tiny_builtin, monkeypatch):
    from open_clip import pretrained

    monkeypatch.setenv("C2L_OFFLINE", "1")
    monkeypatch.setattr(pretrained, "has_hf_hub", lambda necessary=False: False)

    def no_network(*args, **kwargs):
        raise AssertionError("offline mode must not download")

    monkeypatch.setattr(pretrained, "download_pretrained_from_url", no_network)
    with pytest.raises(OfflineError, match="C2L-Tiny-32:web"):
        C.load_clip("C2L-Tiny-32:web", device="cpu")
