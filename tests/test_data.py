"""gen-data shards: contents equal a direct computation, per-sample seeding, resume, corruption, reader errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from c2l_cli.data import (
    GenDataConfig,
    write_dataset,
    draw_z,
    generate_dataset,
    mix_seed,
    open_dataset,
    sample_seed,
    w3_repeats,
)
from c2l_cli.errors import FormatError, ModelMismatchError, UsageError


@pytest.fixture(scope="module")
def engines(fixtures_dir):
    from c2l_cli.clip import load_clip
    from c2l_cli.generator import load_generator

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-stable float sums within this module, and fastest for tiny models
    G = load_generator(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl", device="cpu")
    clip = load_clip(f"local-dir:{fixtures_dir / 'clip-tiny32'}", device="cpu")
    yield G, clip
    torch.set_num_threads(n)


def _cfg(fixtures_dir, **kw):
    base = dict(
        generator=str(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"),
        clip=f"local-dir:{fixtures_dir / 'clip-tiny32'}",
        n_samples=10,
        shard_size=4,
        batch_size=3,
        seed=7,
    )
    base.update(kw)
    return GenDataConfig(**base)


def _gen(tmp, fixtures_dir, engines, name="d", **kw):
    G, clip = engines
    return generate_dataset(tmp / name, _cfg(fixtures_dir, **kw), device="cpu", G=G, clip=clip)


def test_seeds_are_stable_and_distinct():
    assert mix_seed(0, 1) == mix_seed(0, 1)
    assert len({sample_seed(0, i) for i in range(1000)} | {sample_seed(1, i) for i in range(1000)}) == 2000
    assert all(0 <= sample_seed(s, i) < 2**63 for s in (0, 2**40) for i in (0, 10**9))
    # sample i's z does not depend on the batch it is drawn in
    full = draw_z(3, 0, 10, 8)
    assert torch.equal(full[4:7], draw_z(3, 4, 3, 8))
    g = torch.Generator().manual_seed(sample_seed(3, 5))
    assert torch.equal(full[5], torch.randn(1, 8, generator=g)[0])
    assert draw_z(3, 2, 2, 8, n_latents=3).shape == (2, 3, 8)


def test_w3_layer_groups():
    assert w3_repeats(18) == [4, 4, 10]  # the published FFHQ-1024 config
    assert w3_repeats(8) == [2, 2, 4]  # the w3 fixture prior's latent_repeats
    assert sum(w3_repeats(16)) == 16 and sum(w3_repeats(14)) == 14
    with pytest.raises(UsageError):
        w3_repeats(2)


def test_shards_match_direct_computation(tmp_path, fixtures_dir, engines):
    G, clip = engines
    res = _gen(tmp_path, fixtures_dir, engines)
    man = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert man["complete"] and man["num_shards"] == 3 and [s["count"] for s in man["shards"]] == [4, 4, 2]
    assert man["latent_shape"] == [32] and man["embed_dim"] == 32 and man["latent_repeats"] == [8]
    assert sorted(res.made_shards) == [0, 1, 2]
    ds = open_dataset(tmp_path / "d")
    w, e = ds.read(0, 10)
    assert w.shape == (10, 32) and e.shape == (10, 32) and w.dtype == np.float32
    for i in range(10):
        g = torch.Generator().manual_seed(sample_seed(7, i))
        z = torch.randn(1, 32, generator=g)
        with torch.no_grad():
            ws = G.mapping(z, None, truncation_psi=1.0)
            img = G.synthesis(ws, noise_mode="const")
            emb = clip.embed_image(img)
        np.testing.assert_allclose(w[i], ws[0, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(e[i], emb[0].numpy(), atol=1e-4)
    # the memory-mapped arrays are plain .npy files
    assert np.load(tmp_path / "d" / "shard-00001.w.npy", allow_pickle=False).shape == (4, 32)


def test_w3_shards_match_direct_computation(tmp_path, fixtures_dir, engines):
    G, clip = engines
    _gen(tmp_path, fixtures_dir, engines, space="w3", n_samples=3, shard_size=3)
    ds = open_dataset(tmp_path / "d")
    assert ds.latent_shape == (3, 32) and ds.latent_repeats == [2, 2, 4]
    w, e = ds.read(0, 3)
    for i in range(3):
        z = torch.randn(3, 32, generator=torch.Generator().manual_seed(sample_seed(7, i)))
        with torch.no_grad():
            lat = G.mapping(z, None)[:, 0]  # (3, w_dim): coarse, mid, fine
            ws = lat.repeat_interleave(torch.tensor([2, 2, 4]), dim=0)[None]  # (1, 8, w_dim)
            emb = clip.embed_image(G.synthesis(ws, noise_mode="const"))
        np.testing.assert_allclose(w[i], lat.numpy(), atol=1e-5)
        np.testing.assert_allclose(e[i], emb[0].numpy(), atol=1e-4)


def test_interrupt_and_resume_give_identical_shards(tmp_path, fixtures_dir, engines):
    G, clip = engines
    _gen(tmp_path, fixtures_dir, engines, name="full")

    cfg = _cfg(fixtures_dir)

    def stop_after_first(index, count, made):
        if made and index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "part", cfg, device="cpu", G=G, clip=clip, on_shard=stop_after_first)
    with pytest.raises(FormatError, match="incomplete"):
        open_dataset(tmp_path / "part")
    # a shard whose arrays were written but whose entry was not (killed mid-shard) is redone
    (tmp_path / "part" / "shard-00002.w.npy").write_bytes(b"partial garbage")
    res = generate_dataset(tmp_path / "part", cfg, device="cpu", G=G, clip=clip)
    assert sorted(res.kept_shards) == [0, 1] and res.made_shards == [2]
    for name in sorted(p.name for p in (tmp_path / "full").glob("shard-*")):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "part" / name).read_bytes(), name

    # a finished shard that was corrupted later is detected, refused by the reader, and redone on resume
    f = tmp_path / "part" / "shard-00001.embed.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="shard 1.*sha256"):
        open_dataset(tmp_path / "part")
    res = generate_dataset(tmp_path / "part", cfg, device="cpu", G=G, clip=clip)
    assert res.redone_shards == [1] and sorted(res.kept_shards) == [0, 2]
    assert f.read_bytes() == (tmp_path / "full" / "shard-00001.embed.npy").read_bytes()
    open_dataset(tmp_path / "part")


def test_resume_with_other_settings_is_refused(tmp_path, fixtures_dir, engines):
    G, clip = engines
    _gen(tmp_path, fixtures_dir, engines, n_samples=4)
    with pytest.raises(UsageError, match="seed"):
        generate_dataset(tmp_path / "d", _cfg(fixtures_dir, n_samples=4, seed=8), device="cpu", G=G, clip=clip)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        generate_dataset(tmp_path / "other", _cfg(fixtures_dir, n_samples=4), device="cpu", G=G, clip=clip)


def test_reader_errors(tmp_path, fixtures_dir, engines):
    with pytest.raises(UsageError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="empty"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.npy").write_bytes(b"x")
    with pytest.raises(FormatError, match="manifest.json is missing"):
        open_dataset(tmp_path / "junk")
    # mixed dimensions: one shard holds W of another size (with a matching checksum, so only the shape is wrong)
    _gen(tmp_path, fixtures_dir, engines, n_samples=8)
    root = tmp_path / "d"
    import hashlib

    np.save(root / "shard-00001.w.npy", np.zeros((4, 16), np.float32))
    man = json.loads((root / "manifest.json").read_text())
    man["shards"][1]["w_sha256"] = hashlib.sha256((root / "shard-00001.w.npy").read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelMismatchError, match="mixed"):
        open_dataset(root)


def test_reader_gather_and_stats(tmp_path, fixtures_dir, engines):
    _gen(tmp_path, fixtures_dir, engines)
    ds = open_dataset(tmp_path / "d")
    w, e = ds.read(0, ds.n_samples)
    idx = np.array([9, 0, 5, 4, 3, 8])
    gw, ge = ds.gather(idx)
    np.testing.assert_array_equal(gw, w[idx])
    np.testing.assert_array_equal(ge, e[idx])
    mean, std = ds.latent_stats()
    np.testing.assert_allclose(mean, w.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, w.astype(np.float64).std(0, ddof=1), rtol=1e-5, atol=1e-6)
    assert ds.nbytes == w.nbytes + e.nbytes


def test_write_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((25, 3, 8)).astype(np.float32)
    e = rng.standard_normal((25, 8)).astype(np.float32)
    man = write_dataset(tmp_path / "ext", w, e, shard_size=10, latent_repeats=[2, 2, 4])
    assert man["num_shards"] == 3 and man["latent_shape"] == [3, 8]
    ds = open_dataset(tmp_path / "ext")
    rw, re_ = ds.read(0, 25)
    np.testing.assert_array_equal(rw, w)
    np.testing.assert_array_equal(re_, e)
    assert ds.latent_repeats == [2, 2, 4]
    with pytest.raises(UsageError, match="already holds"):
        write_dataset(tmp_path / "ext", w, e)
    with pytest.raises(UsageError, match="same n"):
        write_dataset(tmp_path / "bad", w, e[:3])
