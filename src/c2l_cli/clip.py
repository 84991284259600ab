"""CLIP text and image embeddings on open_clip: the prior's conditioning and the sampler's judge.

``load_clip(spec)`` accepts open_clip's spellings: ``ARCH:PRETRAINED`` (``ViT-B-32:openai``, the
model the published clip2latent priors were trained with), ``hf-hub:ORG/REPO`` and
``local-dir:PATH`` (a folder with ``open_clip_config.json`` and weights). Weights are fetched into
c2l's cache; ``C2L_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` forbid any download.

Image preprocessing follows open_clip's inference transform (``open_clip/transform.py``,
``image_transform``: resize the shortest side with bicubic + antialias, centre crop, mean/std
normalisation) but runs on tensors on the device, so generator outputs never leave the GPU. The
clip2latent reference (``clip2latent/models.py``, ``Clipper.embed_image``, commit fc18ab1) squashes
with area resampling and applies the CLIP normalisation twice; we normalise once (see docs/clip.md).

Embeddings are returned un-normalised (the prior was trained on raw embeddings); :func:`cosine` and
:func:`cosine_matrix` normalise.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import settings
from .devices import resolve_device, resolve_dtype
from .errors import C2LError, C2LWarning, DownloadError, FormatError, ModelMismatchError, OfflineError, UsageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_SPEC",
    "Clip",
    "ClipSpec",
    "PromptTruncatedWarning",
    "ScoreResult",
    "cosine",
    "cosine_matrix",
    "load_clip",
    "parse_spec",
    "read_image",
    "score_files",
]

#: The CLIP the published clip2latent priors were trained with (OpenAI's ViT-B/32).
DEFAULT_SPEC = "ViT-B-32:openai"
#: Image preprocessing: "standard" (open_clip's, normalised once: the default everywhere) and "reference"
#: (clip2latent's Clipper, normalised twice: only to reproduce the published priors' data and the paper's scores).
PREPROCESS_MODES = ("standard", "reference")

#: CLIP's (OpenAI's) dataset mean/std: open_clip's default preprocessing.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_CONFIG_NAME = "open_clip_config.json"
#: Weight file names in a model folder, most preferred first (open_clip's own order).
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)

ImageInput = Union["torch.Tensor", "PILImage.Image", str, os.PathLike]


class PromptTruncatedWarning(C2LWarning):
    """A prompt was longer than CLIP's context (77 tokens) and was cut; the message names it."""


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """A parsed CLIP spec."""

    kind: str  # "builtin" (ARCH:PRETRAINED), "hf-hub" or "local-dir"
    name: str  # the architecture, the hub repo id, or the folder path
    pretrained: Optional[str] = None  # for "builtin": the open_clip tag or a weight file path

    def __str__(self) -> str:
        if self.kind == "builtin":
            return f"{self.name}:{self.pretrained}"
        return f"{self.kind}:{self.name}"


def parse_spec(spec: str) -> ClipSpec:
    """``ARCH:PRETRAINED`` | ``hf-hub:ORG/REPO`` | ``local-dir:PATH`` → :class:`ClipSpec` (syntax only)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty CLIP spec (use ARCH:PRETRAINED, hf-hub:ORG/REPO or local-dir:PATH)")
    text = spec.strip()
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :].strip().strip("/")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"bad CLIP spec {spec!r}: expected hf-hub:ORG/REPO")
        return ClipSpec("hf-hub", repo)
    if text.startswith("local-dir:"):
        path = text[len("local-dir:") :].strip()
        if not path:
            raise UsageError(f"bad CLIP spec {spec!r}: expected local-dir:PATH")
        return ClipSpec("local-dir", str(Path(path).expanduser()))
    arch, sep, tag = text.partition(":")
    arch, tag = arch.strip().replace("/", "-"), tag.strip()
    if not arch or not sep or not tag:
        raise UsageError(
            f"bad CLIP spec {spec!r}: expected ARCH:PRETRAINED (e.g. {DEFAULT_SPEC}), hf-hub:ORG/REPO "
            "or local-dir:PATH"
        )
    return ClipSpec("builtin", arch, tag)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _clip_cache_dir() -> Path:
    """Where open_clip weights go: ``c2l_cli.cache.clip_cache_dir()`` (or ``<cache>/open_clip``)."""
    try:
        from .cache import clip_cache_dir
    except ImportError:
        path = settings.cache_dir() / "open_clip"
    else:
        path = Path(clip_cache_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """While loading: make the Hugging Face hub client refuse the network when c2l is offline.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import, so the module constant is set too.
    """
    if not offline:
        yield
        return
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    try:
        import huggingface_hub.constants as constants  # type: ignore[no-redef]

        saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
        constants.HF_HUB_OFFLINE = True
    except ImportError:  # open_clip then uses plain URLs, checked beforehand
        constants = None
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def _precision(dtype: torch.dtype) -> str:
    """torch dtype → open_clip's ``precision`` (fp16/bf16 keep LayerNorm in fp32, as OpenAI's CLIP)."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def load_clip(
    spec: str = DEFAULT_SPEC,
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = None,
    preprocess: str = "standard",
) -> "Clip":
    """Load an open_clip model: ``ARCH:PRETRAINED``, ``hf-hub:ORG/REPO`` or ``local-dir:PATH``.

    ``preprocess``: ``"standard"`` (open_clip's resize + crop, CLIP normalisation once) or
    ``"reference"`` (clip2latent's ``Clipper.embed_image``: area resize, normalisation applied twice —
    the published priors' training data and the paper's CLIP scores; see :data:`PREPROCESS_MODES`).

    ``dtype`` ``auto``/``None`` is float16 on CUDA, float32 elsewhere. Raises UsageError (unknown
    architecture or tag), FormatError (bad folder or weights), ModelMismatchError (weights that do
    not fit the config), DownloadError, OfflineError (not cached and offline).
    """
    parsed = parse_spec(spec)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        raise UsageError(f"CLIP runs in float32, float16 or bfloat16, not {dt}")
    if parsed.kind == "local-dir":
        model, tokenizer, pp, weights = _load_local_dir(Path(parsed.name), dev, dt, label=spec)
    elif parsed.kind == "hf-hub":
        folder = _fetch_hf_hub(parsed.name, label=spec)
        model, tokenizer, pp, weights = _load_local_dir(folder, dev, dt, label=spec)
    else:
        model, tokenizer, pp, weights = _load_builtin(parsed, dev, dt, label=spec)
    clip = Clip(model, tokenizer, preprocess_cfg=pp, spec=str(parsed), device=dev, dtype=dt, preprocess=preprocess)
    clip.weights_path = weights
    return clip


def _load_builtin(parsed: ClipSpec, device: torch.device, dtype: torch.dtype, *, label: str):
    import open_clip
    from open_clip import pretrained as oc_pretrained

    arch, tag = parsed.name, parsed.pretrained or ""
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=4, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see open_clip.list_models())"
        raise UsageError(f"unknown CLIP architecture {arch!r} in {label!r}{hint}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    is_file = not tag_cfg and Path(tag).expanduser().is_file()
    if not tag_cfg and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        known = ", ".join(tags) if tags else "none"
        raise UsageError(f"unknown pretrained weights {tag!r} for CLIP {arch} (known tags: {known}; or a weight file path)")
    cache = _clip_cache_dir()
    offline = settings.offline()
    if offline and tag_cfg and not tag_cfg.get("file"):
        # Without the hub client open_clip would fetch a plain URL that HF_HUB_OFFLINE does not stop.
        use_hub = bool(tag_cfg.get("hf_hub")) and oc_pretrained.has_hf_hub()
        if not use_hub and tag_cfg.get("url"):
            target = cache / os.path.basename(tag_cfg["url"])
            if not target.is_file():
                raise OfflineError(
                    f"CLIP model {label} is not in the cache ({cache}) and offline mode is on "
                    "(C2L_OFFLINE/HF_HUB_OFFLINE); run once online or use local-dir:PATH"
                )
    # OpenAI's weights were trained with QuickGELU; open_clip 3.x's plain "ViT-B-32" config uses GELU
    # and only warns about the mismatch, so the tag's activation is forced here.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if tag_cfg else False
    try:
        with _hub_offline(offline), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            model = open_clip.create_model(
                arch,
                pretrained=str(Path(tag).expanduser()) if is_file else tag,
                precision=_precision(dtype),
                device=device,
                force_quick_gelu=quick_gelu,
                cache_dir=str(cache),
            )
    except C2LError:
        raise
    except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/ValueError for all of these
        if is_file:
            raise _weights_error(exc, label) from exc
        if offline:
            raise OfflineError(
                f"CLIP model {label} is not in the cache ({cache}) and offline mode is on "
                f"(C2L_OFFLINE/HF_HUB_OFFLINE); run once online or use local-dir:PATH ({_one_line(exc)})"
            ) from exc
        if "download" in str(exc).lower():
            raise DownloadError(f"could not download CLIP model {label}: {_one_line(exc)}") from exc
        raise _weights_error(exc, label) from exc
    try:
        with _hub_offline(offline):
            tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise FormatError(f"could not load the tokenizer of CLIP model {label}: {_one_line(exc)}") from exc
    weights = Path(tag).expanduser() if is_file else _cached_checkpoint(tag_cfg, cache)
    return model, tokenizer, _preprocess_cfg_of(model), weights


def _cached_checkpoint(tag_cfg: dict, cache: Path) -> Optional[Path]:
    """The cached weight file of an open_clip tag (looked up without the network), or None."""
    from open_clip import pretrained as oc_pretrained

    try:
        with _hub_offline(True):
            found = oc_pretrained.download_pretrained(tag_cfg, cache_dir=str(cache))
    except Exception:  # not found where expected: the record just lacks a path
        return None
    return Path(found) if found else None


def _weights_error(exc: BaseException, label: str) -> C2LError:
    text = str(exc)
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        return ModelMismatchError(f"CLIP weights do not fit the model config of {label}: {_one_line(exc)}")
    return FormatError(f"could not load CLIP model {label}: {_one_line(exc)}")


def _fetch_hf_hub(repo: str, *, label: str) -> Path:
    """Download ``open_clip_config.json`` and the weights of a hub repo into the c2l cache → folder."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise DownloadError(f"{label} needs the huggingface_hub package (pip install huggingface_hub)") from exc
    cache = _clip_cache_dir()
    offline = settings.offline()

    def get(filename: str) -> Path:
        with _hub_offline(offline):
            return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=str(cache)))

    try:
        config = get(_CONFIG_NAME)
        weights = None
        last: Optional[BaseException] = None
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                weights = get(name)
                break
            except Exception as exc:  # the next candidate name, then a clear error
                last = exc
        if weights is None:
            assert last is not None
            raise last
    except Exception as exc:
        if offline:
            raise OfflineError(
                f"CLIP model {label} is not in the cache ({cache}) and offline mode is on "
                f"(C2L_OFFLINE/HF_HUB_OFFLINE); run once online or use local-dir:PATH"
            ) from exc
        raise DownloadError(f"could not download CLIP model {label}: {_one_line(exc)}") from exc
    if config.parent != weights.parent:  # same snapshot folder in the hub cache layout
        raise FormatError(f"unexpected hub cache layout for {label}: {config} and {weights}")
    return config.parent


def _read_folder_config(folder: Path, label: str) -> tuple[dict, dict, Path]:
    if not folder.is_dir():
        raise FormatError(f"CLIP model folder not found: {folder} (from {label})")
    cfg_path = folder / _CONFIG_NAME
    if not cfg_path.is_file():
        raise FormatError(f"{folder} has no {_CONFIG_NAME}: not an open_clip model folder")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{cfg_path} is not valid JSON: {_one_line(exc)}") from exc
    model_cfg = cfg.get("model_cfg") if isinstance(cfg, dict) else None
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= model_cfg.keys():
        raise FormatError(f"{cfg_path} has no valid 'model_cfg' (embed_dim, vision_cfg, text_cfg)")
    weights = next((folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        found = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext))
        if not found:
            raise FormatError(f"{folder} has no weight file (.safetensors, .bin or .pth)")
        found.sort(key=lambda p: p.suffix != ".safetensors")
        weights = found[0]
    return model_cfg, dict(cfg.get("preprocess_cfg") or {}), weights


def _native_local_dir() -> bool:
    """Whether the installed open_clip understands ``local-dir:`` itself (open_clip ≥ 2.32)."""
    import open_clip.factory as factory

    return hasattr(factory, "LOCAL_DIR_PREFIX") and hasattr(factory, "parse_model_name")


#: Tests flip this to exercise the loader for open_clip versions without ``local-dir:`` support.
_USE_NATIVE_LOCAL_DIR: Optional[bool] = None


def _load_local_dir(folder: Path, device: torch.device, dtype: torch.dtype, *, label: str):
    import open_clip

    model_cfg, pp_cfg, weights = _read_folder_config(folder, label)
    native = _native_local_dir() if _USE_NATIVE_LOCAL_DIR is None else _USE_NATIVE_LOCAL_DIR
    try:
        if native:
            model = open_clip.create_model(f"local-dir:{folder}", precision=_precision(dtype), device=device)
        else:
            model = _build_from_config(model_cfg, pp_cfg, weights, device, dtype)
    except C2LError:
        raise
    except Exception as exc:
        raise _weights_error(exc, label) from exc
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:  # a Hugging Face tokenizer: the folder's own files, else the named one
        from open_clip.tokenizer import HFTokenizer

        local = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json"))
        try:
            with _hub_offline(settings.offline()):
                tokenizer = HFTokenizer(
                    str(folder) if local else hf_name,
                    context_length=context_length,
                    **text_cfg.get("tokenizer_kwargs", {}),
                )
        except Exception as exc:
            raise FormatError(f"could not load the tokenizer of CLIP model {label}: {_one_line(exc)}") from exc
    else:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return model, tokenizer, _preprocess_cfg_of(model), weights


def _build_from_config(model_cfg: dict, pp_cfg: dict, weights: Path, device: torch.device, dtype: torch.dtype):
    """Build and load an open_clip model from a folder's config without open_clip's ``local-dir:``."""
    from open_clip.model import CLIP, CustomTextCLIP, convert_weights_to_lp, get_cast_dtype

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        raise FormatError("CoCa models are not supported by c2l's CLIP loader")
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        raise FormatError("timm-backed CLIP towers need open_clip's own local-dir: support (upgrade open_clip)")
    precision = _precision(dtype)
    cls = CustomTextCLIP if custom_text else CLIP
    model = cls(**cfg, cast_dtype=get_cast_dtype(precision))
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights), device="cpu")
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if state and next(iter(state)).startswith("module."):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state:
        state["logit_bias"] = torch.zeros_like(model.logit_bias)
    model.load_state_dict(state, strict=True)
    model.to(device=device)
    if precision != "fp32":
        convert_weights_to_lp(model, dtype=dtype)
    size = model.visual.image_size
    merged = {
        "size": size,
        "mean": tuple(pp_cfg.get("mean", _OPENAI_MEAN)),
        "std": tuple(pp_cfg.get("std", _OPENAI_STD)),
        "interpolation": pp_cfg.get("interpolation", "bicubic"),
        "resize_mode": pp_cfg.get("resize_mode", "shortest"),
        "fill_color": pp_cfg.get("fill_color", 0),
    }
    model.visual.preprocess_cfg = merged
    model.visual.image_mean, model.visual.image_std = merged["mean"], merged["std"]
    return model


def _preprocess_cfg_of(model: torch.nn.Module) -> dict:
    visual = getattr(model, "visual", model)
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    cfg.setdefault("size", getattr(visual, "image_size", 224))
    cfg.setdefault("mean", getattr(visual, "image_mean", None) or _OPENAI_MEAN)
    cfg.setdefault("std", getattr(visual, "image_std", None) or _OPENAI_STD)
    return cfg


# --------------------------------------------------------------------------------------------
# The model wrapper
# --------------------------------------------------------------------------------------------


class Clip:
    """An open_clip model with its tokenizer and preprocessing, on one device in one dtype.

    Attributes: ``spec``, ``device``, ``dtype``, ``dim`` (embedding size), ``image_size`` (an int,
    or ``(H, W)`` for a non-square input), ``context_length``, ``model`` (the open_clip module),
    ``weights_path`` (the weight file loaded, when known).
    """

    weights_path: Optional[Path] = None

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Optional[Callable[..., torch.Tensor]] = None,
        *,
        preprocess_cfg: Optional[dict] = None,
        spec: str = "custom",
        device: "str | torch.device | None" = None,
        dtype: "str | torch.dtype | None" = None,
        preprocess: str = "standard",
    ) -> None:
        import open_clip

        if preprocess not in PREPROCESS_MODES:
            raise UsageError(f"unknown CLIP preprocessing {preprocess!r} (use {' or '.join(PREPROCESS_MODES)})")
        self.preprocess_mode = preprocess

        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        if dtype is None:
            dtype = next(model.parameters()).dtype
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.spec = spec
        pp = dict(preprocess_cfg if preprocess_cfg is not None else _preprocess_cfg_of(model))
        size = pp.get("size", 224)
        h, w = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self._size_hw = (h, w)
        self.image_size: Union[int, tuple[int, int]] = h if h == w else (h, w)
        self.resize_mode = pp.get("resize_mode") or "shortest"
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise FormatError(f"unknown resize_mode {self.resize_mode!r} in the CLIP preprocessing config")
        self.interpolation = "bilinear" if pp.get("interpolation") == "bilinear" else "bicubic"
        self.fill_color = float(pp.get("fill_color", 0) or 0) / 255.0
        self._mean = torch.tensor(pp.get("mean", _OPENAI_MEAN), dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(pp.get("std", _OPENAI_STD), dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        text = getattr(model, "text", model)
        self.context_length = int(getattr(text, "context_length", None) or getattr(model, "context_length", 77))
        self.tokenizer = tokenizer if tokenizer is not None else open_clip.SimpleTokenizer(context_length=self.context_length)
        self.dim = _embed_dim(model)

    def __repr__(self) -> str:
        return f"Clip(spec={self.spec!r}, dim={self.dim}, image_size={self.image_size}, device={self.device}, dtype={self.dtype})"

    # ---- text ------------------------------------------------------------------------------

    def embed_text(self, texts: Union[str, Sequence[str]], batch_size: int = 256) -> torch.Tensor:
        """Prompts → un-normalised embeddings ``[N, dim]`` (float32, on ``device``).

        Prompts longer than the context are truncated with a :class:`PromptTruncatedWarning`; an
        empty prompt is a UsageError.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageError(f"prompt {i + 1} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise UsageError("empty prompt" if len(texts) == 1 else f"prompt {i + 1} is empty")
        if batch_size < 1:
            raise UsageError("batch_size must be at least 1")
        for text in texts:
            n_tokens = self._count_tokens(text)
            if n_tokens is not None and n_tokens > self.context_length:
                shown = text if len(text) <= 80 else text[:77] + "..."
                warnings.warn(
                    f"prompt truncated to CLIP's {self.context_length}-token context ({n_tokens} tokens): {shown!r}",
                    PromptTruncatedWarning,
                    stacklevel=2,
                )
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)  # (B, T)
                chunks.append(self.model.encode_text(tokens).float())
        return torch.cat(chunks)  # outside inference mode: an ordinary tensor, usable with autograd

    def _count_tokens(self, text: str) -> Optional[int]:
        """Tokens the prompt needs, start/end tokens included (None: a tokenizer we cannot count with)."""
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # open_clip's SimpleTokenizer
            return len(tok.encode(text)) + 2  # + start and end tokens
        inner = getattr(tok, "tokenizer", None)  # open_clip's HFTokenizer wraps a HF tokenizer
        if inner is not None:
            try:
                clean = getattr(tok, "clean_fn", lambda s: s)(text)
                return len(inner(clean)["input_ids"])
            except Exception:  # not a HF tokenizer after all: no warning rather than a crash
                return None
        return None

    # ---- images ----------------------------------------------------------------------------

    def embed_image(self, images: Any, batch_size: int = 64, workers: Optional[int] = None) -> torch.Tensor:
        """Images → un-normalised embeddings ``[N, dim]`` (float32, on ``device``).

        ``images``: a tensor ``[B, 3, H, W]`` / ``[3, H, W]`` in [-1, 1] (generator output, any size,
        any device), or a list of such tensors, PIL images and image file paths. File decoding runs
        in a thread pool of ``workers`` threads.
        """
        if batch_size < 1:
            raise UsageError("batch_size must be at least 1")
        if isinstance(images, torch.Tensor):
            batch = _as_batch(images)
            out = [self._encode_pixels(self._prepare_tensor(batch[s : s + batch_size]))
                   for s in range(0, batch.shape[0], batch_size)]
            return torch.cat(out) if out else torch.empty(0, self.dim, device=self.device)
        if isinstance(images, (str, os.PathLike)) or _is_pil(images):
            images = [images]
        items = list(images)
        paths = [i for i, x in enumerate(items) if isinstance(x, (str, os.PathLike))]
        if paths:
            with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
                for i, img in zip(paths, pool.map(lambda k: read_image(items[k]), paths)):
                    items[i] = img
        out = []
        for start in range(0, len(items), batch_size):
            out.append(self._encode_pixels(self._prepare_list(items[start : start + batch_size])))
        return torch.cat(out) if out else torch.empty(0, self.dim, device=self.device)

    def score(self, images: Any, texts: Union[str, Sequence[str]], batch_size: int = 64) -> torch.Tensor:
        """Raw cosine similarity ``[N]`` of each image with its text (one text for all, or one each)."""
        img = self.embed_image(images, batch_size=batch_size)
        txt = self.embed_text([texts] if isinstance(texts, str) else list(texts))
        if txt.shape[0] not in (1, img.shape[0]):
            raise UsageError(f"{img.shape[0]} images but {txt.shape[0]} texts")
        return cosine(img, txt)

    def preprocess(self, images: "torch.Tensor") -> "torch.Tensor":
        """Generator images ``[B, 3, H, W]`` in [-1, 1] → CLIP input ``[B, 3, h, w]`` in ``dtype``."""
        return self._prepare_tensor(_as_batch(images)).clone()

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            emb = self.model.encode_image(pixels).float()
        return emb.clone()  # leave inference mode: an ordinary tensor

    def _prepare_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] tensors of one size → normalised model input (resized where the data lives on CUDA)."""
        with torch.inference_mode():
            work = x.device if x.device.type == "cuda" else self.device
            x = self._unit(x.to(device=work, dtype=torch.float32))
            if self.preprocess_mode == "reference":
                return self._reference_input(x)
            x = self._resize_crop(x).to(self.device)  # blocking: a GPU→CPU copy must finish first
            return self._normalise(x)

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] generator output → the [0, 1] picture it stands for (clamped, except in reference mode)."""
        x = (x + 1.0) * 0.5
        return x if self.preprocess_mode == "reference" else x.clamp_(0.0, 1.0)

    def _reference_input(self, x: torch.Tensor) -> torch.Tensor:
        """clip2latent's ``Clipper.embed_image`` (models.py @ fc18ab1), on ``[B, 3, H, W]`` in [0, 1].

        Area resize straight to the input size (no crop), then ``normalize(x).clamp(0, 1)`` and
        ``normalize`` once more: the double normalisation the published priors were trained with.
        """
        x = F.interpolate(x, size=self._size_hw, mode="area").to(self.device)
        x = ((x - self._mean) / self._std).clamp_(0.0, 1.0)
        return self._normalise(x)

    def _prepare_list(self, items: list) -> torch.Tensor:
        """Tensors / PIL images (mixed sizes) → one normalised batch, grouping equal sizes per resize."""
        with torch.inference_mode():
            pics: list[torch.Tensor] = []
            for item in items:
                if isinstance(item, torch.Tensor):
                    t = _as_batch(item)
                    if t.shape[0] != 1:
                        raise UsageError("a list of image tensors must hold single images [3, H, W]")
                    work = t.device if t.device.type == "cuda" else self.device
                    t = self._unit(t.to(work, torch.float32))
                elif _is_pil(item):
                    t = _pil_to_tensor(item, self.device)
                else:
                    raise UsageError(f"cannot embed a {type(item).__name__} as an image (tensor, PIL image or path)")
                pics.append(t)
            out: list[Optional[torch.Tensor]] = [None] * len(pics)
            groups: dict[tuple, list[int]] = {}
            for i, t in enumerate(pics):
                groups.setdefault((tuple(t.shape[-2:]), t.device), []).append(i)
            if self.preprocess_mode == "reference":
                return torch.cat([self._reference_input(t) for t in pics])
            for idx in groups.values():
                resized = self._resize_crop(torch.cat([pics[i] for i in idx])).to(self.device)  # (b, 3, h, w)
                for j, i in enumerate(idx):
                    out[i] = resized[j]
            return self._normalise(torch.stack(out))  # type: ignore[arg-type]

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """open_clip's inference resize + crop (``transform.py``) on ``[B, 3, H, W]`` in [0, 1]."""
        H, W = x.shape[-2:]
        th, tw = self._size_hw
        if self.resize_mode == "squash":
            return self._resize(x, (th, tw))
        if self.resize_mode == "shortest":
            if th == tw:  # torchvision Resize(int): short side → th, long side truncated
                if W <= H:
                    size = (int(th * H / W), th)
                else:
                    size = (th, int(th * W / H))
            else:  # timm ResizeKeepRatio, longest=0
                ratio = min(H / th, W / tw)
                size = (round(H / ratio), round(W / ratio))
            x = self._resize(x, size)
            return _center_crop_or_pad(x, th, tw, 0.0)
        ratio = max(H / th, W / tw)  # "longest": fit inside, pad with the fill colour
        x = self._resize(x, (round(H / ratio), round(W / ratio)))
        return _center_crop_or_pad(x, th, tw, self.fill_color)

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0)  # as the 8-bit picture open_clip's PIL resize would give

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self._mean) / self._std).to(self.dtype)  # CLIP mean/std, applied once


def _embed_dim(model: torch.nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor) and proj.ndim == 2:
        return int(proj.shape[1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    visual_dim = getattr(getattr(model, "visual", None), "output_dim", None)
    if visual_dim:
        return int(visual_dim)
    with torch.inference_mode():  # last resort: ask the model
        dev = next(model.parameters()).device
        return int(model.encode_text(torch.zeros(1, 77, dtype=torch.long, device=dev)).shape[-1])


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)  # (1, C, H, W)
    if x.ndim != 4:
        raise UsageError(f"image tensors must be [B, 3, H, W] or [3, H, W], got shape {list(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # greyscale → RGB
    if x.shape[1] != 3:
        raise UsageError(f"image tensors must have 3 channels (RGB), got shape {list(x.shape)}")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise UsageError(f"empty image tensor of shape {list(x.shape)}")
    if not x.is_floating_point():
        raise UsageError("image tensors must be floating point in [-1, 1] (generator output)")
    return x


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def _pil_to_tensor(img: "PILImage.Image", device: torch.device) -> torch.Tensor:
    """PIL → ``[1, 3, H, W]`` float in [0, 1] (as torchvision's ToTensor after ``convert("RGB")``)."""
    import numpy as np

    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))  # (H, W, 3)
    return arr.to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)  # (1, 3, H, W)


def _center_crop_or_pad(x: torch.Tensor, th: int, tw: int, fill: float) -> torch.Tensor:
    """torchvision ``CenterCrop`` / open_clip ``CenterCropOrPad`` (same offsets, Python's rounding)."""
    H, W = x.shape[-2:]
    if th > H or tw > W:
        left, top = (tw - W) // 2 if tw > W else 0, (th - H) // 2 if th > H else 0
        right, bottom = (tw - W + 1) // 2 if tw > W else 0, (th - H + 1) // 2 if th > H else 0
        x = F.pad(x, (left, right, top, bottom), value=fill)
        H, W = x.shape[-2:]
        if H == th and W == tw:
            return x
    top = int(round((H - th) / 2.0))
    left = int(round((W - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def _workers(workers: Optional[int]) -> int:
    if workers is not None:
        if workers < 1:
            raise UsageError("workers must be at least 1")
        return workers
    return max(1, min(8, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------------


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity ``[N]`` of ``a [N, D]`` and ``b [N, D]`` (or one row ``[D]``/``[1, D]``)."""
    a, b = _rows(a, "a"), _rows(b, "b")
    if a.shape[-1] != b.shape[-1] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise UsageError(f"cosine: shapes {list(a.shape)} and {list(b.shape)} do not match")
    b = b.to(a.device)
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All-pairs cosine similarity ``[N, M]`` of ``a [N, D]`` and ``b [M, D]``."""
    a, b = _rows(a, "a"), _rows(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise UsageError(f"cosine_matrix: embedding sizes {a.shape[-1]} and {b.shape[-1]} differ")
    return F.normalize(a, dim=-1) @ F.normalize(b.to(a.device), dim=-1).T


def _rows(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"{name} must be a tensor")
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise UsageError(f"{name} must be [N, D] embeddings, got shape {list(x.shape)}")
    return x.float()


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def read_image(path: Union[str, os.PathLike]) -> "PILImage.Image":
    """Decode an image file fully into an RGB PIL image; any failure is a FormatError with the reason."""
    img, reason = _decode(path)
    if img is None:
        raise FormatError(f"{path}: {reason}")
    return img


def _decode(path: Union[str, os.PathLike]) -> "tuple[Optional[PILImage.Image], Optional[str]]":
    """(RGB image, None) or (None, why it cannot be read)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(Path(path)) as img:
            img.load()
            return (img.convert("RGB") if img.mode != "RGB" else img.copy()), None
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a directory"
    except PermissionError:
        return None, "permission denied"
    except UnidentifiedImageError:
        return None, "not an image file (unrecognised format)"
    except Image.DecompressionBombError as exc:
        return None, f"refused, too many pixels ({_one_line(exc)})"
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data
        return None, f"corrupt or truncated image ({_one_line(exc)})"


@dataclass
class ScoreResult:
    """One row of :func:`score_files`: the cosine, or the reason the image could not be read."""

    path: str
    text: str
    cosine: Optional[float] = None  # raw cosine similarity of the image and text embeddings
    error: Optional[str] = None  # why the image could not be read (then cosine is None)


def score_files(
    clip: Clip,
    paths: Sequence[Union[str, os.PathLike]],
    texts: Union[str, Sequence[str]],
    *,
    batch_size: int = 32,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[ScoreResult]:
    """CLIP cosine of each image file with its text; unreadable files become rows with ``error`` set.

    Files are decoded in a thread pool (one batch ahead of the encoder); texts are embedded once
    each. ``progress(n)`` is called after every ``n`` files.
    """
    paths = [str(p) for p in paths]
    text_list = [texts] * len(paths) if isinstance(texts, str) else list(texts)
    if len(text_list) != len(paths):
        raise UsageError(f"{len(paths)} images but {len(text_list)} texts")
    if batch_size < 1:
        raise UsageError("batch_size must be at least 1")
    unique = list(dict.fromkeys(text_list))
    text_emb = clip.embed_text(unique) if unique else torch.empty(0, clip.dim)
    row_of = {t: i for i, t in enumerate(unique)}
    results = [ScoreResult(p, t) for p, t in zip(paths, text_list)]


    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        chunks = [list(range(s, min(s + batch_size, len(paths)))) for s in range(0, len(paths), batch_size)]
        pending = [[pool.submit(_decode, paths[i]) for i in c] for c in chunks[:1]]
        for k, chunk in enumerate(chunks):
            if k + 1 < len(chunks):  # decode the next batch while this one is encoded
                pending.append([pool.submit(_decode, paths[i]) for i in chunks[k + 1]])
            decoded = [f.result() for f in pending.pop(0)]
            good = [(i, img) for i, (img, _) in zip(chunk, decoded) if img is not None]
            for i, (_, reason) in zip(chunk, decoded):
                results[i].error = reason
            if good:
                emb = clip.embed_image([img for _, img in good], batch_size=batch_size)  # (b, D)
                rows = text_emb[[row_of[text_list[i]] for i, _ in good]].to(emb.device)
                for (i, _), value in zip(good, cosine(emb, rows).tolist()):
                    results[i].cosine = float(value)
            if progress is not None:
                progress(len(chunk))
    return results
