"""``c2l score`` end to end with Typer's CliRunner and the clip-tiny32 fixture."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from c2l_cli.cli.app import app


@pytest.fixture(scope="module")
def spec(fixtures_dir):
    return f"local-dir:{fixtures_dir / 'clip-tiny32'}"


@pytest.fixture(scope="module")
def engine(spec):
    from c2l_cli.clip import load_clip

    return load_clip(spec, device="cpu")


@pytest.fixture()
def images(tmp_path):
    """A folder: three PNGs of different sizes, a JPEG in a subfolder, a text file and a hidden image."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for name, (h, w) in {"b.png": (32, 32), "a.png": (64, 48), "c.png": (40, 90)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(root / "sub" / "d.jpg")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / ".hidden.png")
    (root / "notes.txt").write_text("not an image")
    return root


EXPECTED_ORDER = ["a.png", "b.png", "c.png", "sub/d.jpg"]


def run(*args):
    result = CliRunner().invoke(app, ["score", *map(str, args)])
    return result


def test_help_lists_the_options():
    result = run("--help")
    assert result.exit_code == 0
    for opt in ("--text", "--texts", "--clip", "--scale", "--json", "--csv", "--skip-bad", "--batch-size", "--device"):
        assert opt in result.stdout


def test_table(images, spec):
    result = run(images, "--text", "a photo of a face", "--clip", spec, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for name in ("a.png", "b.png", "c.png", "d.jpg", "mean", "cosine", "a photo of a face"):
        assert name in out
    assert "notes.txt" not in out and ".hidden" not in out
    assert out.index("a.png") < out.index("b.png") < out.index("c.png") < out.index("d.jpg")


def test_json_matches_the_python_api(images, spec, engine):
    result = run(images, "--text", "a photo of a face", "--clip", spec, "--json", "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = doc["rows"]
    assert [r["path"] for r in rows] == [str(images / p) for p in EXPECTED_ORDER]
    expected = engine.score([images / p for p in EXPECTED_ORDER], "a photo of a face").tolist()
    np.testing.assert_allclose([r["cosine"] for r in rows], expected, atol=1e-5)
    assert all(r["score"] == r["cosine"] and r["error"] is None for r in rows)
    assert doc["summary"]["count"] == 4 and doc["summary"]["failed"] == 0
    assert doc["summary"]["mean"] == pytest.approx(np.mean(expected), abs=1e-5)
    assert doc["clip"] == spec and doc["scale"] is None


def test_scale_100(images, spec):
    result = run(images, "-t", "a smiling man", "--clip", spec, "--json", "--scale", "100")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    for r in doc["rows"]:
        assert r["score"] == pytest.approx(100 * max(r["cosine"], 0.0))
    assert doc["summary"]["mean"] == pytest.approx(np.mean([r["score"] for r in doc["rows"]]))
    assert doc["summary"]["mean_cosine"] == pytest.approx(np.mean([r["cosine"] for r in doc["rows"]]))
    table = run(images, "-t", "a smiling man", "--clip", spec, "--scale", "100")
    assert table.exit_code == 0 and "100·max(cos,0)" in table.stdout


def test_csv(images, spec):
    result = run(images, "--text", "a house", "--clip", spec, "--csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == [str(images / p) for p in EXPECTED_ORDER]
    assert all(r["text"] == "a house" and r["error"] == "" for r in rows)
    assert all(-1 <= float(r["cosine"]) <= 1 for r in rows)


def test_unreadable_images_exit_1_unless_skip_bad(images, spec, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("this is not a png")
    missing = tmp_path / "missing.png"
    result = run(images / "a.png", bad, missing, images / "b.png", "--text", "x", "--clip", spec, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)  # the good images are still scored and reported
    assert [r["error"] is None for r in doc["rows"]] == [True, False, False, True]
    assert "not an image" in doc["rows"][1]["error"] and "no such file" in doc["rows"][2]["error"]
    assert doc["summary"] == {**doc["summary"], "count": 2, "failed": 2}
    assert "broken.png" in result.stderr and "missing.png" in result.stderr
    assert "error: 2 of 4 image(s) could not be read" in result.stderr
    assert "Traceback" not in result.stderr

    skipped = run(images / "a.png", bad, "--text", "x", "--clip", spec, "--skip-bad")
    assert skipped.exit_code == 0
    assert "broken.png" in skipped.stderr and "unreadable" in skipped.stdout


def test_texts_file_one_line_per_image(images, spec, engine, tmp_path):
    lines = tmp_path / "prompts.txt"
    lines.write_text("a cat\na dog\na bird\na fish\n\n")
    result = run(images, "--texts", lines, "--clip", spec, "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [r["text"] for r in rows] == ["a cat", "a dog", "a bird", "a fish"]
    expected = engine.score([images / p for p in EXPECTED_ORDER], ["a cat", "a dog", "a bird", "a fish"]).tolist()
    np.testing.assert_allclose([r["cosine"] for r in rows], expected, atol=1e-5)
    table = run(images, "--texts", lines, "--clip", spec)
    assert table.exit_code == 0 and "a bird" in table.stdout


def test_texts_mapping_csv_and_jsonl(images, spec, tmp_path):
    mapping = images / "captions.csv"  # relative paths are relative to the mapping file
    mapping.write_text('path,text\nb.png,"a dog, running"\na.png,a cat\nsub/d.jpg,a bird\nc.png,a fish\n')
    result = run(images, "--texts", mapping, "--clip", spec, "--json")
    assert result.exit_code == 0, result.stderr
    got = {r["path"]: r["text"] for r in json.loads(result.stdout)["rows"]}
    assert got[str(images / "b.png")] == "a dog, running" and got[str(images / "sub" / "d.jpg")] == "a bird"

    # no IMAGE arguments: the mapping's own images, in its order
    only = run("--texts", mapping, "--clip", spec, "--json")
    assert only.exit_code == 0, only.stderr
    assert [r["text"] for r in json.loads(only.stdout)["rows"]] == ["a dog, running", "a cat", "a bird", "a fish"]

    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text("\n".join(json.dumps({"image": str(images / p), "prompt": f"t{i}"}) for i, p in enumerate(EXPECTED_ORDER)))
    result = run(images, "--texts", jsonl, "--clip", spec, "--csv")
    assert result.exit_code == 0, result.stderr
    assert [r["text"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["t0", "t1", "t2", "t3"]

    partial = tmp_path / "partial.csv"
    partial.write_text(f"{images / 'a.png'},a cat\n")
    result = run(images, "--texts", partial, "--clip", spec)
    assert result.exit_code == 2 and "no text for" in result.stderr

    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    result = run(images, "--texts", broken, "--clip", spec)
    assert result.exit_code == 1 and "not valid JSON" in result.stderr


def test_long_text_warns_on_stderr(images, spec):
    result = run(images / "a.png", "--text", "very " * 90 + "long", "--clip", spec, "--json")
    assert result.exit_code == 0, result.stderr
    assert "warning: prompt truncated to CLIP's 77-token context" in result.stderr
    json.loads(result.stdout)  # stdout stays one JSON document


@pytest.mark.parametrize(
    "args, message",
    [
        (["{img}"], "no text"),
        (["{img}", "--text", "a", "--texts", "{lines}"], "either --text or --texts"),
        (["{empty}", "--text", "a"], "no images"),
        (["--text", "a"], "no images"),
        (["{img}", "--texts", "{lines}"], "2 text line(s) but there are 1 image(s)"),
        (["{img}", "--text", "a", "--json", "--csv"], "--json and --csv"),
        (["{img}", "--text", "  "], "--text is empty"),
        (["{img}", "--text", "a", "--scale", "0"], "--scale"),
        (["{img}", "--text", "a", "--clip", "ViT-B-3:openai"], "unknown CLIP architecture"),
        (["{img}", "--text", "a", "--batch-size", "0"], ""),
    ],
)
def test_usage_errors_exit_2(images, spec, tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    lines = tmp_path / "two.txt"
    lines.write_text("one\ntwo\n")
    subs = {"{img}": str(images / "a.png"), "{empty}": str(empty), "{lines}": str(lines)}
    argv = [subs.get(a, a) for a in args]
    if "--clip" not in argv:
        argv += ["--clip", spec]
    result = run(*argv)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_errors_exit_1(images, tmp_path):
    result = run(images / "a.png", "--text", "a", "--clip", f"local-dir:{tmp_path / 'nowhere'}")
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "not found" in result.stderr


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from c2l_cli.cli.app import app; import c2l_cli.cli.score; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
