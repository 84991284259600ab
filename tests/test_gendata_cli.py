"""`c2l gen-data` through the CLI: summary, resume, previews, usage errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from c2l_cli.cli.app import app


def _args(fixtures_dir, out, *extra):
    return [
        "gen-data",
        str(out),
        "--generator",
        str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
        "--clip",
        f"local-dir:{fixtures_dir / 'clip-tiny32'}",
        "--device",
        "cpu",
        "-n",
        "6",
        "--shard-size",
        "4",
        "-b",
        "4",
        *extra,
    ]


def test_gen_data_cli_and_resume(tmp_path, fixtures_dir):
    runner = CliRunner()
    out = tmp_path / "data"
    r = runner.invoke(app, _args(fixtures_dir, out, "--json", "--save-images", "--image-size", "16"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["n_samples"] == 6 and doc["num_shards"] == 2 and doc["rank0_made_shards"] == 2
    assert doc["latent_shape"] == [32] and doc["embed_dim"] == 32
    jpgs = sorted((out / "images").rglob("*.jpg"))
    assert len(jpgs) == 6
    from PIL import Image

    assert Image.open(jpgs[0]).size == (16, 16)
    # re-running the same command keeps the finished shards
    r = runner.invoke(app, _args(fixtures_dir, out, "--json", "--save-images", "--image-size", "16"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rank0_made_shards"] == 0 and doc["rank0_kept_shards"] == 2


def test_gen_data_w3(tmp_path, fixtures_dir):
    r = CliRunner().invoke(app, _args(fixtures_dir, tmp_path / "w3", "--space", "w3", "--json"))
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "w3" / "manifest.json").read_text())
    assert man["latent_shape"] == [3, 32] and man["latent_repeats"] == [2, 2, 4]


def test_gen_data_usage_errors(tmp_path, fixtures_dir):
    runner = CliRunner()
    r = runner.invoke(app, _args(fixtures_dir, tmp_path / "x", "--space", "w18"))
    assert r.exit_code == 2 and "--space" in r.output
    r = runner.invoke(app, _args(fixtures_dir, tmp_path / "x", "-n", "0"))
    assert r.exit_code == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file.txt").write_text("x")
    r = runner.invoke(app, _args(fixtures_dir, busy))
    assert r.exit_code == 2 and "not empty" in r.output
    r = runner.invoke(app, _args(fixtures_dir, tmp_path / "y", "--generator", str(tmp_path / "nope.pkl")))
    assert r.exit_code != 0 and "error:" in r.output and "Traceback" not in r.output
