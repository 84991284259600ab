"""``c2l models``: list, download, verify and locate the pretrained weights in the cache."""

from __future__ import annotations

from typing import List, Optional

import typer

models_app = typer.Typer(
    name="models",
    help="List, download, verify and locate pretrained weights in the cache.",
    no_args_is_help=True,
    add_completion=False,
)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to *app*."""
    app.add_typer(models_app, name="models", help="List, download, verify and locate pretrained weights in the cache.")


def _size(n: Optional[int]) -> str:
    from ..cache import _fmt_size

    return "?" if n is None else _fmt_size(n)


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of a table."),
) -> None:
    """List every registry entry and bundle: kind, size, cached or not, licence."""
    from .. import cache, registry
    from .output import out_console, print_json

    rows = [cache.status(name) for name in registry.names()]
    bundles = {
        name: {"generator": b.generator, "prior": b.prior, "clip": b.clip, "description": b.description,
               "default": name == registry.DEFAULT_BUNDLE}
        for name, b in registry.BUNDLES.items()
    }
    if as_json:
        print_json({"cache_dir": str(cache.cache_root()), "models": rows, "bundles": bundles})
        return
    from rich.table import Table

    table = Table(title=f"models (cache: {cache.cache_root()})", title_justify="left")
    for col in ("name", "kind", "size", "cached"):
        table.add_column(col, no_wrap=True)
    table.add_column("licence", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], _size(r["size"]), "yes" if r["cached"] else "no", r["licence"])
    console = out_console()
    console.print(table)
    btable = Table(title="bundles (--model NAME)", title_justify="left")
    for col in ("bundle", "generator", "prior", "clip"):
        btable.add_column(col)
    for name, b in bundles.items():
        btable.add_row(name + (" (default)" if b["default"] else ""), b["generator"], b["prior"], b["clip"])
    console.print(btable)


def _download_clip(name: str) -> str:
    """Fetch a ``clip`` entry through c2l_cli.clip (open_clip); returns the folder it lives in."""
    import importlib.util

    from .. import cache, registry
    from .output import info

    entry = registry.get(name)
    if importlib.util.find_spec("c2l_cli.clip") is None:
        raise _Skip(f"{name}: skipped (this c2l has no CLIP loader yet; open_clip fetches it on first use)")
    from ..clip import load_clip

    if not cache.is_cached(name):
        info(f"downloading {name} ({entry.spec}) through open_clip into {cache.clip_cache_dir()}")
    load_clip(entry.spec, device="cpu", dtype="float32")
    return str(cache.clip_cache_dir())


class _Skip(Exception):
    """An entry that cannot be fetched by this command (reported, not an error)."""


@models_app.command("download")
def download(
    names: List[str] = typer.Argument(
        None, metavar="NAME...", help="Registry names, bundles (ffhq, lhq) or http(s) URLs; all three of a bundle's models."
    ),
    all_: bool = typer.Option(False, "--all", help="Download every registry entry."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, path, status}."),
) -> None:
    """Download weights into the cache (verified; skipped when already cached)."""
    from .. import cache, registry
    from ..errors import UsageError
    from .output import info, print_json, print_line, warn

    if all_:
        wanted = registry.names()
    elif names:
        wanted = []
        for n in names:
            if n.startswith(("http://", "https://")):
                items = [n]
            elif registry.is_bundle_name(n) or registry.is_registry_name(n) or n in registry.DIRECTION_ALIASES:
                items = registry.expand(n)
            else:
                registry.get(n)  # UsageError listing the known names
                items = []
            wanted.extend(i for i in items if i not in wanted)
    else:
        raise UsageError("name at least one model or bundle (see `c2l models list`), or pass --all")
    results = []
    for n in wanted:
        try:
            if n.startswith(("http://", "https://")):
                path, was = str(cache.fetch_url(n)), None
            elif registry.get(n).kind == "clip":
                was = cache.is_cached(n)
                path = _download_clip(n)
            else:
                was = cache.is_cached(n)
                path = str(cache.fetch(n, with_requires=False))  # expand() listed the requires
        except _Skip as skip:
            warn(str(skip))
            results.append({"name": n, "path": None, "status": "skipped"})
            continue
        status = "cached" if was else "downloaded"
        results.append({"name": n, "path": path, "status": status})
        if not as_json:
            print_line(f"{n}\t{path}")
    if as_json:
        print_json(results)
    else:
        done = sum(r["status"] == "downloaded" for r in results)
        info(f"{len(results)} file(s): {done} downloaded, {sum(r['status'] == 'cached' for r in results)} already cached"
             + (f", {sum(r['status'] == 'skipped' for r in results)} skipped" if any(r['status'] == 'skipped' for r in results) else ""))


@models_app.command("verify")
def verify(
    remove: bool = typer.Option(False, "--remove", help="Delete files that fail (they are fetched again on next use)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of results."),
) -> None:
    """Re-hash every cached file and report; exit 1 if any file is bad."""
    from .. import cache
    from ..errors import ChecksumError
    from .output import info, out_console, print_json

    results = cache.verify(remove=remove)
    if as_json:
        print_json([r.as_dict() for r in results])
    elif results:
        from rich.table import Table

        table = Table(title=f"cache: {cache.cache_root()}", title_justify="left")
        for col in ("file", "status", "detail"):
            table.add_column(col, overflow="fold")
        root = cache.cache_root()
        for r in results:
            try:
                shown = str(r.path.relative_to(root))
            except ValueError:
                shown = str(r.path)
            status = r.status + (" (removed)" if r.removed else "")
            table.add_row(shown, status, r.detail)
        out_console().print(table)
    else:
        info(f"the cache is empty ({cache.cache_root()})")
    bad = [r for r in results if r.status == "bad"]
    if bad:
        what = "removed" if remove else "run `c2l models verify --remove` to delete them"
        raise ChecksumError(f"{len(bad)} cached file(s) failed verification ({what}): "
                            + ", ".join(r.name or r.path.name for r in bad))
    if results and not as_json:
        info(f"{len(results)} file(s) checked, none bad")


@models_app.command("path")
def path(
    name: Optional[str] = typer.Argument(None, help="Registry name or URL; without it, the cache folder."),
    download_: bool = typer.Option(False, "--download", help="Download the file first if it is not cached."),
) -> None:
    """Print the local path of a cached model (for scripts); an error if it is not cached."""
    from .. import cache, registry
    from ..errors import C2LError
    from .output import print_line

    if name is None:
        print_line(str(cache.cache_root()))
        return
    if name.startswith(("http://", "https://")):
        p = cache.url_path(name)
        if download_:
            p = cache.fetch_url(name)
        elif not p.is_file():
            raise C2LError(f"{name} is not cached (expected at {p}); run `c2l models download {name}` or pass --download")
        print_line(str(p))
        return
    key = registry.DIRECTION_ALIASES.get(name, name)
    entry = registry.get(key)
    if entry.kind == "clip":
        if download_ and not cache.is_cached(key):
            _download_clip(key)
        print_line(str(cache.clip_cache_dir()))
        return
    if download_:
        print_line(str(cache.fetch(key)))
        return
    if not cache.is_cached(key):
        raise C2LError(
            f"{key} is not cached (expected at {cache.entry_path(key)}); "
            f"run `c2l models download {key}` or pass --download"
        )
    print_line(str(cache.entry_path(key)))
