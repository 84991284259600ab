"""Benchmark: StyleGAN2 FFHQ config-F 1024x1024 (random weights), mapping + synthesis per image.

Builds the full-size architecture of NVIDIA's ``stylegan2-ffhq-1024x1024.pkl`` (z/w 512, 18 ws,
channel_base 32768, channel_max 512, 8 mapping layers, fp16 for the top 4 resolutions, conv_clamp
256; ~30.4M parameters) with random weights, and times ``G.mapping`` + ``G.synthesis`` at the given
batch sizes: on the CPU in float32, and on CUDA (when present) in float32, float16 (the reference's
mixed precision), bfloat16, float16 + channels-last, and optionally ``torch.compile``.

Prints one JSON document on stdout (progress on stderr)::

    python benchmarks/stylegan.py                      # CPU (+ CUDA variants when present)
    python benchmarks/stylegan.py --device cpu --iters 2 --batch-sizes 1 8
    python benchmarks/stylegan.py --device cpu --iters 1 --batch-sizes 1 --variants float32,bfloat16 --reduced-on-cpu

Every variant is timed beside the plain eager float32 path (cuDNN default algorithms; the fast variants
autotune) and reports its speed-up and its largest pixel difference from float32 for the same z.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


# name, label in the JSON, dtype of the top blocks, channels-last, fused modconv (None = the network's default)
VARIANTS = [
    ("float32", "float32", "float32", False, None),
    ("float16", "float16 (reference mixed precision)", "float16", False, None),
    ("float16+channels_last", "float16 + channels_last", "float16", True, None),
    ("float16+fused", "float16 fused grouped conv", "float16", False, True),
    ("bfloat16", "bfloat16", "bfloat16", False, None),
    ("float16+compile", "float16 + torch.compile", "float16", False, None),
]


def _plain_float_gains(G) -> int:
    """numpy-scalar ``weight_gain`` attributes → Python floats (the same value).

    torch.compile under ``inference_mode`` fails on numpy scalars held by modules (torch 2.14: "Guard failed
    on the same frame it was created … dispatch key set mismatch"); nets/stylegan2.py keeps ``np.float64``
    gains (its owner is told). Returns how many were converted.
    """
    import numpy as np

    n = 0
    for m in G.modules():
        if isinstance(getattr(m, "weight_gain", None), np.floating):
            m.weight_gain = float(m.weight_gain)
            n += 1
    return n


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(device: "torch.device"):
    import torch

    from c2l_cli.nets.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
        mapping_kwargs={"num_layers": 8}, channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256,
    )
    # Random weights of realistic scale: noise strengths and w_avg as a trained network would have them.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.05)
        G.mapping.w_avg.normal_(0, 0.5)
    return G.eval().requires_grad_(False).to(device)


def time_variant(G, device, batch: int, iters: int, warmup: int, *, dtype, channels_last=False, fused=None,
                 reference=None) -> dict:
    import torch

    G.set_precision(dtype, channels_last=channels_last)
    gen = torch.Generator(device="cpu").manual_seed(1234)
    z = torch.randn(batch, G.z_dim, generator=gen).to(device)

    def run():
        with torch.inference_mode():
            ws = G.mapping(z, None, truncation_psi=0.7)
            img = G.synthesis(ws, noise_mode="const", fused_modconv=fused)
        return img

    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(iters):
        c0, t0 = time.process_time(), time.perf_counter()
        img = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    best = min(times)
    out = {
        "batch": batch,
        "iters": iters,
        "seconds_per_batch_best": round(best, 4),
        "seconds_per_batch_mean": round(sum(times) / len(times), 4),
        "ms_per_image": round(1000 * best / batch, 2),
        "images_per_second": round(batch / best, 3),
        # CPU seconds used by this process (all threads): what the work costs when the machine is shared.
        "process_cpu_seconds_per_image": round(min(cpu_times) / batch, 3),
        "output_finite": bool(torch.isfinite(img).all()),
        "output_shape": list(img.shape),
    }
    if device.type == "cuda":
        out["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if reference is not None:  # the same z through the float32 path: what reduced precision costs in pixels
        d = (img.float() - reference.float()).abs()
        out["max_abs_diff_vs_fp32"] = round(float(d.max()), 5)
        out["mean_abs_diff_vs_fp32"] = round(float(d.mean()), 6)
        out["max_diff_8bit_levels"] = round(float(d.max()) * 127.5, 2)  # images map [-1, 1] → 0…255 as x·127.5 + 128
    out["_img"] = img
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: the CPU, plus CUDA when present")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iters", type=int, default=None, help="timed runs per setting (default: 2 CPU, 10 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 CPU, 3 CUDA)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA, float16)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join(v[0] for v in VARIANTS)} or all; default all on CUDA"
                         " (float16+compile only with --compile), float32 on the CPU; float32 is always measured")
    ap.add_argument("--reduced-on-cpu", action="store_true",
                    help="let the reduced-precision blocks run reduced on the CPU too (tolerance checks, e.g. bfloat16)")
    args = ap.parse_args(argv)

    import torch

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            _log("error: CUDA was asked for but is not available")
            return 1
        devices.append(torch.device("cuda"))

    report: dict = {
        "benchmark": "stylegan2-ffhq-config-f-1024 mapping+synthesis (random weights)",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "results": [],
    }
    G_cpu = build(torch.device("cpu"))
    report["params"] = sum(p.numel() for p in G_cpu.parameters())
    report["num_ws"] = G_cpu.num_ws
    _log(f"StyleGAN2 config-F 1024: {report['params']:,} parameters, {G_cpu.num_ws} ws")

    for device in devices:
        G = G_cpu if device.type == "cpu" else build(device)
        iters = args.iters or (2 if device.type == "cpu" else 10)
        warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 3)
        wanted = [v.strip() for v in (args.variants or ("all" if device.type == "cuda" else "float32")).split(",")]
        table = [v for v in VARIANTS if v[0] in wanted or ("all" in wanted and v[0] != "float16+compile")]
        if device.type == "cuda" and args.compile and not any(v[0] == "float16+compile" for v in table):
            table.append(VARIANTS[-1])
        if table[0][0] != "float32":
            table.insert(0, VARIANTS[0])  # the plain eager float32 baseline is always measured first
        if device.type == "cpu" and args.reduced_on_cpu:
            from c2l_cli.nets.stylegan2 import SynthesisBlock

            SynthesisBlock.reduced_on_cpu = True  # the reduced-precision blocks on the CPU (tolerance checks)
        fp32_refs: dict = {}
        fp32_speed: dict = {}
        for name, label, dtype_name, cl, fused in table:
            dtype = getattr(torch, dtype_name)
            if device.type == "cuda":
                # the baseline runs with cuDNN's default algorithms; the fast variants may autotune
                torch.backends.cudnn.benchmark = name != "float32"
            if name == "float16+compile":
                _plain_float_gains(G)
                G.mapping.compile()
                G.synthesis.compile()
            for batch in args.batch_sizes:
                _log(f"{device.type} {label} batch {batch} ...")
                r = time_variant(G, device, batch, iters, max(warmup, 3) if name.endswith("compile") else warmup,
                                 dtype=dtype, channels_last=cl, fused=fused, reference=fp32_refs.get(batch))
                img = r.pop("_img")
                if name == "float32":
                    fp32_refs[batch] = img
                    fp32_speed[batch] = r["images_per_second"]
                else:
                    r["speedup_vs_fp32"] = round(r["images_per_second"] / fp32_speed[batch], 2) if batch in fp32_speed else None
                r.update(device=device.type, precision=label, variant=name,
                         cudnn_benchmark=bool(device.type == "cuda" and torch.backends.cudnn.benchmark))
                report["results"].append(r)
                _log(f"  {r['ms_per_image']} ms/image" + (f", max |Δ| vs fp32 {r['max_abs_diff_vs_fp32']}" if "max_abs_diff_vs_fp32" in r else ""))
            del img
        fp32_refs.clear()
    if hasattr(os, "getloadavg"):
        report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
