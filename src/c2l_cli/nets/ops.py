"""Low-level ops shared by the StyleGAN2 and StyleGAN3 networks, in plain PyTorch (no custom CUDA).

Numerically these follow the *reference* (non-CUDA) code paths of NVIDIA's ``torch_utils/ops``
(NVlabs/stylegan3 at commit c233a919a6faee6e36a316ddd4eddababad1adf9: ``upfirdn2d.py``,
``conv2d_resample.py``, ``bias_act.py``, ``filtered_lrelu.py``), re-written here; semantics, argument
names and defaults are kept so that layers ported from that code base behave identically.

API (all functions take and return NCHW tensors unless noted):

- ``setup_filter(f, device="cpu", normalize=True, flip_filter=False, gain=1, separable=None) -> Tensor``
  a float32 FIR filter: ``[taps]`` (separable) or ``[fh, fw]``. A 1-D list of fewer than 8 taps becomes
  its 2-D outer product unless ``separable=True``; ``normalize`` makes it sum to 1 (DC gain 1).
- ``upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1)``: zero-insert upsample by
  ``up``, pad (``int``, ``[px, py]`` or ``[px0, px1, py0, py1]``; negative = crop), convolve with ``f``
  (``None`` = identity), keep every ``down``-th pixel. ``up``/``down`` may be ``int`` or ``[x, y]``.
- ``filter2d(x, f, padding=0, flip_filter=False, gain=1)``: same-size filtering (+ extra padding).
- ``upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1)`` / ``downsample2d(x, f, down=2, ...)``.
- ``conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True,
  flip_filter=False)``: a convolution with ``w [O, I/groups, kh, kw]`` fused with FIR up/downsampling;
  ``padding`` is with respect to the upsampled image, applied once.
- ``bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None)``: ``x + b`` along
  ``dim``, activation (``linear``, ``relu``, ``lrelu``, ``tanh``, ``sigmoid``, ``elu``, ``selu``,
  ``softplus``, ``swish``), times ``gain`` (default: the activation's ``ACTIVATIONS[act].def_gain``,
  sqrt(2) for (l)relu), then clamp to ``[-clamp, clamp]``.
- ``filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=sqrt(2), slope=0.2,
  clamp=None, flip_filter=False)``: bias, upsample with ``fu`` (gain ``up**2``), leaky ReLU + gain +
  clamp, downsample with ``fd`` — StyleGAN3's alias-free nonlinearity.
- ``normalize_2nd_moment(x, dim=1, eps=1e-8)``: ``x / sqrt(mean(x**2) + eps)``.
- ``FullyConnectedLayer(in_features, out_features, bias=True, activation="linear", lr_multiplier=1,
  bias_init=0)``: the equalised-learning-rate linear layer (parameters ``weight [out, in]``, ``bias
  [out]``; effective weight ``weight * lr_multiplier / sqrt(in)``, bias ``bias * lr_multiplier``).
  ``bias_init`` may be a scalar or a sequence (StyleGAN3's affine layers use ``[1, 0, 0, 0]``);
  ``weight_init`` is the initial std. Pass arguments after ``out_features`` by keyword (StyleGAN2
  and StyleGAN3 order ``bias``/``activation`` differently). Initial values never matter when loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "FullyConnectedLayer",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filter2d",
    "filtered_lrelu",
    "normalize_2nd_moment",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]


# ---------------------------------------------------------------------------------------------
# Argument parsing


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    """``int`` or ``[x, y]`` → ``(x, y)`` of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    vx, vy = (int(v) for v in value)
    if vx < 1 or vy < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return vx, vy


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``int``, ``[px, py]`` or ``[px0, px1, py0, py1]`` → ``(px0, px1, py0, py1)``."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        return p, p, p, p
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 values, got {padding}")
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a separable ``[taps]`` or 2-D ``[fh, fw]`` filter; ``None`` → (1, 1)."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


# ---------------------------------------------------------------------------------------------
# FIR filtering


def setup_filter(
    f,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """A float32 FIR filter for :func:`upfirdn2d` from a list/array/tensor (``None`` = identity)."""
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"bad filter shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample each channel of ``x`` [N, C, H, W]."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NCHW, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    n, c, h, w = x.shape
    if upx > 1 or upy > 1:
        return _upfirdn2d_polyphase(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)

    # Pad (positive) and crop (negative).
    if max(px0, px1, py0, py1) > 0:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # Convolution (not correlation) unless flip_filter: flip the taps for F.conv2d's correlation.
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].expand(c, 1, *f.shape).contiguous()  # (C, 1, fh, fw): depthwise
        x = F.conv2d(x, weight, stride=(downy, downx), groups=c)
    else:
        taps = f.shape[0]
        x = F.conv2d(x, f.reshape(1, 1, 1, taps).expand(c, 1, 1, taps).contiguous(), stride=(1, downx), groups=c)
        x = F.conv2d(x, f.reshape(1, 1, taps, 1).expand(c, 1, taps, 1).contiguous(), stride=(downy, 1), groups=c)
    return x


def _crop_or_pad(y: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """``y[start : start + length]`` along ``dim``, reading zeros outside ``y``."""
    size = y.shape[dim]
    before, after = max(-start, 0), max(start + length - size, 0)
    if before or after:
        pad = [0, 0, 0, 0]
        pad[(3 - dim) * 2 : (3 - dim) * 2 + 2] = [before, after]  # F.pad lists the last dim first
        y = F.pad(y, pad)
        start += before
    return y.narrow(dim, start, length)


def _upfirdn2d_polyphase(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain) -> torch.Tensor:
    """upfirdn2d with up > 1 as a strided transposed convolution: the inserted zeros are never stored.

    Zero insertion, padding and convolution with ``f`` equal ``conv_transpose2d(x, f, stride=up)``
    read from offset ``taps - 1 - pad0`` (zeros beyond its ends).
    """
    n, c, h, w = x.shape
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    if flip_filter:  # the transposed convolution already convolves; flip for correlation
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        fh, fw = f.shape
        y = F.conv_transpose2d(x, f[None, None].expand(c, 1, fh, fw).contiguous(), stride=(upy, upx), groups=c)
    else:
        fh = fw = f.shape[0]
        y = F.conv_transpose2d(x, f.reshape(1, 1, 1, fw).expand(c, 1, 1, fw).contiguous(), stride=(1, upx), groups=c)
        y = F.conv_transpose2d(y, f.reshape(1, 1, fh, 1).expand(c, 1, fh, 1).contiguous(), stride=(upy, 1), groups=c)
    out_h = h * upy + py0 + py1 - fh + 1
    out_w = w * upx + px0 + px1 - fw + 1
    y = _crop_or_pad(y, 2, fh - 1 - py0, out_h)
    y = _crop_or_pad(y, 3, fw - 1 - px0, out_w)
    if downx > 1 or downy > 1:
        y = y[:, :, ::downy, ::downx]
    return y


def filter2d(x, f, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Filter with ``f`` keeping the size (plus any extra ``padding``; negative crops)."""
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Upsample by ``up`` with FIR filter ``f`` (output size = input size * up, plus ``padding``)."""
    upx, upy = _pair(up, "up")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1) -> torch.Tensor:
    """Downsample by ``down`` with FIR filter ``f`` (output size = input size / down)."""
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)


# ---------------------------------------------------------------------------------------------
# Convolution with resampling


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True) -> torch.Tensor:
    """F.conv2d / F.conv_transpose2d; ``flip_weight=False`` turns correlation into convolution."""
    kh, kw = int(w.shape[2]), int(w.shape[3])
    if not flip_weight and (kh > 1 or kw > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    if kh == 1 and kw == 1 and x.device.type == "cpu" and stride == 1 and padding in (0, [0, 0]):
        # 1x1 convolutions as batched matmuls: much faster than the CPU conv kernels for few channels.
        n, cin, h, wd = x.shape
        out = int(w.shape[0])
        xg = x.reshape(n * groups, cin // groups, h * wd)  # (N*G, I/G, HW)
        wg = w.reshape(groups, out // groups, cin // groups)  # (G, O/G, I/G)
        y = torch.matmul(wg.unsqueeze(0), xg.reshape(n, groups, cin // groups, h * wd))  # (N, G, O/G, HW)
        return y.reshape(n, out, h, wd)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution of ``x`` with ``w`` fused with FIR up/downsampling by ``f`` (padding applied once)."""
    if w.dtype != x.dtype:
        raise TypeError(f"conv2d_resample: weight dtype {w.dtype} != input dtype {x.dtype}")
    out_channels, in_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # Padding needed by the resampling filter.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernels: resample on the cheaper side of the convolution.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Downsampling only: filter, then strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: transposed strided convolution, then filter the result.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)  # (I, O, kh, kw)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)  # (G, O/G, I/G, kh, kw)
            w = w.transpose(1, 2)  # (G, I/G, O/G, kh, kw)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: a plain convolution when the padding is symmetric.
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case.
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


# ---------------------------------------------------------------------------------------------
# Bias + activation


@dataclass(frozen=True)
class Activation:
    """An activation function with its default slope parameter and output gain."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float


_SQRT2 = float(np.sqrt(2))

ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, _SQRT2),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, _SQRT2),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, _SQRT2),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain)`` with the activation's default alpha/gain when not given."""
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    owned = False  # whether x is a temporary of ours (then update it in place: no extra copies)
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        x = x + b.to(x.dtype).reshape(shape)
        owned = True
    inplace = owned and not (torch.is_grad_enabled() and x.requires_grad)
    if inplace and act == "lrelu":
        F.leaky_relu_(x, alpha)
    elif inplace and act == "relu":
        F.relu_(x)
    else:
        x = spec.func(x, alpha)
        inplace = inplace or (act != "linear" and not (torch.is_grad_enabled() and x.requires_grad))
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
        inplace = inplace or not (torch.is_grad_enabled() and x.requires_grad)
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-float(clamp), float(clamp)) if inplace else x.clamp(-float(clamp), float(clamp))
    return x


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = _SQRT2,
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Bias → upsample (``fu``) → leaky ReLU·gain, clamp → downsample (``fd``): StyleGAN3's nonlinearity."""
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)


# ---------------------------------------------------------------------------------------------
# Layers


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(torch.nn.Module):
    """Equalised-learning-rate linear layer (StyleGAN's ``FullyConnectedLayer``; same parameter names)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float | Sequence[float] = 0,
        weight_init: float = 1,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([self.out_features, self.in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [self.out_features])
            self.bias = torch.nn.Parameter(torch.from_numpy(init.copy()) / lr_multiplier)
        else:
            self.bias = None
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"

