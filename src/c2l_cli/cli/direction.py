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
    seed: int = typer.Option(0, "--seed", help="Sample i of each set uses seed SEED+i (as in `c2l sample`)."),
    steps: int = typer.Option(4, "--steps", help="Diffusion steps."),
    guidance: float = typer.Option(2.0, "--guidance", help="Classifier-free guidance scale."),
    truncation: float = typer.Option(1.0, "--truncation", help="Truncation toward the mean latent."),
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
    batch_size: int = typer.Option(64, "--batch-size", help="Latents sampled at once."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
) -> None:
    """Find an edit direction from two prompts (see DIRECTION_HELP)."""
    from ..errors import UsageError
    from ..latents import parse_layers, parse_strengths
    from .edit import check_positive, check_sampler

    if not positive.strip() or not negative.strip():
        raise UsageError("both prompts must be non-empty")
    if positive.strip() == negative.strip():
        raise UsageError("the two prompts are the same: there is no direction between them")
    check_positive(samples, "--samples")
    check_positive(steps, "--steps")
    check_positive(truncation, "--truncation")
    check_positive(batch_size, "--batch-size")
    check_positive(preview_count, "--preview-count")
    sampler = check_sampler(sampler)
    layer_spec = parse_layers(layers) if layers is not None else None
    sweep = parse_strengths(preview_strengths) if preview else None
    if seed < 0 or seed + samples > 2**63:
        raise UsageError(f"--seed {seed} is out of range")
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
    """``samples`` latents per prompt ``[samples, num_ws, w_dim]`` each (float32, CPU).

    Sample i of both sets uses seed ``seed + i``: the two sets share their diffusion noise, so their
    difference reflects the prompts, not the noise.
    """
    import torch

    from ..latents import iter_chunks

    embeds = pipe.embed_texts([positive, negative])  # (2, D)
    seeds = [seed + i for i in range(samples)]
    pos, neg = [], []
    half = max(1, batch_size // 2)
    for sl in iter_chunks(samples, half):
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
    from ..pipeline import Pipeline
    from .edit import base_recipe, file_info, model_sources, synthesize
    from .output import info, print_json, print_line

    dev = resolve_device(o["device"])
    dt = resolve_dtype(o["dtype"], dev)
    sources = model_sources(o["model"], o["generator"], o["prior"], o["clip"])
    pipe = Pipeline.from_sources(
        model=o["model"], generator=o["generator"], prior=o["prior"], clip=o["clip"], device=dev, dtype=dt
    )
    G = pipe.generator
    num_ws, w_dim = int(G.num_ws), int(G.w_dim)
    if o["layer_spec"] is not None:
        o["layer_spec"].indices(num_ws)  # a range beyond this generator is a usage error, before sampling

    settings = {
        "steps": o["steps"], "guidance": o["guidance"], "truncation": o["truncation"], "sampler": o["sampler"],
        "eta": o["eta"],
    }
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
        "seeds": [o["seed"], o["seed"] + o["samples"] - 1],
        **settings,
        "space": found["space"],
        "layers": found["layers"],
        "distance": found["distance"],
        "w_dim": w_dim,
        "num_ws": num_ws,
        "model": o["model"] if not (o["generator"] and o["prior"] and o["clip"]) else None,
        "generator": file_info(sources["generator"], "generator"),
        "prior": file_info(sources["prior"], "prior"),
        "clip": sources["clip"],
        "normalisation": "unit norm" if found["space"] == "w" else "unit norm per chosen layer",
    }
    if o["out"] is not None:
        path = Path(o["out"]).expanduser()
    else:
        stem = f"{slugify(o['positive'], 32)}-vs-{slugify(o['negative'], 32)}"
        also = ["-preview.png"] if o["sweep"] else []
        path = unique_path(Path.cwd(), stem, ".safetensors", also=[f"{s}" for s in also])
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
        images = to_pil(synthesize(G, edited.reshape(r * t, num_ws, w_dim), batch_size=8, device=dev))
        labels = [f"{names[i]} {strength_label(s)}" for i in range(r) for s in sweep]
        preview_path = path.with_name(f"{path.stem}-preview.png")
        recipe = {**meta, "direction_file": str(path), "preview_strengths": sweep,
                  "preview_rows": names}
        save_image(make_grid(images, ncols=t, labels=labels), preview_path, metadata={RECIPE_KEY: recipe})

    if o["json_out"]:
        print_json({
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
