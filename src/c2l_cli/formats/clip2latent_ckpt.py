"""Reader for the published clip2latent checkpoints (``ffhq-sg2-510.ckpt``, ``lhq-sg3-410.ckpt``).

A checkpoint is ``torch.save({"state_dict": DiffusionPriorTrainer.state_dict(), "cfg": DictConfig})``.
It is read with ``torch.load(weights_only=True)``: the OmegaConf classes in ``cfg`` are replaced by inert
stand-ins (plain attribute bags, allowed only for the duration of the load) and turned into plain dicts;
omegaconf itself is never imported and nothing in the file is executed. The sidecar ``.yaml`` (the same
config) is read by a small YAML-subset parser.
"""

from __future__ import annotations

import collections
import re
import typing
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError

EMA_PREFIX = "ema_diffusion_prior.ema_model."
ONLINE_PREFIX = "diffusion_prior."


# --- inert stand-ins for the pickled omegaconf classes -------------------------------------------------------


class _Bag:
    """Attribute bag: the unpickler fills ``__dict__`` from the pickled state; nothing else runs."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class DictConfigStandIn(_Bag):
    pass


class ListConfigStandIn(_Bag):
    pass


class ValueNodeStandIn(_Bag):
    pass


class MetadataStandIn(_Bag):
    pass


_STAND_INS: list[tuple[type, str]] = [
    (DictConfigStandIn, "omegaconf.dictconfig.DictConfig"),
    (ListConfigStandIn, "omegaconf.listconfig.ListConfig"),
    (MetadataStandIn, "omegaconf.base.ContainerMetadata"),
    (MetadataStandIn, "omegaconf.base.Metadata"),
    (ValueNodeStandIn, "omegaconf.nodes.AnyNode"),
    (ValueNodeStandIn, "omegaconf.nodes.StringNode"),
    (ValueNodeStandIn, "omegaconf.nodes.IntegerNode"),
    (ValueNodeStandIn, "omegaconf.nodes.FloatNode"),
    (ValueNodeStandIn, "omegaconf.nodes.BooleanNode"),
    (ValueNodeStandIn, "omegaconf.nodes.BytesNode"),
    (ValueNodeStandIn, "omegaconf.nodes.PathNode"),
]
# Types that omegaconf metadata refers to (``ref_type``, ``object_type``, ``key_type``) and the
# ``defaultdict(dict)`` of its resolver cache. Referenced as values; harmless if called.
_PLAIN_GLOBALS: list[Any] = [typing.Any, collections.defaultdict, dict, list, int, float, str, bool]


def _to_plain(obj: Any) -> Any:
    """Stand-in containers → dicts/lists/values (unresolved ``${…}`` interpolations kept as strings)."""
    if isinstance(obj, DictConfigStandIn):
        content = obj.__dict__.get("_content")
        if content is None or isinstance(content, str):
            return content
        return {str(k): _to_plain(v) for k, v in dict(content).items()}
    if isinstance(obj, ListConfigStandIn):
        content = obj.__dict__.get("_content")
        if content is None or isinstance(content, str):
            return content
        return [_to_plain(v) for v in content]
    if isinstance(obj, ValueNodeStandIn):
        return _to_plain(obj.__dict__.get("_val"))
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


_INTERP = re.compile(r"\$\{([^}]+)\}")


def resolve_interpolations(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve absolute ``${a.b.c}`` references (as OmegaConf would); others are left as they are."""

    def lookup(path: str) -> Any:
        node: Any = cfg
        for part in path.strip().split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(path)
            node = node[part]
        return node

    def resolve(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, depth) for v in value]
        if isinstance(value, str) and depth < 16:
            m = _INTERP.fullmatch(value.strip())
            try:
                if m:
                    return resolve(lookup(m.group(1)), depth + 1)
                if _INTERP.search(value):
                    return _INTERP.sub(lambda mm: str(resolve(lookup(mm.group(1)), depth + 1)), value)
            except KeyError:
                return value
        return value

    return resolve(cfg)


@dataclass
class Clip2LatentCheckpoint:
    """What a clip2latent checkpoint holds: the EMA prior's tensors (prefix stripped) and its config."""

    tensors: "dict[str, Any]"
    cfg: dict[str, Any] | None
    path: Path


def looks_like_torch_zip(path: str | Path) -> bool:
    """True for a file written by ``torch.save`` (a zip with ``data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_checkpoint(path: str | Path) -> Clip2LatentCheckpoint:
    """Load a clip2latent ``.ckpt`` safely; returns the EMA model's tensors and the config (or None)."""
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: no such file")
    if not looks_like_torch_zip(p):
        raise FormatError(f"{p}: not a PyTorch checkpoint (expected a torch.save zip archive)")
    try:
        with torch.serialization.safe_globals([*_STAND_INS, *_PLAIN_GLOBALS]):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "Unsupported global" in ln or "error" in ln.lower()), first[0] if first else "")
        raise FormatError(f"{p}: cannot be read safely as a clip2latent checkpoint ({detail.strip()[:300]})") from exc
    if not isinstance(obj, dict) or "state_dict" not in obj or not isinstance(obj["state_dict"], dict):
        raise FormatError(f"{p}: not a clip2latent checkpoint (no 'state_dict')")
    sd = obj["state_dict"]
    ema = {k[len(EMA_PREFIX) :]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(EMA_PREFIX)}
    if not ema:
        if any(isinstance(k, str) and k.startswith(ONLINE_PREFIX) for k in sd):
            raise FormatError(f"{p}: holds no EMA weights ({EMA_PREFIX}*); the published checkpoints do")
        raise FormatError(f"{p}: not a clip2latent prior checkpoint (no {EMA_PREFIX}* weights)")
    for k, v in ema.items():
        if not isinstance(v, torch.Tensor):
            raise FormatError(f"{p}: {EMA_PREFIX}{k} is not a tensor")
    cfg = obj.get("cfg")
    plain = _to_plain(cfg) if cfg is not None else None
    if plain is not None and not isinstance(plain, dict):
        raise FormatError(f"{p}: 'cfg' is not a mapping")
    return Clip2LatentCheckpoint(tensors=ema, cfg=resolve_interpolations(plain) if plain else None, path=p)


# --- a YAML subset: what Hydra/OmegaConf write for these configs --------------------------------------------


def _scalar(text: str) -> Any:
    s = text.strip()
    if not s:
        return None
    if s[0] in "'\"":
        if len(s) < 2 or s[-1] != s[0]:
            raise ValueError(f"unterminated string {s!r}")
        body = s[1:-1]
        return body.replace("''", "'") if s[0] == "'" else bytes(body, "utf-8").decode("unicode_escape")
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [] if not inner else [_scalar(x) for x in _split_flow(inner)]
    if s.startswith("{") and s.endswith("}"):
        inner = s[1:-1].strip()
        out = {}
        for item in _split_flow(inner) if inner else []:
            k, sep, v = item.partition(":")
            if not sep:
                raise ValueError(f"bad mapping item {item!r}")
            out[str(_scalar(k))] = _scalar(v)
        return out
    low = s.lower()
    if low in ("null", "~"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    num = s.replace("_", "")
    if re.fullmatch(r"[-+]?\d+", num):
        return int(num)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", num):
        return float(num)
    if low in (".inf", "+.inf"):
        return float("inf")
    if low == "-.inf":
        return float("-inf")
    if low == ".nan":
        return float("nan")
    return s


def _split_flow(text: str) -> list[str]:
    parts, depth, cur, quote = [], 0, [], ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_yaml(text: str) -> Any:
    """Parse the block-style YAML subset of Hydra configs (mappings, ``-`` lists, flow lists, scalars)."""
    lines: list[tuple[int, str, int]] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        if raw.strip() in ("---", "..."):
            continue
        body = _strip_comment(raw).rstrip()
        if not body.strip():
            continue
        if "\t" in body[: len(body) - len(body.lstrip())]:
            raise ValueError(f"line {no}: tabs in indentation")
        lines.append((len(body) - len(body.lstrip(" ")), body.strip(), no))

    pos = 0

    def block(indent: int) -> Any:
        nonlocal pos
        if pos >= len(lines):
            return None
        if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
            out_list: list[Any] = []
            while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
                item = lines[pos][1][1:].strip()
                pos += 1
                if item:
                    out_list.append(_scalar(item))
                elif pos < len(lines) and lines[pos][0] > indent:
                    out_list.append(block(lines[pos][0]))
                else:
                    out_list.append(None)
            return out_list
        out: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][0] == indent:
            ind, content, no = lines[pos]
            key, sep, rest = content.partition(":")
            if not sep or (rest and not rest.startswith((" ", "\t"))):
                raise ValueError(f"line {no}: expected 'key: value'")
            key = str(_scalar(key))
            pos += 1
            if rest.strip():
                out[key] = _scalar(rest)
            elif pos < len(lines) and (lines[pos][0] > indent or (lines[pos][0] == indent and lines[pos][1].startswith("-"))):
                out[key] = block(lines[pos][0])
            else:
                out[key] = None
        if pos < len(lines) and lines[pos][0] > indent:
            raise ValueError(f"line {lines[pos][2]}: unexpected indentation")
        return out

    result = block(lines[0][0]) if lines else {}
    if pos != len(lines):
        raise ValueError(f"line {lines[pos][2]}: unexpected indentation")
    return result


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """A clip2latent sidecar ``.yaml`` as a plain dict, interpolations resolved."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{p}: unreadable config ({exc})") from exc
    try:
        cfg = parse_yaml(text)
    except ValueError as exc:
        raise FormatError(f"{p}: not a YAML config this reader understands ({exc})") from exc
    if not isinstance(cfg, dict):
        raise FormatError(f"{p}: not a YAML mapping")
    return resolve_interpolations(cfg)
