"""StyleGAN2 network and ops: parity with NVIDIA's reference on the golden fixture, and behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2l_cli.errors import FormatError, UsageError
from c2l_cli.generator import load_generator, style_mix
from c2l_cli.nets import ops
from c2l_cli.nets.stylegan2 import Generator, modulated_conv2d

TOL = 1e-4


@pytest.fixture(scope="module")
def sg2(fixtures_dir):
    G = load_generator(fixtures_dir / "stylegan" / "stylegan2-tiny.pkl", device="cpu")
    expected = dict(np.load(fixtures_dir / "stylegan" / "stylegan2-tiny-expected.npz"))
    return G, expected


def _maxdiff(t: torch.Tensor, ref: np.ndarray) -> float:
    assert tuple(t.shape) == ref.shape
    return float(np.abs(t.detach().cpu().numpy() - ref).max())


# ---------------------------------------------------------------------------------------------
# Parity with the reference outputs (every array of stylegan2-tiny-expected.npz)


@pytest.mark.parametrize(
    "name,psi,cutoff",
    [("psi1", 1.0, None), ("psi07", 0.7, None), ("psi05_cut4", 0.5, 4)],
)
def test_mapping_and_synthesis_match_reference(sg2, name, psi, cutoff):
    G, e = sg2
    z = torch.from_numpy(e["z"])
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
        img = G.synthesis(ws, noise_mode="const")
    assert _maxdiff(ws, e[f"ws_{name}"]) <= TOL
    assert _maxdiff(img, e[f"img_{name}"]) <= TOL
    # The reference synthesis of the reference ws too (isolates synthesis from mapping).
    with torch.no_grad():
        assert _maxdiff(G.synthesis(torch.from_numpy(e[f"ws_{name}"])), e[f"img_{name}"]) <= TOL


def test_no_noise_matches_reference(sg2):
    G, e = sg2
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(e["ws_psi1"]), noise_mode="none")
    assert _maxdiff(img, e["img_psi1_nonoise"]) <= TOL


def test_style_mix_matches_reference(sg2):
    G, e = sg2
    ws = torch.from_numpy(e["ws_psi1"])
    mixed = style_mix(ws[0:1], ws[1:2], G.num_ws // 2)
    assert _maxdiff(mixed, e["ws_mix"]) == 0.0
    with torch.no_grad():
        assert _maxdiff(G.synthesis(mixed), e["img_mix"]) <= TOL


def test_full_forward_equals_mapping_then_synthesis(sg2):
    G, e = sg2
    z = torch.from_numpy(e["z"])
    with torch.no_grad():
        img = G(z, None, truncation_psi=0.7)
    assert _maxdiff(img, e["img_psi07"]) <= TOL


def test_non_fused_modconv_matches_reference(sg2):
    G, e = sg2
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(e["ws_psi1"]), fused_modconv=False)
    assert _maxdiff(img, e["img_psi1"]) <= TOL


def test_images_do_not_depend_on_batch(sg2):
    G, e = sg2
    ws = torch.from_numpy(e["ws_psi07"])
    with torch.no_grad():
        together = G.synthesis(ws)
        alone = torch.cat([G.synthesis(ws[i : i + 1]) for i in range(ws.shape[0])])
    assert float((together - alone).abs().max()) < 1e-5


def test_generator_attributes(sg2):
    G, _ = sg2
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels) == (32, 32, 8, 32, 3)
    assert G.kind == "stylegan2"
    assert tuple(G.mapping.w_avg.shape) == (32,)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert sum(p.numel() for p in G.parameters()) == 172355  # stylegan-fixtures.json "params"


# ---------------------------------------------------------------------------------------------
# Behaviour


def test_truncation_semantics(sg2):
    G, _ = sg2
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w1 = G.mapping(z)
        w0 = G.mapping(z, truncation_psi=0.0)
        wc = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    assert torch.equal(wc[:, 3:], w1[:, 3:])
    assert torch.allclose(wc[:, :3], G.mapping.w_avg + 0.5 * (w1[:, :3] - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(w1[:, 0], w1[:, -1])  # broadcast


def test_random_noise_follows_generator(sg2):
    G, e = sg2
    ws = torch.from_numpy(e["ws_psi1"])
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        b = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        c = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_inputs_are_usage_errors(sg2):
    G, _ = sg2
    with pytest.raises(UsageError, match="noise_mode"):
        G.synthesis(torch.zeros(1, G.num_ws, G.w_dim), noise_mode="loud")
    with pytest.raises(UsageError, match=r"ws must be \[N, 8, 32\]"):
        G.synthesis(torch.zeros(1, 3, G.w_dim))
    with pytest.raises(UsageError, match=r"z must be \[N, 32\]"):
        G.mapping(torch.zeros(1, 5))


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_architectures_build_and_run(architecture):
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, channel_base=128, channel_max=16, architecture=architecture)
    sd = G.state_dict()
    assert ("synthesis.b16.skip.weight" in sd) == (architecture == "resnet")
    assert ("synthesis.b8.torgb.weight" in sd) == (architecture == "skip")
    assert "synthesis.b16.torgb.weight" in sd
    assert G.num_ws == 6  # 2*3 convs + 1 torgb - 1 (b4 has one conv)
    with torch.no_grad():
        img = G(torch.randn(2, 8))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, 8))
        fused = G.synthesis(ws, fused_modconv=True)
        split = G.synthesis(ws, fused_modconv=False)
    assert float((fused - split).abs().max()) < 1e-4


def test_conditional_mapping_needs_c():
    G = Generator(z_dim=8, c_dim=4, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 2},
                  channel_base=64, channel_max=8)
    assert "mapping.embed.weight" in G.state_dict()
    with pytest.raises(UsageError, match="conditional"):
        G.mapping(torch.randn(1, 8))
    assert G.mapping(torch.randn(2, 8), torch.eye(4)[:2]).shape == (2, G.num_ws, 8)


def test_unknown_kwargs_are_format_errors():
    with pytest.raises(FormatError, match="unknown synthesis kwargs: warp_factor"):
        Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, warp_factor=9)
    with pytest.raises(FormatError, match="architecture"):
        Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, architecture="unet")


def test_ffhq_config_f_has_30_4m_parameters():
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs={"num_layers": 8}, channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256)
    n = sum(p.numel() for p in G.parameters())
    assert G.num_ws == 18
    assert 30.3e6 < n < 30.5e6


def test_set_precision_marks_top_blocks():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=64, img_channels=3, channel_base=256, channel_max=16,
                  num_fp16_res=2)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, False, False, True, True]
    G.set_precision(torch.float32)
    assert not any(b.use_fp16 for b in G.synthesis.blocks())
    G.set_precision(torch.bfloat16, channels_last=True)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, False, False, True, True]
    assert G.synthesis.b64.reduced_dtype == torch.bfloat16 and G.synthesis.b64.channels_last
    with torch.no_grad():  # on the CPU everything runs in float32 whatever the setting (as the reference)
        assert G(torch.randn(1, 8)).dtype == torch.float32


def test_reduced_precision_modconv_stays_close():
    """The half-precision pre-normalisation path (used on CUDA) computes the same map."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    w = torch.randn(6, 8, 3, 3)
    s = torch.randn(2, 8) + 1
    ref = modulated_conv2d(x, w, s, padding=1)
    low = modulated_conv2d(x.to(torch.bfloat16), w, s, padding=1, fused_modconv=False).float()
    assert float((low - ref).abs().max()) < 0.05 * float(ref.abs().max())


# ---------------------------------------------------------------------------------------------
# Ops against direct definitions


def _upfirdn_naive(x: np.ndarray, f: np.ndarray, up: int, down: int, pad: tuple[int, int, int, int],
                   flip_filter: bool = False) -> np.ndarray:
    """scipy.signal.upfirdn-style definition, written out with loops over a zero-stuffed image."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    z = np.zeros((n, c, h * up, w * up), x.dtype)
    z[:, :, ::up, ::up] = x
    big = np.zeros((n, c, h * up + max(py0, 0) + max(py1, 0), w * up + max(px0, 0) + max(px1, 0)), x.dtype)
    big[:, :, max(py0, 0) : max(py0, 0) + h * up, max(px0, 0) : max(px0, 0) + w * up] = z
    big = big[:, :, max(-py0, 0) : big.shape[2] - max(-py1, 0), max(-px0, 0) : big.shape[3] - max(-px1, 0)]
    fh, fw = f.shape
    oh, ow = big.shape[2] - fh + 1, big.shape[3] - fw + 1
    out = np.zeros((n, c, oh, ow), np.float64)
    fk = f if flip_filter else f[::-1, ::-1]  # correlation / convolution
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (big[:, :, i : i + fh, j : j + fw] * fk).sum(axis=(2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad,taps",
    [(1, 1, (1, 2, 2, 1), [1, 3, 3, 1]), (2, 1, (2, 1, 2, 1), [1, 3, 3, 1]), (1, 2, (1, 1, 1, 1), [1, 3, 3, 1]),
     (2, 2, (3, 2, 3, 2), [1, 2, 3, 4, 4, 3, 2, 1]), (4, 1, (-1, 2, 0, 3), [1, 2, 1])],
)
def test_upfirdn2d_matches_definition(up, down, pad, taps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    f = ops.setup_filter(taps)  # 2-D for < 8 taps, separable for 8
    f2d = f.numpy() if f.ndim == 2 else np.outer(f.numpy(), f.numpy())
    got = ops.upfirdn2d(torch.from_numpy(x), f, up=up, down=down, padding=list(pad)).numpy()
    want = _upfirdn_naive(x.astype(np.float64), f2d.astype(np.float64), up, down, pad)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (3, 2), (1, 2)])
@pytest.mark.parametrize("flip_filter", [False, True])
def test_upfirdn2d_asymmetric_2d_filter(up, down, flip_filter):
    """An asymmetric, non-separable filter catches any orientation or alignment slip."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    f = rng.standard_normal((3, 4)).astype(np.float32)
    pad = (2, 1, 0, 3)
    got = ops.upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=up, down=down, padding=list(pad),
                        flip_filter=flip_filter, gain=1.5).numpy()
    want = 1.5 * _upfirdn_naive(x.astype(np.float64), f.astype(np.float64), up, down, pad, flip_filter)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def test_conv2d_resample_upsampling_equals_upsample_then_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(3, 4, 3, 3)
    f = ops.setup_filter([1, 3, 3, 1])
    got = ops.conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    # Definition: upsample (zero insertion + filter, gain 4) with all the padding applied once
    # (1 for the kernel + 2/1 for the 4-tap filter), then a true convolution (flipped kernel).
    upsampled = ops.upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4)
    want = F.conv2d(upsampled, w.flip([2, 3]))
    assert got.shape == want.shape == (2, 3, 10, 10)
    assert float((got - want).abs().max()) < 1e-4


def test_bias_act_and_clamp():
    x = torch.tensor([[-2.0, 0.5, 300.0]])
    out = ops.bias_act(x, torch.tensor([0.0, 0.5, 0.0]), dim=1, act="lrelu", clamp=256)
    assert torch.allclose(out, torch.tensor([[-0.4 * 2**0.5, 2**0.5, 256.0]]))
    assert torch.equal(ops.bias_act(x), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fused", [True, False])
def test_reduced_precision_path_runs_and_agrees(sg2, monkeypatch, dtype, fused):
    """The CUDA half-precision code path (dtype plumbing, pre-normalisation, clamping), run on the CPU."""
    from c2l_cli.nets.stylegan2 import SynthesisBlock

    G, e = sg2
    ws = torch.from_numpy(e["ws_psi1"])
    monkeypatch.setattr(SynthesisBlock, "reduced_on_cpu", True)
    saved = [(b.use_fp16, b.reduced_dtype, b.channels_last) for b in G.synthesis.blocks()]
    G.set_precision(dtype, channels_last=True)
    assert any(b.use_fp16 for b in G.synthesis.blocks())
    try:
        with torch.no_grad():
            img = G.synthesis(ws, fused_modconv=fused)
    finally:
        for b, (u, d, c) in zip(G.synthesis.blocks(), saved):
            b.use_fp16, b.reduced_dtype, b.channels_last = u, d, c
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    ref = torch.from_numpy(e["img_psi1"])
    assert float((img - ref).abs().max()) < 0.1 * float(ref.abs().max())
    assert float((img - ref).abs().mean()) < 0.02 * float(ref.abs().mean()) + 1e-3
