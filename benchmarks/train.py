"""Training throughput of the full-size prior (the paper's 48.9M-parameter model) at batch 512; prints JSON.

Runs `c2l_cli.train.train` itself (data on the device, no per-step host sync) on random (W, embedding)
pairs, on the CPU and on CUDA when present, as ``--variants``: ``fp32`` (the plain eager float32 baseline
with torch's default AdamW, always measured), ``bf16+fused`` (c2l's CUDA default: bf16 autocast + fused
AdamW), ``bf16+fused+compile`` (+ ``compile = true``: torch.compile of the network; its compile time
falls in the warm-up steps) and ``bf16+fused+graph`` (+ ``cuda_graph = true``: forward and backward
replayed from CUDA graphs; off CUDA it runs eagerly). The first ``--steps``
steps are a warm-up; the rate is measured over the next ``--steps`` (the loop's own log interval, so
the one host sync per interval is included). The paper: about 15 steps/s on one A100.

    python benchmarks/train.py [--device auto|cpu|cuda] [--steps-cpu 2] [--steps-cuda 50] [--batch-size 512]
    python benchmarks/train.py --device cuda --variants fp32,bf16+fused,bf16+fused+compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _dataset(root: Path, n: int, dim: int) -> Path:
    import numpy as np

    from c2l_cli.data import write_dataset

    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, dim), dtype=np.float32)
    e = rng.standard_normal((n, dim), dtype=np.float32)
    write_dataset(root, w, e, shard_size=n, generator={"source": "", "z_dim": dim, "w_dim": dim, "num_ws": 18})
    return root


VARIANTS = {
    # name: (config overrides, fused AdamW on CUDA?)
    "fp32": ({"amp": "none"}, False),  # the plain eager float32 baseline (torch's default foreach AdamW)
    "bf16+fused": ({"amp": "bf16"}, True),  # c2l's CUDA default: bf16 autocast + fused AdamW
    "bf16+fused+compile": ({"amp": "bf16", "compile": True}, True),  # + torch.compile of the network
    "bf16+fused+graph": ({"amp": "bf16", "cuda_graph": True}, True),  # + forward/backward as CUDA graphs
}


def _run(device: str, steps: int, batch: int, dim: int, data: Path, tmp: Path, variant: str = "default") -> dict:
    import torch

    import c2l_cli.train as T
    from c2l_cli.train import build_config, train

    overrides, fused = VARIANTS.get(variant, ({}, True))
    cfg = build_config(
        {
            "batch_size": batch,
            "max_steps": 2 * steps,
            "log_every": steps,
            "ckpt_every": 10**9,
            "val_every": 0,
            **overrides,
        }
    )
    make_optimizer = T.make_optimizer
    if not fused:  # the baseline: the optimiser torch picks by default (not the fused CUDA kernel)
        def unfused(net, cfg, dev):
            return make_optimizer(net, cfg, torch.device("cpu"))  # "cpu" only selects the non-fused implementation

        T.make_optimizer = unfused
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    records: list[dict] = []
    t0 = time.perf_counter()
    try:
        train(data, tmp / f"run-{device}-{variant}", cfg, device=device, verify_data=False, on_log=records.append)
    finally:
        T.make_optimizer = make_optimizer
    wall = time.perf_counter() - t0
    timed = [r for r in records if "loss" in r][-1]
    rate = float(timed["steps_per_s"])
    out = {
        "device": device,
        "variant": variant,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "amp": "bf16" if (cfg.amp == "bf16" or (cfg.amp == "auto" and device.startswith("cuda"))) else "none",
        "fused_adamw": bool(fused and device.startswith("cuda")),
        "compile": cfg.compile,
        "cuda_graph": bool(cfg.cuda_graph and device.startswith("cuda")),
        "warmup_steps": steps,
        "timed_steps": steps,
        "steps_per_s": round(rate, 4),
        "samples_per_s": round(rate * batch, 1),
        "ms_per_step": round(1000.0 / rate, 2) if rate > 0 else None,
        "final_loss": round(float(timed["loss"]), 5),
        "wall_s_including_setup": round(wall, 2),
    }
    if device.startswith("cuda"):
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CPU, and CUDA when present), cpu or cuda")
    ap.add_argument("--steps-cpu", type=int, default=2, help="warm-up steps and timed steps on the CPU")
    ap.add_argument("--steps-cuda", type=int, default=50, help="warm-up steps and timed steps on CUDA")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--dim", type=int, default=512, help="W / CLIP size (512: FFHQ + ViT-B/32)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated, of {', '.join(VARIANTS)}; default fp32,bf16+fused on CUDA and fp32 on the CPU"
                         " (fp32 — the eager baseline — is always included)")
    args = ap.parse_args()

    import torch

    from c2l_cli.prior import Prior
    from c2l_cli.train import TrainConfig

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append("cpu")
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available")

    from c2l_cli.prior import PriorConfig

    c = TrainConfig()
    pcfg = PriorConfig(dim=args.dim, depth=c.depth, heads=c.heads, dim_head=c.dim_head, timesteps=c.timesteps, latent_repeats=(18,))
    params = sum(p.numel() for p in Prior(pcfg, torch.zeros(args.dim), torch.ones(args.dim)).net.parameters())

    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        n = args.batch_size * 4
        data = _dataset(tmp / "data", n, args.dim)
        for dev in devices:
            steps = args.steps_cpu if dev == "cpu" else args.steps_cuda
            spec = args.variants or ("fp32,bf16+fused" if dev == "cuda" else "fp32")
            variants = [v.strip() for v in spec.split(",") if v.strip()]
            bad = [v for v in variants if v not in VARIANTS]
            if bad:
                ap.error(f"unknown variant(s) {', '.join(bad)}")
            if "fp32" not in variants:
                variants.insert(0, "fp32")
            base = None
            for variant in variants:
                print(f"train on {dev}: {variant}, batch {args.batch_size}, {steps} + {steps} steps", file=sys.stderr, flush=True)
                r = _run(dev, steps, args.batch_size, args.dim, data, tmp, variant)
                base = base or r["steps_per_s"]
                r["speedup_vs_fp32"] = round(r["steps_per_s"] / base, 2) if base else None
                print(f"  {r['steps_per_s']} steps/s", file=sys.stderr, flush=True)
                results.append(r)

    print(
        json.dumps(
            {
                "benchmark": "train",
                "prior": {"dim": args.dim, "depth": c.depth, "heads": c.heads, "dim_head": c.dim_head, "parameters": params},
                "batch_size": args.batch_size,
                "results": results,
                "paper_a100_steps_per_s": 15,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                            "torch": torch.__version__},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
