"""`c2l train`: config parsing, exact resume, memmapped data, EMA, validation, outputs and errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from c2l_cli.cli.app import app
from c2l_cli.errors import UsageError
from c2l_cli.train import EMA, TrainConfig, build_config, config_keys, load_prompts, train

TINY = {
    "depth": 1,
    "heads": 2,
    "dim_head": 16,
    "batch_size": 16,
    "log_every": 1,
    "ckpt_every": 50,
    "val_every": 0,
    "ema_update_after": 10,
    "ema_update_every": 2,
    "ema_beta": 0.9,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest (and bitwise-stable) on one thread, above all on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, fixtures_dir):
    """120 pairs from the tiny StyleGAN2 and clip-tiny32 (made once for the module)."""
    from c2l_cli.data import GenDataConfig, generate_dataset

    root = tmp_path_factory.mktemp("train-data") / "data"
    cfg = GenDataConfig(
        generator=str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
        clip=f"local-dir:{fixtures_dir / 'clip-tiny32'}",
        n_samples=120,
        shard_size=50,
        batch_size=40,
    )
    generate_dataset(root, cfg, device="cpu")
    return root


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_defaults_are_the_papers_recipe():
    c = TrainConfig()
    assert (c.depth, c.heads, c.dim_head, c.timesteps) == (12, 12, 64, 1000)
    assert (c.cond_drop_prob, c.embed_noise_scale) == (0.2, 1.0)
    assert (c.lr, c.weight_decay, c.batch_size, c.max_steps) == (1e-4, 1e-2, 512, 1_000_000)
    assert (c.ema_beta, c.ema_update_every) == (0.9999, 10)
    assert (c.val_samples_per_text, c.val_prompts) == (4, "face")
    assert len(load_prompts("face")) == 16 and load_prompts("face")[-1] == "The Mona Lisa"
    assert len(load_prompts("landscape")) == 16


def test_config_file_and_set(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"depth": 3, "lr": 0.001}))
    c = build_config(file=tmp_path / "c.json", sets=["lr=2e-4", "val_prompts=landscape", "max_steps=1_000"])
    assert (c.depth, c.lr, c.val_prompts, c.max_steps) == (3, 2e-4, "landscape", 1000)
    (tmp_path / "c.toml").write_text('depth = 4\n[train]\nbatch_size = 64\namp = "none"\n')
    c = build_config(file=tmp_path / "c.toml")
    assert (c.depth, c.batch_size, c.amp) == (4, 64, "none")
    with pytest.raises(UsageError, match=r"unknown config key 'ema_bta'.*did you mean 'ema_beta'.*valid keys: dim, depth"):
        build_config(sets=["ema_bta=1"])
    with pytest.raises(UsageError, match="unknown config key 'dept'"):
        (tmp_path / "bad.toml").write_text("dept = 3\n")
        build_config(file=tmp_path / "bad.toml")
    with pytest.raises(UsageError, match="depth must be a int"):
        build_config(sets=["depth=deep"])
    with pytest.raises(UsageError, match="key=value"):
        build_config(sets=["depth"])
    with pytest.raises(UsageError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("depth = = 3\n")
        build_config(file=tmp_path / "broken.toml")
    with pytest.raises(UsageError, match="amp"):
        build_config(sets=["amp=fp8"])
    with pytest.raises(UsageError, match="val_steps"):
        build_config(sets=["val_steps=3"])
    assert "ema_beta" in config_keys()


def test_ema_follows_then_averages():
    a = torch.nn.Linear(2, 2, bias=False)
    b = torch.nn.Linear(2, 2, bias=False)
    ema = EMA(a, b, beta=0.5, update_every=2, update_after=2)
    with torch.no_grad():
        a.weight.fill_(1.0)
    ema.update(1)  # not an update step
    assert not torch.equal(b.weight, a.weight)
    ema.update(2)  # up to update_after: copy
    assert torch.equal(b.weight, a.weight)
    with torch.no_grad():
        a.weight.fill_(3.0)
    ema.update(4)  # average
    assert torch.allclose(b.weight, torch.full((2, 2), 2.0))


def test_resume_matches_uninterrupted_run(tmp_path, dataset):
    cfg = build_config(dict(TINY, max_steps=200))
    full = train(dataset, tmp_path / "full", cfg, device="cpu")
    assert full.step == 200
    # stopped at an arbitrary step (checkpoint written there), then resumed
    train(dataset, tmp_path / "part", cfg, device="cpu", stop_after=73)
    assert len(_losses(tmp_path / "part")) == 73

    # a Ctrl-C (here raised from the progress callback) saves a checkpoint and resumes exactly too
    def interrupt(rec):
        if rec.get("step") == 131:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(dataset, tmp_path / "part", cfg, device="cpu", resume=True, on_log=interrupt)
    res = train(dataset, tmp_path / "part", cfg, device="cpu", resume=True)
    assert res.step == 200
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert [s for s, _ in b] == list(range(1, 201))
    assert a == b  # bit-identical losses
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "latest" / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "latest" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    first, last = [l for _, l in a[:40]], [l for _, l in a[-40:]]
    assert sum(last) < sum(first)  # it learns


def test_memmapped_data_gives_the_same_losses(tmp_path, dataset):
    cfg = build_config(dict(TINY, max_steps=12, data_on_device="yes"))
    train(dataset, tmp_path / "dev", cfg, device="cpu")
    cfg = build_config(dict(TINY, max_steps=12, data_on_device="no"))
    train(dataset, tmp_path / "mm", cfg, device="cpu")
    assert _losses(tmp_path / "dev") == _losses(tmp_path / "mm")
    assert json.loads((tmp_path / "mm" / "config.json").read_text())["data_on_device"] is False


def test_cli_train_validate_and_sample(tmp_path, dataset, fixtures_dir):
    runner = CliRunner()
    run = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in TINY.items()]
    sets += ["max_steps=30", "val_every=20", "val_steps=4", "val_samples_per_text=1", "val_image_samples=8", "log_every=10"]
    args = ["train", str(dataset), "--out", str(run), "--device", "cpu", "--json"]
    for s in sets:
        args += ["--set", s]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["step"] == 30 and doc["best_step"] == 20 and doc["best"] == str(run / "best")
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val = [x for x in recs if "val_text_clip" in x]
    assert [x["step"] for x in val] == [20] and -1 <= val[0]["val_text_clip"] <= 1 and "val_image_sim" in val[0]
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["max_steps"] == 30 and saved["data"]["n_held_out"] == 8 and saved["prior"]["dim"] == 32

    from c2l_cli.prior import load_prior

    prior = load_prior(run / "best", device="cpu")
    assert prior.num_ws == 8 and prior.embed_dim == 32
    ws = prior.sample(torch.randn(2, 32), generator=torch.Generator().manual_seed(0))
    assert ws.shape == (2, 8, 32) and torch.isfinite(ws).all()

    # existing run without --resume → usage error; --resume continues; non-resumable changes refused
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "already exists" in r.output and "--resume" in r.output
    r = runner.invoke(app, ["train", str(dataset), "--out", str(run), "--resume", "--set", "depth=3", "--device", "cpu"])
    assert r.exit_code == 2 and "cannot change" in r.output
    r = runner.invoke(app, ["train", str(dataset), "--out", str(run), "--resume", "--set", "max_steps=40", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["step"] == 40

    # the trained prior drives `c2l sample`
    r = runner.invoke(
        app,
        ["sample", "a face", "--prior", str(run / "best"), "--generator", str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
         "--clip", f"local-dir:{fixtures_dir / 'clip-tiny32'}", "-c", "2", "-n", "1", "-s", "1", "--device", "cpu",
         "-o", str(tmp_path / "samples"), "--json"],
    )
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "samples").glob("*.png"))) == 1


def test_cli_train_errors(tmp_path, dataset):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, ["train", *map(str, args), "--device", "cpu"])

    r = run(dataset, "--out", tmp_path / "r1", "--set", "dpth=3")
    assert r.exit_code == 2 and "unknown config key 'dpth'" in r.output and "depth" in r.output
    r = run(dataset, "--out", tmp_path / "r1", "--resume")
    assert r.exit_code == 2 and "no checkpoint" in r.output
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty", "--out", tmp_path / "r2", "--set", "val_every=0")
    assert r.exit_code == 1 and "empty" in r.output
    r = run(dataset, "--out", tmp_path / "r3", "--set", "batch_size=1024", "--set", "val_every=0")
    assert r.exit_code == 2 and "fewer than one batch" in r.output
    # a corrupted shard is named
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    f = bad / "shard-00001.w.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x55
    f.write_bytes(bytes(raw))
    r = run(bad, "--out", tmp_path / "r4", "--set", "val_every=0")
    assert r.exit_code == 1 and "shard 1" in r.output and "sha256" in r.output
    assert "Traceback" not in r.output


def test_w3_data_trains_a_three_vector_prior(tmp_path):
    import numpy as np

    from c2l_cli.data import write_dataset
    from c2l_cli.prior import load_prior

    rng = np.random.default_rng(1)
    write_dataset(tmp_path / "w3", rng.standard_normal((40, 3, 32)), rng.standard_normal((40, 32)),
                  shard_size=16, latent_repeats=[2, 2, 4])  # fmt: skip
    cfg = build_config(dict(TINY, max_steps=5, val_every=0, data_on_device="no"))
    res = train(tmp_path / "w3", tmp_path / "run", cfg, device="cpu")
    assert res.step == 5 and res.best_score is None and not (tmp_path / "run" / "best").exists()
    prior = load_prior(tmp_path / "run" / "latest", device="cpu")
    assert prior.config.n_latents == 3 and tuple(prior.config.latent_repeats) == (2, 2, 4)
    assert prior.sample(torch.randn(2, 32), generator=0).shape == (2, 8, 32)
