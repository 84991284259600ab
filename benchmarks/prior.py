"""Benchmark: the paper's full-size diffusion prior (dim 512, depth 12, 12 heads of 64; random weights).

Times ``Prior.sample`` (reference sampler, guidance 2 → conditional + unconditional passes as one
batch of 2B) at 4, 50 and 1000 steps for batch sizes 1 and 16, on the CPU and on CUDA when present.
Each case reports the best of ``--reps`` repetitions after one warm-up call; 1000-step eager cases use
``--reps-long`` repetitions (default 1: they are long on a CPU). On CUDA every case is timed as the plain
eager path (the baseline) and as ``--variants``: ``graph`` (the whole loop as one CUDA graph,
``Prior.sample(graph=True)``; the recording cost is reported separately as ``first_call_s``) and
optionally ``compile+graph`` (``torch.compile``'d network inside the graph), each with its speed-up over
eager, its largest difference from the eager output for the same noise, and peak GPU memory.

Prints one JSON document on stdout (progress on stderr)::

    python benchmarks/prior.py                          # CPU (+ CUDA when present)
    python benchmarks/prior.py --device cpu --steps 4 50 --batch-sizes 1
    python benchmarks/prior.py --device cuda --steps 4 1000 --variants eager,graph,compile+graph
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


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(prior, device, batch: int, steps: int, reps: int, guidance: float, sampler: str,
              variant: str = "eager", reference=None) -> dict:
    """Best-of-*reps* time of one ``Prior.sample`` call; *variant* ``eager`` (graph=False) or ``graph`` (one CUDA
    graph for the whole loop, recorded at the first, untimed call — its cost is reported as ``first_call_s``).

    *reference*: the eager output for the same noise; the result reports the largest difference from it.
    """
    import torch

    gen = torch.Generator().manual_seed(1)
    embed = torch.randn(batch, prior.embed_dim, generator=gen).to(device)
    noise = torch.randn(steps + 1, batch, *prior.latent_shape, generator=gen).to(device)
    graph = variant != "eager"

    def run():
        ws = prior.sample(embed, steps=steps, guidance=guidance, sampler=sampler, noise=noise, graph=graph)
        _sync(device)
        return ws

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if graph or steps <= 50:
        ws = run()  # warm-up; for a graph this call records it
    else:  # a long eager run: warm up on a short one
        prior.sample(embed, steps=4, guidance=guidance, generator=1, graph=False)
        _sync(device)
        ws = None
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        ws = run()
        times.append(time.perf_counter() - t0)
    best = min(times)
    out = {
        "variant": variant,
        "batch": batch,
        "steps": steps,
        "reps": reps,
        "seconds_best": round(best, 5),
        "seconds_mean": round(sum(times) / len(times), 5),
        "ms_per_step": round(1000 * best / steps, 4),
        "samples_per_second": round(batch / best, 3),
    }
    if graph:
        out["first_call_s"] = round(first, 3)  # eager warm-up + recording + first replay
    if reference is not None:
        out["max_abs_diff_vs_eager"] = float((ws.float() - reference.float()).abs().max())
    if device.type == "cuda":
        out["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    out["_ws"] = ws
    return out


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
    ap.add_argument("--variants", default=None,
                    help="comma-separated: eager (baseline), graph (whole loop as one CUDA graph), compile+graph"
                         " (torch.compile'd network inside the graph); default eager,graph on CUDA and eager on the"
                         " CPU (where graph=True runs eagerly: naming it there only checks the plumbing)")
    ap.add_argument("--compile-batches", type=int, nargs="+", default=[16],
                    help="batch sizes for the compile+graph variant (each new batch size recompiles)")
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
        baseline: dict = {}  # (steps, batch) → the eager output (same noise), for the graphed variants' parity
        eager_s: dict = {}
        if dev.type == "cuda":
            entry["name"] = torch.cuda.get_device_name(dev)
        spec = args.variants or ("eager,graph" if dev.type == "cuda" else "eager")
        variants = [v.strip() for v in spec.split(",") if v.strip()]
        bad = [v for v in variants if v not in ("eager", "graph", "compile+graph")]
        if bad:
            ap.error(f"unknown variant(s) {', '.join(bad)}")
        if "eager" not in variants:
            variants.insert(0, "eager")  # the baseline is always measured beside the fast paths
        compiled = False
        for variant in variants:
            if variant == "compile+graph" and not compiled:
                from c2l_cli.accel import maybe_compile

                maybe_compile(prior.net, True, dynamic=False)
                compiled = True
            for steps in args.steps:
                for batch in args.batch_sizes:
                    if variant == "compile+graph" and batch not in args.compile_batches:
                        continue
                    long_eager = variant == "eager" and steps > 50
                    reps = args.reps_long if long_eager else args.reps
                    _log(f"[{dev}] {variant}: batch {batch}, {steps} steps × {reps} …")
                    ref = baseline.get((steps, batch))
                    case = time_case(prior, dev, batch, steps, reps, args.guidance, args.sampler, variant, ref)
                    ws = case.pop("_ws")
                    if variant == "eager":
                        baseline[(steps, batch)] = ws
                        eager_s[(steps, batch)] = case["seconds_best"]
                    elif (steps, batch) in eager_s:
                        case["speedup_vs_eager"] = round(eager_s[(steps, batch)] / case["seconds_best"], 2)
                    _log(f"[{dev}]   {case['seconds_best']} s ({case['ms_per_step']} ms/step)"
                         + (f", ×{case['speedup_vs_eager']} vs eager" if "speedup_vs_eager" in case else ""))
                    entry["cases"].append(case)
        if dev.type == "cuda":
            entry["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        result["devices"][str(dev)] = entry
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
