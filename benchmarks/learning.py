"""The whole clip2latent method on a small world, on the CPU in minutes; prints JSON.

1. A tiny CLIP with realistic embedding geometry: the random-weight fixture ``clip-tiny32`` maps all
   images to nearly the same direction (mean pairwise cosine ≈ 0.96). We re-fit its last two layers
   (``visual.ln_post.bias`` and ``visual.proj``) on images of the tiny StyleGAN so that image embeddings
   spread over all 32 dimensions (PCA whitening of the pooled features) around a shared component
   that leaves a mean pairwise cosine of about 0.5 — like real CLIP embeddings of one domain.
2. ``c2l gen-data`` (the library call) with the tiny StyleGAN2 fixture: N + 100 (W, embedding) pairs.
3. ``c2l train`` with a small prior; the last 100 pairs are held out.
4. Condition on each held-out *image* embedding, sample a W with the EMA prior, synthesise, embed the
   image, and retrieve: is the condition the nearest neighbour (top-1) / among the 5 nearest (top-5)
   of the sampled image's embedding, among the 100 held-out embeddings? Baseline: the same with the
   unconditional prior (guidance 0: only the null-condition branch), i.e. chance (1% / 5%).

    python benchmarks/learning.py [--n-samples 10000] [--steps 3000] [--threads 1]
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

HERE = Path(__file__).resolve().parent
FIXTURES = Path(os.environ.get("C2L_SHARED_DIR", HERE.parent.parent / "shared")) / "fixtures"


def realistic_clip(G, src: Path, dst: Path, *, n_fit: int = 2000, shared_cos: float = 0.5, seed: int = 12345) -> Path:
    """Write a copy of the CLIP at *src* whose image embeddings are PCA-whitened pooled features plus a shared offset."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from c2l_cli.clip import load_clip

    clip = load_clip(f"local-dir:{src}", device="cpu")
    visual = clip.model.visual
    pooled: list = []
    hook = visual.ln_post.register_forward_hook(lambda _m, _i, out: pooled.append(out[:, 0].detach().clone()))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in range(0, n_fit, 200):
            z = torch.randn(200, G.z_dim, generator=g)
            clip.embed_image(G.synthesis(G.mapping(z, None), noise_mode="const"))
    hook.remove()
    f = torch.cat(pooled).double()  # (n_fit, width)
    mu = f.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov((f - mu).T))  # ascending
    d = clip.dim
    lam, U = evals.flip(0)[:d], evecs.flip(1)[:, :d]  # top-d principal directions (width, d)
    proj = U / lam.clamp_min(lam[0] * 1e-4).sqrt()  # whitening: each coordinate has unit variance
    # a shared component c with |c|² = c2 gives a mean pairwise cosine ≈ c2 / (c2 + d)
    c2 = d * shared_cos / (1 - shared_cos)
    direction = torch.randn(d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    c = direction / direction.norm() * c2**0.5
    shift = c @ torch.linalg.pinv(proj)  # (width,) so that shift @ proj = c
    sd = load_file(str(src / "open_clip_model.safetensors"))
    sd["visual.ln_post.bias"] = (sd["visual.ln_post.bias"].double() - mu + shift).float()
    sd["visual.proj"] = proj.float().contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "open_clip_config.json", dst / "open_clip_config.json")
    save_file(sd, str(dst / "open_clip_model.safetensors"))
    return dst


def geometry(e) -> dict:
    """Mean off-diagonal cosine and participation ratio (effective number of dimensions) of embeddings."""
    import torch

    x = torch.as_tensor(e, dtype=torch.float64)
    u = x / x.norm(dim=1, keepdim=True)
    cos = u @ u.T
    n = cos.shape[0]
    off = cos[~torch.eye(n, dtype=torch.bool)]
    ev = torch.linalg.eigvalsh(torch.cov((x - x.mean(0)).T))
    return {
        "mean_pairwise_cosine": round(float(off.mean()), 4),
        "min_pairwise_cosine": round(float(off.min()), 4),
        "participation_ratio": round(float(ev.sum() ** 2 / (ev**2).sum()), 2),
        "mean_norm": round(float(x.norm(dim=1).mean()), 3),
    }


def retrieval(prior, G, clip, held_e, *, guidance: float, steps: int, seed: int) -> dict:
    """Top-1 / top-5 nearest-neighbour retrieval of each condition among the held-out embeddings."""
    import torch

    from c2l_cli.clip import cosine_matrix

    with torch.no_grad():
        ws = prior.sample(held_e, steps=steps, guidance=guidance, generator=torch.Generator().manual_seed(seed))
        f = clip.embed_image(G.synthesis(ws, noise_mode="const"))
        sim = cosine_matrix(f, held_e)  # (100 sampled, 100 conditions)
    n = sim.shape[0]
    ranks = (sim > sim.diagonal()[:, None]).sum(1)  # conditions more similar than the true one
    return {
        "guidance": guidance,
        "top1": round(float((ranks < 1).float().mean()), 4),
        "top5": round(float((ranks < 5).float().mean()), 4),
        "mean_rank": round(float(ranks.float().mean()) + 1, 2),
        "mean_cosine_to_condition": round(float(sim.diagonal().mean()), 4),
        "n": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-samples", type=int, default=10_000, help="training pairs (100 more are made and held out)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)")
    ap.add_argument("--sample-steps", type=int, default=100, help="diffusion steps when sampling for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the dataset and run here instead of a temp folder")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from c2l_cli.data import GenDataConfig, generate_dataset, open_dataset
    from c2l_cli.clip import load_clip
    from c2l_cli.generator import load_generator
    from c2l_cli.prior import load_prior
    from c2l_cli.train import build_config, train

    sg = FIXTURES / "stylegan" / "stylegan2-tiny.pkl"
    if not sg.is_file():
        sys.exit(f"fixtures not found at {FIXTURES} (set C2L_SHARED_DIR)")
    G = load_generator(sg, device="cpu")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        work = args.keep or Path(tmp_name)
        work.mkdir(parents=True, exist_ok=True)

        t = time.perf_counter()
        clip_dir = realistic_clip(G, FIXTURES / "clip-tiny32", work / "clip-tiny32-realistic")
        clip = load_clip(f"local-dir:{clip_dir}", device="cpu")
        timings["make_clip_s"] = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        n_total = args.n_samples + 100
        gcfg = GenDataConfig(generator=str(sg), clip=f"local-dir:{clip_dir}", n_samples=n_total,
                             shard_size=2500, batch_size=250, seed=args.seed)  # fmt: skip
        generate_dataset(work / "data", gcfg, device="cpu", G=G, clip=clip)
        timings["gen_data_s"] = round(time.perf_counter() - t, 2)
        data = open_dataset(work / "data")
        _w_all, e_all = data.read(0, data.n_samples)

        t = time.perf_counter()
        cfg = build_config(
            {
                "depth": 4, "heads": 4, "dim_head": 32, "batch_size": args.batch_size, "max_steps": args.steps,
                "lr": 1e-3, "ema_beta": 0.995, "ema_update_every": 1, "ema_update_after": 200,
                "log_every": 250, "ckpt_every": args.steps, "val_every": args.steps, "val_image_samples": 100,
                "val_steps": 10, "val_samples_per_text": 1, "seed": args.seed,
            }
        )  # fmt: skip
        losses: list[tuple[int, float]] = []
        train(work / "data", work / "run", cfg, device="cpu",
              on_log=lambda r: losses.append((r["step"], r["loss"])) if "loss" in r else None)  # fmt: skip
        timings["train_s"] = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        prior = load_prior(work / "run" / "latest", device="cpu")
        _hw, held_e = data.read(args.n_samples, n_total)
        held = torch.from_numpy(held_e)
        results = [retrieval(prior, G, clip, held, guidance=g, steps=args.sample_steps, seed=args.seed + 7) for g in (0.0, 1.0, 2.0)]
        timings["evaluate_s"] = round(time.perf_counter() - t, 2)

    base, cond1, cond2 = results
    out = {
        "benchmark": "learning",
        "world": {
            "generator": "stylegan2-tiny (fixture, random weights; z/w 32, 8 ws, 32 px)",
            "clip": "clip-tiny32 with re-fitted ln_post.bias + proj (see docstring)",
            "train_pairs": args.n_samples,
            "held_out": 100,
            "embedding_geometry": {"fixture_clip": None, "realistic_clip": geometry(e_all[:1000])},
        },
        "prior": {"dim": 32, "depth": 4, "heads": 4, "dim_head": 32, "steps": args.steps, "batch_size": args.batch_size,
                  "lr": 1e-3, "embed_noise_scale": 1.0, "cond_drop_prob": 0.2},
        "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None,
        "retrieval_among_100": {"unconditional_baseline": base, "conditional_guidance_1": cond1, "conditional_guidance_2": cond2},
        "chance": {"top1": 0.01, "top5": 0.05},
        "learned": cond1["top5"] > 3 * max(base["top5"], 0.05),
        "timings": timings,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
    }
    # geometry of the unmodified fixture CLIP on the same images, for comparison
    fixture_clip = load_clip(f"local-dir:{FIXTURES / 'clip-tiny32'}", device="cpu")
    with torch.no_grad():
        z = torch.randn(500, G.z_dim, generator=torch.Generator().manual_seed(99))
        e0 = fixture_clip.embed_image(G.synthesis(G.mapping(z, None), noise_mode="const"))
    out["world"]["embedding_geometry"]["fixture_clip"] = geometry(e0)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
