"""Benchmark: CLIP image-embedding throughput (images/s) through ``Clip.embed_image``.

ViT-B-32 with random weights (``open_clip.create_model(arch, pretrained=None)``: no download), fed
generator-like tensors in [-1, 1] that already live on the device, so each measurement covers the
whole path c2l uses for re-ranking: resize (bicubic, antialiased) + centre crop + normalisation +
the image tower. float32 on the CPU, float16 on CUDA (c2l's defaults). Prints one JSON document.

    python benchmarks/clip.py                       # CPU, and CUDA when present
    python benchmarks/clip.py --device cpu --batches 1,16,64 --input-size 256
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(arch: str, device_name: str, batches: list[int], input_size: int, min_time: float, min_iters: int,
                 dtype_name: str = "auto") -> dict:
    import logging

    import open_clip
    import torch

    from c2l_cli.clip import Clip

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" notice: intended here
    from c2l_cli.devices import resolve_device

    device = resolve_device(device_name)
    if dtype_name == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, dtype_name)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    model = open_clip.create_model(arch, pretrained=None, precision=precision, device=device)
    clip = Clip(model, spec=f"{arch} (random weights)", device=device, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, input_size, input_size, device=device, generator=gen) * 2 - 1  # (B, 3, S, S)
        for _ in range(2 if device.type == "cuda" else 1):  # warm-up (kernel selection, allocator)
            clip.embed_image(x, batch_size=batch)
        _sync(device)
        iters, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            clip.embed_image(x, batch_size=batch)
            iters += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if iters >= min_iters and elapsed >= min_time:
                break
        cpu_s = time.process_time() - cpu_start  # wall ≫ cpu/threads means a busy machine
        # the preprocessing share of the same batch (resize + crop + normalise)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(3):
            clip.preprocess(x)
        _sync(device)
        pre_ms = (time.perf_counter() - t0) / 3 * 1e3
        rows.append(
            {
                "batch": batch,
                "images_per_s": round(batch * iters / elapsed, 2),
                "ms_per_batch": round(elapsed / iters * 1e3, 2),
                "preprocess_ms_per_batch": round(pre_ms, 2),
                "cpu_s_per_batch": round(cpu_s / iters, 3),
                "iterations": iters,
            }
        )
        del x
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "results": rows,
    }
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto = CPU and CUDA when present")
    parser.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    parser.add_argument("--input-size", type=int, default=256, help="side of the square generator images fed in")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds to measure each batch size, at least")
    parser.add_argument("--min-iters", type=int, default=2, help="iterations per batch size, at least")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="auto: on CUDA the float32 baseline and float16 (c2l's default) both; float32 on the CPU")
    args = parser.parse_args(argv)

    import torch

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    report = {
        "benchmark": "clip.embed_image",
        "model": f"{args.arch} (random weights)",
        "input": f"[B, 3, {args.input_size}, {args.input_size}] in [-1, 1], on the device",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": [
            bench_device(args.arch, d, batches, args.input_size, args.min_time, args.min_iters, dt)
            for d in devices
            for dt in (["float32", "float16"] if args.dtype == "auto" and d.startswith("cuda") else [args.dtype])
        ],
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
