"""StyleGAN2 generator (configs E/F: ``skip``, ``resnet``, ``orig``) in plain PyTorch.

Re-implements the generator of "Analyzing and Improving the Image Quality of StyleGAN" (Karras et
al., 2020) as defined by NVlabs/stylegan3 ``training/networks_stylegan2.py`` at commit
c233a919a6faee6e36a316ddd4eddababad1adf9 — same init kwargs, same module tree and parameter/buffer
names (the flat state dict of an NVIDIA pickle loads with strict key checking) and the same numerics
on the CPU (its reference, non-CUDA op paths) — without custom CUDA extensions.

Precision, as the reference: parameters stay float32; on CUDA the blocks of the top
``num_fp16_res`` resolutions compute in float16 (with ``conv_clamp`` keeping activations finite),
the others in float32; on the CPU everything is float32. :meth:`Generator.set_precision` selects
float32 everywhere, bfloat16 instead of float16 for those blocks, and channels-last memory format.

Modulated convolution: ``fused_modconv=True`` folds styles and demodulation into per-sample weights
and runs one grouped convolution (the reference's default); ``False`` scales the activations before
and after one shared convolution (no grouped convolution — faster for large batches in half
precision). The default ``None`` picks fused when the block runs in float32 or the batch is 1, else
non-fused (stylegan2-ada-pytorch's inference rule). Both compute the same linear map.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import FormatError, UsageError
from .ops import ACTIVATIONS, FullyConnectedLayer, bias_act, conv2d_resample, setup_filter, upsample2d
from .stylegan_common import GeneratorBase, MappingNetwork

__all__ = [
    "Conv2dLayer",
    "Generator",
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "modulated_conv2d",
]

_REDUCED = (torch.float16, torch.bfloat16)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Convolve ``x`` [N, I, H, W] with ``weight`` [O, I, k, k] modulated by ``styles`` [N, I] (+ noise)."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    # Pre-normalise to avoid overflow in half precision (cancels out in demodulation).
    if x.dtype in _REDUCED and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # Demodulation coefficients 1/sqrt(sum_{i,k} (w_oik s_i)^2 + eps), as a small matmul:
    # sum_i s_i^2 sum_k w_oik^2 — the reference's value without materialising the modulated weights.
    dcoefs = None
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # (N, O)

    if not fused_modconv:
        # Scale activations, one shared convolution, scale again.
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x

    # One grouped convolution over the batch folded into channels, with per-sample weights.
    scale = styles.reshape(batch_size, 1, -1, 1, 1)  # (N, 1, I, 1, 1)
    if demodulate:
        scale = scale * dcoefs.reshape(batch_size, -1, 1, 1, 1)  # (N, O, I, 1, 1)
    w = weight.unsqueeze(0) * scale  # (N, O, I, k, k)
    x = x.reshape(1, -1, *x.shape[2:])  # (1, N*I, H, W)
    w = w.reshape(-1, in_channels, kh, kw)  # (N*O, I, k, k)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])  # (N, O, H', W')
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional FIR resampling (used by ``resnet`` skips)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size**2))  # a Python float: torch.compile-friendly
        self.act_gain = ACTIVATIONS[activation].def_gain
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            if b is not None:
                self.register_buffer("bias", b)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (+ optional 2x upsampling), noise, bias, leaky ReLU, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        styles = self.affine(w)  # (N, I)
        noise = None
        if self.use_noise and noise_mode == "random":
            # Drawn on the generator's own device (a CPU generator gives the same noise on any device).
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], generator=generator,
                                device=generator.device if generator is not None else x.device)
            noise = noise.to(x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size**2))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const |) conv0 (2x up) + conv1, and ToRGB / skip per ``architecture``."""

    #: Off CUDA every block computes in float32, as the reference; True lets tests exercise the
    #: reduced-precision code path on the CPU.
    reduced_on_cpu = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = 256,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default: Any = True,
        **layer_kwargs: Any,
    ) -> None:
        if architecture not in ("orig", "skip", "resnet"):
            raise FormatError(f"StyleGAN2: unknown architecture {architecture!r} (orig, skip or resnet)")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = bool(use_fp16)
        self.reduced_dtype = torch.float16  # what "fp16" blocks compute in on CUDA (set_precision)
        self.channels_last = bool(use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        noise_mode: str = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != "cuda" and not self.reduced_on_cpu:
            force_fp32 = True
        dtype = self.reduced_dtype if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
            if fused_modconv == "inference_only":
                fused_modconv = not self.training
            # Grouped convolutions are slow in half precision for batches > 1: modulate activations instead.
            fused_modconv = bool(fused_modconv) and (dtype == torch.float32 or ws.shape[0] == 1)
        layer_kw = dict(noise_mode=noise_mode, fused_modconv=fused_modconv, generator=generator)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # (N, C, 4, 4)
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **layer_kw)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **layer_kw)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **layer_kw)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **layer_kw)
            x = self.conv1(x, next(w_iter), **layer_kw)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] → image [N, img_channels, R, R]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        **block_kwargs: Any,
    ) -> None:
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise FormatError(f"StyleGAN2: img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=(res == img_resolution), use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        """The blocks from 4x4 up."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def set_precision(self, dtype: torch.dtype | None = torch.float16, channels_last: bool | None = None) -> None:
        """float16 (reference) / bfloat16: dtype of the top ``num_fp16_res`` blocks on CUDA; float32: none reduced."""
        for block in self.blocks():
            if dtype == torch.float32:
                block.use_fp16 = False
            else:
                block.use_fp16 = block.resolution >= max(2 ** (self.img_resolution_log2 + 1 - self.num_fp16_res), 8)
                block.reduced_dtype = dtype if dtype in _REDUCED else torch.float16
            if channels_last is not None:
                block.channels_last = bool(channels_last) and block.use_fp16

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        generator: torch.Generator | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise UsageError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise UsageError(f"synthesis: ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur, force_fp32=force_fp32, fused_modconv=fused_modconv,
                           noise_mode=noise_mode, generator=generator)
        return img


_MAPPING_KWARGS = frozenset({"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"})
_SYNTHESIS_KWARGS = frozenset({
    "channel_base", "channel_max", "num_fp16_res",  # SynthesisNetwork
    "architecture", "resample_filter", "conv_clamp", "fp16_channels_last", "fused_modconv_default",  # block
    "kernel_size", "use_noise", "activation",  # SynthesisLayer
})


class Generator(GeneratorBase):
    """StyleGAN2 generator: ``mapping`` then ``synthesis``; init kwargs exactly as NVIDIA's."""

    arch = "stylegan2"
    kind = "stylegan2"
    label = "StyleGAN2"
    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork
    mapping_kwarg_names = _MAPPING_KWARGS
    synthesis_kwarg_names = _SYNTHESIS_KWARGS

    def set_precision(self, dtype: torch.dtype | None = torch.float16, channels_last: bool | None = None) -> "Generator":
        """Reduced-precision dtype of the top ``num_fp16_res`` blocks on CUDA (float32 = none); returns self."""
        self.synthesis.set_precision(dtype, channels_last)
        return self
