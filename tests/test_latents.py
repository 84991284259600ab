"""Latent/direction file formats and edit maths (c2l_cli.latents), on plain tensors and the real
InterFaceGAN direction files in ../shared/fixtures/directions (no 512-dim generator needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from c2l_cli.errors import C2LError, FormatError, ModelMismatchError, UsageError
from c2l_cli.latents import (
    Direction,
    apply_edit,
    combine_offsets,
    direction_from_latents,
    load_direction,
    load_latents,
    orthogonalize,
    parse_direction_spec,
    parse_layers,
    parse_strengths,
    save_direction,
    save_latents,
)

NUM_WS, W_DIM = 8, 32


# ---------------------------------------------------------------- parsing


def test_parse_strengths_list_and_range():
    assert parse_strengths("-3,-1.5,0,1.5,3") == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert parse_strengths("-3:3:5") == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert parse_strengths("0:2:3") == [0.0, 1.0, 2.0]
    assert parse_strengths("2") == [2.0]
    assert parse_strengths("1:5:1") == [1.0]
    values = parse_strengths("-1:1:7")
    assert values[0] == -1.0 and values[-1] == 1.0 and values[3] == 0.0 and len(values) == 7


@pytest.mark.parametrize("bad", ["", "a,b", "1,,x", "-3:3", "-3:3:0", "-3:3:x", "1:2:3:4", "nan", "inf,1", "0:1:100000"])
def test_parse_strengths_bad(bad):
    with pytest.raises(UsageError):
        parse_strengths(bad)


def test_parse_layers():
    assert parse_layers("all").indices(8) == list(range(8))
    assert parse_layers("0-7").indices(18) == list(range(8))
    assert parse_layers("4").indices(8) == [4]
    assert parse_layers("6-").indices(8) == [6, 7]
    assert parse_layers("0-1, 5,7").indices(8) == [0, 1, 5, 7]
    assert parse_layers("2-3").mask(8).tolist() == [False, False, True, True, False, False, False, False]


@pytest.mark.parametrize("bad", ["", "x", "7-3", "-3", "1-2-3", "1.5", "0-a"])
def test_parse_layers_bad_syntax(bad):
    with pytest.raises(UsageError):
        parse_layers(bad)


def test_layers_out_of_range_is_usage_error():
    spec = parse_layers("0-9")
    with pytest.raises(UsageError, match="out of range.*8 layers"):
        spec.indices(8)
    with pytest.raises(UsageError, match="out of range"):
        parse_layers("8-").indices(8)


def test_parse_direction_spec():
    s = parse_direction_spec("age")
    assert (s.source, s.strength, s.layers) == ("age", 1.0, None)
    s = parse_direction_spec("age:-1.5@0-7")
    assert (s.source, s.strength, s.layers.indices(18)) == ("age", -1.5, list(range(8)))
    s = parse_direction_spec("smile@4-5")
    assert (s.source, s.strength, s.layers.indices(18)) == ("smile", 1.0, [4, 5])
    s = parse_direction_spec("dirs/a:b/d.safetensors:3")
    assert (s.source, s.strength) == ("dirs/a:b/d.safetensors", 3.0)
    s = parse_direction_spec("https://host/x/d.pt:2e-1@8-")
    assert (s.source, s.strength, s.layers.indices(10)) == ("https://host/x/d.pt", 0.2, [8, 9])
    s = parse_direction_spec("C:\\dirs\\b.npy")
    assert (s.source, s.strength) == ("C:\\dirs\\b.npy", 1.0)


@pytest.mark.parametrize("bad", ["", "age:abc", "age@x", "age@7-3", "age:inf", "smile:1@0-2-4"])
def test_parse_direction_spec_bad(bad):
    with pytest.raises(UsageError):
        parse_direction_spec(bad)


# ---------------------------------------------------------------- real InterFaceGAN files


@pytest.mark.parametrize("name", ["age", "smile"])
def test_real_w_directions_load(fixtures_dir, name):
    d = load_direction(fixtures_dir / "directions" / f"{name}.pt")  # saved from CUDA: map_location="cpu"
    assert d.vector.device.type == "cpu" and d.vector.dtype == torch.float32
    assert d.space == "w" and tuple(d.vector.shape) == (512,)
    assert d.w_dim == 512 and d.num_ws is None
    assert abs(float(d.vector.norm()) - 1.0) < 1e-5
    d.check(512, 18)  # fits FFHQ
    off = d.offset(18)
    assert off.shape == (18, 512) and torch.equal(off[0], d.vector) and torch.equal(off[17], d.vector)


def test_real_wplus_direction_loads(fixtures_dir):
    d = load_direction(fixtures_dir / "directions" / "pose.pt")
    assert d.vector.device.type == "cpu"
    assert d.space == "w+" and tuple(d.vector.shape) == (18, 512) and d.num_ws == 18
    assert torch.allclose(d.vector.norm(dim=1), torch.ones(18), atol=1e-5)  # unit norm per layer
    off = d.offset(18, parse_layers("0-3"))
    assert torch.equal(off[:4], d.vector[:4]) and not off[4:].any()


def test_real_directions_do_not_fit_tiny_generator(fixtures_dir):
    age = load_direction(fixtures_dir / "directions" / "age.pt")
    with pytest.raises(ModelMismatchError, match="w_dim 512.*w_dim is 32"):
        age.check(W_DIM, NUM_WS)
    pose = load_direction(fixtures_dir / "directions" / "pose.pt")
    with pytest.raises(ModelMismatchError):
        pose.check(512, 16)  # right width, wrong number of layers (e.g. a 256px model)


def test_builtin_names_resolve_through_registry(fixtures_dir, monkeypatch):
    from c2l_cli import cache

    seen = []

    def fake_resolve(source, kind=None):
        seen.append((source, kind))
        return fixtures_dir / "directions" / f"{source.split('-', 1)[1]}.pt"

    monkeypatch.setattr(cache, "resolve", fake_resolve)
    d = load_direction("smile")
    assert seen == [("direction-smile", "direction")]
    assert d.name == "smile" and d.vector.shape == (512,)
    assert load_direction("direction-pose").space == "w+"


def test_unknown_direction_name():
    with pytest.raises(UsageError, match="unknown direction 'glasses'.*age, pose, smile"):
        load_direction("glasses")
    with pytest.raises(UsageError, match="does not exist"):
        load_direction("no/such/file.pt")


# ---------------------------------------------------------------- direction files


def test_save_and_load_c2l_direction(tmp_path):
    vec = torch.nn.functional.normalize(torch.randn(W_DIM), dim=0)
    path = save_direction(tmp_path / "d.safetensors", vec, {"prompts": {"positive": "a", "negative": "b"}, "seed": 3})
    d = load_direction(path)
    assert torch.equal(d.vector, vec) and d.space == "w" and d.name == "d"
    assert d.metadata["prompts"]["positive"] == "a" and d.metadata["seed"] == 3 and d.metadata["space"] == "w"
    # the header says what it is; nothing in it is executable
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "c2l" and meta["kind"] == "direction" and json.loads(meta["metadata"])["seed"] == 3
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def test_wplus_direction_file_with_layers(tmp_path):
    vec = torch.zeros(NUM_WS, W_DIM)
    vec[2:4] = torch.nn.functional.normalize(torch.randn(2, W_DIM), dim=1)
    save_direction(tmp_path / "d.safetensors", vec[None], {"layers": [2, 3]})  # [1, num_ws, w_dim] accepted
    d = load_direction(tmp_path / "d.safetensors")
    assert d.space == "w+" and d.vector.shape == (NUM_WS, W_DIM) and d.layers == [2, 3]
    assert torch.equal(d.offset(NUM_WS), vec)


def test_interfacegan_boundary_npy(tmp_path):
    b = np.random.RandomState(0).randn(1, W_DIM).astype(np.float32)
    b /= np.linalg.norm(b)
    np.save(tmp_path / "boundary_smile.npy", b)
    d = load_direction(tmp_path / "boundary_smile.npy")
    assert d.space == "w" and np.allclose(d.vector.numpy(), b[0])
    np.savez(tmp_path / "b.npz", boundary=b)
    assert torch.equal(load_direction(tmp_path / "b.npz").vector, d.vector)


def test_pt_dict_and_double_precision(tmp_path):
    vec = torch.randn(1, W_DIM, dtype=torch.float64)
    torch.save({"direction": vec}, tmp_path / "d.pt")
    d = load_direction(tmp_path / "d.pt")
    assert d.vector.dtype == torch.float32 and d.vector.shape == (W_DIM,)


def test_bad_direction_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FormatError):
        load_direction(tmp_path / "junk.pt")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(FormatError, match="shape"):
        load_direction(tmp_path / "cube.npy")
    np.save(tmp_path / "ints.npy", np.zeros((W_DIM,), np.int64))
    with pytest.raises(FormatError, match="floating"):
        load_direction(tmp_path / "ints.npy")
    np.save(tmp_path / "nan.npy", np.full((W_DIM,), np.nan, np.float32))
    with pytest.raises(FormatError, match="NaN"):
        load_direction(tmp_path / "nan.npy")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(FormatError, match="unknown file type"):
        load_direction(tmp_path / "d.txt")


def test_pickled_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(FormatError, match="weights_only"):
        load_direction(tmp_path / "evil.pt")


# ---------------------------------------------------------------- latent files


def _ws(n=2, seed=0):
    return torch.randn(n, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(seed))


def test_latents_npz_roundtrip(tmp_path):
    ws = _ws(3)
    save_latents(tmp_path / "w.npz", ws, seeds=np.array([1, 2, 3]))
    out = load_latents(tmp_path / "w.npz", num_ws=NUM_WS, w_dim=W_DIM)
    assert torch.equal(out, ws)
    assert list(np.load(tmp_path / "w.npz")["seeds"]) == [1, 2, 3]


def test_latents_nvidia_projector_npz(tmp_path):
    ws = _ws(1)
    np.savez(tmp_path / "projected_w.npz", w=ws.numpy())  # [1, num_ws, w_dim], as NVIDIA's projector.py
    assert torch.equal(load_latents(tmp_path / "projected_w.npz", num_ws=NUM_WS, w_dim=W_DIM), ws)


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
@pytest.mark.parametrize("shape", [(NUM_WS, W_DIM), (1, NUM_WS, W_DIM), (W_DIM,), (1, W_DIM)])
def test_latents_array_shapes(tmp_path, suffix, shape):
    arr = torch.randn(*shape)
    path = tmp_path / f"lat{suffix}"
    if suffix == ".npy":
        np.save(path, arr.numpy())
    else:
        torch.save(arr, path)
    out = load_latents(path, num_ws=NUM_WS, w_dim=W_DIM)
    assert out.shape == (1, NUM_WS, W_DIM) and out.dtype == torch.float32
    flat = arr.reshape(-1, W_DIM)
    if flat.shape[0] == 1:  # a W vector is repeated to every layer
        assert torch.equal(out[0], flat.expand(NUM_WS, W_DIM))
    else:
        assert torch.equal(out[0], flat)


def test_latents_mismatch(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((18, 512), np.float32))
    with pytest.raises(ModelMismatchError, match="w_dim 512.*w_dim is 32"):
        load_latents(tmp_path / "big.npy", num_ws=NUM_WS, w_dim=W_DIM)
    np.save(tmp_path / "layers.npy", np.zeros((6, W_DIM), np.float32))
    with pytest.raises(ModelMismatchError, match="6 ws but the generator has 8"):
        load_latents(tmp_path / "layers.npy", num_ws=NUM_WS, w_dim=W_DIM)
    with pytest.raises(UsageError, match="does not exist"):
        load_latents(tmp_path / "missing.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(FormatError, match="no latent array"):
        load_latents(tmp_path / "two.npz")


# ---------------------------------------------------------------- edit maths


def test_apply_edit_moves_exactly_s_d_on_chosen_layers_only():
    ws = _ws(2)
    d = Direction("t", torch.nn.functional.normalize(torch.randn(W_DIM), dim=0))
    layers = parse_layers("2-4")
    off = d.offset(NUM_WS, layers)
    strengths = [-3.0, -1.5, 0.0, 1.5, 3.0]
    out = apply_edit(ws, off, strengths)
    assert out.shape == (2, 5, NUM_WS, W_DIM)
    chosen = [2, 3, 4]
    others = [i for i in range(NUM_WS) if i not in chosen]
    for k, s in enumerate(strengths):
        delta = out[:, k] - ws
        assert torch.equal(out[:, k][:, others], ws[:, others])  # bit-for-bit unchanged elsewhere
        assert torch.allclose(delta[:, chosen], (s * d.vector).expand(2, 3, W_DIM), atol=1e-6)
    assert torch.equal(out[:, 2], ws)  # strength 0 is the input exactly


def test_combined_and_orthogonalized_directions():
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(W_DIM, generator=g), dim=0)
    b = torch.nn.functional.normalize(a + 0.5 * torch.randn(W_DIM, generator=g), dim=0)  # correlated with a
    offs = [Direction("a", a).offset(NUM_WS), Direction("b", b).offset(NUM_WS, parse_layers("0-3"))]
    ortho = orthogonalize(offs, ["a", "b"])
    # a' ⟂ b on layers 0-3 (where b acts), unchanged elsewhere; b' ⟂ a on its layers; norms kept
    assert torch.allclose((ortho[0][:4] * offs[1][:4]).sum(1), torch.zeros(4), atol=1e-6)
    assert torch.equal(ortho[0][4:], offs[0][4:])
    assert torch.allclose((ortho[1][:4] * offs[0][:4]).sum(1), torch.zeros(4), atol=1e-6)
    assert not ortho[1][4:].any()
    assert torch.allclose(ortho[0].norm(dim=1), torch.ones(NUM_WS), atol=1e-6)
    # editing along a' leaves the score w·b unchanged (InterFaceGAN conditional edit)
    ws = _ws(1)
    edited = apply_edit(ws, ortho[0], [2.0])[:, 0]
    assert torch.allclose((edited[0, :4] * b).sum(1), (ws[0, :4] * b).sum(1), atol=1e-5)
    total = combine_offsets(offs, [2.0, -1.0])
    assert torch.allclose(total, 2 * offs[0] - offs[1])
    with pytest.raises(UsageError, match="span"):
        orthogonalize([offs[0], 3 * offs[0]], ["a", "a3"])


def test_apply_edit_shape_check():
    with pytest.raises(ModelMismatchError):
        apply_edit(_ws(1), torch.zeros(NUM_WS, 16), [1.0])


def test_direction_from_latents_w_space():
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(16, 1, W_DIM, generator=g).expand(16, NUM_WS, W_DIM) + 2.0  # W prior: layers repeated
    neg = torch.randn(16, 1, W_DIM, generator=g).expand(16, NUM_WS, W_DIM)
    vec, info = direction_from_latents(pos, neg)
    assert info["space"] == "w" and vec.shape == (W_DIM,)
    assert abs(float(vec.norm()) - 1.0) < 1e-6
    diff = pos.mean(0)[0] - neg.mean(0)[0]
    assert torch.allclose(neg.mean(0)[0] + info["distance"] * vec, pos.mean(0)[0], atol=1e-5)
    assert float(torch.nn.functional.cosine_similarity(vec, diff, dim=0)) > 0.99999


def test_direction_from_latents_wplus_and_layers():
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(8, NUM_WS, W_DIM, generator=g), torch.randn(8, NUM_WS, W_DIM, generator=g)
    vec, info = direction_from_latents(pos, neg)
    assert info["space"] == "w+" and vec.shape == (NUM_WS, W_DIM)
    assert torch.allclose(vec.norm(dim=1), torch.ones(NUM_WS), atol=1e-6)
    vec, info = direction_from_latents(pos, neg, parse_layers("1-2"))
    assert info["layers"] == [1, 2]
    assert torch.allclose(vec[1:3].norm(dim=1), torch.ones(2), atol=1e-6) and not vec[[0, 3, 4, 5, 6, 7]].any()
    with pytest.raises(C2LError, match="same mean"):
        direction_from_latents(pos, pos)


def test_any_suffix_is_sniffed(tmp_path):
    vec = torch.nn.functional.normalize(torch.randn(W_DIM), dim=0)
    save_direction(tmp_path / "smile.dir", vec, {"seed": 1})  # README: c2l direction ... -o smile.dir
    d = load_direction(tmp_path / "smile.dir")
    assert torch.equal(d.vector, vec) and d.metadata["seed"] == 1
    torch.save(vec[None], tmp_path / "x.bin")
    assert torch.equal(load_direction(tmp_path / "x.bin").vector, vec)
    with open(tmp_path / "y.bin", "wb") as fh:
        np.save(fh, vec.numpy())
    assert torch.equal(load_direction(tmp_path / "y.bin").vector, vec)
    ws = _ws(2)
    save_latents(tmp_path / "lat.data", ws)
    assert torch.equal(load_latents(tmp_path / "lat.data", num_ws=NUM_WS, w_dim=W_DIM), ws)
