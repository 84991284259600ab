"""Latent codes and edit directions in StyleGAN's W / W+ space: file formats and edit maths.

Latents (``load_latents``) are always returned as ``[N, num_ws, w_dim]`` float32 tensors. Accepted files:

- ``.npz`` with key ``w`` (``c2l sample --save-latents``, ``c2l edit --save-latents``, and NVIDIA's
  projector ``projected_w.npz``, which holds ``[1, num_ws, w_dim]``), or ``ws``, or a single array;
- ``.npy`` and ``.pt`` arrays of shape ``[N, num_ws, w_dim]``, ``[num_ws, w_dim]``, ``[1, w_dim]`` or
  ``[w_dim]`` (a W vector, repeated to every layer). ``.pt`` is read with ``weights_only=True``.

Directions (``load_direction``) are a :class:`Direction`: a W vector ``[w_dim]`` (applies to every
layer) or a W+ array ``[num_ws, w_dim]`` (one vector per layer). Accepted sources: the built-in names
``age``, ``smile``, ``pose`` (the published InterFaceGAN directions for FFHQ, fetched through the
registry as ``direction-age`` …), c2l direction files (written by :func:`save_direction`), InterFaceGAN
boundary ``.npy`` files, and ``.pt``/``.npz`` arrays of shape ``[w_dim]``, ``[1, w_dim]``,
``[num_ws, w_dim]`` or ``[1, num_ws, w_dim]``.

c2l direction file: one ``.safetensors`` file holding the tensor ``direction`` (``[w_dim]`` or
``[num_ws, w_dim]``, float32) and, in the safetensors header's string metadata,
``format=c2l``, ``kind=direction``, ``version=1`` and ``metadata`` = a JSON object (prompts, models and
their sha256, space, layers, sample count, seed, …). Nothing in it is executable.

Edit maths (InterFaceGAN, Shen et al. 2020; clip2latent §5.2.3): an edit of strength ``s`` adds
``s·d`` to the chosen layers of ``w`` and leaves every other layer bit-for-bit unchanged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch

from .errors import C2LError, FormatError, ModelMismatchError, UsageError
from .fsutil import atomic_path, json_default

#: Built-in direction names → registry entries (InterFaceGAN directions for stylegan2-ffhq-1024).
BUILTIN_DIRECTIONS = {"age": "direction-age", "smile": "direction-smile", "pose": "direction-pose"}

DIRECTION_FORMAT = "c2l"
DIRECTION_KIND = "direction"
DIRECTION_VERSION = 1
DIRECTION_TENSOR = "direction"

#: Most sweep values one --strengths may ask for (each is a rendered frame per latent).
MAX_STRENGTHS = 1000

#: File suffixes read as arrays.
_ARRAY_SUFFIXES = (".npz", ".npy", ".pt", ".pth", ".safetensors")


# --------------------------------------------------------------------------------------------
# Parsing: layer ranges, strengths, direction specs (no torch needed)
# --------------------------------------------------------------------------------------------

_LAYER_PART = re.compile(r"^(\d+)(?:-(\d*))?$")


@dataclass(frozen=True)
class LayerSpec:
    """A set of W+ layers, parsed from ``all``, ``4``, ``0-7``, ``8-`` (8 to the last) or ``0-3,6,10-``.

    Ranges are inclusive at both ends. Indices are checked against ``num_ws`` by :meth:`indices`.
    """

    text: str
    parts: tuple[tuple[int, Optional[int]], ...]  # (start, stop inclusive | None = last layer); () = all

    def indices(self, num_ws: int) -> list[int]:
        """The sorted layer indices for a generator with *num_ws* layers (UsageError when out of range)."""
        if not self.parts:
            return list(range(num_ws))
        chosen: set[int] = set()
        for start, stop in self.parts:
            last = num_ws - 1 if stop is None else stop
            if start >= num_ws or last >= num_ws:
                bad = start if start >= num_ws else last
                raise UsageError(
                    f"layer {bad} in {self.text!r} is out of range: this generator has {num_ws} layers (0-{num_ws - 1})"
                )
            chosen.update(range(start, last + 1))
        return sorted(chosen)

    def mask(self, num_ws: int, device: "torch.device | str | None" = None) -> torch.Tensor:
        """A ``[num_ws]`` bool mask of the chosen layers."""
        m = torch.zeros(num_ws, dtype=torch.bool, device=device)
        m[self.indices(num_ws)] = True
        return m


def parse_layers(text: str) -> LayerSpec:
    """Parse a layer range (``all``, ``4``, ``0-7``, ``8-``, ``0-3,6``); a bad one is a UsageError."""
    raw = (text or "").strip()
    if raw.lower() in ("all", "*"):
        return LayerSpec(raw, ())
    parts: list[tuple[int, Optional[int]]] = []
    for piece in raw.split(","):
        piece = piece.strip()
        m = _LAYER_PART.match(piece)
        if not m:
            raise UsageError(
                f"bad layer range {text!r}: use 'all', a layer '4', an inclusive range '0-7', "
                "an open range '8-' or a list '0-3,6'"
            )
        start = int(m.group(1))
        if m.group(2) is None:
            stop: Optional[int] = start
        elif m.group(2) == "":
            stop = None
        else:
            stop = int(m.group(2))
            if stop < start:
                where = "" if piece == raw else f" in {text!r}"
                raise UsageError(f"bad layer range {piece!r}{where}: the end comes before the start")
        parts.append((start, stop))
    return LayerSpec(raw, tuple(parts))


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"bad {what} {text!r}: must be finite")
    return value


def parse_strengths(text: str) -> list[float]:
    """``-3,-1.5,0,1.5,3`` (a list) or ``START:STOP:COUNT`` (COUNT evenly spaced values, both ends included).

    ``-3:3:5`` → ``[-3, -1.5, 0, 1.5, 3]``; ``0:2:3`` → ``[0, 1, 2]``. A bad value is a UsageError.
    """
    raw = (text or "").strip()
    if not raw:
        raise UsageError("--strengths is empty: give a list '-3,0,3' or a range 'START:STOP:COUNT'")
    if ":" in raw:
        pieces = raw.split(":")
        if len(pieces) != 3:
            raise UsageError(f"bad strength range {text!r}: use START:STOP:COUNT, e.g. -3:3:5")
        start = _parse_float(pieces[0], "strength range start")
        stop = _parse_float(pieces[1], "strength range end")
        try:
            count = int(pieces[2])
        except ValueError:
            raise UsageError(f"bad strength range {text!r}: COUNT must be a whole number") from None
        if count < 1:
            raise UsageError(f"bad strength range {text!r}: COUNT must be at least 1")
        if count > MAX_STRENGTHS:
            raise UsageError(f"bad strength range {text!r}: at most {MAX_STRENGTHS} values")
        if count == 1:
            return [start]
        step = (stop - start) / (count - 1)
        # exact ends; round the inner points so that 0 is exactly 0 in symmetric ranges
        values = [start + i * step for i in range(count)]
        values[-1] = stop
        return [0.0 if abs(v) < 1e-12 * max(1.0, abs(step)) else v for v in values]
    values = [_parse_float(p.strip(), "strength") for p in raw.split(",") if p.strip() != ""]
    if not values:
        raise UsageError(f"bad --strengths {text!r}: no values")
    if len(values) > MAX_STRENGTHS:
        raise UsageError(f"bad --strengths: at most {MAX_STRENGTHS} values")
    return values


@dataclass(frozen=True)
class DirectionSpec:
    """A parsed ``--direction NAME|FILE[:STRENGTH][@LAYERS]``."""

    source: str  # a built-in name (age, smile, pose), a registry name, a file path or an http(s) URL
    strength: float = 1.0  # multiplies the direction before the --strengths sweep
    layers: Optional[LayerSpec] = None  # None: the direction's own layers (every layer for a W direction)
    text: str = ""  # as typed, for messages and recipes

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for recipes."""
        return {"source": self.source, "strength": self.strength, "layers": self.layers.text if self.layers else None}


_LAYERS_TAIL = re.compile(r"^(all|\*|[0-9,\-\s]+)$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _has_sep(text: str) -> bool:
    return "/" in text or "\\" in text


def parse_direction_spec(text: str) -> DirectionSpec:
    """Parse ``NAME|FILE[:STRENGTH][@LAYERS]`` from the right, so paths and URLs may contain ``:``.

    ``age`` · ``age:2`` · ``age:-1.5@0-7`` · ``smile@4-5`` · ``dirs/smile.safetensors:3`` ·
    ``C:\\dirs\\b.npy:2``. A bad strength or layer range is a UsageError.
    """
    raw = (text or "").strip()
    if not raw:
        raise UsageError("--direction is empty: give a name (age, smile, pose) or a file")
    rest, layers = raw, None
    if "@" in rest:
        head, tail = rest.rsplit("@", 1)
        if head and _LAYERS_TAIL.match(tail.strip()):
            layers = parse_layers(tail)
            rest = head
        elif head and not _has_sep(tail) and not Path(raw).expanduser().exists():
            raise UsageError(
                f"bad layer range {tail!r} in --direction {text!r}: write NAME[:STRENGTH][@LAYERS] "
                "with LAYERS like 0-7, 4, 8- or all"
            )
    strength = 1.0
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        tail_s = tail.strip()
        if head and _NUMBER.match(tail_s):
            strength = _parse_float(tail_s, "direction strength")
            rest = head
        elif len(head) > 1 and not _has_sep(tail_s) and not Path(rest).expanduser().exists():
            raise UsageError(f"bad strength {tail!r} in --direction {text!r}: not a number")
    return DirectionSpec(source=rest.strip(), strength=strength, layers=layers, text=raw)


# --------------------------------------------------------------------------------------------
# Directions
# --------------------------------------------------------------------------------------------


@dataclass
class Direction:
    """An edit direction: ``vector`` is ``[w_dim]`` (W space, applies to every layer) or ``[num_ws, w_dim]`` (W+)."""

    name: str  # short name for labels ("age", a file's stem)
    vector: torch.Tensor  # float32, on the CPU unless moved
    source: str = ""  # where it came from (name, path or URL)
    path: Optional[Path] = None  # the local file it was read from
    metadata: dict[str, Any] = field(default_factory=dict)  # c2l direction files: prompts, models, …

    @property
    def space(self) -> str:
        """``"w"`` for one vector for every layer, ``"w+"`` for one vector per layer."""
        return "w" if self.vector.ndim == 1 else "w+"

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def num_ws(self) -> Optional[int]:
        """The number of layers of a W+ direction; None for a W direction."""
        return int(self.vector.shape[0]) if self.vector.ndim == 2 else None

    @property
    def layers(self) -> Optional[list[int]]:
        """The layers a saved direction was restricted to (``c2l direction --layers``), else None."""
        layers = self.metadata.get("layers")
        return [int(i) for i in layers] if isinstance(layers, list) else None

    def check(self, w_dim: int, num_ws: int) -> None:
        """ModelMismatchError unless this direction fits a generator with *w_dim* and *num_ws*."""
        if self.w_dim != w_dim:
            raise ModelMismatchError(
                f"direction {self.name!r} ({self.source or self.name}) has w_dim {self.w_dim} but the generator's "
                f"w_dim is {w_dim}: it was made for another model"
            )
        if self.num_ws is not None and self.num_ws != num_ws:
            raise ModelMismatchError(
                f"direction {self.name!r} ({self.source or self.name}) is a W+ direction for {self.num_ws} layers "
                f"but the generator has {num_ws} ws: it was made for another model"
            )

    def offset(
        self,
        num_ws: int,
        layers: Optional[LayerSpec] = None,
        *,
        device: "torch.device | str | None" = None,
    ) -> torch.Tensor:
        """The ``[num_ws, w_dim]`` float32 offset of strength 1: the direction on the chosen layers, 0 elsewhere.

        *layers* None: every layer for a W direction, the direction's own layers for a W+ one.
        """
        self.check(self.w_dim, num_ws)
        vec = self.vector.to(device=device, dtype=torch.float32)
        full = vec.expand(num_ws, self.w_dim).clone() if vec.ndim == 1 else vec.clone()  # (num_ws, w_dim)
        if layers is not None:
            keep = layers.mask(num_ws, device=full.device)
            full[~keep] = 0.0
        return full

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (no tensor)."""
        norms = self.vector.float().norm(dim=-1)
        return {
            "name": self.name,
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "space": self.space,
            "shape": list(self.vector.shape),
            "norm": [round(float(x), 6) for x in norms.flatten()] if norms.ndim else round(float(norms), 6),
        }


def _canonical_direction(array: torch.Tensor, where: str) -> torch.Tensor:
    """``[w_dim]``/``[1, w_dim]`` → ``[w_dim]``; ``[num_ws, w_dim]``/``[1, num_ws, w_dim]`` → ``[num_ws, w_dim]``."""
    t = array.detach().to("cpu")
    if not torch.is_floating_point(t):
        raise FormatError(f"{where}: a direction must hold floating-point numbers, not {t.dtype}")
    t = t.to(torch.float32)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim not in (1, 2) or t.numel() == 0:
        raise FormatError(
            f"{where}: a direction must have shape [w_dim], [1, w_dim], [num_ws, w_dim] or [1, num_ws, w_dim], "
            f"not {list(array.shape)}"
        )
    if not torch.isfinite(t).all():
        raise FormatError(f"{where}: the direction holds NaN or infinite values")
    return t.contiguous()


def _pick_array(arrays: dict[str, Any], keys: Sequence[str], where: str, what: str) -> Any:
    for key in keys:
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise FormatError(f"{where}: no {what} array found (expected a key among {', '.join(keys)}; found {', '.join(arrays) or 'none'})")


def _torch_load(path: Path) -> Any:
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        msg = " ".join(str(exc).split())[:300]
        raise FormatError(f"{path}: not a readable tensor file (read with weights_only=True; {msg})") from exc


def _numpy_load(path: Path) -> dict[str, Any]:
    import zipfile

    import numpy as np

    try:
        loaded = np.load(str(path), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a readable numpy file ({' '.join(str(exc).split())[:300]})") from exc
    if isinstance(loaded, np.ndarray):
        return {"": loaded}
    try:
        return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: corrupt npz file ({' '.join(str(exc).split())[:300]})") from exc
    finally:
        loaded.close()


def _as_tensor(obj: Any, where: str) -> torch.Tensor:
    import numpy as np

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiu":
            raise FormatError(f"{where}: expected a numeric array, found dtype {obj.dtype}")
        return torch.from_numpy(np.ascontiguousarray(obj))
    raise FormatError(f"{where}: expected a tensor or array, found {type(obj).__name__}")


def _sniff(path: Path) -> str:
    """The array format of a file with an unfamiliar suffix (``smile.dir``), from its first bytes."""
    import struct
    import zipfile

    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head.startswith(b"\x93NUMPY"):
        return ".npy"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise FormatError(f"{path}: corrupt zip file ({exc})") from exc
        return ".pt" if any(n.endswith("data.pkl") for n in names) else ".npz"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return ".safetensors"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save file
        return ".pt"
    return path.suffix.lower()


def _read_arrays(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """All arrays in a .npz/.npy/.pt/.safetensors file, and (for safetensors) the header metadata.

    A file with another suffix is recognised by its content.
    """
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        suffix = _sniff(path)
    if suffix in (".npz", ".npy"):
        return _numpy_load(path), {}
    if suffix in (".pt", ".pth"):
        obj = _torch_load(path)
        if isinstance(obj, torch.Tensor):
            return {"": obj}, {}
        if isinstance(obj, dict):
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors, {}
        raise FormatError(f"{path}: expected a tensor (or a dict of tensors), found {type(obj).__name__}")
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                meta = dict(fh.metadata() or {})
                return {k: fh.get_tensor(k) for k in fh.keys()}, meta
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{path}: corrupt or truncated safetensors file ({' '.join(str(exc).split())[:300]})") from exc
    raise FormatError(f"{path}: unknown file type {path.suffix!r} (expected one of {', '.join(_ARRAY_SUFFIXES)})")


def _direction_from_file(path: Path, *, name: str, source: str) -> Direction:
    from .formats.native import is_native, load_native

    if is_native(path):
        nf = load_native(path, kind=DIRECTION_KIND)
        vec = _pick_array(nf.tensors, (DIRECTION_TENSOR,), str(path), "direction")
        return Direction(name, _canonical_direction(vec, str(path)), source, nf.path, dict(nf.metadata))
    if not path.is_file():
        raise UsageError(f"direction file {str(path)!r} does not exist")
    arrays, header = _read_arrays(path)
    metadata: dict[str, Any] = {}
    if header.get("format") == DIRECTION_FORMAT:
        if header.get("kind") != DIRECTION_KIND:
            raise FormatError(f"{path}: a c2l {header.get('kind')!r} file, not a direction")
        try:
            if int(header.get("version", "0")) > DIRECTION_VERSION:
                raise FormatError(f"{path}: written by a newer c2l (direction format version {header.get('version')})")
        except ValueError:
            raise FormatError(f"{path}: bad direction format version {header.get('version')!r}") from None
        try:
            metadata = json.loads(header.get("metadata") or "{}")
        except ValueError as exc:
            raise FormatError(f"{path}: unreadable direction metadata ({exc})") from exc
        if not isinstance(metadata, dict):
            raise FormatError(f"{path}: direction metadata is not a JSON object")
    array = _pick_array(arrays, (DIRECTION_TENSOR, "boundary", "w", ""), str(path), "direction")
    vec = _canonical_direction(_as_tensor(array, str(path)), str(path))
    return Direction(name, vec, source, path, metadata)


def _looks_like_path(source: str) -> bool:
    return (
        "/" in source
        or "\\" in source
        or source.startswith(".")
        or source.startswith("~")
        or Path(source).suffix.lower() in _ARRAY_SUFFIXES
    )


def load_direction(source: Union[str, Path]) -> Direction:
    """A direction from a built-in name (``age``, ``smile``, ``pose``), a registry name
    (``direction-age``), an ``http(s)://`` URL, a c2l direction file/folder or an array file.
    Names win over files of the same name (write ``./age`` for a local file called ``age``).

    Returned on the CPU as float32. An unknown name is a UsageError; a bad file a FormatError.
    """
    src = str(source).strip()
    key = src.lower()
    # names first, as cache.resolve does (write ./age for a local file called "age")
    registry_name = BUILTIN_DIRECTIONS.get(key) or (key if key in BUILTIN_DIRECTIONS.values() else None)
    path = Path(src).expanduser()
    if registry_name is None and path.exists():
        return _direction_from_file(path, name=path.stem, source=src)
    if registry_name is not None or key.startswith(("http://", "https://")):
        from . import cache

        local = Path(cache.resolve(registry_name or src, kind="direction"))
        name = registry_name[len("direction-"):] if registry_name else Path(src.split("?")[0]).stem
        return _direction_from_file(local, name=name, source=src)
    if _looks_like_path(src):
        raise UsageError(f"direction file {src!r} does not exist")
    names = ", ".join(sorted(BUILTIN_DIRECTIONS))
    raise UsageError(f"unknown direction {src!r}: use a built-in name ({names}) or a direction file")


def save_direction(path: Union[str, Path], vector: torch.Tensor, metadata: Optional[dict[str, Any]] = None) -> Path:
    """Write a c2l direction file (``.safetensors``; see the module docstring) atomically; return its path."""
    from safetensors.torch import save_file

    target = Path(path)
    vec = _canonical_direction(vector, str(target))
    meta = dict(metadata or {})
    meta.setdefault("space", "w" if vec.ndim == 1 else "w+")
    meta.setdefault("shape", list(vec.shape))
    header = {
        "format": DIRECTION_FORMAT,
        "kind": DIRECTION_KIND,
        "version": str(DIRECTION_VERSION),
        "metadata": json.dumps(meta, sort_keys=True, default=json_default),
    }
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file({DIRECTION_TENSOR: vec.contiguous()}, str(tmp), metadata=header)
    return target


# --------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------


def load_latents(
    path: Union[str, Path],
    *,
    num_ws: Optional[int] = None,
    w_dim: Optional[int] = None,
) -> torch.Tensor:
    """Latents from a file as ``[N, num_ws, w_dim]`` float32 on the CPU.

    With *num_ws*/*w_dim* (the generator's), shapes are checked (ModelMismatchError) and a W vector
    ``[w_dim]``/``[1, w_dim]`` is repeated to every layer. Without them, a W vector is returned as
    ``[1, 1, w_dim]``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"latent file {str(path)!r} does not exist")
    arrays, _ = _read_arrays(p)
    array = _as_tensor(_pick_array(arrays, ("w", "ws", "latents", "latent", ""), str(p), "latent"), str(p))
    if not torch.is_floating_point(array):
        raise FormatError(f"{p}: latents must be floating-point numbers, not {array.dtype}")
    t = array.detach().to("cpu", torch.float32)
    shape = list(t.shape)
    if t.ndim == 1:
        t = t[None, None, :]  # (1, 1, w_dim)
    elif t.ndim == 2:
        t = t[None]  # one latent: (1, num_ws, w_dim), or a W vector (1, 1, w_dim)
    elif t.ndim != 3:
        raise FormatError(
            f"{p}: latents must have shape [w_dim], [num_ws, w_dim] or [N, num_ws, w_dim], not {shape}"
        )
    if t.shape[0] == 0:
        raise FormatError(f"{p}: the file holds no latents (shape {shape})")
    if not torch.isfinite(t).all():
        raise FormatError(f"{p}: the latents hold NaN or infinite values")
    if w_dim is not None and t.shape[-1] != w_dim:
        raise ModelMismatchError(
            f"{p}: latents of shape {shape} have w_dim {t.shape[-1]} but the generator's w_dim is {w_dim}: "
            "they were made for another model"
        )
    if num_ws is not None:
        if t.shape[1] == 1 and num_ws != 1:
            t = t.expand(t.shape[0], num_ws, t.shape[2]).clone()  # W → W+ (N, num_ws, w_dim)
        elif t.shape[1] != num_ws:
            raise ModelMismatchError(
                f"{p}: latents of shape {shape} have {t.shape[1]} ws but the generator has {num_ws}: "
                "they were made for another model"
            )
    return t.contiguous()


def save_latents(path: Union[str, Path], ws: torch.Tensor, **extra: Any) -> Path:
    """Write ``ws`` ``[N, num_ws, w_dim]`` as ``.npz`` key ``w`` (plus *extra* arrays) atomically."""
    import numpy as np

    target = Path(path)
    arrays = {"w": ws.detach().to("cpu", torch.float32).numpy()}
    for key, value in extra.items():
        arrays[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    with atomic_path(target, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return target


# --------------------------------------------------------------------------------------------
# Edit maths
# --------------------------------------------------------------------------------------------


def orthogonalize(offsets: Sequence[torch.Tensor], names: Optional[Sequence[str]] = None) -> list[torch.Tensor]:
    """Project each ``[num_ws, w_dim]`` offset off the span of the others, layer by layer, keeping its norms.

    InterFaceGAN's conditional manipulation (Shen et al. 2020, eq. 5, ``project_boundary``): moving along
    the result leaves every other direction's score ``w·d_j`` unchanged. Each direction is projected off the
    *original* others (not Gram-Schmidt), so the result does not depend on their order. Computed in
    float64; parallel directions are a UsageError.
    """
    if len(offsets) < 2:
        return [o.clone() for o in offsets]
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(len(offsets))]
    stack = torch.stack([o.to(torch.float64) for o in offsets])  # (K, num_ws, w_dim)
    out = []
    for i in range(stack.shape[0]):
        v = stack[i].clone()  # (num_ws, w_dim)
        others = torch.cat([stack[:i], stack[i + 1 :]])  # (K-1, num_ws, w_dim)
        for layer in range(v.shape[0]):
            vl = v[layer]
            norm = vl.norm()
            if norm == 0:
                continue
            basis = others[:, layer]  # (K-1, w_dim)
            basis = basis[basis.norm(dim=1) > 0]
            if basis.shape[0] == 0:
                continue
            # least-squares coefficients of vl in the span of the other directions' rows
            coef = torch.linalg.lstsq(basis.T, vl[:, None]).solution  # (K', 1)
            resid = vl - (basis.T @ coef)[:, 0]
            rnorm = resid.norm()
            if rnorm <= 1e-6 * norm:
                raise UsageError(
                    f"--orthogonalize: direction {names[i]} lies in the span of the others on layer {layer}; "
                    "nothing is left after projecting it off them"
                )
            v[layer] = resid * (norm / rnorm)
        out.append(v.to(offsets[i].dtype))
    return out


def combine_offsets(offsets: Sequence[torch.Tensor], strengths: Sequence[float]) -> torch.Tensor:
    """``Σ s_i·d_i``: one ``[num_ws, w_dim]`` offset from per-direction offsets and their strengths."""
    if not offsets:
        raise UsageError("no direction given")
    total = torch.zeros_like(offsets[0])
    for off, s in zip(offsets, strengths, strict=True):
        total = total + float(s) * off
    return total


def apply_edit(ws: torch.Tensor, offset: torch.Tensor, strengths: Sequence[float]) -> torch.Tensor:
    """``ws + t·offset`` for every sweep value ``t``: ``[N, num_ws, w_dim]`` → ``[N, T, num_ws, w_dim]``.

    Layers where *offset* is 0 are returned unchanged bit for bit, and ``t = 0`` returns ``ws`` exactly.
    """
    if ws.ndim != 3 or offset.shape != ws.shape[1:]:
        raise ModelMismatchError(
            f"an edit offset of shape {list(offset.shape)} does not fit latents of shape {list(ws.shape)}"
        )
    t = torch.tensor([float(s) for s in strengths], dtype=torch.float32, device=ws.device)  # (T,)
    delta = t[:, None, None] * offset.to(device=ws.device, dtype=torch.float32)  # (T, num_ws, w_dim)
    edited = ws.to(torch.float32)[:, None] + delta[None]  # (N, T, num_ws, w_dim)
    zero = t == 0
    if bool(zero.any()):
        edited[:, zero] = ws.to(torch.float32)[:, None]
    return edited


def direction_from_latents(
    pos_ws: torch.Tensor,
    neg_ws: torch.Tensor,
    layers: Optional[LayerSpec] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The unit direction from the mean of *neg_ws* to the mean of *pos_ws* (clip2latent Appendix F).

    Inputs ``[N, num_ws, w_dim]``. Returns ``(vector, info)``: a W vector ``[w_dim]`` with unit norm when
    every layer of the mean difference is the same (a W-space prior) and no *layers* are given; otherwise
    a W+ array ``[num_ws, w_dim]`` with unit norm on each chosen layer and 0 elsewhere (the convention of
    InterFaceGAN's W+ directions, so a strength means the same step on each layer as for a W direction).
    ``info`` holds the space, the layers and the raw distance between the means.
    """
    if pos_ws.ndim != 3 or pos_ws.shape[1:] != neg_ws.shape[1:] or neg_ws.ndim != 3:
        raise ModelMismatchError(
            f"latent sets of shapes {list(pos_ws.shape)} and {list(neg_ws.shape)} do not match"
        )
    num_ws, w_dim = int(pos_ws.shape[1]), int(pos_ws.shape[2])
    diff = pos_ws.to(torch.float64).mean(0) - neg_ws.to(torch.float64).mean(0)  # (num_ws, w_dim)
    same_layers = bool(torch.allclose(diff, diff[:1].expand_as(diff), rtol=1e-6, atol=1e-9))
    if layers is None and same_layers:
        dist = float(diff[0].norm())
        if dist == 0.0:
            raise C2LError("the two latent sets have the same mean: there is no direction between them")
        vec = (diff[0] / dist).to(torch.float32)
        return vec, {"space": "w", "layers": None, "distance": dist, "w_dim": w_dim, "num_ws": num_ws}
    chosen = layers.indices(num_ws) if layers is not None else list(range(num_ws))
    norms = diff.norm(dim=1)  # (num_ws,)
    if float(norms[chosen].min()) == 0.0:
        raise C2LError("the two latent sets have the same mean on some chosen layer: there is no direction there")
    vec = torch.zeros_like(diff)
    vec[chosen] = diff[chosen] / norms[chosen, None]
    info = {
        "space": "w+",
        "layers": chosen if layers is not None else None,
        "distance": [float(x) for x in norms[chosen]],
        "w_dim": w_dim,
        "num_ws": num_ws,
    }
    return vec.to(torch.float32), info


def strength_label(value: float) -> str:
    """``+1.5``, ``-3``, ``0``: a compact signed label for a strength."""
    if value == 0:
        return "0"
    return f"{value:+g}"


def iter_chunks(n: int, size: int) -> Iterable[slice]:
    """Slices covering ``range(n)`` in chunks of at most *size*."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
