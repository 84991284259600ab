"""StyleGAN3 (T and R) network: parity with NVIDIA's reference outputs, filter design, ops, API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2l_cli.errors import FormatError, UsageError
from c2l_cli.generator import load_generator, save_generator, style_mix
from c2l_cli.nets import ops
from c2l_cli.nets import stylegan3 as sg3

VARIANTS = ["stylegan3-t-tiny", "stylegan3-r-tiny"]
TOL = 1e-4  # fixtures README: max abs difference on every saved array


@pytest.fixture(scope="module", params=VARIANTS)
def loaded(request, tmp_path_factory):
    """(name, G, expected arrays): each fixture pickle loaded once per module through ``load_generator``."""
    from conftest import FIXTURES

    name = request.param
    with pytest.MonkeyPatch.context() as mp:  # module scope: keep the cache out of the user's home
        mp.setenv("C2L_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        G = load_generator(FIXTURES / "stylegan" / f"{name}.pkl", device="cpu")
    expected = dict(np.load(FIXTURES / "stylegan" / f"{name}-expected.npz"))
    return name, G, expected


def _close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    assert tuple(actual.shape) == expected.shape, what
    diff = float(np.abs(actual.detach().cpu().numpy() - expected).max())
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g}"


# ---------------------------------------------------------------------------------------------
# Parity with the reference on the golden fixtures


def test_every_expected_array_matches_reference(loaded):
    name, G, e = loaded
    assert isinstance(G, sg3.Generator) and not G.training
    z = torch.from_numpy(e["z"])
    with torch.no_grad():
        for tag, psi, cutoff in [("psi1", 1, None), ("psi07", 0.7, None), ("psi05_cut4", 0.5, 4)]:
            ws = G.mapping(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
            _close(ws, e[f"ws_{tag}"], f"{name} ws_{tag}")
            _close(G.synthesis(ws, noise_mode="const"), e[f"img_{tag}"], f"{name} img_{tag}")
        ws1 = torch.from_numpy(e["ws_psi1"])
        mix = style_mix(ws1[0:1], ws1[1:2], G.num_ws // 2)
        _close(mix, e["ws_mix"], f"{name} ws_mix")
        _close(G.synthesis(mix), e["img_mix"], f"{name} img_mix")
        _close(G.synthesis(ws1, noise_mode="none"), e["img_psi1_nonoise"], f"{name} img_psi1_nonoise")
        # The whole generator in one call: mapping + synthesis.
        _close(G(z, None, truncation_psi=0.7), e["img_psi07"], f"{name} G(z)")


def test_variant_detected_from_kwargs(loaded):
    name, G, _ = loaded
    variant = "r" if "-r-" in name else "t"
    assert G.variant == variant and G.kind == f"stylegan3-{variant}"
    assert sg3.stylegan3_variant(G.config) == variant
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (32, 32, 8, 32)
    assert G.mapping.w_avg.shape == (32,)
    layers = [getattr(G.synthesis, n) for n in G.synthesis.layer_names]
    assert len(layers) == G.num_ws - 1 and layers[-1].is_torgb
    for layer in layers[:-1]:
        assert layer.weight.shape[-1] == (1 if variant == "r" else 3)
        radial = variant == "r" and not layer.is_critically_sampled
        assert layer.down_radial == radial
        assert layer.down_filter.ndim == (2 if radial else 1)
        assert layer.up_filter.ndim == 1
    # ToRGB has identity filters: no up_filter / down_filter entries in the state dict (as the pickle).
    torgb = G.synthesis.layer_names[-1]
    assert f"synthesis.{torgb}.up_filter" not in G.state_dict()


def test_state_dict_names_are_nvidias(loaded):
    _, G, _ = loaded
    keys = set(G.state_dict())
    for key in [
        "mapping.w_avg", "mapping.fc0.weight", "mapping.fc1.bias",
        "synthesis.input.weight", "synthesis.input.affine.weight", "synthesis.input.transform",
        "synthesis.input.freqs", "synthesis.input.phases",
        "synthesis.L0_36_64.weight", "synthesis.L0_36_64.magnitude_ema",
        "synthesis.L0_36_64.up_filter", "synthesis.L0_36_64.down_filter", "synthesis.L0_36_64.affine.bias",
        "synthesis.L6_32_3.weight", "synthesis.L6_32_3.bias",
    ]:
        assert key in keys, key


def test_native_round_trip_is_identical(loaded, tmp_path):
    _, G, e = loaded
    out = save_generator(G, tmp_path / "g")
    G2 = load_generator(out, device="cpu")
    assert isinstance(G2, sg3.Generator) and G2.kind == G.kind and G2.config == G.config
    sd, sd2 = G.state_dict(), G2.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    z = torch.from_numpy(e["z"])
    with torch.no_grad():
        assert torch.equal(G.mapping(z, truncation_psi=0.5), G2.mapping(z, truncation_psi=0.5))
        ws = torch.from_numpy(e["ws_psi1"])
        assert torch.equal(G.synthesis(ws), G2.synthesis(ws))


# ---------------------------------------------------------------------------------------------
# Filter design (no scipy) and ops


def test_designed_filters_equal_the_pickles_buffers(loaded):
    """A fresh network designs the same Kaiser / radial-jinc filters the reference stored (scipy-free)."""
    _, G, _ = loaded
    fresh = sg3.Generator(**G.config).state_dict()
    names = [k for k in G.state_dict() if k.endswith(("up_filter", "down_filter"))]
    assert len(names) == 2 * (G.num_ws - 2)
    for k in names:
        assert fresh[k].shape == G.state_dict()[k].shape, k
        assert torch.allclose(fresh[k], G.state_dict()[k], rtol=0, atol=1e-7), k


def test_firwin_properties():
    f = sg3.design_lowpass_filter(numtaps=12, cutoff=2.0, width=12.0, fs=32)
    assert f.shape == (12,) and torch.allclose(f, f.flip(0))
    assert abs(float(f.sum()) - 1) < 1e-6
    assert sg3.design_lowpass_filter(1, 2.0, 1.0, 32) is None
    r = sg3.design_lowpass_filter(numtaps=12, cutoff=4.0, width=8.0, fs=32, radial=True)
    assert r.shape == (12, 12) and torch.allclose(r, r.t()) and abs(float(r.sum()) - 1) < 1e-6


def _naive_upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1.0):
    """Textbook upfirdn: insert zeros, pad/crop, full 2-D true convolution per channel, keep every down-th."""
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones(1)
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    f2 = f2 * gain
    z = torch.zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = padding
    z = F.pad(z, [px0, px1, py0, py1])
    y = F.conv2d(z.reshape(n * c, 1, *z.shape[2:]), f2.flip([0, 1])[None, None])
    return y.reshape(n, c, *y.shape[2:])[:, :, ::down, ::down]


def _naive_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    x = x + b[None, :, None, None]
    x = _naive_upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return _naive_upfirdn2d(x, fd, down=down)


@pytest.mark.parametrize(
    "up,down,padding,radial,clamp,slope,gain",
    [
        (2, 2, [9, 8, 9, 8], False, 256, 0.2, math.sqrt(2)),  # a T layer
        (4, 2, [-6, -9, -6, -9], False, 256, 0.2, math.sqrt(2)),  # upsampling layer, cropping
        (2, 2, [11, 10, 11, 10], True, None, 0.2, math.sqrt(2)),  # R: radial down filter
        (2, 2, [-11, -12, -11, -12], False, 0.5, 0.2, math.sqrt(2)),  # last layer, clamping active
        (1, 1, [0, 0, 0, 0], None, 256, 1.0, 1.0),  # ToRGB: identity filters
        (2, 1, [3, 1, 0, 2], False, None, 0.1, 1.5),  # asymmetric padding
    ],
)
def test_filtered_lrelu_equals_reference_formulation(up, down, padding, radial, clamp, slope, gain):
    """ops.filtered_lrelu, as StyleGAN3's layers call it, == the textbook definition (zero insertion, pad,
    full-rate 2-D filtering, decimation) for T, R, cropping, clamping and ToRGB settings."""
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 5, 24, 26, generator=gen)
    b = torch.randn(5, generator=gen)
    fu = fd = None
    if radial is not None:  # random positive filters of unit DC gain (asymmetric: tests flipping too)
        fu = torch.rand(6 * up if up > 1 else 5, generator=gen) + 0.1
        fd = torch.rand(*([6 * down] * (2 if radial else 1)), generator=gen) + 0.1
        fu, fd = fu / fu.sum(), fd / fd.sum()
    kw = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
    ours = ops.filtered_lrelu(x, fu, fd, b, **kw)
    ref = _naive_filtered_lrelu(x, fu, fd, b, **kw)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


def _modconv_reference(x, weight, styles, demodulate, padding, input_gain):
    """The reference's formulation: per-sample weights (styles normalised over the whole batch), grouped conv."""
    n, _, h, w_ = x.shape
    w, s = weight, styles
    if demodulate:
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()
    w = w.unsqueeze(0) * s[:, None, :, None, None]  # (N, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    if input_gain is not None:
        w = w * input_gain.expand(n, s.shape[1])[:, None, :, None, None]
    y = F.conv2d(x.reshape(1, -1, h, w_), w.reshape(-1, *weight.shape[1:]), padding=padding, groups=n)
    return y.reshape(n, -1, *y.shape[2:])


@pytest.mark.parametrize("demodulate,k", [(True, 3), (True, 1), (False, 1)])
def test_modulated_conv2d_equals_grouped_per_sample_weights(demodulate, k):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, 6, 9, 9, generator=gen)
    weight = torch.randn(4, 6, k, k, generator=gen)
    styles = torch.randn(3, 6, generator=gen) + 1
    gain = torch.tensor(0.7)
    ours = sg3.modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=k - 1, input_gain=gain)
    ref = _modconv_reference(x, weight, styles, demodulate, k - 1, gain)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# API and behaviour


def test_image_does_not_depend_on_its_batch(loaded):
    _, G, e = loaded
    ws = torch.from_numpy(e["ws_psi1"])
    with torch.no_grad():
        batch = G.synthesis(ws)
        alone = torch.cat([G.synthesis(ws[i : i + 1]) for i in range(ws.shape[0])])
    assert torch.allclose(batch, alone, rtol=0, atol=1e-5)


def test_noise_mode_is_accepted_and_ignored(loaded):
    _, G, e = loaded
    ws = torch.from_numpy(e["ws_psi1"][:1])
    with torch.no_grad():
        imgs = [G.synthesis(ws, noise_mode=m) for m in ("const", "random", "none")]
    assert torch.equal(imgs[0], imgs[1]) and torch.equal(imgs[0], imgs[2])
    with pytest.raises(UsageError, match="noise_mode"):
        G.synthesis(ws, noise_mode="loud")


def test_truncation_cutoff_only_touches_first_layers(loaded):
    _, G, e = loaded
    z = torch.from_numpy(e["z"])
    with torch.no_grad():
        ws1 = G.mapping(z)
        ws = G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    assert torch.allclose(ws[:, :3], G.mapping.w_avg.expand(3, 3, -1))
    assert torch.equal(ws[:, 3:], ws1[:, 3:])


def test_bad_shapes_are_usage_errors(loaded):
    _, G, _ = loaded
    with pytest.raises(UsageError, match="z must be"):
        G.mapping(torch.zeros(2, G.z_dim + 1))
    with pytest.raises(UsageError, match="ws must be"):
        G.synthesis(torch.zeros(1, G.num_ws - 1, G.w_dim))


def test_gradients_flow_to_ws(loaded):
    _, G, e = loaded
    ws = torch.from_numpy(e["ws_psi1"][:1]).clone().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0


def _tiny(**kwargs) -> sg3.Generator:
    torch.manual_seed(0)
    base = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
                num_layers=4, mapping_kwargs={"num_layers": 1})
    base.update(kwargs)
    return sg3.Generator(**base).eval()


def test_conditional_mapping_needs_labels():
    G = _tiny(c_dim=4)
    assert "mapping.embed.weight" in G.state_dict()
    z = torch.randn(2, 8)
    with pytest.raises(UsageError, match="conditional"):
        G.mapping(z)
    with torch.no_grad():
        img = G(z, torch.eye(4)[:2])
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_update_emas_tracks_w_avg_and_magnitudes():
    G = _tiny()
    z = torch.randn(4, 8)
    layer = getattr(G.synthesis, G.synthesis.layer_names[0])
    with torch.no_grad():
        G(z)
        assert torch.equal(G.mapping.w_avg, torch.zeros(8)) and float(layer.magnitude_ema) == 1.0
        G(z, update_emas=True)
    assert not torch.equal(G.mapping.w_avg, torch.zeros(8)) and float(layer.magnitude_ema) != 1.0


def test_unknown_init_kwargs_are_format_errors():
    with pytest.raises(FormatError, match="unknown synthesis kwargs: bogus"):
        _tiny(bogus=1)
    with pytest.raises(FormatError, match="unknown mapping_kwargs: depth"):
        _tiny(mapping_kwargs={"depth": 2})


def test_defaults_are_nvidias_config_t_256():
    """The default SynthesisNetwork kwargs reproduce the published layer plan (names encode size/channels)."""
    G = sg3.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3)
    assert G.num_ws == 16
    assert G.synthesis.layer_names == [
        "L0_36_512", "L1_36_512", "L2_36_512", "L3_52_512", "L4_52_512", "L5_84_512", "L6_84_512",
        "L7_148_512", "L8_148_512", "L9_148_362", "L10_276_256", "L11_276_181", "L12_276_128",
        "L13_256_128", "L14_256_3",
    ]
    assert [getattr(G.synthesis, n).use_fp16 for n in G.synthesis.layer_names].count(True) == 12


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_reduced_precision_path(loaded, monkeypatch, dtype):
    """The half-precision path (CUDA-only by default) runs on the CPU when asked, and stays close to float32."""
    _, G, e = loaded
    ws = torch.from_numpy(e["ws_psi1"])
    saved = G.synthesis.reduced_dtype
    with torch.no_grad():
        ref = G.synthesis(ws)
        monkeypatch.setattr(G.synthesis, "reduced_on_cpu", True)
        G.set_precision(dtype)
        try:
            img = G.synthesis(ws)
            G.set_precision(torch.float32)
            assert G.synthesis.reduced_dtype is None
            assert torch.equal(G.synthesis(ws), ref)
        finally:
            G.synthesis.reduced_dtype = saved
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    rel = float((img - ref).abs().max() / ref.abs().max())
    assert 0 < rel < 0.1, rel


def test_training_kwargs_of_real_pickles_are_accepted():
    """Real snapshots carry magnitude_ema_beta; --fp32 runs have conv_clamp=None and num_fp16_res=0."""
    G = _tiny(magnitude_ema_beta=0.5 ** (32 / 20e3), conv_clamp=None, num_fp16_res=0)
    layers = [getattr(G.synthesis, n) for n in G.synthesis.layer_names]
    assert not any(layer.use_fp16 for layer in layers) and all(layer.conv_clamp is None for layer in layers)
    with torch.no_grad():
        img = G(torch.randn(2, 8))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
