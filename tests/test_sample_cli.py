"""`c2l sample` end to end on the CPU with the tiny fixtures (StyleGAN2 + prior + CLIP, all dim 32, 8 ws)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from c2l_cli.cli.app import app
from c2l_cli.images import read_recipe


@pytest.fixture(scope="module")
def models(request) -> list[str]:
    fx = request.getfixturevalue("fixtures_dir")
    return [
        "--generator", str(fx / "stylegan" / "stylegan2-tiny.pkl"),
        "--prior", str(fx / "prior" / "prior-tiny.ckpt"),
        "--clip", f"local-dir:{fx / 'clip-tiny32'}",
    ]


def run(args: list[str], *, input: str | None = None):
    return CliRunner().invoke(app, ["sample", *args], input=input)


def ok(args: list[str], **kw):
    res = run(args, **kw)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res


def sample_json(models, out: Path, *args: str) -> dict:
    res = ok([*models, "-o", str(out), "--json", *args])
    return json.loads(res.stdout)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_writes_images_latents_grid_manifest_and_recipes(models, fixtures_dir, tmp_path):
    out = tmp_path / "out"
    res = ok([*models, "an old man", "a young woman", "-n", "2", "-c", "3", "--seed", "7", "-o", str(out),
              "--save-latents", "--grid"])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        "an-old-man-7-0.png", "an-old-man-7-1.png", "a-young-woman-7-2.png", "a-young-woman-7-3.png",
        "an-old-man-7-0.npz", "an-old-man-7-1.npz", "a-young-woman-7-2.npz", "a-young-woman-7-3.npz",
        "grid-7.png", "run-7.json",
    ])
    # stdout: a table of the files with their scores; progress went to stderr
    for name in ("an-old-man-7-0.png", "a-young-woman-7-3.png", "run-7.json"):
        assert name in res.stdout
    assert "loading prior" in res.stderr and "loading prior" not in res.stdout

    with Image.open(out / "an-old-man-7-0.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
        assert im.text["c2l:prompt"] == "an old man" and im.text["c2l:seed"] == "7"
    rec = read_recipe(out / "a-young-woman-7-3.png")
    assert rec["prompt"] == "a young woman" and rec["seed"] == 7 and rec["prompt_index"] == 1 and rec["rank"] == 1
    assert rec["c2l_version"] and rec["format"] == "c2l-recipe/1"
    assert rec["settings"] == {"steps": 4, "guidance": 2.0, "sampler": "reference", "eta": 0.0, "truncation": 1.0,
                               "candidates": 3, "num_images": 2, "style_mix": None, "batch_size": 8,
                               "noise_mode": "const"}
    assert rec["models"]["generator"]["sha256"] == sha(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl")
    assert rec["models"]["prior"]["sha256"] == sha(fixtures_dir / "prior" / "prior-tiny.ckpt")
    assert rec["models"]["clip"]["sha256"] == sha(fixtures_dir / "clip-tiny32" / "open_clip_model.safetensors")
    assert rec["models"]["generator"]["source"] == str((fixtures_dir / "stylegan" / "stylegan2-tiny.pkl").resolve())

    w = np.load(out / "an-old-man-7-0.npz")
    assert list(w.keys()) == ["w"] and w["w"].shape == (1, 8, 32) and w["w"].dtype == np.float32

    manifest = json.loads((out / "run-7.json").read_text())
    assert [Path(f["path"]).name for f in manifest["files"]][:2] == ["an-old-man-7-0.png", "an-old-man-7-1.png"]
    assert manifest["prompts"] == ["an old man", "a young woman"]
    assert np.array(manifest["candidate_scores"]).shape == (2, 3)
    with Image.open(out / "grid-7.png") as g:
        assert g.width > 2 * 32 and g.height > 2 * 32  # 2 × 2 cells + captions
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_json_is_one_valid_document(models, tmp_path):
    doc = sample_json(models, tmp_path / "o", "a cat", "-c", "2", "--seed", "3")
    assert set(doc) >= {"files", "prompts", "seed", "settings", "models", "manifest", "candidate_scores"}
    assert doc["seed"] == 3 and doc["prompts"] == ["a cat"] and len(doc["files"]) == 1
    f = doc["files"][0]
    assert Path(f["path"]).is_file() and isinstance(f["score"], float)
    assert json.loads(Path(doc["manifest"]).read_text()) == doc


def test_replay_gives_identical_pixels(models, tmp_path):
    doc = sample_json(models, tmp_path / "a", "a man with a hat", "-n", "2", "-c", "4", "--seed", "11",
                      "--style-mix", "4", "--truncation", "0.8")
    for f in doc["files"]:
        res = ok(["--replay", f["path"], "-o", str(tmp_path / "b"), "--json"])
        again = json.loads(res.stdout)["files"][0]
        assert Path(again["path"]).name == Path(f["path"]).name
        assert np.array_equal(pixels(again["path"]), pixels(f["path"]))
        assert again["candidate_seed"] == f["candidate_seed"]
        assert again["score"] == pytest.approx(f["score"], abs=1e-5)
    # the replayed image replays too, and an explicit override changes it
    replayed = tmp_path / "b" / Path(doc["files"][0]["path"]).name
    ok(["--replay", str(replayed), "-o", str(tmp_path / "c")])
    assert np.array_equal(pixels(tmp_path / "c" / replayed.name), pixels(replayed))
    ok(["--replay", str(replayed), "-o", str(tmp_path / "d"), "--truncation", "0.3"])
    assert not np.array_equal(pixels(tmp_path / "d" / replayed.name), pixels(replayed))
    assert read_recipe(tmp_path / "d" / replayed.name)["settings"]["truncation"] == 0.3


def test_seed_reproducible_and_seeds_differ(models, tmp_path):
    a = sample_json(models, tmp_path / "a", "a smiling woman", "-c", "3", "--seed", "5")
    b = sample_json(models, tmp_path / "b", "a smiling woman", "-c", "3", "--seed", "5")
    c = sample_json(models, tmp_path / "c", "a smiling woman", "-c", "3", "--seed", "6")
    assert np.array_equal(pixels(a["files"][0]["path"]), pixels(b["files"][0]["path"]))
    assert a["candidate_scores"] == b["candidate_scores"]
    assert not np.array_equal(pixels(a["files"][0]["path"]), pixels(c["files"][0]["path"]))
    # no --seed: a random one, recorded
    d = sample_json(models, tmp_path / "d", "a smiling woman", "-c", "1")
    assert isinstance(d["seed"], int) and read_recipe(d["files"][0]["path"])["seed"] == d["seed"]


def test_batch_size_does_not_change_images(models, tmp_path):
    args = ["a bald man", "a girl", "-n", "2", "-c", "5", "--seed", "9"]
    a = sample_json(models, tmp_path / "a", *args, "--batch-size", "1")
    b = sample_json(models, tmp_path / "b", *args, "--batch-size", "8")
    c = sample_json(models, tmp_path / "c", *args, "--batch-size", "3")
    for fa, fb, fc in zip(a["files"], b["files"], c["files"]):
        assert fa["candidate_index"] == fb["candidate_index"] == fc["candidate_index"]
        assert np.array_equal(pixels(fa["path"]), pixels(fb["path"]))
        assert np.array_equal(pixels(fa["path"]), pixels(fc["path"]))
    np.testing.assert_allclose(a["candidate_scores"], b["candidate_scores"], atol=1e-5)


def test_reranking_keeps_the_highest_scoring_candidates(models, fixtures_dir, tmp_path):
    from c2l_cli.images import to_pil
    from c2l_cli.pipeline import Pipeline, candidate_seed

    doc = sample_json(models, tmp_path / "o", "a woman with red hair", "-n", "2", "-c", "6", "--seed", "21")
    pipe = Pipeline.from_sources(
        generator=fixtures_dir / "stylegan" / "stylegan2-tiny.pkl",
        prior=fixtures_dir / "prior" / "prior-tiny.ckpt",
        clip=f"local-dir:{fixtures_dir / 'clip-tiny32'}",
        device="cpu",
    )
    # every candidate on its own, independently of the run
    text = pipe.embed_texts(["a woman with red hair"])
    seeds = [candidate_seed(21, 0, c) for c in range(6)]
    ws = torch.cat([pipe.sample_ws(text, [s]) for s in seeds])
    imgs = torch.cat([pipe.synthesize(ws[i : i + 1]) for i in range(6)])
    scores = torch.nn.functional.cosine_similarity(pipe.embed_images(imgs), text, dim=-1)
    order = torch.argsort(scores, descending=True).tolist()
    np.testing.assert_allclose(doc["candidate_scores"][0], scores.numpy(), atol=1e-5)
    assert [f["candidate_index"] for f in doc["files"]] == order[:2]
    for f, c in zip(doc["files"], order[:2]):
        assert f["score"] == pytest.approx(float(scores[c]), abs=1e-5)
        assert np.array_equal(pixels(f["path"]), np.asarray(to_pil(imgs[c])[0]))
    assert max(doc["candidate_scores"][0]) == pytest.approx(doc["files"][0]["score"], abs=1e-6)


def test_style_mixing_replaces_only_the_upper_layers(models, fixtures_dir, tmp_path):
    from c2l_cli.generator import load_generator
    from c2l_cli.pipeline import style_seed

    base = sample_json(models, tmp_path / "a", "a man", "-c", "1", "--seed", "4", "--save-latents")
    mixed = sample_json(models, tmp_path / "b", "a man", "-c", "1", "--seed", "4", "--save-latents", "--style-mix", "3")
    w0 = np.load(base["files"][0]["latents"])["w"][0]
    w1 = np.load(mixed["files"][0]["latents"])["w"][0]
    np.testing.assert_array_equal(w1[:3], w0[:3])  # identity layers from the prior
    assert np.abs(w1[3:] - w0[3:]).min() > 1e-4  # every upper layer replaced
    # ... by G.mapping of the z drawn from the recorded style seed
    sseed = mixed["files"][0]["style_seed"]
    assert sseed == style_seed(4, 0, 0)
    G = load_generator(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl", device="cpu")
    z = torch.randn((G.z_dim,), generator=torch.Generator().manual_seed(sseed))[None]
    np.testing.assert_allclose(w1[3:], G.mapping(z, None)[0, 3:].numpy(), atol=1e-5)
    assert not np.array_equal(pixels(base["files"][0]["path"]), pixels(mixed["files"][0]["path"]))


def test_truncation_pulls_toward_the_prior_mean(models, fixtures_dir, tmp_path):
    from c2l_cli.prior import load_prior

    mean = load_prior(fixtures_dir / "prior" / "prior-tiny.ckpt", device="cpu").latent_mean.numpy()  # (32,)
    ws = {}
    for t in ("1.0", "0.5", "0.0"):
        doc = sample_json(models, tmp_path / t, "an old woman", "-c", "1", "--seed", "8", "--save-latents",
                          "--truncation", t)
        ws[t] = np.load(doc["files"][0]["latents"])["w"][0]  # (8, 32)
    np.testing.assert_allclose(ws["0.5"], mean + 0.5 * (ws["1.0"] - mean), atol=1e-5)
    np.testing.assert_allclose(ws["0.0"], np.broadcast_to(mean, ws["0.0"].shape), atol=1e-6)
    assert np.abs(ws["1.0"] - mean).max() > 1e-2


def test_prompts_file_stdin_and_comments(models, tmp_path):
    res = ok([*models, "-o", str(tmp_path / "o"), "--json", "-f", "-", "-c", "1", "--seed", "1"],
             input="a red car\n\n# a comment\n  a blue boat  \n")
    doc = json.loads(res.stdout)
    assert doc["prompts"] == ["a red car", "a blue boat"]
    pf = tmp_path / "prompts.txt"
    pf.write_text("# header\nx ray\n")
    doc = sample_json(models, tmp_path / "p", "first", "-f", str(pf), "-c", "1", "--seed", "1")
    assert doc["prompts"] == ["first", "x ray"]


def test_image_condition_and_mixing(models, tmp_path):
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(src)
    doc = sample_json(models, tmp_path / "a", "--image", str(src), "-c", "2", "--seed", "2")
    f = doc["files"][0]
    assert Path(f["path"]).name == "like-photo-2-0.png" and f["prompt"] is None
    assert doc["image"]["sha256"] == sha(src) and doc["image"]["weight"] == 1.0
    again = ok(["--replay", f["path"], "-o", str(tmp_path / "r"), "--json"])
    assert np.array_equal(pixels(json.loads(again.stdout)["files"][0]["path"]), pixels(f["path"]))
    mixed = sample_json(models, tmp_path / "b", "a clown", "--image", str(src), "--image-weight", "0.25",
                        "-c", "2", "--seed", "2")
    assert mixed["image"]["weight"] == 0.25 and mixed["files"][0]["prompt"] == "a clown"
    text_only = sample_json(models, tmp_path / "c", "a clown", "-c", "2", "--seed", "2")
    assert not np.array_equal(pixels(mixed["files"][0]["path"]), pixels(text_only["files"][0]["path"]))


@pytest.mark.parametrize("fmt,pil_format", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_formats_and_size(models, tmp_path, fmt, pil_format):
    doc = sample_json(models, tmp_path / "o", "a dog", "-c", "1", "--seed", "1", "--format", fmt, "--size", "16",
                      "--grid")
    p = Path(doc["files"][0]["path"])
    assert p.suffix == f".{fmt}"
    with Image.open(p) as im:
        assert im.format == pil_format and im.size == (16, 16)
    assert read_recipe(p)["seed"] == 1
    assert Path(doc["grid"]).suffix == f".{fmt}"


def test_never_overwrites(models, tmp_path):
    a = sample_json(models, tmp_path, "a tree", "-c", "1", "--seed", "1")
    b = sample_json(models, tmp_path, "a tree", "-c", "1", "--seed", "1")
    assert Path(a["files"][0]["path"]).name == "a-tree-1-0.png"
    assert Path(b["files"][0]["path"]).name == "a-tree-1-0-1.png"
    assert Path(b["manifest"]).name == "run-1-1.json"
    assert np.array_equal(pixels(a["files"][0]["path"]), pixels(b["files"][0]["path"]))


# ---------------------------------------------------------------------------------------------
# bad input: one line `error: …`, the right exit code, nothing written


def _mismatched_generator(tmp_path: Path, *, w_dim: int, resolution: int) -> Path:
    from c2l_cli.generator import build_generator, save_generator

    G = build_generator("stylegan2", dict(
        z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution, img_channels=3,
        mapping_kwargs={"num_layers": 2}, channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=256,
    ))
    G.source_info = {}
    return save_generator(G.eval(), tmp_path / f"g{w_dim}-{resolution}")


def _clip16(tmp_path: Path, fixtures_dir: Path) -> str:
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    cfg = json.loads((fixtures_dir / "clip-tiny32" / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 16
    folder = tmp_path / "clip16"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = CLIP(**cfg["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


BAD = [
    # (id, extra args, exit code, message fragment)
    ("empty-prompt", ["  "], 2, "empty prompt"),
    ("no-prompt", [], 2, "give a prompt"),
    ("candidates<n", ["x", "-n", "3", "-c", "2"], 2, "--candidates (2) must be at least --num-images (3)"),
    ("guidance<0", ["x", "--guidance", "-0.5"], 2, "--guidance must be >= 0"),
    ("truncation>2", ["x", "--truncation", "2.5"], 2, "--truncation must be in [0, 2]"),
    ("truncation<0", ["x", "--truncation", "-0.1"], 2, "--truncation must be in [0, 2]"),
    ("steps-not-divisor", ["x", "--steps", "3"], 2, "does not divide"),
    ("steps-0", ["x", "--steps", "0"], 2, "--steps must be at least 1"),
    ("bad-sampler", ["x", "--sampler", "euler"], 2, "unknown --sampler"),
    ("bad-format", ["x", "--format", "gif"], 2, "unknown --format"),
    ("style-mix-too-big", ["x", "--style-mix", "8"], 2, "--style-mix 8 must be below"),
    ("style-mix-0", ["x", "--style-mix", "0"], 2, "--style-mix must be"),
    ("size-too-big", ["x", "--size", "64"], 2, "only downscales"),
    ("image-weight-range", ["x", "--image-weight", "1.5"], 2, "--image-weight must be in [0, 1]"),
    ("image-weight-alone", ["x", "--image-weight", "0.5"], 2, "--image-weight needs --image"),
    ("batch-size-0", ["x", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ("fp16-on-cpu", ["x", "--device", "cpu", "--dtype", "float16"], 2, "float16 is not supported on the CPU"),
    ("bad-device", ["x", "--device", "tpu"], 2, "device 'tpu'"),
    ("replay-with-prompt", ["x", "--replay", "whatever.png"], 2, "--replay takes"),
    ("missing-image", ["--image", "nope.png"], 1, "cannot read --image"),
    ("missing-prompts-file", ["-f", "nope.txt"], 1, "cannot read prompts file"),
    ("replay-missing", ["--replay", "nope.png"], 1, "no such file"),
]


def _check_error(res, code: int, fragment: str, out: Path) -> None:
    assert res.exit_code == code, (res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(models, tmp_path, monkeypatch, case):
    _, args, code, fragment = case
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    _check_error(run([*models, "-o", str(out), *args]), code, fragment, out)


def test_unreadable_image_file(models, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is no image")
    out = tmp_path / "out"
    _check_error(run([*models, "-o", str(out), "--image", str(bad)]), 1, "not an image file", out)


def test_unwritable_output_dir(models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run([*models, "-o", str(blocker / "sub"), "x"])
    _check_error(res, 1, "cannot write to output folder", tmp_path / "none")
    res = run([*models, "-o", str(blocker), "x"])
    _check_error(res, 1, "it is a file", tmp_path / "none")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_missing(models, tmp_path):
    out = tmp_path / "out"
    _check_error(run([*models, "-o", str(out), "x", "--device", "cuda"]), 1, "CUDA is not available", out)


def test_replay_of_image_without_recipe(models, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    out = tmp_path / "out"
    _check_error(run(["-o", str(out), "--replay", str(plain)]), 1, "no c2l recipe", out)


@pytest.mark.parametrize("w_dim,resolution,fragment", [(16, 32, "w_dim (16)"), (32, 16, "has 6 ws")])
def test_mismatched_generator(models, fixtures_dir, tmp_path, w_dim, resolution, fragment):
    gen = _mismatched_generator(tmp_path, w_dim=w_dim, resolution=resolution)
    args = list(models)
    args[args.index("--generator") + 1] = str(gen)
    out = tmp_path / "out"
    _check_error(run([*args, "-o", str(out), "x"]), 1, fragment, out)


def test_mismatched_clip(models, fixtures_dir, tmp_path):
    args = list(models)
    args[args.index("--clip") + 1] = _clip16(tmp_path, fixtures_dir)
    out = tmp_path / "out"
    _check_error(run([*args, "-o", str(out), "x"]), 1, "embedding size (16)", out)


def test_long_prompt_warns_in_one_line(models, tmp_path):
    res = ok([*models, "-o", str(tmp_path), "-c", "1", "--seed", "1", " ".join(["word"] * 100)])
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "truncated" in warnings[0]
    assert len(list(tmp_path.glob("*.png"))) == 1
