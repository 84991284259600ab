"""`c2l gen-data OUT`: make (W, CLIP image embedding) training pairs from a StyleGAN (paper §4.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `gen-data` to *app*."""
    app.command("gen-data")(gen_data)


def gen_data(
    out: Path = typer.Argument(..., help="Folder to write the dataset to (re-run the same command to resume)."),
    generator: Optional[str] = typer.Option(
        None, "--generator", "-g", help="StyleGAN: registry name, .pkl / c2l model path or URL. [default: the ffhq bundle's]"
    ),
    clip: Optional[str] = typer.Option(
        None, "--clip", help="CLIP model: ARCH:PRETRAINED, hf-hub:ORG/REPO or local-dir:PATH. [default: ViT-B-32:openai]"
    ),
    n_samples: int = typer.Option(1_000_000, "--n-samples", "-n", help="Number of pairs (the paper: 1M)."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Samples per shard (the unit of resume and of work split)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass."),
    space: str = typer.Option("w", "--space", help="w: one W per sample (the paper); w3: coarse/mid/fine W (Appendix E)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is drawn from (seed, i)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: one GPU per rank)."),
    save_images: bool = typer.Option(False, "--save-images", help="Also write JPEG previews under OUT/images/."),
    image_size: int = typer.Option(256, "--image-size", help="Preview size in pixels (with --save-images)."),
    clip_preprocess: str = typer.Option(
        "standard", "--clip-preprocess",
        help="standard (CLIP normalisation once) or reference (clip2latent's double normalisation: reproduces the data the published priors were trained on; docs/gen-data.md).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Generate (W, CLIP image embedding) pairs for `c2l train`, in resumable shards; under torchrun ranks split the shards."""
    from .. import distributed as D
    from ..data import GenDataConfig, generate_dataset
    from .output import info, print_json, print_line, warn

    if generator is None or clip is None:
        from ..registry import bundle

        b = bundle("ffhq")
        generator = generator or b.generator
        clip = clip or b.clip
    # local files are recorded as absolute paths, so that `c2l train` finds them from any folder
    if "://" not in generator and Path(generator).exists():
        generator = str(Path(generator).resolve())
    if clip.startswith("local-dir:") and Path(clip[len("local-dir:"):]).exists():
        clip = "local-dir:" + str(Path(clip[len("local-dir:"):]).resolve())
    config = GenDataConfig(
        generator=generator,
        clip=clip,
        n_samples=n_samples,
        shard_size=shard_size,
        space=space.strip().lower(),
        seed=seed,
        batch_size=batch_size,
        save_images=save_images,
        image_size=image_size,
        clip_preprocess=clip_preprocess.strip().lower(),
    )
    config.validate()
    dist = D.init_from_env(device)
    try:
        mine = len(range(dist.rank, config.num_shards, dist.world_size))
        total = sum(config.shard_range(i)[1] for i in range(dist.rank, config.num_shards, dist.world_size))
        if dist.is_main:
            where = f"{dist.world_size} processes" if dist.distributed else str(dist.device)
            info(f"gen-data: {config.n_samples} samples in {config.num_shards} shards → {out} ({where})")
        with _Progress(enabled=dist.is_main, total=total, label=f"rank 0: {mine} shards" if dist.distributed else "samples") as bar:
            result = generate_dataset(
                out, config, dist=dist, on_shard=bar.shard_done, on_status=warn if dist.is_main else None,
                on_start=bar.start,
            )
        if dist.is_main:
            summary = {
                "out": str(result.root),
                "n_samples": config.n_samples,
                "num_shards": config.num_shards,
                "space": config.space,
                "latent_shape": result.manifest.get("latent_shape"),
                "embed_dim": result.manifest.get("embed_dim"),
                "world_size": dist.world_size,
                "rank0_made_shards": len(result.made_shards),
                "rank0_kept_shards": len(result.kept_shards),
                "rank0_redone_shards": len(result.redone_shards),
                "rank0_samples_per_s": round(result.samples_per_s, 2),
                "seconds": round(result.seconds, 2),
            }
            if json_out:
                print_json(summary)
            else:
                kept = f", kept {len(result.kept_shards)} finished" if result.kept_shards else ""
                print_line(
                    f"{result.root}: {config.n_samples} pairs in {config.num_shards} shards "
                    f"(made {len(result.made_shards)}{kept}; {result.samples_per_s:.1f} samples/s on rank 0)"
                )
    finally:
        D.cleanup(dist)


class _Progress:
    """A Rich progress bar with samples/s on stderr (rank 0 only)."""

    def __init__(self, *, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled
        self.total = total
        self.label = label
        self._progress = None
        self._task = None
        self._made = 0
        self._t0 = 0.0

    def __enter__(self) -> "_Progress":
        import time

        self._t0 = time.perf_counter()
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            from .output import stderr_console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} samples/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, rate="-")
        return self

    def start(self) -> None:
        """Models are loaded: samples/s counts from now."""
        import time

        self._t0 = time.perf_counter()

    def shard_done(self, index: int, count: int, made: bool) -> None:
        import time

        if made:
            self._made += count
        if self._progress is None:
            return
        rate = self._made / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, advance=count, rate=f"{rate:.1f}")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
