"""StyleGAN3 (alias-free) generator, configs T and R, in plain PyTorch.

Re-implements the generator of "Alias-Free Generative Adversarial Networks" (Karras et al., 2021)
as defined by NVlabs/stylegan3 ``training/networks_stylegan3.py`` at commit
c233a919a6faee6e36a316ddd4eddababad1adf9 — same init kwargs, same module tree and parameter/buffer
names (so the flat state dict of an NVIDIA pickle loads with ``strict=True``), same outputs — without
custom CUDA extensions and without scipy:

- the filtered leaky ReLU (bias, ``up``-fold upsampling with ``up_filter``, leaky ReLU with gain and
  clamp, ``down``-fold downsampling with ``down_filter``) is :func:`c2l_cli.nets.ops.filtered_lrelu`:
  depthwise ``conv_transpose2d`` / strided ``conv2d`` (no zero-stuffed tensors, no filtering at full
  rate of samples that are then thrown away);
- the Kaiser low-pass filters (``firwin``) and the radial jinc filters of config R are designed here
  with numpy and ``torch.special.bessel_j1``, to the reference's float32 values;
- the modulated convolution modulates the activations instead of the weights (one shared-weight
  convolution for the whole batch, no grouped convolution), which is the same linear map.

Differences from the reference, on purpose:

- The reference pre-normalises the styles of a demodulated layer by their RMS over the *whole batch*
  (``s * s.square().mean().rsqrt()``), which makes an image depend, in the ~1e-12 relative range through
  the demodulation epsilon, on the other images in its batch. We normalise per sample, so an image does
  not depend on its batch. The scale cancels in demodulation, so the outputs agree to float32 rounding.
- On CUDA the reference runs ``filtered_lrelu`` as a custom kernel; here the same maths runs as cuDNN
  convolutions in the layer's dtype (float16 for the top ``num_fp16_res`` resolutions, as the reference;
  :meth:`Generator.set_precision` picks bfloat16 or float32 instead).

Generator attributes beyond NVIDIA's: ``kind`` (``"stylegan3-t"``/``"stylegan3-r"``), ``variant``
(``"t"``/``"r"``), ``config`` (the JSON-safe init kwargs that rebuild the network; ``init_kwargs`` is a copy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError, UsageError
from .ops import FullyConnectedLayer, filtered_lrelu
from .stylegan_common import GeneratorBase
from .stylegan_common import MappingNetwork as _MappingNetwork

__all__ = [
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "SynthesisInput",
    "SynthesisLayer",
    "design_lowpass_filter",
    "modulated_conv2d",
    "stylegan3_variant",
]

_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# Filter design (numpy, float64; results stored as float32 like the reference's buffers)


def _kaiser_atten(numtaps: int, width: float) -> float:
    """Attenuation (dB) of a Kaiser FIR filter with ``numtaps`` taps and normalised transition ``width``."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def _kaiser_beta(atten: float) -> float:
    """Kaiser window beta for a stop-band attenuation ``atten`` (dB) (Kaiser's empirical formula)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def _firwin_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Windowed-sinc low-pass FIR (Kaiser window sized from ``width``), unit DC gain: scipy's ``firwin``."""
    nyq = fs / 2
    c = cutoff / nyq  # cutoff relative to Nyquist
    beta = _kaiser_beta(_kaiser_atten(numtaps, width / nyq))
    m = np.arange(numtaps, dtype=np.float64) - (numtaps - 1) / 2
    h = c * np.sinc(c * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel function of the first kind, order 1 (float64)."""
    return torch.special.bessel_j1(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).numpy()


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """The reference's ``SynthesisLayer.design_lowpass_filter``: None (identity) for 1 tap, a separable
    Kaiser low-pass ``[numtaps]``, or (``radial``) a radially symmetric jinc filter ``[numtaps, numtaps]``
    with a separable Kaiser window, normalised to unit DC gain."""
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(_firwin_lowpass(numtaps, float(cutoff), float(width), float(fs)), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))  # (T, T) radius of each tap
    f = _bessel_j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = _kaiser_beta(_kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f = f * np.outer(w, w)
    f = f / np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Ops


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
    input_gain: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution (weight ``[O, I, k, k]``, styles ``[N, I]``, optional input gain),
    computed as conv(x * s, w) * d — the same linear map as convolving with the per-sample weights
    w * s (* d), without grouped convolution. Runs in ``x.dtype``; styles and coefficients in float32."""
    n = x.shape[0]
    w = weight.to(torch.float32)
    s = styles.to(torch.float32)
    if demodulate:
        w = w * w.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()  # pre-normalise each output filter
        s = s * s.square().mean(dim=1, keepdim=True).rsqrt()  # per sample (reference: over the batch)
        dcoefs = (torch.einsum("oi,ni->no", w.square().sum(dim=[2, 3]), s.square()) + 1e-8).rsqrt()  # (N, O)
    if input_gain is not None:
        s = s * input_gain.to(torch.float32).expand(n, s.shape[1])
    y = x * s.to(x.dtype).view(n, -1, 1, 1)
    y = F.conv2d(y, w.to(x.dtype), padding=padding)
    if demodulate:
        y = y * dcoefs.to(x.dtype).view(n, -1, 1, 1)
    return y


# ----------------------------------------------------------------------------------------------
# Modules (names and shapes of parameters and buffers as the reference)


class MappingNetwork(_MappingNetwork):
    """Z (+ label) → W, broadcast to ``num_ws`` and truncated toward ``w_avg`` (StyleGAN3's mapping: the
    StyleGAN2 mapping with 2 layers, all ``w_dim`` wide, and a ``w_avg`` always tracked)."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ) -> None:
        super().__init__(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
            lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta,
        )


class SynthesisInput(nn.Module):
    """Fourier-feature input (§3.1): ``channels`` sinusoids of random frequency within ``bandwidth``,
    rotated and translated by a transform predicted from w, then mixed by a learned matrix."""

    def __init__(self, w_dim: int, channels: int, size: Any, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])  # [width, height]
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        # Random frequencies in a disc of radius `bandwidth` (overwritten by loaded weights).
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))  # user inverse transform of the output image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] → features [N, channels, H, W] (float32)."""
        n = w.shape[0]
        t = self.affine(w.to(torch.float32))  # (N, 4): r_c, r_s, t_x, t_y
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device, dtype=torch.float32)
        m_r = eye.unsqueeze(0).repeat([n, 1, 1])  # inverse rotation of the image
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = eye.unsqueeze(0).repeat([n, 1, 1])  # inverse translation of the image
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transforms = m_r @ m_t @ self.transform.to(torch.float32).unsqueeze(0)  # (N, 3, 3)

        freqs = self.freqs.unsqueeze(0)  # (1, C, 2)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = freqs @ transforms[:, :2, :2]  # (N, C, 2)
        # Fade out frequencies that the user transform pushed beyond the band.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        sx, sy = int(self.size[0]), int(self.size[1])
        theta = torch.zeros(1, 2, 3, device=w.device, dtype=torch.float32)
        theta[0, 0, 0] = 0.5 * sx / self.sampling_rate
        theta[0, 1, 1] = 0.5 * sy / self.sampling_rate
        grids = F.affine_grid(theta, [1, 1, sy, sx], align_corners=False)  # (1, H, W, 2)

        x = torch.einsum("bhwk,nck->nhwc", grids, freqs)  # (N, H, W, C)
        x = x + phases.view(n, 1, 1, -1)
        x = torch.sin(x * (2 * np.pi)) * amplitudes.view(n, 1, 1, -1)
        x = x @ (self.weight / np.sqrt(self.channels)).t()  # (N, H, W, C)
        return x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, channels={self.channels}, size={[int(s) for s in self.size]}, "
            f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}"
        )


class SynthesisLayer(nn.Module):
    """One alias-free layer: modulated conv, then filtered leaky ReLU between its sampling rates (or ToRGB)."""

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        use_fp16: bool,
        in_channels: int,
        out_channels: int,
        in_size: Any,
        out_size: Any,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = bool(is_torgb)
        self.is_critically_sampled = bool(is_critically_sampled)
        self.use_fp16 = bool(use_fp16)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])  # [width, height]
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        # Upsampling filter: from the input rate to the (lrelu_upsampling times higher) working rate.
        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        if in_sampling_rate * self.up_factor != self.tmp_sampling_rate:
            raise FormatError("invalid StyleGAN3 config: working sampling rate is not a multiple of the input rate")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not self.is_torgb else 1
        self.register_buffer(
            "up_filter",
            design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate),
        )
        # Downsampling filter: back to the output rate (radial for R's non-critical layers).
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if out_sampling_rate * self.down_factor != self.tmp_sampling_rate:
            raise FormatError("invalid StyleGAN3 config: working sampling rate is not a multiple of the output rate")
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not self.is_torgb else 1
        self.down_radial = bool(use_radial_filters) and not self.is_critically_sampled
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(
                self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial
            ),
        )
        # Padding around the upsampled input so the output lands on the symmetric sample grid (App. C.3).
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total = pad_total - (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total = pad_total + self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        update_emas: bool = False,
        reduced_dtype: torch.dtype | None = torch.float16,
        reduced_on_cpu: bool = False,
    ) -> torch.Tensor:
        """x [N, in_channels, H, W], w [N, w_dim] → [N, out_channels, H', W'] (``noise_mode`` is unused: no noise).

        A ``use_fp16`` layer computes in ``reduced_dtype`` (None = float32) on CUDA, as the reference
        (float16); on the CPU only with ``reduced_on_cpu``."""
        if update_emas:
            cur = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w.to(torch.float32))
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel**2))

        use_half = (
            self.use_fp16 and not force_fp32 and reduced_dtype is not None
            and (x.device.type == "cuda" or reduced_on_cpu)
        )
        dtype = reduced_dtype if use_half else torch.float32
        x = modulated_conv2d(
            x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1, input_gain=input_gain,
        )
        x = filtered_lrelu(
            x, self.up_filter, self.down_filter, self.bias,
            up=self.up_factor, down=self.down_factor, padding=self.padding,
            gain=1.0 if self.is_torgb else _SQRT2, slope=1.0 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )
        return x

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
            f"use_fp16={self.use_fp16}, in_sampling_rate={self.in_sampling_rate:g}, "
            f"out_sampling_rate={self.out_sampling_rate:g}, in_cutoff={self.in_cutoff:g}, "
            f"out_cutoff={self.out_cutoff:g}, in_size={[int(s) for s in self.in_size]}, "
            f"out_size={[int(s) for s in self.out_size]}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}"
        )


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] → image: Fourier input, ``num_layers`` alias-free layers and ToRGB."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res
        self.reduced_dtype: torch.dtype | None = torch.float16  # what use_fp16 layers compute in on CUDA
        self.reduced_on_cpu = False  # also use reduced_dtype on the CPU (tests of the half-precision path)

        # Cutoffs and minimum stopbands grow geometrically up to the last critically sampled layers.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(
            w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
            sampling_rate=sampling_rates[0], bandwidth=cutoffs[0],
        )
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=(idx == num_layers),
                is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(sampling_rates[idx] * (2**num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
                **layer_kwargs,
            )
            name = f"L{idx}_{int(layer.out_size[0])}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def set_precision(self, dtype: torch.dtype | None = torch.float16) -> None:
        """float16 (reference) / bfloat16: what the top ``num_fp16_res`` layers compute in on CUDA;
        float32 (or None): float32 everywhere."""
        if dtype is None or dtype == torch.float32:
            self.reduced_dtype = None
        elif dtype in (torch.float16, torch.bfloat16):
            self.reduced_dtype = dtype
        else:
            raise UsageError(f"unsupported StyleGAN3 precision {dtype} (float32, float16 or bfloat16)")

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """ws [N, num_ws, w_dim] → image [N, img_channels, R, R] float32, nominally in [-1, 1].
        ``noise_mode`` ('const', 'random', 'none') is accepted for API parity and ignored: StyleGAN3 has no
        noise inputs."""
        if noise_mode not in ("const", "random", "none"):
            raise UsageError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise UsageError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws_list = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws_list[0])
        for name, w in zip(self.layer_names, ws_list[1:]):
            x = getattr(self, name)(
                x, w, force_fp32=force_fp32, update_emas=update_emas,
                reduced_dtype=self.reduced_dtype, reduced_on_cpu=self.reduced_on_cpu,
            )
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
            f"img_channels={self.img_channels}, num_layers={self.num_layers}, num_critical={self.num_critical}, "
            f"margin_size={self.margin_size}, num_fp16_res={self.num_fp16_res}"
        )


def stylegan3_variant(kwargs: dict[str, Any]) -> str:
    """``"r"`` for StyleGAN3-R (radial filters, 1x1 convolutions), else ``"t"``, from the Generator's init kwargs."""
    inner = kwargs.get("synthesis_kwargs") or {}
    radial = kwargs.get("use_radial_filters", inner.get("use_radial_filters", False))
    return "r" if bool(radial) else "t"


_MAPPING_KWARGS = frozenset({"num_layers", "lr_multiplier", "w_avg_beta"})
_SYNTHESIS_KWARGS = frozenset({
    "channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
    "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res",  # SynthesisNetwork
    "conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters", "conv_clamp",
    "magnitude_ema_beta",  # SynthesisLayer
})


class Generator(GeneratorBase):
    """StyleGAN3 generator (configs T and R): ``mapping`` then ``synthesis``; kwargs as NVIDIA's."""

    arch = "stylegan3"
    label = "StyleGAN3"
    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork
    mapping_kwarg_names = _MAPPING_KWARGS
    synthesis_kwarg_names = _SYNTHESIS_KWARGS

    @property
    def variant(self) -> str:
        """``"t"`` or ``"r"`` (StyleGAN3-R: radial filters), from the init kwargs."""
        return stylegan3_variant(self.config)

    @property
    def kind(self) -> str:
        """``"stylegan3-t"`` or ``"stylegan3-r"``."""
        return f"stylegan3-{self.variant}"

    def set_precision(self, dtype: torch.dtype | None = torch.float16) -> "Generator":
        """Reduced-precision dtype of the top ``num_fp16_res`` layers on CUDA (float32 = none); returns self."""
        self.synthesis.set_precision(dtype)
        return self
