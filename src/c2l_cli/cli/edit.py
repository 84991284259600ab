"""`c2l edit`: move latents along edit directions in W / W+ and re-render them (paper §5.2.3, App. D).

Parse, call the core (:mod:`c2l_cli.latents`, the generator, the pipeline), render. Only Typer is
imported at module level; torch and the engine are imported inside the command. The private helpers
here (model options, seeds, synthesis, recipes) are shared with ``cli/direction.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_STRENGTHS = "-3,-1.5,0,1.5,3"
DEFAULT_OUT = "c2l-out"

EDIT_HELP = (
    "Edit images through StyleGAN's latent space: one labelled strip per latent, one frame per strength.\n\n"
    "What to edit: latent files (.npz from `c2l sample --save-latents`, NVIDIA's projected_w.npz, .npy/.pt arrays "
    "\\[num_ws, w_dim], \\[1, num_ws, w_dim] or \\[w_dim]), --prompt (sampled as in `c2l sample`) or --seeds "
    "(plain StyleGAN samples).\n\n"
    "Directions (--direction, repeatable): NAME|FILE\\[:STRENGTH]\\[@LAYERS] — built-in age, smile, pose "
    "(InterFaceGAN, FFHQ), files from `c2l direction`, InterFaceGAN boundary .npy files. Frame t is "
    "w + t·Σ STRENGTH_i·d_i on the chosen layers; every other layer is unchanged."
)

EDIT_EPILOG = (
    "Examples:  c2l edit c2l-out/old-man.npz --direction age --strengths -3:3:7  ·  "
    "c2l edit --seeds 0-3 --direction smile:2@0-5 --direction age:-1 --orthogonalize --strengths 0,1  ·  "
    "c2l edit --prompt 'a woman' --direction pose --save-latents  (see docs/edit.md)"
)


# ----------------------------------------------------------------------------- shared helpers


def parse_seeds(text: str) -> list[int]:
    """``0,3,7-9`` → ``[0, 3, 7, 8, 9]`` (ranges inclusive); a bad list is a UsageError."""
    from ..errors import UsageError

    import re

    seeds: list[int] = []
    for piece in (text or "").split(","):
        piece = piece.strip()
        if not piece:
            continue
        m = re.match(r"^(\d+)(?:-(\d+))?$", piece)
        if not m:
            raise UsageError(f"bad --seeds {text!r}: use whole numbers and inclusive ranges, e.g. 0,3,7-9")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"bad seed range {piece!r}: the end comes before the start")
        if hi - lo >= 100_000:
            raise UsageError(f"seed range {piece!r} is too long (at most 100000 seeds)")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise UsageError(f"bad --seeds {text!r}: no seeds")
    for s in seeds:
        if s >= 2**32:
            raise UsageError(f"seed {s} is out of range (0 to 2^32-1)")
    return seeds


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """UsageError unless *value* > 0 (or >= 0)."""
    from ..errors import UsageError

    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'at least 0' if allow_zero else 'positive'}, got {value:g}")


def check_sampling(*, steps: int, guidance: float, sampler: str, eta: float, truncation: float, candidates: int,
                   batch_size: int) -> str:
    """The sampling options checked as `c2l sample` checks them (same messages), before anything is
    loaded; returns the sampler name normalised (stripped, lower case)."""
    from ..pipeline import SampleSettings, validate_settings

    sampler = sampler.strip().lower()
    validate_settings(SampleSettings(steps=steps, guidance=guidance, sampler=sampler, eta=eta, truncation=truncation,
                                     candidates=candidates, num_images=1, batch_size=batch_size))
    return sampler


def check_seed(seed: Optional[int]) -> None:
    """UsageError unless the run seed *seed* (None: not given) is in [0, 2^63-1]."""
    from ..errors import UsageError
    from ..pipeline import MAX_SEED

    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be in [0, 2^63-1], got {seed}")


def file_info(source: str, kind: str) -> dict[str, Any]:
    """``{"source", "sha256"}`` of a model file for recipes (a native folder: its weights file)."""
    from .. import cache

    info: dict[str, Any] = {"source": str(source), "sha256": None}
    path = Path(cache.resolve(source, kind=kind))
    local = Path(str(source)).expanduser()
    if local.exists() and not str(source).startswith(("http://", "https://")):
        info["source"] = str(local.resolve())  # local files recorded absolute, as c2l sample does
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if path.is_file():
        info["sha256"] = cache.sha256_of(path)
    return info


def load_generator_pipeline(source: str, device: Any, dtype: Any) -> Any:
    """A generator-only :class:`~c2l_cli.pipeline.Pipeline` (no prior, no CLIP) with its recipe record."""
    from .. import cache
    from ..generator import load_generator
    from ..pipeline import Pipeline

    record = file_info(source, "generator")
    G = load_generator(cache.resolve(source, kind="generator"), device=device, dtype=dtype)
    return Pipeline(G, None, None, device, models={"generator": record})


def check_out_dir(out: Path) -> Path:
    """Create the output folder (a file in its place is an error) before any model is loaded."""
    from ..errors import C2LError

    if out.exists() and not out.is_dir():
        raise C2LError(f"cannot write to output folder {out}: it is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise C2LError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    return out


def base_recipe(command: str) -> dict[str, Any]:
    """The fields every recipe starts with."""
    from .._version import __version__

    return {"c2l_version": __version__, "command": command}


# ----------------------------------------------------------------------------- the command


def register(app: typer.Typer) -> None:
    """Add ``c2l edit`` to *app*."""
    app.command("edit", help=EDIT_HELP, epilog=EDIT_EPILOG)(edit)


def edit(
    latents: Optional[list[Path]] = typer.Argument(
        None, metavar="[LATENTS]...", help="Latent files to edit (.npz key w, projected_w.npz, .npy, .pt).", show_default=False
    ),
    direction: Optional[list[str]] = typer.Option(
        None, "--direction", "-d", metavar="NAME|FILE[:STRENGTH][@LAYERS]",
        help="Edit direction, repeatable: age, smile, pose, a `c2l direction` file or an InterFaceGAN .npy; "
        "STRENGTH multiplies it (default 1); LAYERS limits it (0-7, 4, 8-, 0-3,6; inclusive).",
    ),
    strengths: str = typer.Option(
        DEFAULT_STRENGTHS, "--strengths", metavar="LIST|START:STOP:COUNT",
        help="Sweep values t, one frame each: a list (-3,0,3) or COUNT evenly spaced values from START to STOP (-3:3:5).",
    ),
    orthogonalize: bool = typer.Option(
        False, "--orthogonalize", help="Project each direction off the others (InterFaceGAN conditional edit)."
    ),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p", help="Sample a latent for this prompt (repeatable)."),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="Plain StyleGAN samples: G.mapping of one z per seed (0,3,7-9; ranges inclusive)."
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", "-s", help="With --prompt: the run seed, as in `c2l sample` (default: random; always recorded)."
    ),
    candidates: int = typer.Option(16, "--candidates", "-c", help="With --prompt: keep the best of this many by CLIP score."),
    steps: int = typer.Option(4, "--steps", help="With --prompt: diffusion steps."),
    guidance: float = typer.Option(2.0, "--guidance", "-g", help="With --prompt: classifier-free guidance scale."),
    truncation: float = typer.Option(1.0, "--truncation", "-t", help="Truncation of --prompt (prior) and --seeds (mapping) latents."),
    sampler: str = typer.Option("reference", "--sampler", help="With --prompt: reference, ddpm or ddim."),
    eta: float = typer.Option(0.0, "--eta", help="With --prompt and --sampler ddim: the DDIM eta."),
    out: Path = typer.Option(Path(DEFAULT_OUT), "--out", "-o", help="Output folder (never overwrites)."),
    frames: bool = typer.Option(True, "--frames/--no-frames", help="Also write one image per strength."),
    save_latents: bool = typer.Option(False, "--save-latents", help="Write the edited latents (.npz key w [T, num_ws, w_dim])."),
    model: str = typer.Option("ffhq", "--model", "-m", help="Model bundle (ffhq, lhq)."),
    generator: Optional[str] = typer.Option(None, "--generator", help="StyleGAN: registry name, .pkl/.safetensors path or URL."),
    prior: Optional[str] = typer.Option(None, "--prior", help="With --prompt: the prior (name, path or URL)."),
    clip: Optional[str] = typer.Option(None, "--clip", help="With --prompt: the CLIP model (ARCH:PRETRAINED, hf-hub:…, local-dir:…)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA), float32, float16, bfloat16."),
    batch_size: int = typer.Option(
        1, "--batch-size", "-b",
        help="Frames synthesised at once. 1 renders each alone, as `c2l sample` does, so strength 0 is pixel-identical "
        "to the sampled image; larger is faster on a GPU but may differ in the last float bits.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
) -> None:
    """Edit latents along directions (see EDIT_HELP)."""
    from ..errors import UsageError
    from ..latents import parse_direction_spec, parse_strengths

    # ---- parse and validate everything before loading a model
    specs = [parse_direction_spec(d) for d in (direction or [])]
    if not specs:
        raise UsageError("give at least one --direction (age, smile, pose or a direction file)")
    sweep = parse_strengths(strengths)
    prompts = [p for p in (prompt or [])]
    if any(not p.strip() for p in prompts):
        raise UsageError("--prompt is empty")
    seed_list = parse_seeds(seeds) if seeds is not None else []
    files = list(latents or [])
    if not files and not prompts and not seed_list:
        raise UsageError("nothing to edit: give latent files, --prompt or --seeds")
    for f in files:
        if not Path(f).expanduser().is_file():
            raise UsageError(f"latent file {str(f)!r} does not exist")
    from ..pipeline import random_seed

    sampler = check_sampling(steps=steps, guidance=guidance, sampler=sampler, eta=eta, truncation=truncation,
                             candidates=candidates, batch_size=batch_size)
    check_seed(seed)
    if prompts and seed is None:
        seed = random_seed()
    out = check_out_dir(Path(out).expanduser())

    _run_edit(
        specs=specs,
        sweep=sweep,
        orthogonal=orthogonalize,
        files=files,
        prompts=prompts,
        seed_list=seed_list,
        seed=seed,
        candidates=candidates,
        steps=steps,
        guidance=guidance,
        truncation=truncation,
        sampler=sampler,
        eta=eta,
        out=out,
        frames=frames,
        save_latents=save_latents,
        model=model,
        generator=generator,
        prior=prior,
        clip=clip,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        json_out=json_out,
    )


def _run_edit(**o: Any) -> None:
    import torch

    from ..devices import resolve_device, resolve_dtype
    from ..images import RECIPE_KEY, make_grid, save_image, slugify, to_pil, unique_path
    from ..latents import apply_edit, combine_offsets, load_direction, load_latents, orthogonalize, save_latents
    from ..latents import strength_label
    from .output import info, print_json, print_line

    dev = resolve_device(o["device"])
    dt = resolve_dtype(o["dtype"], dev)

    # ---- directions are read before any model is loaded (an unknown name fails fast)
    directions = [load_direction(s.source) for s in o["specs"]]

    # ---- the generator (and, for --prompt, the whole pipeline)
    if o["prompts"]:
        from ..pipeline import Pipeline

        pipe = Pipeline.from_sources(
            o["model"], o["generator"], o["prior"], o["clip"], device=dev, dtype=dt, progress=info
        )
    else:
        from .. import registry

        source = o["generator"] or registry.bundle(o["model"]).generator
        info(f"loading generator {source}")
        pipe = load_generator_pipeline(source, dev, dt)
    G = pipe.generator
    num_ws, w_dim = int(G.num_ws), int(G.w_dim)
    for d in directions:
        d.check(w_dim, num_ws)  # a direction for another model is an error, never a broadcast
    offsets = [d.offset(num_ws, s.layers) for d, s in zip(directions, o["specs"])]  # each (num_ws, w_dim)
    if o["orthogonal"]:
        offsets = orthogonalize(offsets, [s.text for s in o["specs"]])
    offset = combine_offsets(offsets, [s.strength for s in o["specs"]])  # (num_ws, w_dim)

    # ---- the latents to edit: (stem, ws [num_ws, w_dim], where it came from)
    items: list[tuple[str, torch.Tensor, dict[str, Any]]] = []
    for f in o["files"]:
        ws = load_latents(f, num_ws=num_ws, w_dim=w_dim)  # (N, num_ws, w_dim)
        stem = Path(f).stem
        for i in range(ws.shape[0]):
            src = {"type": "latents", "path": str(Path(f).expanduser().resolve()), "index": i}
            items.append((stem if ws.shape[0] == 1 else f"{stem}-{i}", ws[i], src))
    if o["seed_list"]:
        ws = pipe.random_ws(o["seed_list"], o["truncation"]).float().cpu()  # (S, num_ws, w_dim)
        for s, w in zip(o["seed_list"], ws):
            items.append((f"seed{s:04d}", w, {"type": "seed", "seed": s, "truncation": o["truncation"]}))
    if o["prompts"]:
        res = pipe.sample(
            o["prompts"], num_images=1, candidates=o["candidates"], seed=o["seed"], steps=o["steps"],
            guidance=o["guidance"], truncation=o["truncation"], sampler=o["sampler"], eta=o["eta"],
            batch_size=max(8, o["batch_size"]), progress=info,  # kept images are rendered alone anyway
        )
        for i, item in enumerate(res.items):
            src = {"type": "prompt", "recipe": pipe.recipe(res, i)}
            items.append((f"{slugify(item.prompt or 'prompt')}-{res.seed}", res.ws[i].float().cpu(), src))

    sweep = o["sweep"]
    labels = [strength_label(t) for t in sweep]
    all_ws = torch.stack([w for _, w, _ in items])  # (N, num_ws, w_dim)
    edited = apply_edit(all_ws, offset, sweep)  # (N, T, num_ws, w_dim)
    n, t = edited.shape[:2]
    info(f"rendering {n} latent{'s' if n != 1 else ''} × {t} strength{'s' if t != 1 else ''} on {dev}")
    images = pipe.synthesize(edited.reshape(n * t, num_ws, w_dim), batch_size=o["batch_size"]).float().cpu()
    pil = to_pil(images)

    recipe_common = {
        **base_recipe("edit"),
        "models": pipe.models,
        "directions": [
            {**s.as_dict(), "name": d.name, "space": d.space, "path": str(d.path) if d.path else None,
             "sha256": _sha_or_none(d.path)}
            for d, s in zip(directions, o["specs"])
        ],
        "orthogonalize": bool(o["orthogonal"]),
        "strengths": sweep,
        "noise_mode": "const",
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
    }
    out_dir = Path(o["out"]).expanduser()
    report: list[dict[str, Any]] = []
    written: list[Path] = []
    frame_suffixes = [f"-s{lab}.png" for lab in labels] if o["frames"] else []
    for idx, (stem, _, src) in enumerate(items):
        also = frame_suffixes + (["-edits.npz"] if o["save_latents"] else [])
        strip_path = unique_path(out_dir, stem, "-strip.png", also=also)
        base = strip_path.name[: -len("-strip.png")]
        cells = pil[idx * t : (idx + 1) * t]
        recipe = {**recipe_common, "input": src}
        save_image(make_grid(cells, ncols=t, labels=labels), strip_path, metadata={RECIPE_KEY: recipe})
        entry: dict[str, Any] = {"input": src, "strip": str(strip_path), "frames": [], "latents": None}
        written.append(strip_path)
        if o["frames"]:
            for k, (lab, value) in enumerate(zip(labels, sweep)):
                fp = out_dir / f"{base}-s{lab}.png"
                save_image(cells[k], fp, metadata={RECIPE_KEY: {**recipe, "strength": value}})
                entry["frames"].append({"strength": value, "path": str(fp)})
                written.append(fp)
        if o["save_latents"]:
            lp = save_latents(out_dir / f"{base}-edits.npz", edited[idx], strengths=torch.tensor(sweep))
            entry["latents"] = str(lp)
            written.append(lp)
        report.append(entry)

    if o["json_out"]:
        print_json({
            "command": "edit",
            "outputs": report,
            "directions": [{**d.as_dict(), **s.as_dict()} for d, s in zip(directions, o["specs"])],
            "strengths": sweep,
            "orthogonalize": bool(o["orthogonal"]),
            "models": pipe.models,
            "num_ws": num_ws,
            "w_dim": w_dim,
        })
    else:
        for p in written:
            print_line(str(p))


def _sha_or_none(path: Optional[Path]) -> Optional[str]:
    if path is None or not Path(path).is_file():
        return None
    from .. import cache

    return cache.sha256_of(path)
