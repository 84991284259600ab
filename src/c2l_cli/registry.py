"""The model registry: every file c2l can download, as data, and the bundles that group them.

Each entry names one file (URL, kind, size and sha256 where known, licence, purpose). Sizes and
checksums are left as ``None`` unless they are known for certain: the cache then trusts the server's
advertised sha256 (Hugging Face's ``X-Linked-Etag``) or records the sha256 of the first download
in its manifest and verifies against it afterwards (see :mod:`c2l_cli.cache` and docs/cache.md).

No imports beyond the standard library: ``c2l models list`` and ``c2l --help`` stay instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import UsageError

#: The kinds of file the registry knows, and what reads them.
KINDS = {
    "stylegan-pkl": "NVIDIA StyleGAN2/3 network pickle (read with a restricted unpickler, G_ema)",
    "prior-ckpt": "clip2latent diffusion-prior checkpoint (EMA weights)",
    "prior-yaml": "clip2latent training config of a prior checkpoint",
    "direction": "a latent edit direction for an FFHQ StyleGAN2 (torch tensor file)",
    "clip": "a CLIP model fetched by open_clip into the c2l cache",
}

#: Other words callers may use for a kind (``resolve(source, kind="generator")``).
KIND_ALIASES = {
    "generator": "stylegan-pkl",
    "stylegan": "stylegan-pkl",
    "pkl": "stylegan-pkl",
    "prior": "prior-ckpt",
    "ckpt": "prior-ckpt",
    "prior-config": "prior-yaml",
    "yaml": "prior-yaml",
}

_NVIDIA_NC = "NVIDIA Source Code License-NC (non-commercial)"
_C2L = "MIT (clip2latent; see its model card)"
_HF_C2L = "https://huggingface.co/lambdalabs/clip2latent/resolve/main"
_GH_C2L = "https://github.com/justinpinkney/clip2latent/raw/main/directions"


@dataclass(frozen=True)
class Entry:
    """One downloadable file."""

    name: str  # registry name, used on the command line and as the cache folder
    url: str  # canonical https URL (C2L_MIRROR rewrites it at fetch time)
    kind: str  # one of KINDS
    licence: str  # the weights' own licence (the code's MIT licence does not cover them)
    description: str  # what it is for, one line
    size: Optional[int] = None  # bytes, only when known for certain
    sha256: Optional[str] = None  # lowercase hex, only when known for certain
    requires: tuple[str, ...] = ()  # other entries fetched with this one (a prior's YAML config)
    spec: Optional[str] = None  # for kind "clip": the open_clip spec "ARCH:PRETRAINED"
    filename: str = field(default="")  # name of the file in the cache (default: the URL's last part)
    folder: str = field(default="")  # cache folder under models/ (default: the name; a config shares its checkpoint's)

    @property
    def folder_name(self) -> str:
        """The folder under ``<cache>/models`` that holds the file."""
        return self.folder or self.name

    @property
    def file_name(self) -> str:
        """The file's name in the cache (keeps the URL's suffix so loaders can sniff the format)."""
        return self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]

    def as_dict(self) -> dict:
        """A JSON-ready description (``c2l models list --json``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "size": self.size,
            "sha256": self.sha256,
            "licence": self.licence,
            "description": self.description,
            "requires": list(self.requires),
            "spec": self.spec,
        }


@dataclass(frozen=True)
class Bundle:
    """A named set of models that work together (``--model ffhq``)."""

    generator: str  # registry name of the StyleGAN pickle
    prior: str  # registry name of the prior checkpoint (its YAML config is in ``requires``)
    clip: str  # open_clip spec, e.g. "ViT-B-32:openai"
    description: str = ""  # one line for listings


#: The table. Order is the listing order of ``c2l models list``.
_TABLE: tuple[Entry, ...] = (
    Entry(
        name="stylegan2-ffhq-1024",
        url="https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl",
        kind="stylegan-pkl",
        licence=_NVIDIA_NC,
        description="StyleGAN2 (config F) trained on FFHQ faces, 1024x1024, 18 ws of 512",
    ),
    Entry(
        name="stylegan3-t-lhq-256",
        url="https://huggingface.co/justinpinkney/stylegan3-t-lhq-256/resolve/main/lhq-256-stylegan3-t-25Mimg.pkl",
        kind="stylegan-pkl",
        licence="StyleGAN3 weights: NVIDIA Source Code License (non-commercial); see its model card",
        description="StyleGAN3-T trained on LHQ landscapes, 256x256 (Justin Pinkney)",
    ),
    Entry(
        name="prior-ffhq-sg2-510",
        url=f"{_HF_C2L}/ffhq-sg2-510.ckpt",
        kind="prior-ckpt",
        licence=_C2L,
        description="clip2latent diffusion prior for stylegan2-ffhq-1024 and CLIP ViT-B-32",
        requires=("prior-ffhq-sg2-510-yaml",),
    ),
    Entry(
        name="prior-ffhq-sg2-510-yaml",
        url=f"{_HF_C2L}/ffhq-sg2-510.yaml",
        kind="prior-yaml",
        folder="prior-ffhq-sg2-510",  # beside its checkpoint: <stem>.ckpt + <stem>.yaml
        licence=_C2L,
        description="training config of prior-ffhq-sg2-510 (network and data settings)",
    ),
    Entry(
        name="prior-lhq-sg3-410",
        url=f"{_HF_C2L}/lhq-sg3-410.ckpt",
        kind="prior-ckpt",
        licence=_C2L,
        description="clip2latent diffusion prior for stylegan3-t-lhq-256 and CLIP ViT-B-32",
        requires=("prior-lhq-sg3-410-yaml",),
    ),
    Entry(
        name="prior-lhq-sg3-410-yaml",
        url=f"{_HF_C2L}/lhq-sg3-410.yaml",
        kind="prior-yaml",
        folder="prior-lhq-sg3-410",  # beside its checkpoint: <stem>.ckpt + <stem>.yaml
        licence=_C2L,
        description="training config of prior-lhq-sg3-410 (network and data settings)",
    ),
    Entry(
        name="direction-age",
        url=f"{_GH_C2L}/age.pt",
        kind="direction",
        licence=_C2L,
        description="'age' edit direction in the W space of stylegan2-ffhq-1024",
    ),
    Entry(
        name="direction-smile",
        url=f"{_GH_C2L}/smile.pt",
        kind="direction",
        licence=_C2L,
        description="'smile' edit direction in the W space of stylegan2-ffhq-1024",
    ),
    Entry(
        name="direction-pose",
        url=f"{_GH_C2L}/pose.pt",
        kind="direction",
        licence=_C2L,
        description="'pose' edit direction in the W space of stylegan2-ffhq-1024",
    ),
    Entry(
        name="clip-vit-b-32-openai",
        url="https://huggingface.co/timm/vit_base_patch32_clip_224.openai",
        kind="clip",
        licence="MIT (OpenAI CLIP)",
        description="CLIP ViT-B/32 by OpenAI, fetched by open_clip into <cache>/open_clip",
        spec="ViT-B-32:openai",
    ),
)

#: name → entry.
ENTRIES: dict[str, Entry] = {e.name: e for e in _TABLE}

#: bundle name → bundle. The first one is the default.
BUNDLES: dict[str, Bundle] = {
    "ffhq": Bundle(
        generator="stylegan2-ffhq-1024",
        prior="prior-ffhq-sg2-510",
        clip="ViT-B-32:openai",
        description="faces: StyleGAN2 FFHQ 1024 + clip2latent prior + CLIP ViT-B-32",
    ),
    "lhq": Bundle(
        generator="stylegan3-t-lhq-256",
        prior="prior-lhq-sg3-410",
        clip="ViT-B-32:openai",
        description="landscapes: StyleGAN3-T LHQ 256 + clip2latent prior + CLIP ViT-B-32",
    ),
}

DEFAULT_BUNDLE = "ffhq"

#: Short edit-direction names accepted where a direction is expected (``--direction age``).
DIRECTION_ALIASES = {"age": "direction-age", "smile": "direction-smile", "pose": "direction-pose"}


def normalise_kind(kind: Optional[str]) -> Optional[str]:
    """Map an alias (``generator``, ``prior``…) to a registry kind; ``None`` stays ``None``."""
    if kind is None:
        return None
    k = KIND_ALIASES.get(kind, kind)
    if k not in KINDS:
        raise UsageError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return k


def names(kind: Optional[str] = None) -> list[str]:
    """Registry names, in table order, optionally only those of one *kind*."""
    k = normalise_kind(kind)
    return [e.name for e in ENTRIES.values() if k is None or e.kind == k]


def bundle_names() -> list[str]:
    """Bundle names; the first is the default."""
    return list(BUNDLES)


def is_registry_name(name: object) -> bool:
    """True if *name* is a registry entry name (not a bundle, not a path)."""
    return isinstance(name, str) and name in ENTRIES


def is_bundle_name(name: object) -> bool:
    """True if *name* names a bundle (``ffhq``, ``lhq``)."""
    return isinstance(name, str) and name in BUNDLES


def get(name: str) -> Entry:
    """The entry called *name*; a :class:`UsageError` listing the known names otherwise."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r} (known: {', '.join(ENTRIES)}; bundles: {', '.join(BUNDLES)})") from None


def bundle(name: Optional[str] = None) -> Bundle:
    """The bundle called *name* (default ``ffhq``)."""
    key = DEFAULT_BUNDLE if name is None else name
    try:
        return BUNDLES[key]
    except KeyError:
        raise UsageError(f"unknown model bundle {key!r} (known: {', '.join(BUNDLES)})") from None


def bundles_of(name: str) -> list[str]:
    """The bundles an entry belongs to (through its generator, prior, prior config or CLIP spec)."""
    out = []
    entry = ENTRIES.get(name)
    for bname, b in BUNDLES.items():
        members = {b.generator, b.prior, *ENTRIES[b.prior].requires}
        if name in members or (entry is not None and entry.kind == "clip" and entry.spec == b.clip):
            out.append(bname)
    return out


def expand(name: str) -> list[str]:
    """Entry names a download of *name* needs: a bundle's members or an entry plus its ``requires``."""
    if name in BUNDLES:
        b = BUNDLES[name]
        seeds = [b.generator, b.prior] + [e.name for e in ENTRIES.values() if e.kind == "clip" and e.spec == b.clip]
    else:
        seeds = [DIRECTION_ALIASES.get(name, name)]
    out: list[str] = []

    def add(n: str) -> None:
        if n in out:
            return
        out.append(n)
        for dep in get(n).requires:
            add(dep)

    for s in seeds:
        add(s)
    return out


def for_kind(name: str, kind: Optional[str]) -> Optional[str]:
    """Map a name to the entry of *kind* it stands for, or ``None`` if it is not a registry name.

    A bundle stands for its generator (``stylegan-pkl``), prior (``prior-ckpt``) or the prior's
    config (``prior-yaml``); a short direction name (``age``) for its ``direction-*`` entry.
    An entry of the wrong kind is a :class:`UsageError`.
    """
    k = normalise_kind(kind)
    if name in BUNDLES and k is not None:
        b = BUNDLES[name]
        if k == "stylegan-pkl":
            return b.generator
        if k == "prior-ckpt":
            return b.prior
        if k == "prior-yaml":
            return ENTRIES[b.prior].requires[0]
        raise UsageError(f"bundle {name!r} does not name a single {k} file")
    if k == "direction" and name in DIRECTION_ALIASES:
        name = DIRECTION_ALIASES[name]
    entry = ENTRIES.get(name)
    if entry is None:
        return None
    if k is not None and entry.kind != k:
        raise UsageError(f"{name!r} is a {entry.kind} file, not a {k} file")
    return name


def companion_config(name: str) -> Optional[str]:
    """The registry name of a prior checkpoint's YAML config, if it has one."""
    entry = get(name)
    for dep in entry.requires:
        if ENTRIES[dep].kind == "prior-yaml":
            return dep
    return None
