"""`c2l edit` end to end on the tiny fixtures (stylegan2-tiny: w_dim 32, 8 ws; prior-tiny; clip-tiny32)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from c2l_cli.cli.app import app
from c2l_cli.images import read_recipe, to_pil
from c2l_cli.latents import (
    Direction,
    combine_offsets,
    load_direction,
    orthogonalize,
    parse_layers,
    save_direction,
    save_latents,
)

NUM_WS, W_DIM = 8, 32


@pytest.fixture(scope="module")
def gen_pipe(tiny_models):
    """A generator-only pipeline to compute what the command must produce."""
    from c2l_cli.generator import load_generator
    from c2l_cli.pipeline import Pipeline

    return Pipeline(load_generator(tiny_models["generator"], device="cpu"), None, None, "cpu")


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _unit(seed, *shape):
    v = torch.randn(*shape, W_DIM, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(v, dim=-1)


def test_edit_latent_file_moves_exactly_s_d_on_chosen_layers(tmp_path, tiny_models, gen_pipe):
    ws = torch.randn(2, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(5))
    save_latents(tmp_path / "two.npz", ws)
    d = _unit(1)
    save_direction(tmp_path / "dir.safetensors", d, {"note": "test"})
    res = _ok(_run(
        "edit", tmp_path / "two.npz", "--direction", f"{tmp_path / 'dir.safetensors'}:1.5@2-4",
        "--strengths", "-2,0,2", "--generator", tiny_models["generator"], "--device", "cpu",
        "-o", tmp_path / "out", "--save-latents", "--json",
    ))
    doc = json.loads(res.stdout)
    assert len(doc["outputs"]) == 2 and doc["strengths"] == [-2.0, 0.0, 2.0]
    chosen, others = [2, 3, 4], [0, 1, 5, 6, 7]
    for i, entry in enumerate(doc["outputs"]):
        edited = torch.from_numpy(np.load(entry["latents"])["w"])  # (T, num_ws, w_dim)
        assert list(np.load(entry["latents"])["strengths"]) == [-2.0, 0.0, 2.0]
        for k, t in enumerate([-2.0, 0.0, 2.0]):
            assert torch.equal(edited[k][others], ws[i][others])  # nowhere else, bit for bit
            assert torch.allclose(edited[k][chosen] - ws[i][chosen], (t * 1.5 * d).expand(3, W_DIM), atol=1e-6)
        assert torch.equal(edited[1], ws[i])  # strength 0 is the input latent exactly
        # strength 0 reproduces the input image exactly
        frame0 = entry["frames"][1]
        assert frame0["strength"] == 0.0 and frame0["path"].endswith("-s0.png")
        want = np.asarray(to_pil(gen_pipe.synthesize(ws[i : i + 1]))[0])
        got = np.asarray(Image.open(frame0["path"]).convert("RGB"))
        assert np.array_equal(got, want)
        # the strip: one labelled cell per strength; recipes in PNG metadata
        recipe = read_recipe(entry["strip"])
        assert recipe["command"] == "edit" and recipe["strengths"] == [-2.0, 0.0, 2.0]
        assert recipe["input"] == {"type": "latents", "path": str((tmp_path / "two.npz").resolve()), "index": i}
        assert recipe["directions"][0]["strength"] == 1.5 and recipe["directions"][0]["layers"] == "2-4"
        assert recipe["models"]["generator"]["sha256"]
        assert read_recipe(entry["frames"][2]["path"])["strength"] == 2.0
    assert doc["outputs"][0]["strip"].endswith("two-0-strip.png")


def test_strength_zero_reproduces_the_sampled_image(tmp_path, tiny_models):
    res = _ok(_run(
        "sample", "a man with a beard", "--seed", "4", "--candidates", "2", "--generator", tiny_models["generator"],
        "--prior", tiny_models["prior"], "--clip", tiny_models["clip"], "--device", "cpu", "-o", tmp_path / "s",
        "--save-latents", "--json",
    ))
    sampled = json.loads(res.stdout)["files"][0]
    save_direction(tmp_path / "d.safetensors", _unit(8))
    res = _ok(_run(
        "edit", sampled["latents"], "-d", tmp_path / "d.safetensors", "--strengths", "-1,0,1",
        "--generator", tiny_models["generator"], "--device", "cpu", "-o", tmp_path / "e", "--json",
    ))
    frame0 = json.loads(res.stdout)["outputs"][0]["frames"][1]
    assert frame0["strength"] == 0.0
    a = np.asarray(Image.open(sampled["path"]).convert("RGB"))
    b = np.asarray(Image.open(frame0["path"]).convert("RGB"))
    assert np.array_equal(a, b)  # pixel for pixel


def test_edit_each_latent_format_and_plain_output(tmp_path, tiny_models):
    w = torch.randn(NUM_WS, W_DIM, generator=torch.Generator().manual_seed(7))
    np.savez(tmp_path / "projected_w.npz", w=w[None].numpy())  # NVIDIA projector
    np.save(tmp_path / "plus.npy", w.numpy())  # [num_ws, w_dim]
    torch.save(w[0], tmp_path / "wvec.pt")  # [w_dim]: a W vector
    torch.save(w[None], tmp_path / "batch1.pt")  # [1, num_ws, w_dim]
    np.save(tmp_path / "boundary.npy", _unit(2)[None].numpy())  # InterFaceGAN boundary [1, w_dim]
    files = ["projected_w.npz", "plus.npy", "wvec.pt", "batch1.pt"]
    res = _ok(_run(
        "edit", *[tmp_path / f for f in files], "-d", tmp_path / "boundary.npy", "--strengths", "0:1:2",
        "--generator", tiny_models["generator"], "--device", "cpu", "-o", tmp_path / "out", "--no-frames",
    ))
    lines = res.stdout.strip().splitlines()
    assert [p.rsplit("/", 1)[-1] for p in lines] == [f"{f.rsplit('.', 1)[0]}-strip.png" for f in files]
    assert not list((tmp_path / "out").glob("*-s0.png"))  # --no-frames
    # running again never overwrites
    res = _ok(_run(
        "edit", tmp_path / "plus.npy", "-d", tmp_path / "boundary.npy", "--strengths", "1",
        "--generator", tiny_models["generator"], "--device", "cpu", "-o", tmp_path / "out",
    ))
    assert res.stdout.splitlines()[0].endswith("plus-1-strip.png")


def test_edit_seeds_and_orthogonalize(tmp_path, tiny_models, gen_pipe):
    a, b = _unit(3), _unit(4)
    save_direction(tmp_path / "a.safetensors", a)
    np.save(tmp_path / "b.npy", b.numpy())
    res = _ok(_run(
        "edit", "--seeds", "3,5-6", "-d", tmp_path / "a.safetensors:2", "-d", f"{tmp_path / 'b.npy'}:-1@0-3",
        "--orthogonalize", "--strengths", "0,1", "--truncation", "0.7", "--generator", tiny_models["generator"],
        "--device", "cpu", "-o", tmp_path / "out", "--save-latents", "--json",
    ))
    doc = json.loads(res.stdout)
    base = gen_pipe.random_ws([3, 5, 6], 0.7)
    offs = [Direction("a", a).offset(NUM_WS), Direction("b", b).offset(NUM_WS, parse_layers("0-3"))]
    want = combine_offsets(orthogonalize(offs), [2.0, -1.0])
    for i, entry in enumerate(doc["outputs"]):
        assert entry["input"] == {"type": "seed", "seed": [3, 5, 6][i], "truncation": 0.7}
        assert entry["strip"].endswith(f"seed{[3, 5, 6][i]:04d}-strip.png")
        edited = torch.from_numpy(np.load(entry["latents"])["w"])
        assert torch.equal(edited[0], base[i])
        assert torch.allclose(edited[1] - base[i], want, atol=1e-5)
    assert read_recipe(doc["outputs"][0]["strip"])["orthogonalize"] is True


def test_edit_prompt_is_sampled_as_in_sample(tmp_path, tiny_models):
    from c2l_cli.pipeline import Pipeline

    d = _unit(6)
    save_direction(tmp_path / "d.safetensors", d)
    res = _ok(_run(
        "edit", "--prompt", "an old man", "--seed", "11", "--candidates", "2", "-d", tmp_path / "d.safetensors",
        "--strengths", "0,3", "--generator", tiny_models["generator"], "--prior", tiny_models["prior"],
        "--clip", tiny_models["clip"],
        "--device", "cpu", "-o", tmp_path / "out", "--save-latents", "--json",
    ))
    doc = json.loads(res.stdout)
    m = tiny_models
    pipe = Pipeline.from_sources(None, m["generator"], m["prior"], m["clip"], device="cpu")
    ref = pipe.sample(["an old man"], num_images=1, candidates=2, seed=11)
    entry = doc["outputs"][0]
    edited = torch.from_numpy(np.load(entry["latents"])["w"])
    assert torch.equal(edited[0], ref.ws[0])
    assert torch.allclose(edited[1] - ref.ws[0], 3 * d.expand(NUM_WS, W_DIM), atol=1e-5)
    assert entry["input"]["type"] == "prompt" and entry["input"]["recipe"]["prompt"] == "an old man"
    assert entry["input"]["recipe"]["candidate_seed"] == ref.seeds[0]
    assert entry["strip"].endswith("an-old-man-11-strip.png")


# ---------------------------------------------------------------- errors: one line, right exit code


def _error(result, code, *fragments):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # one line, last, after any progress
    err = errors[0]
    for frag in fragments:
        assert frag in err, err


def test_direction_for_another_model_is_a_clear_error(tmp_path, tiny_models, fixtures_dir):
    np.save(tmp_path / "w.npy", np.zeros((NUM_WS, W_DIM), np.float32))
    res = _run("edit", tmp_path / "w.npy", "-d", fixtures_dir / "directions" / "age.pt",
               "--generator", tiny_models["generator"], "--device", "cpu", "-o", tmp_path / "out")
    _error(res, 1, "w_dim 512", "w_dim is 32")
    res = _run("edit", tmp_path / "w.npy", "-d", fixtures_dir / "directions" / "pose.pt",
               "--generator", tiny_models["generator"], "--device", "cpu", "-o", tmp_path / "out")
    _error(res, 1, "w_dim 512")
    assert not list((tmp_path / "out").glob("*.png"))


def test_builtin_direction_through_registry(tmp_path, tiny_models, fixtures_dir, monkeypatch):
    from c2l_cli import cache

    real = cache.resolve

    def resolve(source, kind=None):
        if str(source).startswith("direction-"):
            return fixtures_dir / "directions" / f"{str(source)[len('direction-'):]}.pt"
        return real(source, kind=kind)

    monkeypatch.setattr(cache, "resolve", resolve)
    assert load_direction("smile").w_dim == 512
    np.save(tmp_path / "w.npy", np.zeros((NUM_WS, W_DIM), np.float32))
    res = _run("edit", tmp_path / "w.npy", "-d", "smile:2@0-3", "--generator", tiny_models["generator"],
               "--device", "cpu", "-o", tmp_path / "out")
    _error(res, 1, "'smile'", "w_dim 512")


def test_mismatched_latents(tmp_path, tiny_models):
    np.save(tmp_path / "ffhq.npy", np.zeros((18, 512), np.float32))
    save_direction(tmp_path / "d.safetensors", _unit(0))
    res = _run("edit", tmp_path / "ffhq.npy", "-d", tmp_path / "d.safetensors", "--generator", tiny_models["generator"],
               "--device", "cpu", "-o", tmp_path / "out")
    _error(res, 1, "w_dim 512", "another model")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-d", "glasses"], "unknown direction 'glasses'"),
        (["-d", "D@x"], "bad layer range"),
        (["-d", "D@5-2"], "end comes before the start"),
        (["-d", "D@0-9"], "out of range: this generator has 8 layers"),
        (["-d", "D:abc"], "bad strength"),
        (["-d", "D", "--strengths", "-3:3"], "START:STOP:COUNT"),
        (["-d", "D", "--strengths", "1,x"], "not a number"),
        ([], "at least one --direction"),
        (["-d", "D", "--seeds", "4-1"], "end comes before the start"),
        (["-d", "missing/dir.safetensors"], "does not exist"),
    ],
)
def test_usage_errors(tmp_path, tiny_models, args, fragment):
    np.save(tmp_path / "w.npy", np.zeros((NUM_WS, W_DIM), np.float32))
    save_direction(tmp_path / "d.safetensors", _unit(0))
    args = [str(tmp_path / "d.safetensors") + a[1:] if a.startswith("D") else a for a in args]
    res = _run("edit", tmp_path / "w.npy", *args, "--generator", tiny_models["generator"], "--device", "cpu",
               "-o", tmp_path / "out")
    _error(res, 2, fragment)


def test_nothing_to_edit_and_missing_file(tmp_path):
    _error(_run("edit", "-d", "age"), 2, "nothing to edit")
    _error(_run("edit", tmp_path / "nope.npz", "-d", "age"), 2, "does not exist")


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from c2l_cli.cli import edit, direction; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
