"""`c2l direction POSITIVE NEGATIVE`: an edit direction from two prompts (clip2latent Appendix F).

Samples ``--samples`` latents for each prompt with the prior, takes the difference of the two mean
latents, normalises it and saves it as a c2l direction file (safetensors + JSON metadata, see
:mod:`c2l_cli.latents`). Only Typer is imported at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from .edit import DEFAULT_STRENGTHS

if TYPE_CHECKING:  # pragma: no cover
    import torch

DIRECTION_HELP = (
    "Find an edit direction from two prompts and save it (clip2latent, Appendix F).\n\n"
    "Samples --samples latents for each prompt with the diffusion prior (the two sets share their seeds), takes "
    "the difference of the mean W of the two sets (positive − negative), normalises it to unit length and saves "
    "it with its metadata. Use it with `c2l edit --direction FILE`."
)

DIRECTION_EPILOG = (
    "Examples:  c2l direction 'a smiling face' 'a frowning face' -o smile.safetensors  ·  "
    "c2l direction 'a photo of a person with curly hair' 'a photo of a person with straight hair' --layers 4-7 --preview  "
    "(see docs/direction.md)"
)


def register(app: typer.Typer) -> None:
    """Add ``c2l direction`` to *app*."""
    app.command("direction", help=DIRECTION_HELP, epilog=DIRECTION_EPILOG)(direction)


def direction(
    positive: str = typer.Argument(..., help="The prompt the direction points toward."),
    negative: str = typer.Argument(..., help="The prompt the direction points away from."),
    samples: int = typer.Option(64, "--samples", "-n", help="Latents sampled per prompt."),
    seed: int = typer.Option(0, "--seed", "-s", help="Run seed: sample i of both sets uses the noise of `c2l sample --seed SEED`'s candidate i."),
    steps: int = typer.Option(4, "--steps", help="Diffusion steps."),
    guidance: float = typer.Option(2.0, "--guidance", "-g", help="Classifier-free guidance scale."),
    truncation: float = typer.Option(1.0, "--truncation", "-t", help="Truncation toward the mean latent."),
    sampler: str = typer.Option("reference", "--sampler", help="reference, ddpm or ddim."),
    eta: float = typer.Option(0.0, "--eta", help="With --sampler ddim: the DDIM eta."),
    layers: Optional[str] = typer.Option(
        None, "--layers", metavar="LAYERS", help="Save a W+ direction restricted to these layers (0-7, 4, 8-, 0-3,6; inclusive)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Direction file to write (default: POSITIVE-vs-NEGATIVE.safetensors here, never overwriting)."
    ),
    preview: bool = typer.Option(False, "--preview", help="Also write FILE-preview.png: the direction applied to a few samples."),
    preview_strengths: str = typer.Option(
        DEFAULT_STRENGTHS, "--preview-strengths", metavar="LIST|START:STOP:COUNT", help="Strengths shown in the preview."
    ),
    preview_count: int = typer.Option(4, "--preview-count", help="Rows of the preview (half from each prompt's samples)."),
    model: str = typer.Option("ffhq", "--model", "-m", help="Model bundle (ffhq, lhq)."),
    generator: Optional[str] = typer.Option(None, "--generator", help="StyleGAN: registry name, path or URL."),
    prior: Optional[str] = typer.Option(None, "--prior", help="The prior: registry name, path or URL."),
    clip: Optional[str] = typer.Option(None, "--clip", help="The CLIP model (ARCH:PRETRAINED, hf-hub:…, local-dir:…)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA), float32, float16, bfloat16."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Latents sampled at once (does not change results)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
) -> None:
    """Find an edit direction from two prompts (see DIRECTION_HELP)."""
    from ..errors import UsageError
    from ..latents import parse_layers, parse_strengths
    from .edit import check_positive, check_sampling, check_seed

    if not positive.strip() or not negative.strip():
        raise UsageError("both prompts must be non-empty")
    if positive.strip() == negative.strip():
        raise UsageError("the two prompts are the same: there is no direction between them")
    check_positive(samples, "--samples")
    check_positive(preview_count, "--preview-count")
    sampler = check_sampling(steps=steps, guidance=guidance, sampler=sampler, eta=eta, truncation=truncation,
                             candidates=1, batch_size=batch_size)
    layer_spec = parse_layers(layers) if layers is not None else None
    sweep = parse_strengths(preview_strengths) if preview else None
    check_seed(seed)
    if out is not None and Path(out).expanduser().is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file name")

    _run_direction(
        positive=positive, negative=negative, samples=samples, seed=seed, steps=steps, guidance=guidance,
        truncation=truncation, sampler=sampler, eta=eta, layer_spec=layer_spec, out=out, sweep=sweep,
        preview_count=preview_count, model=model, generator=generator, prior=prior, clip=clip, device=device,
        dtype=dtype, batch_size=batch_size, json_out=json_out,
    )


def sample_sets(pipe: Any, positive: str, negative: str, *, samples: int, seed: int, batch_size: int,
                **settings: Any) -> "tuple[torch.Tensor, torch.Tensor]":
    """``samples`` latents per prompt, ``[samples, num_ws, w_dim]`` each (float32, CPU).

    Sample i of *both* sets draws its diffusion noise from ``candidate_seed(seed, 0, i)`` — the noise of
    candidate i of ``c2l sample PROMPT --seed SEED`` — so the positive set is exactly those candidates and
    the two sets differ only by their prompt, not by their noise.
    """
    import torch

    from ..latents import iter_chunks
    from ..pipeline import candidate_seed

    embeds = pipe.embed_texts([positive, negative])  # (2, D)
    seeds = [candidate_seed(seed, 0, i) for i in range(samples)]
    pos, neg = [], []
    for sl in iter_chunks(samples, max(1, batch_size // 2)):
        chunk = seeds[sl]
        k = len(chunk)
        emb = torch.cat([embeds[:1].expand(k, -1), embeds[1:2].expand(k, -1)])  # (2k, D)
        ws = pipe.sample_ws(emb, chunk + chunk, **settings).float().cpu()  # (2k, num_ws, w_dim)
        pos.append(ws[:k])
        neg.append(ws[k:])
    return torch.cat(pos), torch.cat(neg)


def _run_direction(**o: Any) -> None:
    import torch

    from ..devices import resolve_device, resolve_dtype
    from ..images import RECIPE_KEY, make_grid, save_image, slugify, to_pil, unique_path
    from ..latents import apply_edit, direction_from_latents, save_direction, strength_label
    from ..pipeline import Pipeline, SampleSettings, validate_settings
    from .edit import base_recipe
    from .output import info, print_json, print_line

    dev = resolve_device(o["device"])
    dt = resolve_dtype(o["dtype"], dev)
    pipe = Pipeline.from_sources(o["model"], o["generator"], o["prior"], o["clip"], device=dev, dtype=dt, progress=info)
    G = pipe.generator
    num_ws, w_dim = int(G.num_ws), int(G.w_dim)
    settings = {
        "steps": o["steps"], "guidance": o["guidance"], "truncation": o["truncation"], "sampler": o["sampler"],
        "eta": o["eta"],
    }
    validate_settings(SampleSettings(**settings, candidates=1, num_images=1), timesteps=pipe.timesteps)
    if o["layer_spec"] is not None:
        o["layer_spec"].indices(num_ws)  # a range beyond this generator is a usage error, before sampling

    info(f"sampling {o['samples']} latents for each prompt on {dev}")
    pos, neg = sample_sets(
        pipe, o["positive"], o["negative"], samples=o["samples"], seed=o["seed"], batch_size=o["batch_size"], **settings
    )
    vec, found = direction_from_latents(pos, neg, o["layer_spec"])

    meta = {
        **base_recipe("direction"),
        "prompts": {"positive": o["positive"], "negative": o["negative"]},
        "samples": o["samples"],
        "seed": o["seed"],
        "seeding": "sample i of both sets: candidate_seed(seed, 0, i), as c2l sample's candidates",
        **settings,
        "space": found["space"],
        "layers": found["layers"],
        "distance": found["distance"],
        "normalisation": "unit norm" if found["space"] == "w" else "unit norm on each chosen layer",
        "w_dim": w_dim,
        "num_ws": num_ws,
        "models": pipe.models,
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
    }
    if o["out"] is not None:
        path = Path(o["out"]).expanduser()
    else:
        stem = f"{slugify(o['positive'], 32)}-vs-{slugify(o['negative'], 32)}"
        path = unique_path(Path.cwd(), stem, ".safetensors", also=["-preview.png"] if o["sweep"] else [])
    save_direction(path, vec, meta)

    preview_path = None
    if o["sweep"]:
        sweep = o["sweep"]
        k = o["preview_count"]
        n_neg = min(k // 2, neg.shape[0])
        n_pos = min(k - n_neg, pos.shape[0])
        rows = torch.cat([neg[:n_neg], pos[:n_pos]])  # (R, num_ws, w_dim)
        names = [f"neg {i}" for i in range(n_neg)] + [f"pos {i}" for i in range(n_pos)]
        offset = vec.expand(num_ws, w_dim) if vec.ndim == 1 else vec  # (num_ws, w_dim)
        edited = apply_edit(rows, offset, sweep)  # (R, T, num_ws, w_dim)
        r, t = edited.shape[:2]
        images = to_pil(pipe.synthesize(edited.reshape(r * t, num_ws, w_dim), batch_size=8).float().cpu())
        labels = [f"{names[i]} {strength_label(s)}" for i in range(r) for s in sweep]
        preview_path = path.with_name(f"{path.stem}-preview.png")
        recipe = {**meta, "direction_file": str(path.resolve()), "preview_strengths": sweep, "preview_rows": names}
        save_image(make_grid(images, ncols=t, labels=labels), preview_path, metadata={RECIPE_KEY: recipe})

    if o["json_out"]:
        print_json({
            "command": "direction",
            "path": str(path),
            "preview": str(preview_path) if preview_path else None,
            "shape": list(vec.shape),
            "norm": float(vec.norm()) if vec.ndim == 1 else [float(x) for x in vec.norm(dim=1)],
            "metadata": meta,
        })
    else:
        print_line(str(path))
        if preview_path:
            print_line(str(preview_path))
