"""Training data for the prior: (W, CLIP image embedding) pairs in fixed-size shards (paper §4.1).

A dataset is a folder::

    manifest.json              format, config, generator/CLIP description, shapes, per-shard sha256
    shard-00000.w.npy          W  [n, w_dim]   (space "w")   or [n, 3, w_dim] (space "w3"), float32
    shard-00000.embed.npy      CLIP image embeddings [n, D], float32, un-normalised
    shard-00000.json           the shard's entry (counts, sha256): written last, marks the shard done
    images/shard-00000/…jpg    optional previews (``--save-images``)

Every ``.npy`` is a plain NumPy array (memory-mappable; no pickles). Sample *i* depends only on
``(seed, i)``: its z comes from its own ``torch.Generator`` seeded with :func:`sample_seed`, and batches
never cross shard boundaries, so the dataset is the same for any number of processes, any order of
shards, and any number of interruptions. Files are written atomically; a shard is finished when its
``.json`` entry exists and both arrays match their sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .errors import FormatError, ModelMismatchError, UsageError
from .fsutil import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    import torch

    from .distributed import DistInfo

DATA_FORMAT = "c2l-data"
DATA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPACES = ("w", "w3")

_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------------


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (SplitMix64 chained over the parts; stable across runs)."""
    h = 0x6A09E667F3BCC908
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample *index* of a dataset made with *seed*."""
    return mix_seed(seed, index)


def draw_z(seed: int, start: int, count: int, z_dim: int, n_latents: int = 1) -> "torch.Tensor":
    """z of samples ``start … start+count-1`` on the CPU: ``[count, z_dim]`` (or ``[count, n_latents, z_dim]``).

    Sample i's ``n_latents × z_dim`` standard normals come from ``torch.Generator().manual_seed(sample_seed(seed, i))``.
    """
    import torch

    out = torch.empty(count, n_latents, z_dim)
    g = torch.Generator()
    for k in range(count):
        g.manual_seed(sample_seed(seed, start + k))
        out[k] = torch.randn(n_latents, z_dim, generator=g)
    return out[:, 0] if n_latents == 1 else out  # (count, z_dim) | (count, n_latents, z_dim)


def w3_repeats(num_ws: int) -> list[int]:
    """How many of the generator's ws the coarse / mid / fine W of space ``w3`` drive (paper Appendix E).

    The published clip2latent config uses ``[4, 4, 10]`` for the 18 ws of StyleGAN2-FFHQ-1024: ws 0–3
    (4²–8²: pose, shape), 4–7 (16²–32²: features), 8–17 (64²–1024²: colour, texture). Other generators
    get the same proportions: ``round(4·num_ws/18)`` coarse and mid layers, the rest fine
    (8 ws → [2, 2, 4]; 14 → [3, 3, 8]; 16 → [4, 4, 8]).
    """
    if num_ws < 3:
        raise UsageError(f"space w3 needs a generator with at least 3 ws (this one has {num_ws})")
    a = max(1, round(4 * num_ws / 18))
    a = min(a, (num_ws - 1) // 2)
    return [a, a, num_ws - 2 * a]


# --------------------------------------------------------------------------------------------------
# Config and manifest
# --------------------------------------------------------------------------------------------------


@dataclass
class GenDataConfig:
    """What `c2l gen-data` makes. Fields marked *identity* must match when a run is resumed."""

    generator: str = "stylegan2-ffhq-1024"  # identity: the StyleGAN whose W space the prior learns (paper: FFHQ config-F)
    clip: str = "ViT-B-32:openai"  # identity: the embedding the prior is conditioned on (paper: ViT-B/32)
    n_samples: int = 1_000_000  # identity: the paper trains on 1M pairs
    shard_size: int = 10_000  # identity: samples per shard file (the unit of resume and of work split across ranks)
    space: str = "w"  # identity: "w" (one W for all layers, the paper) or "w3" (coarse/mid/fine W, Appendix E)
    seed: int = 0  # identity: sample i's z is drawn from a generator seeded with (seed, i)
    batch_size: int = 32  # images per forward pass; batches never cross shards (does not change the data)
    save_images: bool = False  # also write JPEG previews (slow, big: for inspection only)
    image_size: int = 256  # preview size in pixels (--save-images)
    # identity: "standard" CLIP preprocessing (normalised once), or "reference": clip2latent's generate_dataset.py
    # (area resize to 256, then its Clipper's area resize + double normalisation) to reproduce the published data
    clip_preprocess: str = "standard"

    IDENTITY = ("generator", "clip", "n_samples", "shard_size", "space", "seed", "clip_preprocess")

    def validate(self) -> None:
        """UsageError for values that make no sense."""
        if self.n_samples < 1:
            raise UsageError("--n-samples must be at least 1")
        if self.shard_size < 1:
            raise UsageError("--shard-size must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.space not in SPACES:
            raise UsageError(f"--space must be one of {', '.join(SPACES)} (got {self.space!r})")
        if self.image_size < 8:
            raise UsageError("--image-size must be at least 8")
        if self.seed < 0:
            raise UsageError("--seed must be non-negative")
        if self.clip_preprocess not in ("standard", "reference"):
            raise UsageError(f"--clip-preprocess must be standard or reference (got {self.clip_preprocess!r})")

    @property
    def num_shards(self) -> int:
        """Number of shards: ``ceil(n_samples / shard_size)``."""
        return -(-self.n_samples // self.shard_size)

    def shard_range(self, index: int) -> tuple[int, int]:
        """``(start, count)`` of shard *index*."""
        start = index * self.shard_size
        return start, min(self.shard_size, self.n_samples - start)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenDataConfig":
        """The config from a manifest's ``config`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def shard_name(index: int) -> str:
    """File stem of shard *index*: ``shard-00042``."""
    return f"shard-{index:05d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the dataset at *root* (FormatError when absent or not ours)."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FormatError(f"{root}: not a c2l dataset ({MANIFEST_NAME} is missing; make one with `c2l gen-data`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != DATA_FORMAT:
        raise FormatError(f"{path}: not a c2l dataset manifest (missing \"format\": \"{DATA_FORMAT}\")")
    if int(doc.get("version", 0)) > DATA_VERSION:
        raise FormatError(f"{path}: written by a newer c2l (data format version {doc.get('version')})")
    return doc


def _shard_entry_ok(root: Path, entry: dict[str, Any], *, verify: bool) -> str | None:
    """None when the shard's files exist (and, with *verify*, match their sha256); else the reason."""
    for key in ("w", "embed"):
        name = entry.get(key)
        if not isinstance(name, str):
            return f"entry has no {key} file"
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if verify and _sha256(path) != entry.get(f"{key}_sha256"):
            return f"{name} does not match its sha256 (corrupt or changed)"
    return None


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@dataclass
class GenDataResult:
    """What a `gen-data` run did."""

    root: Path
    manifest: dict[str, Any]
    made_shards: list[int] = field(default_factory=list)  # shards this process (re)made
    kept_shards: list[int] = field(default_factory=list)  # finished shards it found and verified
    redone_shards: list[int] = field(default_factory=list)  # shards found corrupt and made again
    seconds: float = 0.0
    samples_made: int = 0

    @property
    def samples_per_s(self) -> float:
        """Throughput of this process."""
        return self.samples_made / self.seconds if self.seconds > 0 else 0.0


def describe_generator(G: Any, source: str) -> dict[str, Any]:
    """The manifest's record of a generator."""
    return {
        "source": source,
        "z_dim": int(G.z_dim),
        "w_dim": int(G.w_dim),
        "num_ws": int(G.num_ws),
        "img_resolution": int(getattr(G, "img_resolution", 0) or 0),
    }


def compute_shard(
    G: Any,
    clip: Any,
    config: GenDataConfig,
    index: int,
    device: "torch.device",
    repeats: list[int],
) -> tuple[np.ndarray, np.ndarray, "torch.Tensor | None"]:
    """Make shard *index*: ``(W, embeddings, previews or None)``, in batches of ``config.batch_size``.

    W: ``G.mapping(z, truncation_psi=1)`` (no truncation, §4.1), the first of its identical ws
    ``[n, w_dim]``; for w3, three independent z mapped the same way ``[n, 3, w_dim]``, broadcast to the
    ws by *repeats*. Images: ``G.synthesis(ws, noise_mode="const")``; embeddings: ``clip.embed_image``
    (resized to CLIP's input size and normalised on the device).
    """
    import torch
    import torch.nn.functional as F

    start, count = config.shard_range(index)
    n_latents = 3 if config.space == "w3" else 1
    w_out = np.empty((count, n_latents, int(G.w_dim)), dtype=np.float32)
    e_out: np.ndarray | None = None
    previews = [] if config.save_images else None
    rep = torch.tensor(repeats, device=device)
    with torch.no_grad():
        for b0 in range(0, count, config.batch_size):
            b = min(config.batch_size, count - b0)
            z = draw_z(config.seed, start + b0, b, int(G.z_dim), n_latents).to(device)
            if n_latents == 1:
                ws = G.mapping(z, None, truncation_psi=1.0)  # (b, num_ws, w_dim)
                w = ws[:, 0]  # (b, w_dim): all ws are equal without truncation cutoff
                lat = w[:, None]  # (b, 1, w_dim)
            else:
                ws3 = G.mapping(z.reshape(b * 3, -1), None, truncation_psi=1.0)  # (3b, num_ws, w_dim)
                lat = ws3[:, 0].reshape(b, 3, -1)  # (b, 3, w_dim): coarse, mid, fine
                ws = lat.repeat_interleave(rep, dim=1)  # (b, num_ws, w_dim)
            img = G.synthesis(ws, noise_mode="const")  # (b, 3, H, W) in ~[-1, 1]
            if config.clip_preprocess == "reference":  # the reference first shrank images to its out_image_size
                emb = clip.embed_image(F.interpolate(img.float(), size=(256, 256), mode="area")).float()  # (b, D)
            else:
                emb = clip.embed_image(img).float()  # (b, D)
            if e_out is None:
                e_out = np.empty((count, emb.shape[1]), dtype=np.float32)
            w_out[b0 : b0 + b] = lat.float().cpu().numpy()
            e_out[b0 : b0 + b] = emb.cpu().numpy()
            if previews is not None:
                small = F.interpolate(img.float(), size=(config.image_size, config.image_size), mode="area")
                previews.append(((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    assert e_out is not None
    w_arr = w_out[:, 0] if n_latents == 1 else w_out
    return w_arr, e_out, (torch.cat(previews) if previews is not None else None)


def _write_shard(root: Path, index: int, start: int, w: np.ndarray, e: np.ndarray, previews: Any) -> dict[str, Any]:
    stem = shard_name(index)
    if previews is not None:
        from PIL import Image

        from .fsutil import atomic_path

        folder = root / "images" / stem
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(previews.shape[0]):
            arr = previews[k].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
            with atomic_path(folder / f"{start + k:09d}.jpg", suffix=".jpg") as tmp:
                Image.fromarray(arr).save(tmp, format="JPEG", quality=92)
    wb, eb = _npy_bytes(w), _npy_bytes(e)
    write_bytes_atomic(root / f"{stem}.w.npy", wb)
    write_bytes_atomic(root / f"{stem}.embed.npy", eb)
    entry = {
        "index": index,
        "start": start,
        "count": int(w.shape[0]),
        "w": f"{stem}.w.npy",
        "w_sha256": hashlib.sha256(wb).hexdigest(),
        "embed": f"{stem}.embed.npy",
        "embed_sha256": hashlib.sha256(eb).hexdigest(),
    }
    write_json_atomic(root / f"{stem}.json", entry)  # written last: marks the shard finished
    return entry


def _finished_entry(root: Path, config: GenDataConfig, index: int) -> tuple[dict[str, Any] | None, str | None]:
    """The shard's entry when it is finished and intact; else (None, why it must be (re)made or None if absent)."""
    path = root / f"{shard_name(index)}.json"
    if not path.is_file():
        return None, None
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, "its entry is unreadable"
    start, count = config.shard_range(index)
    if not isinstance(entry, dict) or entry.get("start") != start or entry.get("count") != count:
        return None, "its entry does not match the config"
    why = _shard_entry_ok(root, entry, verify=True)
    if why is not None:
        return None, why
    return entry, None


def _check_out_dir(root: Path, header: dict[str, Any]) -> None:
    """Refuse an OUT that holds something else or a dataset made with other settings."""
    if not root.exists():
        return
    if not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        if any(root.iterdir()):
            raise UsageError(f"{root} exists, is not empty and holds no c2l dataset; choose another OUT")
        return
    old = read_manifest(root)
    old_cfg = old.get("config") or {}
    new_cfg = header["config"]
    diffs = [k for k in GenDataConfig.IDENTITY if old_cfg.get(k) != new_cfg.get(k)]
    if diffs:
        desc = ", ".join(f"{k}: {old_cfg.get(k)!r} there, {new_cfg.get(k)!r} now" for k in diffs)
        raise UsageError(f"{root} holds a dataset made with other settings ({desc}); use the same settings to resume, or another OUT")
    for key in ("latent_shape", "embed_dim", "latent_repeats"):
        if key in old and old[key] != header.get(key):
            raise ModelMismatchError(f"{root}: its {key} {old[key]!r} differs from the current one {header.get(key)!r}")
    og, ng = old.get("generator") or {}, header["generator"]
    for key in ("z_dim", "w_dim", "num_ws"):
        if og.get(key) != ng.get(key):
            raise ModelMismatchError(f"{root}: made with a generator of {key} {og.get(key)}, the current one has {ng.get(key)}")


def generate_dataset(
    out: str | Path,
    config: GenDataConfig,
    *,
    device: "str | torch.device | None" = None,
    dist: "DistInfo | None" = None,
    G: Any = None,
    clip: Any = None,
    on_shard: Callable[[int, int, bool], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> GenDataResult:
    """Make (or finish) the dataset at *out*; under torchrun each rank makes shards ``rank, rank+world, …``.

    Re-running with the same config resumes: finished shards are re-checked against their sha256 and
    kept, missing/partial/corrupt ones are (re)made. *G* / *clip* may be passed already loaded (else
    ``config.generator`` / ``config.clip`` are loaded on *device*). *on_shard(index, count, made)* is called
    for each shard of this process, made (True) or found finished (False) (for progress); *on_status* gets one-line messages;
    *on_start()* is called once the models are loaded, just before the first shard (so rates exclude loading).
    Returns a :class:`GenDataResult`; the manifest is complete once every rank has finished.
    """
    import torch

    from . import distributed as D

    config.validate()
    root = Path(out)
    if dist is None:
        from .devices import resolve_device

        dist = D.DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
    dev = dist.device
    say = on_status or (lambda _m: None)

    error: BaseException | None = None
    try:
        if G is None:
            from .generator import load_generator

            G = load_generator(config.generator, device=dev)
        if clip is None:
            from .clip import load_clip

            clip = load_clip(config.clip, device=dev, preprocess=config.clip_preprocess)
        elif getattr(clip, "preprocess_mode", "standard") != config.clip_preprocess:
            raise UsageError(
                f"the CLIP passed in preprocesses images the {getattr(clip, 'preprocess_mode', 'standard')!r} way,"
                f" but the config asks for {config.clip_preprocess!r}"
            )
    except Exception as exc:  # noqa: BLE001 - every rank must learn of it (see D.agree)
        error = exc
    D.agree(dist, error)

    repeats = w3_repeats(int(G.num_ws)) if config.space == "w3" else [int(G.num_ws)]
    latent_shape = [3, int(G.w_dim)] if config.space == "w3" else [int(G.w_dim)]
    header = {
        "format": DATA_FORMAT,
        "version": DATA_VERSION,
        "complete": False,
        "config": config.to_dict(),
        "generator": describe_generator(G, config.generator),
        "clip": {"spec": config.clip, "dim": int(clip.dim), "image_size": int(getattr(clip, "image_size", 0) or 0),
                 "preprocess": config.clip_preprocess},
        "space": config.space,
        "latent_shape": latent_shape,
        "latent_repeats": repeats,
        "embed_dim": int(clip.dim),
        "n_samples": config.n_samples,
        "shard_size": config.shard_size,
        "num_shards": config.num_shards,
        "noise_mode": "const",
        "shards": [],
    }
    if dist.is_main:
        try:
            _check_out_dir(root, header)
            root.mkdir(parents=True, exist_ok=True)
            if not (root / MANIFEST_NAME).is_file() or not read_manifest(root).get("complete"):
                write_json_atomic(root / MANIFEST_NAME, header)
        except Exception as exc:  # noqa: BLE001
            error = exc
    D.agree(dist, error)

    result = GenDataResult(root=root, manifest=header)
    mine = list(range(dist.rank, config.num_shards, dist.world_size))
    if on_start is not None:
        on_start()
    t0 = time.perf_counter()
    try:
        for index in mine:
            entry, why = _finished_entry(root, config, index)
            if entry is not None:
                result.kept_shards.append(index)
                if on_shard is not None:
                    on_shard(index, int(entry["count"]), False)
                continue
            if why is not None:
                say(f"shard {index}: {why}; making it again")
                result.redone_shards.append(index)
            w, e, previews = compute_shard(G, clip, config, index, dev, repeats)
            start, _count = config.shard_range(index)
            _write_shard(root, index, start, w, e, previews)
            result.made_shards.append(index)
            result.samples_made += int(w.shape[0])
            if on_shard is not None:
                on_shard(index, int(w.shape[0]), True)
    finally:
        result.seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    D.barrier(dist)

    if dist.is_main:
        entries = []
        for index in range(config.num_shards):
            path = root / f"{shard_name(index)}.json"
            try:
                entries.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise FormatError(f"{path}: shard entry missing after generation ({exc})") from exc
        manifest = dict(header)
        manifest["shards"] = entries
        manifest["complete"] = True
        write_json_atomic(root / MANIFEST_NAME, manifest)
        result.manifest = manifest
    D.barrier(dist)
    if not dist.is_main:
        result.manifest = read_manifest(root)
    return result


def write_dataset(
    out: str | Path,
    w: np.ndarray,
    embed: np.ndarray,
    *,
    shard_size: int = 10_000,
    generator: dict[str, Any] | None = None,
    clip: dict[str, Any] | None = None,
    latent_repeats: list[int] | None = None,
) -> dict[str, Any]:
    """Write (W, embedding) pairs that were made elsewhere as a dataset `c2l train` reads; returns the manifest.

    *w* ``[n, w_dim]`` or ``[n, n_latents, w_dim]``, *embed* ``[n, D]`` (converted to float32).
    *generator* / *clip*: what the manifest records (``{"source", "z_dim", "w_dim", "num_ws"}`` and
    ``{"spec", "dim"}``), used by `c2l train` for validation. *out* must not hold a dataset already.
    """
    root = Path(out)
    if (root / MANIFEST_NAME).exists():
        raise UsageError(f"{root} already holds a dataset")
    w = np.asarray(w, dtype=np.float32)
    embed = np.asarray(embed, dtype=np.float32)
    if w.ndim not in (2, 3) or embed.ndim != 2 or w.shape[0] != embed.shape[0] or w.shape[0] < 1:
        raise UsageError(f"need W [n, w_dim] or [n, k, w_dim] and embeddings [n, D] with the same n >= 1 (got {w.shape}, {embed.shape})")
    n = int(w.shape[0])
    w_dim = int(w.shape[-1])
    n_latents = 1 if w.ndim == 2 else int(w.shape[1])
    gen = dict(generator or {"source": "", "z_dim": w_dim, "w_dim": w_dim, "num_ws": n_latents})
    repeats = list(latent_repeats or ([int(gen.get("num_ws", 1))] if n_latents == 1 else [1] * n_latents))
    config = GenDataConfig(
        generator=str(gen.get("source", "")),
        clip=str((clip or {}).get("spec", "")),
        n_samples=n,
        shard_size=shard_size,
        space="w" if n_latents == 1 else "w3",
    )
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(config.num_shards):
        start, count = config.shard_range(index)
        entries.append(_write_shard(root, index, start, w[start : start + count], embed[start : start + count], None))
    manifest = {
        "format": DATA_FORMAT,
        "version": DATA_VERSION,
        "complete": True,
        "config": config.to_dict(),
        "generator": gen,
        "clip": dict(clip or {"spec": "", "dim": int(embed.shape[1])}),
        "space": config.space,
        "latent_shape": list(w.shape[1:]),
        "latent_repeats": repeats,
        "embed_dim": int(embed.shape[1]),
        "n_samples": n,
        "shard_size": shard_size,
        "num_shards": config.num_shards,
        "shards": entries,
    }
    write_json_atomic(root / MANIFEST_NAME, manifest)
    return manifest


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A finished dataset, opened for reading: memory-mapped shards and what the manifest says."""

    root: Path
    manifest: dict[str, Any]
    w: list[np.ndarray]  # per shard, memory-mapped: [n, w_dim] or [n, 3, w_dim]
    embed: list[np.ndarray]  # per shard, memory-mapped: [n, D]
    starts: np.ndarray  # global index of each shard's first sample

    @property
    def n_samples(self) -> int:
        """Number of pairs."""
        return int(sum(a.shape[0] for a in self.w))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one W sample: ``(w_dim,)`` or ``(3, w_dim)``."""
        return tuple(self.w[0].shape[1:])

    @property
    def embed_dim(self) -> int:
        """CLIP embedding size D."""
        return int(self.embed[0].shape[1])

    @property
    def latent_repeats(self) -> list[int]:
        """How the W vectors broadcast to the generator's ws."""
        return [int(r) for r in self.manifest.get("latent_repeats") or [int((self.manifest.get("generator") or {}).get("num_ws", 1))]]

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays (W and embeddings)."""
        return int(sum(a.nbytes for a in self.w) + sum(a.nbytes for a in self.embed))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``start … stop-1`` (copied out of the shards) as ``(W, embed)``."""
        ws, es = [], []
        for k, s0 in enumerate(self.starts):
            s0 = int(s0)
            n = self.w[k].shape[0]
            lo, hi = max(start, s0), min(stop, s0 + n)
            if lo < hi:
                ws.append(np.asarray(self.w[k][lo - s0 : hi - s0]))
                es.append(np.asarray(self.embed[k][lo - s0 : hi - s0]))
        if not ws:
            return np.empty((0, *self.latent_shape), np.float32), np.empty((0, self.embed_dim), np.float32)
        return np.concatenate(ws), np.concatenate(es)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples at global *indices* (any order) as ``(W, embed)``."""
        idx = np.asarray(indices, dtype=np.int64)
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        w = np.empty((len(idx), *self.latent_shape), np.float32)
        e = np.empty((len(idx), self.embed_dim), np.float32)
        for k in np.unique(shard):
            sel = np.nonzero(shard == k)[0]
            local = idx[sel] - int(self.starts[k])
            w[sel] = self.w[k][local]
            e[sel] = self.embed[k][local]
        return w, e

    def iter_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each shard's ``(W, embed)`` in order (memory-mapped views)."""
        yield from zip(self.w, self.embed)

    def latent_stats(self, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (unbiased) standard deviation of W over samples ``0 … stop-1``, per dimension (float64 sums)."""
        stop = self.n_samples if stop is None else stop
        total = 0
        s1 = np.zeros(self.latent_shape, np.float64)
        s2 = np.zeros(self.latent_shape, np.float64)
        chunk = 65536
        for a in range(0, stop, chunk):
            w, _ = self.read(a, min(stop, a + chunk))
            w64 = w.astype(np.float64)
            s1 += w64.sum(0)
            total += w64.shape[0]
        mean = s1 / max(total, 1)
        for a in range(0, stop, chunk):
            w, _ = self.read(a, min(stop, a + chunk))
            d = w.astype(np.float64) - mean
            s2 += (d * d).sum(0)
        std = np.sqrt(s2 / max(total - 1, 1))
        return mean.astype(np.float32), std.astype(np.float32)


def open_dataset(path: str | Path, *, verify: bool = True) -> Dataset:
    """Open a finished dataset (FormatError/ModelMismatchError/UsageError with a clear reason otherwise).

    With *verify* every shard file's sha256 is checked against the manifest (a corrupt shard is a
    FormatError naming it). Shapes are checked against the manifest and across shards.
    """
    root = Path(path)
    if not root.exists():
        raise UsageError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder (give the folder `c2l gen-data` wrote)")
    if not (root / MANIFEST_NAME).is_file():
        if not any(root.iterdir()):
            raise FormatError(f"{root} is empty: no dataset there (make one with `c2l gen-data {root}`)")
        raise FormatError(f"{root}: not a c2l dataset ({MANIFEST_NAME} is missing; make one with `c2l gen-data`)")
    manifest = read_manifest(root)
    shards = manifest.get("shards") or []
    if not manifest.get("complete"):
        done = len(list(root.glob("shard-*.json")))
        raise FormatError(
            f"{root}: dataset is incomplete ({done} of {manifest.get('num_shards', '?')} shards finished); "
            "re-run the same `c2l gen-data` command to finish it"
        )
    if not shards:
        raise FormatError(f"{root}: the dataset has no shards")
    latent_shape = tuple(int(x) for x in manifest.get("latent_shape") or ())
    embed_dim = manifest.get("embed_dim")
    ws, es, starts = [], [], []
    expected_start = 0
    for entry in sorted(shards, key=lambda s: int(s.get("index", 0))):
        why = _shard_entry_ok(root, entry, verify=verify)
        if why is not None:
            raise FormatError(f"{root}: shard {entry.get('index')}: {why}; re-run `c2l gen-data` with the same settings to repair it")
        try:
            w = np.load(root / entry["w"], mmap_mode="r", allow_pickle=False)
            e = np.load(root / entry["embed"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FormatError(f"{root}: shard {entry.get('index')} is unreadable ({exc})") from exc
        name = f"shard {entry.get('index')}"
        if w.dtype != np.float32 or e.dtype != np.float32:
            raise FormatError(f"{root}: {name} is not float32 ({w.dtype}, {e.dtype})")
        if w.shape[0] != e.shape[0] or w.shape[0] != int(entry.get("count", -1)):
            raise FormatError(f"{root}: {name} holds {w.shape[0]} W and {e.shape[0]} embeddings, its entry says {entry.get('count')}")
        if latent_shape and tuple(w.shape[1:]) != latent_shape:
            raise ModelMismatchError(
                f"{root}: {name} has W of shape {list(w.shape[1:])}, the manifest says {list(latent_shape)} (mixed data)"
            )
        if ws and tuple(w.shape[1:]) != tuple(ws[0].shape[1:]):
            raise ModelMismatchError(f"{root}: {name} has W of shape {list(w.shape[1:])}, shard 0 has {list(ws[0].shape[1:])} (mixed data)")
        if e.ndim != 2 or (embed_dim is not None and e.shape[1] != int(embed_dim)):
            raise ModelMismatchError(f"{root}: {name} has embeddings of shape {list(e.shape[1:])}, the manifest says [{embed_dim}] (mixed data)")
        if ws and e.shape[1] != es[0].shape[1]:
            raise ModelMismatchError(f"{root}: {name} has {e.shape[1]}-d embeddings, shard 0 has {es[0].shape[1]}-d (mixed data)")
        if int(entry.get("start", -1)) != expected_start:
            raise FormatError(f"{root}: {name} starts at sample {entry.get('start')}, expected {expected_start} (a shard is missing)")
        expected_start += w.shape[0]
        ws.append(w)
        es.append(e)
        starts.append(int(entry["start"]))
    if expected_start != int(manifest.get("n_samples", expected_start)):
        raise FormatError(f"{root}: shards hold {expected_start} samples, the manifest says {manifest.get('n_samples')}")
    return Dataset(root=root, manifest=manifest, w=ws, embed=es, starts=np.asarray(starts, dtype=np.int64))
