"""The opt-in "reference" CLIP preprocessing: clip2latent's Clipper (area resize, double normalisation)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from c2l_cli.cli.app import app
from c2l_cli.clip import load_clip
from c2l_cli.errors import UsageError

MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_dir(fixtures_dir):
    return fixtures_dir / "clip-tiny32"


def _clipper_reference(model, x: torch.Tensor, size) -> torch.Tensor:
    """clip2latent models.py Clipper.embed_image, written out: area resize, normalise, clamp, normalise."""
    clip_in = F.interpolate(x, size, mode="area")
    clip_in = ((0.5 * clip_in + 0.5 - MEAN) / STD).clamp(0, 1)
    with torch.no_grad():
        return model.encode_image((clip_in - MEAN) / STD)


def test_reference_mode_matches_the_published_clipper(clip_dir):
    clip = load_clip(f"local-dir:{clip_dir}", device="cpu", preprocess="reference")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 70, 70, generator=g) * 2.4 - 1.2  # outside [-1, 1] too: the reference does not clamp first
    expected = _clipper_reference(clip.model, x, clip._size_hw)
    assert torch.allclose(clip.embed_image(x), expected, atol=1e-5)
    # a list of single images goes the same way
    assert torch.allclose(clip.embed_image([x[0], x[1]]), expected[:2], atol=1e-5)


def test_standard_is_the_default_and_differs(clip_dir):
    std = load_clip(f"local-dir:{clip_dir}", device="cpu")
    ref = load_clip(f"local-dir:{clip_dir}", device="cpu", preprocess="reference")
    assert std.preprocess_mode == "standard" and ref.preprocess_mode == "reference"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert not torch.allclose(std.embed_image(x), ref.embed_image(x), atol=1e-3)
    # text embeddings do not depend on image preprocessing
    assert torch.equal(std.embed_text(["an old man"]), ref.embed_text(["an old man"]))


def test_unknown_mode_is_a_usage_error(clip_dir):
    with pytest.raises(UsageError, match="preprocessing"):
        load_clip(f"local-dir:{clip_dir}", device="cpu", preprocess="twice")


def test_score_cli_reference_flag(tmp_path, clip_dir):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 30, 60)).save(img)
    runner = CliRunner()
    args = ["score", str(img), "--text", "a red square", "--clip", f"local-dir:{clip_dir}", "--device", "cpu", "--json"]
    std = json.loads(runner.invoke(app, args).stdout)
    ref = json.loads(runner.invoke(app, args + ["--clip-preprocess", "reference"]).stdout)
    assert std["rows"][0]["cosine"] != ref["rows"][0]["cosine"]
    bad = runner.invoke(app, args + ["--clip-preprocess", "twice"])
    assert bad.exit_code == 2 and "--clip-preprocess" in bad.output


def test_gen_data_reference_preprocessing(tmp_path, fixtures_dir, clip_dir):
    from c2l_cli.data import GenDataConfig, generate_dataset, open_dataset
    from c2l_cli.generator import load_generator

    G = load_generator(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl", device="cpu")
    clip = load_clip(f"local-dir:{clip_dir}", device="cpu", preprocess="reference")
    cfg = GenDataConfig(generator="tiny", clip="tiny", n_samples=4, shard_size=4, batch_size=4, seed=3,
                        clip_preprocess="reference")
    generate_dataset(tmp_path / "d", cfg, device="cpu", G=G, clip=clip)
    ds = open_dataset(tmp_path / "d")
    assert ds.manifest["clip"]["preprocess"] == "reference"
    w, e = ds.read(0, 4)
    # direct computation, as clip2latent's generate_dataset.py: synthesis → area 256 → Clipper
    ws = torch.from_numpy(w)[:, None].repeat(1, G.num_ws, 1)
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode="const")
    expected = _clipper_reference(clip.model, F.interpolate(img, (256, 256), mode="area"), clip._size_hw)
    assert torch.allclose(torch.from_numpy(e), expected, atol=1e-4)
    # a CLIP of the other mode is refused rather than silently mixing preprocessing
    with pytest.raises(UsageError, match="preprocess"):
        generate_dataset(tmp_path / "d2", cfg, device="cpu", G=G, clip=load_clip(f"local-dir:{clip_dir}", device="cpu"))
