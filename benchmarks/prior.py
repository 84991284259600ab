"""Benchmark: the paper's full-size diffusion prior (dim 512, depth 12, 12 heads of 64; random weights).

Times ``Prior.sample`` (reference sampler, guidance 2 → conditional + unconditional passes as one
batch of 2B) at 4, 50 and 1000 steps for batch sizes 1 and 16, on the CPU and on CUDA when present.
Each case reports the best of ``--reps`` repetitions after one warm-up call; 1000-step cases use
``--reps-long`` repetitions (default 1: they are long on a CPU).

Prints one JSON document on stdout (progress on stderr)::

    python benchmarks/prior.py                          # CPU (+ CUDA when present)
    python benchmarks/prior.py --device cpu --steps 4 50 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(device):
    import torch

    from c2l_cli.prior import Prior, PriorConfig

    cfg = PriorConfig(dim=512, depth=12, heads=12, dim_head=64, n_latents=1, latent_repeats=(18,))
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(512, generator=gen) * 0.5
    std = torch.rand(512, generator=gen) + 0.5
    prior = Prior.new(cfg, mean, std, device=device, seed=0)
    return prior.eval().requires_grad_(False)


def time_case(prior, device, batch: int, steps: int, reps: int, guidance: float, sampler: str) -> dict:
    import torch

    gen = torch.Generator().manual_seed(1)
    embed = torch.randn(batch, prior.embed_dim, generator=gen).to(device)

    def run():
        ws = prior.sample(embed, steps=steps, guidance=guidance, sampler=sampler, generator=1234)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return ws

    run() if steps <= 50 else prior.sample(embed, steps=4, guidance=guidance, generator=1)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "batch": batch,
        "steps": steps,
        "reps": reps,
        "seconds_best": round(best, 4),
        "seconds_mean": round(sum(times) / len(times), 4),
        "ms_per_step": round(1000 * best / steps, 3),
        "samples_per_second": round(batch / best, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: the CPU, plus CUDA when present")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 50, 1000])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=3, help="repetitions for runs of up to 50 steps")
    ap.add_argument("--reps-long", type=int, default=1, help="repetitions for longer runs")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--sampler", default="reference", choices=["reference", "ddpm", "ddim"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    result = {
        "benchmark": "prior.sample",
        "model": {"dim": 512, "depth": 12, "heads": 12, "dim_head": 64, "n_latents": 1, "num_ws": 18},
        "sampler": args.sampler,
        "guidance": args.guidance,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "devices": {},
    }
    for dev in devices:
        prior = build(dev)
        params = sum(p.numel() for p in prior.parameters())
        entry = {"parameters": params, "cases": []}
        if dev.type == "cuda":
            entry["name"] = torch.cuda.get_device_name(dev)
        for steps in args.steps:
            for batch in args.batch_sizes:
                reps = args.reps if steps <= 50 else args.reps_long
                _log(f"[{dev}] batch {batch}, {steps} steps × {reps} …")
                case = time_case(prior, dev, batch, steps, reps, args.guidance, args.sampler)
                _log(f"[{dev}]   {case['seconds_best']} s ({case['ms_per_step']} ms/step)")
                entry["cases"].append(case)
        if dev.type == "cuda":
            entry["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        result["devices"][str(dev)] = entry
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
