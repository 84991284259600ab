"""`c2l train DATA --out RUN`: train a diffusion prior on `c2l gen-data` pairs (paper §4.2), DDP under torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `train` to *app*."""
    app.command("train")(train_cmd)


def train_cmd(
    data: Path = typer.Argument(..., help="Dataset folder written by `c2l gen-data`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (must not exist unless --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file: TOML (Python ≥ 3.11) or JSON, flat keys."),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override one config key: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint, exactly."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun: one GPU per rank)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check of the data shards."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as JSON and exit."),
    json_out: bool = typer.Option(False, "--json", help="Print the final summary as JSON on stdout."),
) -> None:
    """Train a clip2latent prior on (W, CLIP embedding) pairs; keeps RUN/best (by validation CLIP score) and RUN/latest."""
    from .. import distributed as D
    from ..train import TrainConfig, build_config, parse_sets, train
    from .output import info, print_json, print_line

    sets = list(set_ or [])
    if resume:
        if config is not None:
            raise_usage("--config cannot be combined with --resume (the run's saved config is used; --set may change "
                        + ", ".join(TrainConfig.RESUMABLE) + ")")
        overrides = parse_sets(sets)
        # type-check the overrides against the config fields (unknown keys → UsageError listing the valid ones)
        build_config(overrides)
        cfg = TrainConfig()
    else:
        overrides = {}
        cfg = build_config(file=config, sets=sets)
    if print_config:
        print_json(cfg.to_dict())
        return
    dist = D.init_from_env(device)
    try:
        total = cfg.max_steps
        if resume:
            total = int(overrides.get("max_steps") or _saved_max_steps(out) or 0) or None
        with _Progress(enabled=dist.is_main, total=total) as bar:
            result = train(
                data,
                out,
                cfg,
                resume=resume,
                resume_overrides={k: v for k, v in overrides.items()},
                dist=dist,
                verify_data=not no_verify,
                on_log=bar.record,
                on_status=info,
            )
        if dist.is_main:
            summary = {
                "run": str(result.run),
                "step": result.step,
                "last_loss": result.last_loss,
                "best_score": result.best_score,
                "best_step": result.best_step,
                "steps_per_s": round(result.steps_per_s, 3),
                "best": str(result.run / "best") if (result.run / "best").is_dir() else None,
                "latest": str(result.run / "latest"),
                "world_size": dist.world_size,
            }
            if json_out:
                print_json(summary)
            else:
                best = f"; best val CLIP {result.best_score:.4f} at step {result.best_step}" if result.best_score is not None else ""
                loss = f"; loss {result.last_loss:.5f}" if result.last_loss is not None else ""
                print_line(f"{result.run}: step {result.step}{loss}{best}; prior in {summary['best'] or summary['latest']}")
    finally:
        D.cleanup(dist)


def _saved_max_steps(run: Path) -> int | None:
    import json

    try:
        return int(json.loads((run / "config.json").read_text())["train"]["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def raise_usage(message: str) -> None:
    from ..errors import UsageError

    raise UsageError(message)


class _Progress:
    """One Rich progress line on stderr: step / max, steps/s, loss, last validation score (rank 0)."""

    def __init__(self, *, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self._progress = None
        self._task = None

    def __enter__(self) -> "_Progress":
        return self

    def _start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .output import stderr_console

        self._progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} step/s  loss {task.fields[loss]}  val {task.fields[val]}"),
            TimeElapsedColumn(),
            console=stderr_console(),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("train", total=self.total, rate="-", loss="-", val="-")

    def record(self, rec: dict) -> None:
        if not self.enabled:
            return
        if self._progress is None:  # started on the first record, so that errors are not preceded by a bar
            self._start()
        fields = {}
        if "loss" in rec:
            fields["loss"] = f"{rec['loss']:.5f}"
            fields["rate"] = f"{rec.get('steps_per_s', 0):.2f}"
        if "val_text_clip" in rec:
            fields["val"] = f"{rec['val_text_clip']:.4f}"
        self._progress.update(self._task, completed=int(rec.get("step", 0)), **fields)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
