"""torch.distributed helpers, and gen-data / train under `torchrun` (2 processes, gloo on the CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from c2l_cli import distributed as D
from c2l_cli.errors import C2LError, UsageError


def test_single_process_without_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_from_env("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main, info.backend) == (0, 1, False, True, None)
    assert D.broadcast_object(info, {"a": 1}) == {"a": 1}
    assert D.all_gather_object(info, 3) == [3]
    D.barrier(info)
    D.agree(info, None)
    with pytest.raises(UsageError):
        D.agree(info, UsageError("bad"))
    D.cleanup(info)


def test_bad_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(UsageError, match="RANK=5"):
        D.env_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UsageError):
        D.env_world()


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the same float summation order in every process
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _c2l(args: list[str], *, nproc: int = 0, timeout: int = 240) -> subprocess.CompletedProcess:
    if nproc:
        cmd = _torchrun() + ["--standalone", f"--nproc_per_node={nproc}", "-m", "c2l_cli", *args]
    else:
        cmd = [sys.executable, "-m", "c2l_cli", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _gen_args(fixtures_dir, out) -> list[str]:
    return [
        "gen-data", str(out), "--generator", str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
        "--clip", f"local-dir:{fixtures_dir / 'clip-tiny32'}", "--device", "cpu",
        "-n", "50", "--shard-size", "12", "-b", "5", "--json",
    ]  # fmt: skip


@pytest.mark.slow
def test_torchrun_gen_data_equals_one_process_and_trains_with_ddp(tmp_path, fixtures_dir):
    one = _c2l(_gen_args(fixtures_dir, tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _c2l(_gen_args(fixtures_dir, tmp_path / "two"), nproc=2)
    assert two.returncode == 0, two.stderr
    doc = json.loads(two.stdout)
    assert doc["world_size"] == 2 and doc["rank0_made_shards"] == 3  # shards 0, 2, 4 of 5
    m1 = json.loads((tmp_path / "one" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert m1["shards"] == m2["shards"]  # identical per-shard sha256
    for f in sorted((tmp_path / "one").glob("shard-*.npy")):
        assert f.read_bytes() == (tmp_path / "two" / f.name).read_bytes(), f.name

    # DDP: 2 processes, the effective batch stays 16 (8 per rank); the prior it writes loads
    sets = ["depth=1", "heads=2", "dim_head=16", "batch_size=16", "max_steps=12", "log_every=4", "ckpt_every=6",
            "val_every=6", "val_steps=2", "val_samples_per_text=1", "val_image_samples=4"]  # fmt: skip
    args = ["train", str(tmp_path / "two"), "--out", str(tmp_path / "run"), "--device", "cpu", "--json"]
    for s in sets:
        args += ["--set", s]
    r = _c2l(args, nproc=2)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["world_size"] == 2 and doc["step"] == 12 and doc["best"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["world_size"] == 2 and saved["train"]["batch_size"] == 16
    from c2l_cli.prior import load_prior

    assert load_prior(tmp_path / "run" / "best", device="cpu").num_ws == 8

    # a usage error on every rank is one clean line, not a hang
    r = _c2l(["train", str(tmp_path / "two"), "--out", str(tmp_path / "run"), "--device", "cpu"], nproc=2, timeout=120)
    assert r.returncode != 0 and "error:" in r.stderr and "already exists" in r.stderr
    assert "c2l_cli" not in r.stderr.split("error:")[0]  # no Python traceback of ours (torchrun prints its own report)


def test_agree_reraises_a_known_error():
    info = D.DistInfo(rank=0, world_size=1, local_rank=0, device=__import__("torch").device("cpu"))
    with pytest.raises(C2LError, match="boom"):
        D.agree(info, C2LError("boom"))
