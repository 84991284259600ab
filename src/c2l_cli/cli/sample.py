"""`c2l sample`: text (or an image) → images, with the paper's pipeline (§4.3). See docs/sample.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

# Defaults of the controls (the paper's). Options default to None so --replay can tell which
# ones were given on the command line (those override the recipe).
DEFAULTS = {
    "steps": 4,
    "guidance": 2.0,
    "sampler": "reference",
    "eta": 0.0,
    "truncation": 1.0,
    "candidates": 16,
    "num_images": 1,
    "style_mix": None,
    "batch_size": 8,
}
FORMAT_CHOICES = ("png", "jpg", "webp")


def read_prompts_file(path: str) -> list[str]:
    """Prompts from a file (``-`` = stdin): one per line, blank lines and ``#`` comments skipped."""
    from ..errors import C2LError

    if path == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise C2LError(f"cannot read prompts file {path}: no such file") from None
        except IsADirectoryError:
            raise C2LError(f"cannot read prompts file {path}: it is a folder") from None
        except UnicodeDecodeError:
            raise C2LError(f"cannot read prompts file {path}: not UTF-8 text") from None
        except OSError as exc:
            raise C2LError(f"cannot read prompts file {path}: {exc.strerror or exc}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def check_image(path: str) -> Path:
    """The conditioning image must be a readable image file (runtime error otherwise)."""
    from PIL import Image, UnidentifiedImageError

    from ..errors import C2LError

    p = Path(path).expanduser()
    try:
        with Image.open(p) as im:
            im.load()
    except FileNotFoundError:
        raise C2LError(f"cannot read --image {path}: no such file") from None
    except UnidentifiedImageError:
        raise C2LError(f"cannot read --image {path}: not an image file") from None
    except (OSError, ValueError) as exc:
        raise C2LError(f"cannot read --image {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return p


def check_out_dir(out: Path) -> Path:
    """Create the output folder and prove it is writable, before any model is loaded."""
    import os
    import tempfile

    from ..errors import C2LError

    try:
        if out.exists() and not out.is_dir():
            raise C2LError(f"cannot write to output folder {out}: it is a file")
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".c2l-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except C2LError:
        raise
    except OSError as exc:
        raise C2LError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


def _value(given: Any, key: str, base: dict) -> Any:
    return given if given is not None else base[key]


def register(app: typer.Typer) -> None:
    """Add ``sample`` to *app*."""

    @app.command("sample")
    def sample(
        prompts: Optional[List[str]] = typer.Argument(None, help="Text prompts (each gives its own images).", show_default=False),
        prompts_file: Optional[str] = typer.Option(None, "--prompts-file", "-f", metavar="FILE", help="Read prompts from FILE, one per line ('-' = stdin; blank lines and # comments skipped)."),
        image: Optional[str] = typer.Option(None, "--image", metavar="PATH", help="Condition on this image's CLIP embedding ('more like this'); with a prompt, mixed by --image-weight."),
        image_weight: Optional[float] = typer.Option(None, "--image-weight", metavar="W", help="Weight of --image when mixed with text prompts, in [0, 1] (0 = text only, 1 = image only). (default 0.5)", show_default=False),
        model: str = typer.Option("ffhq", "--model", "-m", metavar="NAME", help="Model bundle from the registry (ffhq, lhq)."),
        generator: Optional[str] = typer.Option(None, "--generator", metavar="SRC", help="StyleGAN generator: registry name, path (.pkl or c2l format) or URL (overrides --model)."),
        prior: Optional[str] = typer.Option(None, "--prior", metavar="SRC", help="Diffusion prior: registry name, path (.ckpt or c2l format) or URL (overrides --model)."),
        clip: Optional[str] = typer.Option(None, "--clip", metavar="SPEC", help="CLIP model: ARCH:PRETRAINED, hf-hub:ORG/REPO or local-dir:PATH (overrides --model)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", "-g", help="Classifier-free guidance scale (>= 0). (default 2.0)", show_default=False),
        steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (the reference sampler needs a divisor of 1000). (default 4)", show_default=False),
        sampler: Optional[str] = typer.Option(None, "--sampler", metavar="reference|ddpm|ddim", help="Sampler: reference (clip2latent's), ddpm or ddim. (default reference)", show_default=False),
        eta: Optional[float] = typer.Option(None, "--eta", help="DDIM eta (0 = deterministic); only with --sampler ddim. (default 0.0)", show_default=False),
        truncation: Optional[float] = typer.Option(None, "--truncation", "-t", help="Truncation toward the prior's mean W, in [0, 2] (1 = none). (default 1.0)", show_default=False),
        candidates: Optional[int] = typer.Option(None, "--candidates", "-c", help="Candidates sampled per prompt; the best --num-images by CLIP score are kept. (default 16)", show_default=False),
        num_images: Optional[int] = typer.Option(None, "--num-images", "-n", help="Images kept per prompt. (default 1)", show_default=False),
        style_mix: Optional[int] = typer.Option(None, "--style-mix", metavar="K", help="Style mixing: ws layers >= K come from a random W (lighting/colour variety)."),
        seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Run seed (default: random; always recorded)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images synthesised and scored at once (does not change results). (default 8)", show_default=False),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on CUDA, else float32), float32, float16, bfloat16."),
        out: Path = typer.Option(Path("c2l-out"), "--out", "-o", metavar="DIR", help="Output folder (created if needed)."),
        fmt: str = typer.Option("png", "--format", metavar="png|jpg|webp", help="Image file format (recipes are kept in all three)."),
        size: Optional[int] = typer.Option(None, "--size", metavar="PX", help="Downscale images to this many pixels on the longest side."),
        grid: bool = typer.Option(False, "--grid", help="Also write one contact sheet of the run."),
        save_latents: bool = typer.Option(False, "--save-latents", help="Also write each image's ws as .npz (key w, [1, num_ws, w_dim]) for c2l edit."),
        replay: Optional[Path] = typer.Option(None, "--replay", metavar="IMAGE", help="Regenerate an image from the recipe stored in it (options given here override it)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document (files, prompts, seeds, scores, settings) on stdout."),
    ) -> None:
        """Text (or an image) to images: CLIP → diffusion prior → StyleGAN → CLIP re-ranking."""
        args = dict(locals())  # exactly the options, by name
        import warnings

        from .output import warn

        with warnings.catch_warnings():
            # library warnings (e.g. a prompt truncated to CLIP's context) as one `warning:` line each
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_a, **_k: warn(str(message))  # restored on exit
            run_sample(**args)


def run_sample(
    *, prompts, prompts_file, image, image_weight, model, generator, prior, clip, guidance, steps, sampler, eta,
    truncation, candidates, num_images, style_mix, seed, batch_size, device, dtype, out, fmt, size, grid,
    save_latents, replay, json_out,
) -> None:
    """The body of ``c2l sample``: parse and validate, load, sample, write, render."""
    from ..errors import UsageError
    from .output import info

    controls = {
        "steps": steps, "guidance": guidance, "sampler": sampler, "eta": eta, "truncation": truncation,
        "candidates": candidates, "num_images": num_images, "style_mix": style_mix, "batch_size": batch_size,
    }
    fmt_key = fmt.strip().lower()
    if fmt_key == "jpeg":
        fmt_key = "jpg"
    if fmt_key not in FORMAT_CHOICES:
        raise UsageError(f"unknown --format {fmt!r} (use png, jpg or webp)")
    if size is not None and size < 1:
        raise UsageError(f"--size must be a positive number of pixels, got {size}")
    if seed is not None and seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if image_weight is not None and not 0.0 <= image_weight <= 1.0:
        raise UsageError(f"--image-weight must be in [0, 1], got {image_weight}")

    recipe = None
    if replay is not None:
        from ..images import read_recipe

        if prompts or prompts_file or image or candidates is not None or num_images is not None or seed is not None:
            raise UsageError("--replay takes the prompt, image and seed from the recipe: drop prompts, --prompts-file, --image, --seed, --candidates and --num-images")
        recipe = read_recipe(replay)
        settings_base = {**DEFAULTS, **{k: v for k, v in (recipe.get("settings") or {}).items() if k in DEFAULTS}}
    else:
        settings_base = dict(DEFAULTS)
    values = {k: _value(v, k, settings_base) for k, v in controls.items()}
    if values["sampler"] is not None:
        values["sampler"] = str(values["sampler"]).strip().lower()

    from ..pipeline import SampleSettings, validate_settings

    settings = SampleSettings(**values)
    validate_settings(settings)  # model-independent checks, before anything is loaded

    prompt_list: list[str] = []
    image_path: Optional[Path] = None
    if recipe is None:
        prompt_list = list(prompts or [])
        if prompts_file:
            prompt_list += read_prompts_file(prompts_file)
        for p in prompt_list:
            if not p.strip():
                raise UsageError("empty prompt: give some text to condition on")
        if image_weight is not None and image is None:
            raise UsageError("--image-weight needs --image")
        if not prompt_list and image is None:
            if prompts_file:
                raise UsageError(f"no prompts in {prompts_file} (blank lines and # comments are skipped)")
            raise UsageError("give a prompt, --prompts-file or --image (or --replay IMAGE)")
        if image is not None:
            image_path = check_image(image)

    from ..devices import resolve_device, resolve_dtype

    dev = resolve_device(device)  # CUDA asked for but absent → DeviceError before loading
    resolve_dtype(dtype, dev)  # a bad --dtype is a usage error before loading
    out_dir = check_out_dir(out.expanduser())

    from ..pipeline import Pipeline

    if recipe is not None:
        models = recipe.get("models") or {}
        generator = generator or (models.get("generator") or {}).get("source")
        prior = prior or (models.get("prior") or {}).get("source")
        clip = clip or (models.get("clip") or {}).get("spec")
    pipe = Pipeline.from_sources(model, generator, prior, clip, device=dev, dtype=dtype, progress=info)

    if size is not None and size > pipe.resolution:
        raise UsageError(f"--size {size} is larger than the generator's {pipe.resolution} px; --size only downscales")
    if recipe is not None:
        _warn_changed_models(recipe.get("models") or {}, pipe.models)
        overrides = {k: values[k] for k, v in controls.items() if v is not None}
        result = pipe.replay(recipe, overrides=overrides, progress=info)
    else:
        result = pipe.sample(
            prompt_list or None,
            num_images=settings.num_images,
            candidates=settings.candidates,
            seed=seed,
            steps=settings.steps,
            guidance=settings.guidance,
            truncation=settings.truncation,
            sampler=settings.sampler,
            eta=settings.eta,
            style_mix=settings.style_mix,
            batch_size=settings.batch_size,
            image=str(image_path) if image_path is not None else None,
            image_weight=image_weight,
            progress=info,
        )

    doc = write_outputs(pipe, result, out_dir, fmt=fmt_key, size=size, grid=grid, save_latents=save_latents,
                        replay_of=recipe, replay_path=replay)
    render(doc, json_out)


def _warn_changed_models(recorded: dict, loaded: dict) -> None:
    from .output import warn

    for key in ("generator", "prior", "clip"):
        want = (recorded.get(key) or {}).get("sha256")
        got = (loaded.get(key) or {}).get("sha256")
        if want and got and want != got:
            warn(f"the {key} differs from the one in the recipe (sha256 {got[:12]}… ≠ {want[:12]}…): the image will differ")


def write_outputs(pipe, result, out_dir: Path, *, fmt: str, size: Optional[int], grid: bool, save_latents: bool,
                  replay_of: Optional[dict] = None, replay_path: Optional[Path] = None) -> dict:
    """Write images (+ recipes), latents, the grid and the run manifest; return the manifest document."""
    import datetime

    import numpy as np

    from .._version import __version__
    from ..fsutil import atomic_path, write_json_atomic
    from ..images import FORMATS, RECIPE_KEY, make_grid, resize_to, save_image, slugify, unique_path
    from .output import info

    suffix = FORMATS[fmt][1]
    pils = result.pil()
    files = []
    info(f"saving {len(pils)} image{'s' if len(pils) != 1 else ''} to {out_dir}")
    for i, (im, item) in enumerate(zip(pils, result.items)):
        if item.prompt:
            slug = slugify(item.prompt)
        elif result.image_condition and result.image_condition.get("path"):
            slug = slugify("like " + Path(result.image_condition["path"]).stem)
        else:
            slug = "image"
        index = i if replay_of is None else int(replay_of.get("index", replay_of.get("rank", 0)))
        stem = f"{slug}-{result.seed}-{index}"
        path = unique_path(out_dir, stem, suffix, also=[".npz"] if save_latents else [])
        extra: dict = {"index": index}  # the image's number in its run (the file name's last part)
        if replay_of is not None:
            extra["replay_of"] = str(Path(replay_path).resolve()) if replay_path is not None else None
        recipe = pipe.recipe(result, i, extra=extra)
        meta = {RECIPE_KEY: recipe, "c2l:prompt": item.prompt or "", "c2l:seed": str(result.seed),
                "Software": f"c2l {__version__}"}
        save_image(im, path, metadata=meta, format=fmt, size=size)
        entry = {
            "path": str(path),
            "prompt": item.prompt,
            "prompt_index": item.prompt_index,
            "rank": item.rank,
            "score": round(item.score, 6),
            "candidate_index": item.candidate_index,
            "candidate_seed": item.candidate_seed,
            "style_seed": item.style_seed,
            "latents": None,
        }
        if save_latents:
            lat = path.with_suffix(".npz")
            w = result.ws[i : i + 1].numpy().astype(np.float32)  # (1, num_ws, w_dim)
            with atomic_path(lat, suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, w=w)
            entry["latents"] = str(lat)
        files.append(entry)

    doc: dict = {
        "command": "sample" if replay_of is None else "sample --replay",
        "c2l_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": result.seed,
        "prompts": result.prompts,
        "image": result.image_condition,
        "settings": result.settings.to_dict(),
        "models": pipe.models,
        "device": str(pipe.device),
        "files": files,
        "candidate_scores": [[round(float(x), 6) for x in row] for row in result.candidate_scores],
        "grid": None,
        "manifest": None,
    }
    if grid:
        ims = [resize_to(im, size) for im in pils]
        ncols = result.settings.num_images if len(result.prompts) > 1 and result.settings.num_images > 1 else None
        labels = [f"{(f['prompt'] or 'image')} · {f['score']:.3f}" for f in files]
        sheet = make_grid(ims, ncols=ncols, labels=labels)
        gpath = unique_path(out_dir, f"grid-{result.seed}", suffix)
        save_image(sheet, gpath, format=fmt, metadata={"c2l:files": [Path(f["path"]).name for f in files]})
        doc["grid"] = str(gpath)
    mpath = unique_path(out_dir, f"run-{result.seed}", ".json")
    doc["manifest"] = str(mpath)
    write_json_atomic(mpath, doc)
    return doc


def render(doc: dict, json_out: bool) -> None:
    """stdout: a table of files with CLIP scores, or the JSON document."""
    from .output import print_json, print_line

    if json_out:
        print_json(doc)
        return
    rows = [(f["path"], f"{f['score']:.4f}", str(f["candidate_seed"]), f["prompt"] or "(image)") for f in doc["files"]]
    header = ("file", "CLIP score", "candidate seed", "prompt")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        print_line(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
    print_line(f"seed: {doc['seed']}")
    if doc.get("grid"):
        print_line(f"grid: {doc['grid']}")
    print_line(f"manifest: {doc['manifest']}")
