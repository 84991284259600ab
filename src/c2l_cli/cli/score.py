"""``c2l score``: the CLIP score of images against texts (see docs/score.md).

Only Typer is imported at module level; torch, open_clip and the engine load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

#: Column names recognised in a CSV/JSONL ``--texts`` mapping file.
_PATH_KEYS = ("path", "image", "file", "filename", "img")
_TEXT_KEYS = ("text", "prompt", "caption", "texts")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def register(app: typer.Typer) -> None:
    """Add ``score`` to *app*."""
    app.command("score")(score)


def score(
    images: Optional[List[Path]] = typer.Argument(
        None,
        metavar="IMAGE...",
        help="Image files or directories (walked recursively, sorted, image extensions only).",
        show_default=False,
    ),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="The text every image is scored against."),
    texts: Optional[Path] = typer.Option(
        None,
        "--texts",
        help="A text per image: a plain file with one line per image (in order), or a .csv/.jsonl "
        "mapping image path → text (then IMAGE may be omitted).",
        show_default=False,
    ),
    clip_spec: str = typer.Option(
        "ViT-B-32:openai", "--clip", help="The CLIP judge: ARCH:PRETRAINED, hf-hub:ORG/REPO or local-dir:PATH."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per CLIP forward pass."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="Threads decoding image files [default: min(8, CPUs)].", show_default=False
    ),
    scale: Optional[float] = typer.Option(
        None,
        "--scale",
        help="Report scale·max(cos, 0) (100 = torchmetrics CLIPScore) instead of the raw cosine.",
        show_default=False,
    ),
    clip_preprocess: str = typer.Option(
        "standard", "--clip-preprocess",
        help="standard (CLIP normalisation once) or reference (clip2latent's double normalisation, as the paper's scores were computed).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (rows + summary)."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout: path,text,cosine,score,error."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Exit 0 even if some images cannot be read."),
) -> None:
    """CLIP score of each image against its text: the raw cosine similarity (or scale·max(cos, 0)), and the mean."""
    from ..errors import FormatError, UsageError

    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be used together")
    if text is not None and texts is not None:
        raise UsageError("give either --text or --texts, not both")
    if text is None and texts is None:
        raise UsageError("no text to score against: give --text TEXT or --texts FILE")
    if text is not None and not text.strip():
        raise UsageError("--text is empty")
    if scale is not None and not scale > 0:
        raise UsageError("--scale must be positive (e.g. 100)")
    clip_preprocess = clip_preprocess.strip().lower()
    if clip_preprocess not in ("standard", "reference"):
        raise UsageError(f"--clip-preprocess must be standard or reference, got {clip_preprocess!r}")

    paths = _expand_images(images or [])
    if texts is not None:
        paths, text_list = _texts_for(paths, texts, have_images=bool(images))
    else:
        text_list = [text] * len(paths)  # type: ignore[list-item]
    if not paths:
        raise UsageError("no images to score (give image files or directories containing images)")

    import warnings

    from ..clip import PromptTruncatedWarning, load_clip, score_files
    from .output import out_console, print_json, print_line, stderr_console, warn

    console = stderr_console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # scripts get clean stderr: warnings and errors only
    )
    with warnings.catch_warnings(), progress:
        warnings.simplefilter("always", PromptTruncatedWarning)
        _route_warnings(warnings, PromptTruncatedWarning, warn)
        task = progress.add_task(f"loading CLIP {clip_spec}", total=len(paths))
        clip = load_clip(clip_spec, device=device, preprocess=clip_preprocess)
        progress.update(task, description="scoring")
        results = score_files(
            clip,
            [str(p) for p in paths],
            text_list,
            batch_size=batch_size,
            workers=workers,
            progress=lambda n: progress.advance(task, n),
        )

    def scaled(cos: Optional[float]) -> Optional[float]:
        if cos is None:
            return None
        return cos if scale is None else scale * max(cos, 0.0)

    good = [r for r in results if r.error is None]
    bad = [r for r in results if r.error is not None]
    mean_cos = sum(r.cosine for r in good) / len(good) if good else None  # type: ignore[misc]
    mean_score = sum(scaled(r.cosine) for r in good) / len(good) if good else None  # type: ignore[misc]
    for r in bad:
        warn(f"cannot read {r.path}: {r.error}")

    if as_json:
        print_json(
            {
                "clip": clip.spec,
                "scale": scale,
                "rows": [
                    {"path": r.path, "text": r.text, "cosine": r.cosine, "score": scaled(r.cosine), "error": r.error}
                    for r in results
                ],
                "summary": {
                    "count": len(good),
                    "failed": len(bad),
                    "mean": mean_score,
                    "mean_cosine": mean_cos,
                },
            }
        )
    elif as_csv:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "text", "cosine", "score", "error"])
        for r in results:
            writer.writerow([r.path, r.text, _num(r.cosine), _num(scaled(r.cosine)), r.error or ""])
        print_line(buf.getvalue().rstrip("\n"))
    else:
        out_console().print(_table(results, scaled, scale, mean_score, single_text=text, spec=clip.spec))

    if bad and not skip_bad:
        raise FormatError(
            f"{len(bad)} of {len(results)} image(s) could not be read (use --skip-bad to exit 0 anyway)"
        )


def _num(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.6f}"


def _route_warnings(warnings_mod, category, sink) -> None:
    """Inside a ``catch_warnings`` block: show *category* warnings as ``warning: …`` lines on stderr."""
    previous = warnings_mod.showwarning

    def show(message, cat, filename, lineno, file=None, line=None):
        if issubclass(cat, category):
            sink(str(message))
        else:
            previous(message, cat, filename, lineno, file, line)

    warnings_mod.showwarning = show


def _table(results, scaled, scale, mean_score, *, single_text: Optional[str], spec: str):
    from rich.table import Table
    from rich.text import Text

    title = f"CLIP score ({spec})" + (f' vs "{single_text}"' if single_text is not None else "")
    table = Table(title=title, show_footer=True, title_justify="left")
    table.add_column("image", footer="mean", overflow="fold")
    if single_text is None:
        table.add_column("text", overflow="fold", max_width=60)
    label = "cosine" if scale is None else f"{scale:g}·max(cos,0)"
    footer = "" if mean_score is None else f"{mean_score:.4f}"
    table.add_column(label, justify="right", footer=footer)
    if scale is not None:
        table.add_column("cosine", justify="right")
    for r in results:
        row = [Text(r.path)]
        if single_text is None:
            row.append(Text(r.text))
        if r.error is None:
            row.append(f"{scaled(r.cosine):.4f}")
            if scale is not None:
                row.append(f"{r.cosine:.4f}")
        else:
            row.append(Text("unreadable", style="red"))
            if scale is not None:
                row.append("")
        table.add_row(*row)
    return table


def _expand_images(args: List[Path]) -> List[Path]:
    """Files as given; directories walked recursively (sorted, image extensions, hidden skipped)."""
    import os

    out: List[Path] = []
    for arg in args:
        if arg.is_dir():
            for dirpath, dirnames, filenames in os.walk(arg):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in _IMAGE_EXTENSIONS:
                        out.append(Path(dirpath) / name)
        else:
            out.append(arg)  # missing / unreadable files are reported per image, not here
    return out


def _texts_for(paths: List[Path], file: Path, *, have_images: bool):
    """Pair images with texts from ``--texts FILE`` → (paths, texts)."""
    from ..errors import FormatError, UsageError

    if not file.is_file():
        raise UsageError(f"--texts file not found: {file}")
    try:
        content = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read --texts file {file}: {exc}") from exc
    suffix = file.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl", ".ndjson"):
        pairs = _read_mapping(content, file, delimiter="\t" if suffix == ".tsv" else ",", jsonl=suffix in (".jsonl", ".ndjson"))
        return _match_mapping(paths, pairs, file, have_images=have_images)
    lines = content.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise UsageError(f"{file}:{n}: empty line (one text per image expected)")
    if not have_images:
        raise UsageError(f"{file} is a plain text file: give the images it describes (one line per image)")
    if len(lines) != len(paths):
        raise UsageError(f"{file} has {len(lines)} text line(s) but there are {len(paths)} image(s)")
    return paths, lines


def _read_mapping(content: str, file: Path, *, delimiter: str, jsonl: bool) -> List[tuple]:
    """A CSV/TSV (optional header with path/text columns) or JSONL mapping → [(path, text)]."""
    import csv
    import io
    import json

    from ..errors import FormatError

    pairs = []
    if jsonl:
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{file}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise FormatError(f"{file}:{n}: expected an object with path and text")
            pk = next((k for k in _PATH_KEYS if k in obj), None)
            tk = next((k for k in _TEXT_KEYS if k in obj), None)
            if pk is None or tk is None or not isinstance(obj[pk], str) or not isinstance(obj[tk], str):
                raise FormatError(f"{file}:{n}: expected string fields 'path' and 'text'")
            pairs.append((obj[pk], obj[tk], n))
        return pairs
    rows = [r for r in csv.reader(io.StringIO(content), delimiter=delimiter)]
    start, pcol, tcol = 0, 0, 1
    if rows:
        header = [c.strip().lower() for c in rows[0]]
        if any(k in header for k in _PATH_KEYS):
            pcol = next(header.index(k) for k in _PATH_KEYS if k in header)
            tcol = next((header.index(k) for k in _TEXT_KEYS if k in header), 1 if pcol == 0 else 0)
            start = 1
    for n, row in enumerate(rows[start:], start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(pcol, tcol):
            raise FormatError(f"{file}:{n}: expected two columns: path and text")
        pairs.append((row[pcol].strip(), row[tcol], n))
    return pairs


def _match_mapping(paths: List[Path], pairs: List[tuple], file: Path, *, have_images: bool):
    import os

    from ..errors import UsageError

    if not pairs:
        raise UsageError(f"{file} maps no image to a text")
    base = file.parent

    def candidates(p: str) -> List[Path]:
        q = Path(p).expanduser()
        return [q] if q.is_absolute() else [base / q, q]

    key = lambda p: os.path.normcase(os.path.abspath(p))  # noqa: E731
    lookup: dict = {}
    for p, t, n in pairs:
        if not t.strip():
            raise UsageError(f"{file}:{n}: empty text for {p}")
        for c in candidates(p):
            lookup.setdefault(key(c), t)
    if not have_images:
        chosen = []
        for p, _, _ in pairs:
            cands = candidates(p)
            chosen.append(next((c for c in cands if c.exists()), cands[0]))
        return chosen, [t for _, t, _ in pairs]
    out = []
    for p in paths:
        t = lookup.get(key(p))
        if t is None:
            raise UsageError(f"no text for {p} in {file}")
        out.append(t)
    return paths, out
