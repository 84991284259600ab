"""Security and robustness of the NVIDIA-pickle reader: nothing from a file ever runs."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest
import torch

from c2l_cli.errors import C2LError, FormatError
from c2l_cli.formats import nvidia_pickle as nv
from c2l_cli.generator import load_generator

from _stylegan_pickles import Evil, dumps, rewrite_fixture, to_pickleable


@pytest.fixture()
def sg2_pkl(fixtures_dir):
    return fixtures_dir / "stylegan" / "stylegan2-tiny.pkl"


@pytest.fixture()
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code from the pickle ran"


def _raw_global_call(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle ``module.name(arg)`` naming exactly *module*.*name*."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


# ---------------------------------------------------------------------------------------------
# Refused globals


@pytest.mark.parametrize(
    "module,name,payload",
    [
        ("os", "system", "touch {m}"),
        ("posix", "system", "touch {m}"),
        ("builtins", "eval", "open({m!r}, 'w').write('x')"),
        ("builtins", "exec", "open({m!r}, 'w').write('x')"),
        ("subprocess", "Popen", "touch {m}"),
        ("torch", "load", "{m}"),
        ("torch.serialization", "load", "{m}"),
        ("pickle", "loads", "x"),
        ("numpy", "load", "{m}"),
        ("torch_utils.persistence", "persistent_class", "x"),
        ("copyreg", "_reconstructor", "x"),
    ],
)
def test_refuses_unlisted_global_and_names_it(tmp_path, marker, module, name, payload):
    data = _raw_global_call(module, name, payload.format(m=str(marker)))
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=rf"refused to load: the pickle references {module}\.{name}\b"):
        nv.load_pickle(path)
    with pytest.raises(FormatError, match="refused to load"):
        load_generator(path)


@pytest.mark.parametrize(
    "func,args",
    [
        (os.system, "touch {m}"),
        (builtins.eval, "open({m!r}, 'w').write('x')"),
        (subprocess.Popen, ["touch", "{m}"]),
        (torch.load, "{m}"),
    ],
    ids=["os.system", "eval", "Popen", "torch.load"],
)
def test_malicious_object_hidden_in_real_pickle_is_refused(tmp_path, sg2_pkl, marker, func, args):
    """The real fixture with one evil object beside G_ema: the whole file is refused, nothing runs."""
    if isinstance(args, list):
        args = [a.format(m=str(marker)) for a in args]
    else:
        args = args.format(m=str(marker))
    if func is torch.load:
        torch.save({"x": 1}, marker.with_suffix(".pt"))
        args = str(marker.with_suffix(".pt"))
    evil_path = tmp_path / "evil.pkl"
    rewrite_fixture(sg2_pkl, evil_path, extra={"augment_pipe": Evil(func, args)})
    with pytest.raises(FormatError, match="refused to load: the pickle references") as info:
        load_generator(evil_path)
    assert func.__name__ in str(info.value)


def test_malicious_object_inside_network_state_is_refused(tmp_path, sg2_pkl, marker):
    def edit(path, meta):
        if path == "G_ema.synthesis":
            meta["state"]["extra_attribute"] = Evil(os.system, f"touch {marker}")
        return meta

    evil_path = tmp_path / "evil.pkl"
    rewrite_fixture(sg2_pkl, evil_path, edit=edit)
    with pytest.raises(FormatError, match=r"refused to load: the pickle references (os|posix)\.system"):
        load_generator(evil_path)


def test_embedded_storage_cannot_smuggle_code(tmp_path, marker):
    """``torch.storage._load_from_bytes`` runs torch.load with weights_only=True: no pickled code inside."""
    inner = io.BytesIO()
    torch.save(Evil(os.system, f"touch {marker}"), inner)
    outer = (
        b"\x80\x04ctorch.storage\n_load_from_bytes\n"
        + pickle.dumps(inner.getvalue(), protocol=4)[2:-1]  # the bytes object (no PROTO, no STOP)
        + b"\x85R."
    )
    with pytest.raises(FormatError, match="refused to load an embedded torch storage") as info:
        nv.load_pickle(outer)
    assert "system" in str(info.value)


def test_torch_save_archive_with_code_is_refused(tmp_path, marker):
    path = tmp_path / "evil.pt"
    torch.save({"G_ema": Evil(os.system, f"touch {marker}")}, path)
    with pytest.raises(FormatError, match=r"refused to load: the pickle references (os|posix)\.system"):
        nv.load_pickle(path)


def test_torch_save_archive_of_tensors_loads(tmp_path):
    path = tmp_path / "ok.pt"
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save({"a": t, "b": t[1:], "c": torch.ones(2, dtype=torch.float16)}, path)
    out = nv.load_pickle(path)
    assert torch.equal(out["a"], t) and torch.equal(out["b"], t[1:])
    assert out["c"].dtype == torch.float16


# ---------------------------------------------------------------------------------------------
# module_src is never executed


EVIL_SRC = '''"""Generator architecture from the paper "Analyzing and Improving the Image Quality of StyleGAN"."""
open({marker!r}, "w").write("module_src ran")
import torch
class Generator(torch.nn.Module):
    pass
'''


def test_module_src_with_code_loads_but_never_runs(tmp_path, sg2_pkl, fixtures_dir, marker):
    src = EVIL_SRC.format(marker=str(marker))
    # The payload is live: executing it (what NVIDIA's loader does) would write the file.
    probe = tmp_path / "probe"
    exec(compile(EVIL_SRC.format(marker=str(probe)), "<module_src>", "exec"), {})
    assert probe.read_text() == "module_src ran"

    path = tmp_path / "with-src.pkl"
    rewrite_fixture(sg2_pkl, path, module_src=src)
    net = nv.read_network_pickle(path)
    assert net.record.module == "networks_stylegan2"  # found by substring search only
    assert net.record.module_src_len == len(src.encode())
    G = load_generator(path, device="cpu")
    expected = np.load(fixtures_dir / "stylegan" / "stylegan2-tiny-expected.npz")
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(expected["ws_psi1"]))
    assert np.abs(img.numpy() - expected["img_psi1"]).max() < 1e-4
    # `marker` fixture asserts at teardown that the file was never written.


def test_record_keeps_only_hash_of_source(sg2_pkl):
    top = nv.load_pickle(sg2_pkl)
    rec = top["G_ema"]
    assert isinstance(rec, nv.PersistentRecord)
    assert rec.class_name == "Generator"
    assert len(rec.module_src_sha256) == 64
    assert not hasattr(rec, "module_src")
    assert isinstance(rec.init_kwargs, dict) and rec.init_kwargs["z_dim"] == 32


# ---------------------------------------------------------------------------------------------
# Truncated / corrupt files


@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.5, 0.9, 0.9999])
def test_truncated_pickle_is_a_format_error(tmp_path, sg2_pkl, fraction):
    data = sg2_pkl.read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(FormatError, match="corrupt or truncated|truncated|not a valid"):
        load_generator(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world, not a pickle", b"\x80\x04\x95garbage\xff\xfe", b"PK\x03\x04broken zip", os.urandom(256)],
    ids=["empty", "text", "garbage-pickle", "broken-zip", "random"],
)
def test_garbage_files_are_format_errors(tmp_path, content):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(C2LError):
        load_generator(path)
    if content[:1] == b"\x80" or content[:2] == b"PK" or not content:
        with pytest.raises(FormatError):
            nv.load_pickle(path)


def test_corrupted_opcode_stream_is_a_format_error(tmp_path, sg2_pkl):
    import pickletools

    data = bytearray(sg2_pkl.read_bytes())
    # Smash one opcode in the middle of the stream (bytes inside tensor payloads carry no checksum).
    positions = [pos for _, _, pos in pickletools.genops(bytes(data))]
    data[positions[len(positions) // 2]] = 0xFF
    path = tmp_path / "smashed.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        load_generator(path)


def test_format_errors_exit_with_code_1():
    assert FormatError("x").exit_code == 1
    assert issubclass(nv.RefusedGlobalError, FormatError)


# ---------------------------------------------------------------------------------------------
# Allowed reconstructors


@pytest.mark.parametrize("np_module", ["numpy._core", "numpy.core"])
def test_numpy_scalars_and_arrays_under_both_module_names(np_module):
    obj = {"s": np.float64(2.5), "b": np.bool_(True), "a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    data = pickle.dumps(obj, protocol=3)
    for old in (b"numpy._core", b"numpy.core"):
        data = data.replace(old + b".multiarray", np_module.encode() + b".multiarray")
    out = nv.load_pickle(data)
    assert out["s"] == 2.5 and out["b"] == True  # noqa: E712
    np.testing.assert_array_equal(out["a"], obj["a"])


def test_numpy_object_arrays_are_refused():
    data = pickle.dumps(np.array([1, "x"], dtype=object), protocol=3)
    with pytest.raises(FormatError):
        nv.load_pickle(data)


def test_tensor_view_past_its_storage_is_refused():
    t = torch.arange(4, dtype=torch.float32)
    data = pickle.dumps(t, protocol=4)
    out = nv.load_pickle(data)
    assert torch.equal(out, t)
    storage = torch.storage.TypedStorage(wrap_storage=t.untyped_storage(), dtype=torch.float32, _internal=True)
    with pytest.raises(FormatError, match="past the end"):
        nv._rebuild_tensor_v2(storage, 2, (4,), (1,))


def test_state_dict_uses_nvidia_names(sg2_pkl):
    net = nv.read_network_pickle(sg2_pkl)
    sd = net.state_dict
    for key in ("mapping.fc0.weight", "mapping.w_avg", "synthesis.b4.const", "synthesis.b4.conv1.affine.weight",
                "synthesis.b8.conv0.noise_const", "synthesis.b32.torgb.bias", "synthesis.b16.resample_filter"):
        assert key in sd, key
    assert net.arch == "stylegan2" and net.class_name == "Generator"
    assert sum(v.numel() for k, v in sd.items() if "noise_const" not in k and "resample_filter" not in k
               and k != "mapping.w_avg") == 172355


def test_missing_g_ema_is_a_format_error(tmp_path):
    path = tmp_path / "nog.pkl"
    path.write_bytes(pickle.dumps({"G": None, "D": None}))
    with pytest.raises(FormatError, match="no 'G_ema'"):
        nv.read_network_pickle(path)


def test_strict_key_checking_lists_keys(sg2_pkl):
    from c2l_cli.nets.stylegan2 import Generator

    net = nv.read_network_pickle(sg2_pkl)
    G = Generator(**net.init_kwargs)
    sd = dict(net.state_dict)
    sd.pop("mapping.fc3.bias")
    sd["mapping.fc99.weight"] = torch.zeros(1)
    with pytest.raises(FormatError, match=r"missing mapping\.fc3\.bias; unexpected mapping\.fc99\.weight"):
        nv.load_state_dict_strict(G, sd, "x")
    sd = dict(net.state_dict)
    sd["mapping.fc0.weight"] = torch.zeros(3, 3)
    with pytest.raises(FormatError, match="wrong tensor shapes: mapping.fc0.weight"):
        nv.load_state_dict_strict(G, sd, "x")


def test_zip_without_data_pkl_is_a_format_error(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(FormatError, match="not a torch.save archive"):
        nv.load_pickle(path)


def test_to_pickleable_roundtrip_is_faithful(sg2_pkl):
    """The test helper writes files our reader reads back identically (guards the other tests)."""
    top = nv.load_pickle(sg2_pkl)
    again = nv.load_pickle(dumps(to_pickleable(top)))
    a = nv.record_state_dict(top["G_ema"])
    b = nv.record_state_dict(again["G_ema"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_torch_save_archive_is_a_format_error(tmp_path):
    buf = io.BytesIO()
    torch.save({"a": torch.randn(64, 64)}, buf)
    data = buf.getvalue()
    for cut in (len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            nv.load_pickle(path)
