"""`c2l direction` end to end on the tiny fixtures (stylegan2-tiny, prior-tiny, clip-tiny32: dim 32, 8 ws)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from c2l_cli.cli.app import app
from c2l_cli.images import read_recipe
from c2l_cli.latents import load_direction

NUM_WS, W_DIM = 8, 32
POS, NEG = "a smiling face", "a frowning face"


@pytest.fixture(scope="module")
def pipe(tiny_models):
    from c2l_cli.pipeline import Pipeline

    m = tiny_models
    return Pipeline.from_sources(None, m["generator"], m["prior"], m["clip"], device="cpu")


def _model_args(models):
    return ["--generator", models["generator"], "--prior", models["prior"], "--clip", models["clip"], "--device", "cpu"]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _sets(pipe, samples, seed, **kw):
    """The two latent sets, computed here independently of the command (same seeds as sample's candidates)."""
    from c2l_cli.pipeline import candidate_seed

    seeds = [candidate_seed(seed, 0, i) for i in range(samples)]
    emb = pipe.embed_texts([POS, NEG])
    pos = pipe.sample_ws(emb[:1].expand(samples, -1), seeds, **kw)
    neg = pipe.sample_ws(emb[1:].expand(samples, -1), seeds, **kw)
    return pos, neg


def test_direction_from_two_prompts(tmp_path, tiny_models, pipe):
    out = tmp_path / "smile.safetensors"
    res = _run("direction", POS, NEG, "--samples", "12", "--seed", "3", "--guidance", "1.5", "-o", out, "--json",
               *_model_args(tiny_models))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["path"] == str(out) and doc["shape"] == [W_DIM] and abs(doc["norm"] - 1) < 1e-6

    d = load_direction(out)
    assert d.space == "w" and d.vector.shape == (W_DIM,)
    assert abs(float(d.vector.norm()) - 1.0) < 1e-6  # unit norm

    # it points from the negative set's mean toward the positive set's
    pos, neg = _sets(pipe, 12, 3, guidance=1.5)
    mp, mn = pos.mean(0)[0], neg.mean(0)[0]  # layer 0 (W prior: all layers equal)
    assert torch.allclose(d.vector, (mp - mn) / (mp - mn).norm(), atol=1e-5)
    dist = d.metadata["distance"]
    assert torch.allclose(mn + dist * d.vector, mp, atol=1e-4)
    assert float((mp - mn) @ d.vector) > 0

    meta = d.metadata
    assert meta["prompts"] == {"positive": POS, "negative": NEG}
    assert meta["samples"] == 12 and meta["seed"] == 3 and meta["guidance"] == 1.5 and meta["steps"] == 4
    assert meta["space"] == "w" and meta["layers"] is None and meta["w_dim"] == W_DIM and meta["num_ws"] == NUM_WS
    assert len(meta["models"]["generator"]["sha256"]) == 64 and len(meta["models"]["prior"]["sha256"]) == 64

    # the positive set is exactly `c2l sample POS --seed 3 --candidates 12`'s candidates
    ref = pipe.sample([POS], num_images=12, candidates=12, seed=3, guidance=1.5)
    for w, item in zip(ref.ws, ref.items):  # (batch composition differs: float rounding only)
        assert torch.allclose(w, pos[item.candidate_index], atol=1e-4)


def test_direction_layers_and_preview(tmp_path, tiny_models, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run("direction", POS, NEG, "--samples", "4", "--layers", "2-5", "--preview", "--preview-strengths", "-2:2:3",
               "--preview-count", "2", *_model_args(tiny_models))
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    path = tmp_path / "a-smiling-face-vs-a-frowning-face.safetensors"
    assert lines == [str(path), str(tmp_path / "a-smiling-face-vs-a-frowning-face-preview.png")]
    d = load_direction(path)
    assert d.space == "w+" and d.vector.shape == (NUM_WS, W_DIM) and d.layers == [2, 3, 4, 5]
    assert torch.allclose(d.vector[2:6].norm(dim=1), torch.ones(4), atol=1e-6)  # unit norm per chosen layer
    assert not d.vector[[0, 1, 6, 7]].any()  # zero elsewhere
    # the preview: 2 rows (one per prompt) × 3 strengths, with its recipe
    from PIL import Image

    im = Image.open(lines[1])
    assert im.width > 3 * 32 and im.height > 2 * 32
    recipe = read_recipe(lines[1])
    assert recipe["preview_strengths"] == [-2.0, 0.0, 2.0] and recipe["preview_rows"] == ["neg 0", "pos 0"]
    # a second run never overwrites the default-named file
    res = _run("direction", POS, NEG, "--samples", "2", *_model_args(tiny_models))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "a-smiling-face-vs-a-frowning-face-1.safetensors")


def _error(result, code, fragment):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:") and fragment in lines[-1], result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([POS, POS], "the two prompts are the same"),
        ([POS, " "], "non-empty"),
        ([POS, NEG, "--samples", "0"], "--samples must be positive"),
        ([POS, NEG, "--layers", "x"], "bad layer range"),
        ([POS, NEG, "--layers", "5-2"], "end comes before the start"),
        ([POS, NEG, "--sampler", "euler"], "unknown --sampler"),
        ([POS, NEG, "--preview", "--preview-strengths", "1:2"], "START:STOP:COUNT"),
    ],
)
def test_usage_errors_before_loading(args, fragment):
    _error(_run("direction", *args, "--generator", "missing.pkl"), 2, fragment)


def test_layers_beyond_the_generator(tmp_path, tiny_models):
    _error(_run("direction", POS, NEG, "--samples", "2", "--layers", "6-9", "-o", tmp_path / "d.safetensors",
                *_model_args(tiny_models)), 2, "out of range: this generator has 8 layers")
    assert not (tmp_path / "d.safetensors").exists()
