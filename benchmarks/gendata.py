"""Benchmark: `gen-data` throughput (samples/s) — z → mapping → synthesis → resize → CLIP → shard write.

Full-size models with random weights (no downloads): StyleGAN2 FFHQ config-F 1024 (as
``benchmarks/stylegan.py`` builds it) and open_clip ViT-B-32. Runs ``c2l_cli.data.generate_dataset``
itself (the code path of ``c2l gen-data``) into a temporary folder, so shard hashing and atomic writes
are part of the figure. Variants: the plain eager float32 path (the baseline), and on CUDA the
reduced-precision StyleGAN blocks (float16 as the reference, or bfloat16) with CLIP in float16.
Prints one JSON document on stdout (progress on stderr)::

    python benchmarks/gendata.py                         # CPU, and CUDA when present
    python benchmarks/gendata.py --device cpu --n-samples 4 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_variant(device, *, g_dtype, clip_dtype, n_samples: int, batch_size: int) -> dict:
    import logging

    import open_clip
    import torch
    from stylegan import build  # benchmarks/stylegan.py: the FFHQ config-F architecture

    from c2l_cli.clip import Clip
    from c2l_cli.data import GenDataConfig, generate_dataset
    from c2l_cli.distributed import DistInfo

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "random init" notice is intended here
    G = build(device)
    G.set_precision(g_dtype)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(clip_dtype, "fp32")
    model = open_clip.create_model("ViT-B-32", pretrained=None, precision=precision, device=device)
    clip = Clip(model, spec="ViT-B-32 (random weights)", device=device, dtype=clip_dtype)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device)

    def once(n: int) -> float:
        cfg = GenDataConfig(generator="random", clip="random", n_samples=n, shard_size=max(n // 2, 1),
                            batch_size=batch_size, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            generate_dataset(Path(tmp) / "data", cfg, dist=dist, G=G, clip=clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

    once(min(batch_size, n_samples))  # warm-up: kernel selection, allocator, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = once(n_samples)
    peak = {"peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)} if device.type == "cuda" else {}
    return {**peak,
        "stylegan_dtype": str(g_dtype).replace("torch.", ""),
        "clip_dtype": str(clip_dtype).replace("torch.", ""),
        "n_samples": n_samples,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "samples_per_s": round(n_samples / seconds, 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = the CPU, plus CUDA when present")
    ap.add_argument("--n-samples", type=int, default=None, help="samples per timed run (default 4 CPU, 2048 CUDA)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default 2 CPU, 64 CUDA)")
    args = ap.parse_args(argv)

    import torch

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available", file=sys.stderr)
        return 1
    runs = []
    for device in devices:
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        n = args.n_samples or (2048 if cuda else 4)
        bs = args.batch_size or (64 if cuda else 2)
        variants = [(torch.float32, torch.float32)]
        if cuda:
            variants += [(torch.float16, torch.float16), (torch.bfloat16, torch.float16)]
        rows = []
        for g_dtype, c_dtype in variants:
            _log(f"gen-data on {device}: StyleGAN {g_dtype}, CLIP {c_dtype}, {n} samples, batch {bs}")
            rows.append(run_variant(device, g_dtype=g_dtype, clip_dtype=c_dtype, n_samples=n, batch_size=bs))
        base = rows[0]["samples_per_s"]
        for r in rows:
            r["speedup_vs_fp32"] = round(r["samples_per_s"] / base, 2) if base else None
        runs.append({
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "results": rows,
        })
    print(json.dumps({"benchmark": "gen-data", "torch": torch.__version__, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
