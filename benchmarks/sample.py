"""End-to-end latency of `c2l sample` for one prompt: 16 candidates, 4 steps, CLIP re-ranking.

Full-size architectures with random weights (no downloads): StyleGAN2 config F at 1024×1024
(FFHQ: z/w 512, 18 ws, channel_base 32768, channel_max 512, 8 mapping layers, 4 fp16 resolutions),
the paper's prior (dim 512, depth 12, 12 heads × 64, 1000 timesteps, 1 latent repeated 18×) and
CLIP ViT-B-32. The timing covers what `Pipeline.sample` does: text embedding, the prior over all
candidates (cond + null in one batch), synthesis + CLIP scoring in batches, then rendering the kept
image alone (for exact reproducibility) — everything except loading the models and writing files.

    python benchmarks/sample.py                 # CPU, and CUDA when present
    python benchmarks/sample.py --device cuda --repeats 10 --batch-size 16

Prints one JSON document on stdout (progress on stderr). The paper reports under 0.25 s on an
A100 for one image (Table 1, without re-ranking).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

FFHQ_CONFIG = dict(
    z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
    mapping_kwargs={"num_layers": 8}, channel_base=32768, channel_max=512,
    num_fp16_res=4, conv_clamp=256, architecture="skip",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(device: torch.device, dtype: torch.dtype):
    """The three full-size models with random weights, through the engines' constructors."""
    import open_clip

    from c2l_cli.clip import Clip
    from c2l_cli.generator import build_generator
    from c2l_cli.pipeline import Pipeline
    from c2l_cli.prior import Prior, PriorConfig

    torch.manual_seed(0)
    G = build_generator("stylegan2", FFHQ_CONFIG).eval().requires_grad_(False).to(device)
    G.set_precision(dtype)
    cfg = PriorConfig(dim=512, depth=12, heads=12, dim_head=64, n_latents=1, latent_repeats=(18,), timesteps=1000)
    P = Prior.new(cfg, torch.zeros(512), torch.ones(512), device=device, seed=0).eval().requires_grad_(False)
    model = open_clip.create_model("ViT-B-32", pretrained=None, device=device,
                                   precision="fp16" if dtype == torch.float16 else "fp32")
    C = Clip(model, spec="ViT-B-32 (random weights)", device=device, dtype=dtype)
    params = {
        "generator": sum(p.numel() for p in G.parameters()),
        "prior": sum(p.numel() for p in P.parameters()),
        "clip": sum(p.numel() for p in model.parameters()),
    }
    return Pipeline(G, P, C, device), params


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_times(pipe, device, prompt: str, candidates: int, steps: int, batch_size: int) -> dict:
    """One run split into its stages (each synchronised), in seconds."""
    from c2l_cli.pipeline import SampleSettings, candidate_seed

    out = {}
    sync(device)
    t = time.perf_counter()
    e = pipe.embed_texts([prompt])
    sync(device)
    out["clip_text"] = time.perf_counter() - t
    seeds = [candidate_seed(0, 0, c) for c in range(candidates)]
    t = time.perf_counter()
    ws = pipe.sample_ws(e.repeat(candidates, 1), seeds, steps=steps)
    sync(device)
    out["prior"] = time.perf_counter() - t
    t = time.perf_counter()
    imgs = pipe.synthesize(ws, batch_size)
    sync(device)
    out["synthesis"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = pipe.score(imgs, e.repeat(candidates, 1))
    sync(device)
    out["clip_rerank"] = time.perf_counter() - t
    best = int(scores.argmax())
    t = time.perf_counter()
    pipe.render(e, seeds[best], None, SampleSettings(steps=steps))
    sync(device)
    out["render_kept"] = time.perf_counter() - t
    return {k: round(v, 4) for k, v in out.items()}


def bench(device_name: str, args) -> dict:
    from c2l_cli.devices import resolve_device, resolve_dtype

    device = resolve_device(device_name)
    dtype = resolve_dtype(args.dtype, device)
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    log(f"[{device}] building full-size models ({dtype})")
    pipe, params = build(device, dtype)
    run = lambda seed: pipe.sample(args.prompt, num_images=1, candidates=args.candidates, seed=seed,  # noqa: E731
                                   steps=args.steps, batch_size=args.batch_size)
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 0)
    for i in range(warmup):
        log(f"[{device}] warm-up {i + 1}/{warmup}")
        run(1000 + i)
    repeats = args.repeats if args.repeats is not None else (10 if device.type == "cuda" else 1)
    times = []
    for i in range(repeats):
        sync(device)
        t = time.perf_counter()
        res = run(i)
        sync(device)
        times.append(time.perf_counter() - t)
        log(f"[{device}] run {i + 1}/{repeats}: {times[-1]:.3f} s (best score {float(res.scores[0]):.4f})")
    stages = stage_times(pipe, device, args.prompt, args.candidates, args.steps, args.batch_size) if args.stages else None
    out = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_before": load_before,  # other work on the machine slows the CPU numbers
        "params": params,
        "image_size": [int(x) for x in res.images.shape[-2:]],
        "warmup_runs": warmup,
        "runs": repeats,
        "end_to_end_s": {
            "median": round(statistics.median(times), 4),
            "min": round(min(times), 4),
            "max": round(max(times), 4),
        },
        "per_candidate_s": round(statistics.median(times) / args.candidates, 4),
        "stages_s": stages,
    }
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", action="append", help="cpu, cuda, … (repeatable; default: cpu, plus cuda when present)")
    ap.add_argument("--dtype", default="auto", help="auto (float16 on CUDA), float32, bfloat16")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 10 on CUDA, 1 on the CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2 on CUDA, 0 on the CPU)")
    ap.add_argument("--no-stages", dest="stages", action="store_false", help="skip the per-stage breakdown")
    ap.add_argument("--prompt", default="an old man with a beard")
    args = ap.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = [bench(d, args) for d in devices]
    print(json.dumps({
        "benchmark": "c2l sample: 1 prompt, re-rank",
        "candidates": args.candidates,
        "steps": args.steps,
        "sampler": "reference",
        "batch_size": args.batch_size,
        "models": "StyleGAN2-F 1024 (FFHQ config), prior dim 512 depth 12 heads 12x64, CLIP ViT-B-32; random weights",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
