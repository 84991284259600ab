"""Training the diffusion prior on gen-data pairs (paper §4.2, Appendix A), on one device or many (DDP).

A run folder (``--out RUN``) holds::

    config.json      the resolved TrainConfig, the data it was trained on, versions
    metrics.jsonl    one JSON object per log / validation event
    checkpoint/      everything needed to resume exactly (kind "train-state": online + EMA weights,
                     optimiser moments, step, data position, every RNG state, best score), atomic
    latest/          the EMA prior at the last checkpoint (a c2l prior: ``c2l sample --prior RUN/latest``)
    best/            the EMA prior with the best validation text CLIP score (the paper's selection)

Determinism: batch b of epoch e is a slice of ``randperm(N, seed=(seed, 1, e))`` and step s draws its
diffusion noise, timesteps, condition dropout and embedding noise from a generator re-seeded with
``(seed, 2, s, rank)``. A resumed run therefore repeats the uninterrupted run's losses exactly on the
CPU (on CUDA up to the non-determinism of its kernels).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import C2LError, FormatError, ModelMismatchError, UsageError

if TYPE_CHECKING:
    import torch

    from .data import Dataset
    from .distributed import DistInfo

STATE_KIND = "train-state"
CHECKPOINT_DIR = "checkpoint"
LATEST_DIR = "latest"
BEST_DIR = "best"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
PROMPT_SETS = ("face", "landscape")


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Training settings; the defaults are the paper's recipe (Appendix A and the published config)."""

    # -- prior network (DALLE2-pytorch DiffusionPriorNetwork, published "mid" model: 48.9M parameters)
    dim: int = 0  # the network width is tied to the W size and the CLIP size (512 for FFHQ + ViT-B/32); 0 = take it from the data
    depth: int = 12  # transformer layers (published config)
    heads: int = 12  # attention query heads (published config)
    dim_head: int = 64  # features per head (published config)
    timesteps: int = 1000  # diffusion steps of the cosine schedule; the prior predicts x0 (DALL-E 2 prior)
    # -- objective
    cond_drop_prob: float = 0.2  # probability of dropping the condition, for classifier-free guidance (§4.2)
    embed_noise_scale: float = 1.0  # LAFITE embedding noise: the paper's best value (Appendix A.1, §5.1)
    # -- optimiser (DALLE2-pytorch DiffusionPriorTrainer 0.2.38: AdamW, no decay on gains/biases)
    lr: float = 1e-4  # published config
    weight_decay: float = 1e-2  # published config; parameters with ndim < 2 are not decayed (as upstream)
    adam_eps: float = 1e-6  # DiffusionPriorTrainer's default
    adam_beta1: float = 0.9  # torch/upstream default
    adam_beta2: float = 0.999  # torch/upstream default
    max_grad_norm: float = 0.0  # 0 = no clipping (upstream default)
    batch_size: int = 512  # the effective batch over all processes (the paper: 512)
    max_steps: int = 1_000_000  # the paper trains 1M steps; the best checkpoint is usually near 500k
    # -- EMA of the weights (the EMA model is what is validated and saved)
    ema_beta: float = 0.9999  # published config
    ema_update_every: int = 10  # published config
    ema_update_after: int = 1000  # DALLE2-pytorch's EMA default: the EMA copy follows the online weights until then
    # -- reproducibility and bookkeeping
    seed: int = 0  # every random choice (batches, noise, validation samples) flows from it
    log_every: int = 50  # steps between loss logs (the only host sync of the loop; the reference logged every 50)
    ckpt_every: int = 5000  # steps between checkpoints (also written at the end and on Ctrl-C)
    # -- validation (the paper's checkpoint selection, §4.2)
    val_every: int = 10_000  # steps between validations (published config); 0 = never
    val_prompts: str = "face"  # "face", "landscape" (the shipped prompt sets of the paper) or a text file, one prompt a line
    val_samples_per_text: int = 4  # the paper: 4 samples for each of 16 prompts
    val_image_samples: int = 64  # held-out pairs (the last ones of the data, never trained on) for image-embedding similarity
    val_steps: int = 1000  # diffusion steps when sampling for validation (the reference used the full schedule)
    val_guidance: float = 1.0  # classifier-free guidance scale for validation (the reference's "text2im")
    val_batch_size: int = 16  # images per synthesis batch during validation
    generator: str = ""  # StyleGAN for validation; "" = the one the data was made with
    clip: str = ""  # CLIP for validation; "" = the one the data was made with
    # -- performance
    data_on_device: str = "auto"  # "auto": all pairs on the device when they fit (else memory-mapped shards); "yes"/"no"
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, float32 on the CPU; "bf16" or "none"
    # torch.compile the online network (fused elementwise/normalisation kernels, fewer launches: the small prior is
    # launch-bound on CUDA). Off by default: the first steps pay a compile of a minute or so, and eager is what the
    # exact-resume guarantee is tested on. Weight names are unchanged (in-place Module.compile), so checkpoints are too.
    compile: bool = False
    # Record the network's forward and backward as CUDA graphs (torch.cuda.make_graphed_callables): the step's ~1500
    # small kernels become two replays. The random draws, loss, fused AdamW and EMA stay outside the graphs, so what is
    # computed and exact resuming are unchanged. CUDA, one process, 0 < cond_drop_prob < 1 (else it runs eagerly with
    # a note); not together with compile. Off by default until measured on a GPU.
    cuda_graph: bool = False

    #: Keys that may change when resuming (they do not change what is computed, only when/where).
    RESUMABLE = ("max_steps", "log_every", "ckpt_every", "val_every", "val_batch_size", "generator", "clip", "data_on_device", "compile",
                 "cuda_graph")

    def validate(self) -> None:
        """UsageError for impossible values."""
        positive = ("depth", "heads", "dim_head", "timesteps", "batch_size", "max_steps", "ema_update_every", "log_every", "ckpt_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"config: {name} must be at least 1 (got {getattr(self, name)})")
        for name in ("dim", "val_every", "ema_update_after", "val_image_samples", "seed"):
            if getattr(self, name) < 0:
                raise UsageError(f"config: {name} must not be negative (got {getattr(self, name)})")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise UsageError("config: cond_drop_prob must be in [0, 1]")
        if not 0.0 <= self.ema_beta < 1.0:
            raise UsageError("config: ema_beta must be in [0, 1)")
        if self.lr <= 0 or self.embed_noise_scale < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UsageError("config: lr must be positive; embed_noise_scale, weight_decay and max_grad_norm non-negative")
        if self.val_every and (self.val_samples_per_text < 1 or self.val_steps < 1 or self.val_batch_size < 1):
            raise UsageError("config: val_samples_per_text, val_steps and val_batch_size must be at least 1")
        if self.val_steps > self.timesteps or self.timesteps % self.val_steps:
            raise UsageError(
                f"config: val_steps ({self.val_steps}) must divide timesteps ({self.timesteps}) (the reference sampler respaces evenly)"
            )
        if self.data_on_device not in ("auto", "yes", "no"):
            raise UsageError("config: data_on_device must be auto, yes or no")
        if self.amp not in ("auto", "bf16", "none"):
            raise UsageError("config: amp must be auto, bf16 or none")
        if self.compile and self.cuda_graph:
            raise UsageError("config: compile and cuda_graph cannot both be on (choose one)")

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-able dict."""
        return asdict(self)


def config_keys() -> list[str]:
    """The keys a config file or ``--set`` may use."""
    return [f.name for f in fields(TrainConfig)]


def _unknown_key(key: str, where: str) -> UsageError:
    import difflib

    keys = config_keys()
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"{where}: unknown config key {key!r}{hint}; valid keys: {', '.join(keys)}")


def _coerce(key: str, value: Any, where: str) -> Any:
    """*value* as the type of TrainConfig field *key* (UsageError when it cannot be)."""
    default = getattr(TrainConfig, key)
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).replace("_", ""))
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise UsageError(f"{where}: {key} must be a {kind.__name__} (got {value!r})")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Key/values of a TOML (Python ≥ 3.11) or JSON config file; flat keys (a ``[train]`` table is flattened)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} does not exist")
    text = p.read_text()

    def parse_json() -> Any:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{p}: not valid JSON ({exc})") from exc

    if p.suffix.lower() == ".json":
        doc = parse_json()
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            if p.suffix.lower() == ".toml":
                raise UsageError(f"{p}: TOML configs need Python 3.11 or newer (tomllib); use a JSON config") from None
            doc = parse_json()
        else:
            try:
                doc = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                try:
                    doc = json.loads(text)
                except ValueError:
                    raise UsageError(f"{p}: not valid TOML ({exc})") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"{p}: a config must be a table of key = value")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):  # [train] / [model] tables: their keys are config keys too
            flat.update(value)
        else:
            flat[key] = value
    return flat


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["key=value", …]`` (values as JSON when they parse, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected key=value")
        raw = raw.strip()
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return out


def build_config(base: dict[str, Any] | None = None, *, file: str | Path | None = None, sets: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from *base* values, then a config *file*, then ``--set`` items (later wins)."""
    values: dict[str, Any] = dict(base or {})
    layers: list[tuple[str, dict[str, Any]]] = []
    if file is not None:
        layers.append((str(file), read_config_file(file)))
    if sets:
        layers.append(("--set", parse_sets(sets)))
    names = set(config_keys())
    for where, layer in layers:
        for key, value in layer.items():
            if key not in names:
                raise _unknown_key(key, where)
            values[key] = _coerce(key, value, where)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise _unknown_key(unknown[0], "config")
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def load_prompts(spec: str) -> list[str]:
    """The validation prompts: a shipped set (``face``, ``landscape``) or a text file (one prompt a line)."""
    if spec in PROMPT_SETS:
        from importlib import resources

        text = resources.files("c2l_cli.assets").joinpath(f"{spec}-val-prompts.txt").read_text()
    else:
        p = Path(spec)
        if not p.is_file():
            raise UsageError(f"val_prompts: {spec!r} is neither {' nor '.join(PROMPT_SETS)} nor a file")
        text = p.read_text()
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"val_prompts: {spec!r} holds no prompts")
    return prompts


# --------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a module's parameters (DALLE2-pytorch 0.2.38 ``EMA`` semantics, one fix).

    Update ``k`` (1-based optimiser step) does nothing unless ``k % update_every == 0``; up to
    ``update_after`` the EMA copy is set to the online weights, after it ``ema ← β·ema + (1−β)·online``.
    Upstream meant to copy the online weights once at ``update_after`` but its copy was a no-op
    (``ema_model.state_dict(online.state_dict())`` writes into a throwaway dict), so its EMA started
    from the *initial* random weights; we do what was intended.
    """

    def __init__(self, online: "torch.nn.Module", ema: "torch.nn.Module", beta: float, update_every: int, update_after: int) -> None:
        self.online = [p for p in online.parameters()]
        self.ema = [p for p in ema.parameters()]
        if len(self.online) != len(self.ema):
            raise ValueError("EMA: online and EMA modules differ")
        self.beta = beta
        self.update_every = update_every
        self.update_after = update_after

    def update(self, step: int) -> None:
        """Apply the update that follows optimiser step *step* (1-based)."""
        import torch

        if step % self.update_every:
            return
        with torch.no_grad():
            if step <= self.update_after:
                torch._foreach_copy_(self.ema, self.online) if hasattr(torch, "_foreach_copy_") else [
                    e.copy_(o) for e, o in zip(self.ema, self.online)
                ]
            else:
                torch._foreach_lerp_(self.ema, self.online, 1.0 - self.beta)


# --------------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------------


def make_optimizer(net: "torch.nn.Module", cfg: TrainConfig, device: "torch.device") -> "torch.optim.Optimizer":
    """AdamW with weight decay on matrices only (DALLE2-pytorch ``get_optimizer``); fused on CUDA."""
    import torch

    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay, **kwargs
    )


# --------------------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON; no pickles)
# --------------------------------------------------------------------------------------------------


def _rng_tensors() -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    import random

    import numpy as np
    import torch

    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.torch_cuda.{i}"] = st
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def _restore_rng(tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    if "rng.torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng.torch_cpu"].to("cpu", torch.uint8))
    cuda = sorted(k for k in tensors if k.startswith("rng.torch_cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to("cpu", torch.uint8) for k in cuda]
        for i, st in enumerate(states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(st, i)
    if "python" in meta:
        v, st, g = meta["python"]
        random.setstate((v, tuple(st), g))
    if "numpy" in meta and "rng.numpy_keys" in tensors:
        kind, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))


def save_train_state(
    path: Path,
    *,
    net: "torch.nn.Module",
    ema_net: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    meta: dict[str, Any],
) -> None:
    """Write the resumable state (online + EMA weights, optimiser, RNG states, *meta*) atomically."""
    from .formats.native import save_native

    tensors: dict[str, Any] = {}
    for name, p in net.state_dict().items():
        tensors[f"model.{name}"] = p
    for name, p in ema_net.state_dict().items():
        tensors[f"ema.{name}"] = p
    osd = optimizer.state_dict()
    for idx, st in osd["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = value if hasattr(value, "shape") else __import__("torch").tensor(value)
    groups = []
    for g in osd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    rng, rng_meta = _rng_tensors()
    tensors.update(rng)
    config = dict(meta)
    config["optimizer_param_groups"] = groups
    config["rng"] = rng_meta
    save_native(path, kind=STATE_KIND, config=config, tensors=tensors)


def load_train_state(
    path: Path,
    *,
    net: "torch.nn.Module",
    ema_net: "torch.nn.Module",
    optimizer: "torch.optim.Optimizer",
    device: "torch.device",
) -> dict[str, Any]:
    """Restore what :func:`save_train_state` wrote; returns its meta (step, best score, …)."""
    from .formats.native import load_native

    nf = load_native(path, kind=STATE_KIND, device="cpu")
    t = nf.tensors
    try:
        net.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        ema_net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    except RuntimeError as exc:
        raise ModelMismatchError(f"{path}: the checkpoint does not fit the configured prior ({exc})") from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in t.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in nf.config.get("optimizer_param_groups", []):
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise FormatError(f"{path}: optimiser state does not fit ({exc})") from exc
    _restore_rng(t, nf.config.get("rng") or {})
    return nf.config


# --------------------------------------------------------------------------------------------------
# Data on the device (or memory-mapped)
# --------------------------------------------------------------------------------------------------


class Batches:
    """Training pairs with z-scored W, on the device when they fit; batches by seeded permutation."""

    def __init__(
        self,
        data: "Dataset",
        n_train: int,
        normalise: Callable[["torch.Tensor"], "torch.Tensor"],
        device: "torch.device",
        on_device: bool,
    ) -> None:
        import torch

        self.data = data
        self.n = n_train
        self.device = device
        self.on_device = on_device
        self.normalise = normalise  # W → the network's space (z-score with the data's statistics, §4.2)
        if on_device:
            self.w = torch.empty((n_train, *data.latent_shape), dtype=torch.float32, device=device)
            self.e = torch.empty((n_train, data.embed_dim), dtype=torch.float32, device=device)
            chunk = 65536
            for a in range(0, n_train, chunk):
                b = min(n_train, a + chunk)
                w, e = data.read(a, b)
                self.w[a:b] = normalise(torch.from_numpy(w).to(device))
                self.e[a:b] = torch.from_numpy(e).to(device)
        self._epoch = -1
        self._perm: "torch.Tensor | None" = None

    def permutation(self, seed: int, epoch: int) -> "torch.Tensor":
        """The sample order of *epoch* (CPU randperm, so it is the same on every device)."""
        import torch

        from .data import mix_seed

        if epoch != self._epoch:
            g = torch.Generator().manual_seed(mix_seed(seed, 1, epoch))
            perm = torch.randperm(self.n, generator=g)
            self._perm = perm.to(self.device) if self.on_device else perm
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def get(self, idx: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(x0 normalised [b, *latent_shape], embed [b, D])`` for sample indices *idx*."""
        import torch

        if self.on_device:
            return self.w[idx], self.e[idx]
        w, e = self.data.gather(idx.numpy())
        wt = torch.from_numpy(w)
        et = torch.from_numpy(e)
        if self.device.type == "cuda":
            wt, et = wt.pin_memory().to(self.device, non_blocking=True), et.pin_memory().to(self.device, non_blocking=True)
        return self.normalise(wt), et


def _fits_on_device(nbytes: int, device: "torch.device") -> bool:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return nbytes < 0.5 * free
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return nbytes < 0.5 * avail


def data_fingerprint(data: "Dataset") -> str:
    """sha256 over the shards' sha256s: identifies the training data (checked on resume)."""
    import hashlib

    h = hashlib.sha256()
    for s in sorted(data.manifest.get("shards") or [], key=lambda s: int(s["index"])):
        h.update(f"{s['w_sha256']}{s['embed_sha256']}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


class Validator:
    """The paper's checkpoint selection: mean CLIP score of EMA samples for the validation prompts (§4.2),
    plus the cosine between held-out image embeddings and the embeddings of images sampled from them."""

    def __init__(self, G: Any, clip: Any, prompts: list[str], held_out_embed: "torch.Tensor", cfg: TrainConfig, device: "torch.device") -> None:
        import torch

        self.G = G
        self.clip = clip
        self.cfg = cfg
        self.device = device
        self.prompts = prompts
        with torch.no_grad():
            self.text = clip.embed_text(prompts).float().to(device)  # (P, D)
        self.held_out = held_out_embed.to(device)  # (H, D)

    def _clip_of_samples(self, prior: Any, embed: "torch.Tensor", seed_tag: int) -> "torch.Tensor":
        import torch

        from .data import mix_seed

        g = torch.Generator(device=self.device).manual_seed(mix_seed(self.cfg.seed, 3, seed_tag))
        ws = prior.sample(embed, steps=self.cfg.val_steps, guidance=self.cfg.val_guidance, generator=g)  # (B, num_ws, w_dim)
        feats = []
        for a in range(0, ws.shape[0], self.cfg.val_batch_size):
            img = self.G.synthesis(ws[a : a + self.cfg.val_batch_size].to(self.device), noise_mode="const")
            feats.append(self.clip.embed_image(img).float())
        return torch.cat(feats)  # (B, D)

    def __call__(self, prior: Any) -> dict[str, float]:
        """``{"val_text_clip": …, "val_image_sim": …}`` for the (EMA) *prior*."""
        import torch
        import torch.nn.functional as F

        out: dict[str, float] = {}
        with torch.no_grad():
            cond = self.text.repeat_interleave(self.cfg.val_samples_per_text, dim=0)  # (P*k, D)
            feats = self._clip_of_samples(prior, cond, 0)
            out["val_text_clip"] = float(F.cosine_similarity(feats, cond, dim=-1).mean())
            if self.held_out.shape[0]:
                feats = self._clip_of_samples(prior, self.held_out, 1)
                out["val_image_sim"] = float(F.cosine_similarity(feats, self.held_out, dim=-1).mean())
        return out


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _can_graph(cfg: TrainConfig, device: "torch.device", dist: "DistInfo") -> bool:
    """Whether the ``cuda_graph`` option applies: CUDA, one process, a condition-dropout mask every step."""
    return bool(cfg.cuda_graph and device.type == "cuda" and not dist.distributed and 0.0 < cfg.cond_drop_prob < 1.0)


def _graph_network(
    net: "torch.nn.Module",
    batch: int,
    latent_shape: tuple[int, ...],
    embed_dim: int,
    timesteps: int,
    device: "torch.device",
    amp_ctx: "Callable[[], Any] | None",
) -> "torch.nn.Module":
    """*net* with its forward and backward recorded as CUDA graphs for ``(x_t, t, embed, keep)`` of batch *batch*.

    ``torch.cuda.make_graphed_callables`` warms up with ``autograd.grad`` (no ``.grad`` is touched, no optimiser step)
    on sample inputs drawn from a private generator (the global RNG state is left alone), then records.
    """
    import contextlib

    import torch

    g = torch.Generator(device=device).manual_seed(0)
    sample = (
        torch.randn((batch, *latent_shape), generator=g, device=device),  # x_t
        torch.randint(0, timesteps, (batch,), generator=g, device=device),  # t
        torch.randn((batch, embed_dim), generator=g, device=device),  # embed
        torch.ones(batch, dtype=torch.bool, device=device),  # keep
    )
    with amp_ctx() if amp_ctx is not None else contextlib.nullcontext():
        return torch.cuda.make_graphed_callables(net, sample, capture_error_mode="thread_local")


@dataclass
class TrainResult:
    """What a training run ended with."""

    run: Path
    step: int
    best_score: float | None
    best_step: int | None
    last_loss: float | None
    steps_per_s: float
    interrupted: bool = False


def _metrics_truncate(path: Path, step: int) -> None:
    """Keep only metrics lines up to *step* (a resumed run re-logs what came after its checkpoint)."""
    from .fsutil import write_bytes_atomic

    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, AttributeError):
            continue
    write_bytes_atomic(path, ("\n".join(keep) + "\n").encode() if keep else b"")


def _check_run_dir(run: Path, resume: bool) -> None:
    if resume:
        if not (run / CHECKPOINT_DIR).is_dir():
            raise UsageError(f"--resume: {run} holds no checkpoint to resume from")
        return
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise UsageError(f"{run} already exists; pass --resume to continue that run, or choose another --out")


def prior_config_for(cfg: TrainConfig, data: "Dataset") -> Any:
    """The PriorConfig of the prior *cfg* trains on *data* (width and latents from the data)."""
    from .prior import PriorConfig

    shape = data.latent_shape
    w_dim = int(shape[-1])
    n_latents = 1 if len(shape) == 1 else int(shape[0])
    if data.embed_dim != w_dim:
        raise ModelMismatchError(
            f"the prior network needs the CLIP size ({data.embed_dim}) to equal the W size ({w_dim}) (DALLE2-pytorch's prior)"
        )
    dim = cfg.dim or w_dim
    if dim != w_dim:
        raise ModelMismatchError(f"config dim {dim} differs from the data's W/CLIP size {w_dim}; leave dim = 0 (auto)")
    return PriorConfig(
        dim=dim,
        depth=cfg.depth,
        heads=cfg.heads,
        dim_head=cfg.dim_head,
        timesteps=cfg.timesteps,
        n_latents=n_latents,
        latent_repeats=tuple(data.latent_repeats),
        cond_drop_prob=cfg.cond_drop_prob,
        embed_noise_scale=cfg.embed_noise_scale,
    ).validate()


def train(
    data_path: str | Path,
    run: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    resume_overrides: dict[str, Any] | None = None,
    device: "str | torch.device | None" = None,
    dist: "DistInfo | None" = None,
    verify_data: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a prior on the dataset at *data_path* into the run folder *run* (see the module docstring).

    *resume*: continue the run in *run* from its checkpoint with its saved config (*cfg* is then ignored
    except for the keys in ``TrainConfig.RESUMABLE`` given in *resume_overrides*). *on_log* receives every
    metrics record (rank 0), *on_status* one-line messages. *stop_after*: stop (with a checkpoint) after
    that many steps of this call — for tests of interrupted runs.
    """
    import torch

    from . import distributed as D
    from .data import mix_seed, open_dataset
    from .devices import resolve_device
    from .fsutil import write_json_atomic

    run = Path(run)
    if dist is None:
        dist = D.DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
    dev = dist.device
    say = on_status if (on_status is not None and dist.is_main) else (lambda _m: None)

    # ---- config, run folder and data (rank 0 checks, every rank learns of errors)
    error: BaseException | None = None
    saved: dict[str, Any] = {}
    try:
        _check_run_dir(run, resume)
        if resume:
            try:
                saved = json.loads((run / CONFIG_NAME).read_text())
            except (OSError, ValueError) as exc:
                raise FormatError(f"{run / CONFIG_NAME}: unreadable run config ({exc})") from exc
            overrides = dict(resume_overrides or {})
            bad = [k for k in overrides if k not in TrainConfig.RESUMABLE]
            if bad:
                raise UsageError(
                    f"--resume: {', '.join(bad)} cannot change in a resumed run (only {', '.join(TrainConfig.RESUMABLE)})"
                )
            base = dict(saved.get("train") or {})
            base.update(overrides)
            cfg = build_config(base)
        cfg.validate()
        if cfg.batch_size % dist.world_size:
            raise UsageError(f"batch_size {cfg.batch_size} is not divisible by the {dist.world_size} processes")
        data = open_dataset(data_path, verify=verify_data)
        fingerprint = data_fingerprint(data)
        if resume and saved.get("data", {}).get("fingerprint") not in (None, fingerprint):
            raise UsageError(f"--resume: {data_path} is not the data this run was trained on")
        held = cfg.val_image_samples if cfg.val_every else 0
        n_train = data.n_samples - held
        if n_train < cfg.batch_size:
            raise UsageError(
                f"{data_path}: {n_train} training pairs (after {held} held out for validation) are fewer than one batch of {cfg.batch_size}"
            )
        pcfg = prior_config_for(cfg, data)
    except C2LError as exc:
        error = exc
    D.agree(dist, error)

    # ---- models
    from .diffusion.objective import augment_embedding, training_loss
    from .prior import Prior, save_prior

    mean_np, std_np = data.latent_stats(n_train)  # z-score statistics of W from the training data (§4.2)
    mean = torch.from_numpy(mean_np)
    std = torch.from_numpy(std_np).clamp_min(1e-8)
    prior = Prior.new(pcfg, mean, std, device=dev, seed=mix_seed(cfg.seed, 0))
    net = prior.net
    net.train()
    ema_prior = copy.deepcopy(prior)
    ema_prior.net.eval().requires_grad_(False)
    ema = EMA(net, ema_prior.net, cfg.ema_beta, cfg.ema_update_every, cfg.ema_update_after)
    optimizer = make_optimizer(net, cfg, dev)
    schedule = prior.schedule

    step = 0
    best_score: float | None = None
    best_step: int | None = None
    loss_sum = torch.zeros((), device=dev)
    loss_count = 0
    if resume:
        meta = load_train_state(run / CHECKPOINT_DIR, net=net, ema_net=ema_prior.net, optimizer=optimizer, device=dev)
        step = int(meta["step"])
        best_score = meta.get("best_score")
        best_step = meta.get("best_step")
        loss_sum = torch.tensor(float(meta.get("loss_sum", 0.0)), device=dev)
        loss_count = int(meta.get("loss_count", 0))
        say(f"resuming {run} at step {step}")

    on_device = cfg.data_on_device == "yes" or (cfg.data_on_device == "auto" and _fits_on_device(data.nbytes, dev))
    batches = Batches(data, n_train, prior.normalise_latents, dev, on_device)

    use_graph = _can_graph(cfg, dev, dist)
    if cfg.cuda_graph and not use_graph:
        say("cuda_graph needs CUDA, one process and 0 < cond_drop_prob < 1: running eagerly")
    use_amp = cfg.amp == "bf16" or (cfg.amp == "auto" and dev.type == "cuda")
    # (CUDA graphs need autocast's weight-cast cache off: the casts must happen inside the recorded forward)
    amp_ctx = (
        (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16, cache_enabled=not use_graph)) if use_amp else None
    )

    from .accel import maybe_compile

    maybe_compile(net, cfg.compile, dynamic=False)  # after the EMA copy: only the online training forward is compiled
    model = net
    if use_graph:  # after the EMA copy too; net's weights, state dict and checkpoints are unchanged
        model = _graph_network(net, cfg.batch_size // dist.world_size, tuple(data.latent_shape), data.embed_dim, pcfg.timesteps,
                               dev, amp_ctx)
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    # ---- validation engines (rank 0)
    validator: Validator | None = None
    error = None
    if dist.is_main and cfg.val_every:
        try:
            from .clip import load_clip
            from .generator import load_generator

            gsrc = cfg.generator or (data.manifest.get("generator") or {}).get("source")
            csrc = cfg.clip or (data.manifest.get("clip") or {}).get("spec")
            if not gsrc or not csrc:
                raise UsageError("validation needs a generator and a CLIP: set generator/clip in the config")
            G = load_generator(gsrc, device=dev)
            # embed validation images the way the training pairs were embedded (see gen-data --clip-preprocess)
            preprocess = (data.manifest.get("clip") or {}).get("preprocess") or "standard"
            clip = load_clip(csrc, device=dev, preprocess=preprocess)
            if int(G.w_dim) != prior.w_dim or int(G.num_ws) != prior.num_ws or int(clip.dim) != prior.embed_dim:
                raise ModelMismatchError(
                    f"validation models do not fit the data: generator w_dim {G.w_dim}/num_ws {G.num_ws}, CLIP dim {clip.dim}; "
                    f"data W {prior.w_dim}/{prior.num_ws} ws, embeddings {prior.embed_dim}"
                )
            _hw, held_e = data.read(n_train, data.n_samples)
            validator = Validator(G, clip, load_prompts(cfg.val_prompts), torch.from_numpy(held_e), cfg, dev)
        except C2LError as exc:
            error = exc
    D.agree(dist, error)

    # ---- run folder
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        from ._version import __version__

        doc = {
            "format": "c2l-train-run",
            "version": 1,
            "c2l_version": __version__,
            "torch_version": torch.__version__,
            "train": cfg.to_dict(),
            "prior": pcfg.to_dict(),
            "data": {
                "path": str(Path(data_path).resolve()),
                "fingerprint": fingerprint,
                "n_samples": data.n_samples,
                "n_train": n_train,
                "n_held_out": data.n_samples - n_train,
                "latent_shape": list(data.latent_shape),
                "embed_dim": data.embed_dim,
                "generator": data.manifest.get("generator"),
                "clip": data.manifest.get("clip"),
            },
            "world_size": dist.world_size,
            "device": str(dev),
            "data_on_device": on_device,
            "amp": "bf16" if use_amp else "none",
            "cuda_graph": use_graph,  # whether the cuda_graph option was in effect (it needs CUDA and one process)
        }
        write_json_atomic(run / CONFIG_NAME, doc)
        if resume:
            _metrics_truncate(run / METRICS_NAME, step)
    D.barrier(dist)

    metrics = open(run / METRICS_NAME, "a") if dist.is_main else None

    def log(record: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        if on_log is not None and dist.is_main:
            on_log(record)

    def checkpoint() -> None:
        if dist.is_main:
            meta = {
                "step": step,
                "epoch": step // steps_per_epoch,
                "position": step % steps_per_epoch,
                "best_score": best_score,
                "best_step": best_step,
                "loss_sum": float(loss_sum),
                "loss_count": loss_count,
                "train": cfg.to_dict(),
                "data_fingerprint": fingerprint,
                "world_size": dist.world_size,
            }
            save_train_state(run / CHECKPOINT_DIR, net=net, ema_net=ema_prior.net, optimizer=optimizer, meta=meta)
            save_prior(ema_prior, run / LATEST_DIR)
        D.barrier(dist)

    def validate() -> None:
        nonlocal best_score, best_step
        if dist.is_main and validator is not None:
            t0 = time.perf_counter()
            scores = validator(ema_prior)
            rec = {"step": step, **scores, "val_seconds": round(time.perf_counter() - t0, 3)}
            if best_score is None or scores["val_text_clip"] > best_score:
                best_score, best_step = scores["val_text_clip"], step
                save_prior(ema_prior, run / BEST_DIR)
                rec["best"] = True
            log(rec)
        if dist.distributed:
            best_score, best_step = D.broadcast_object(dist, (best_score, best_step))

    # ---- train
    B = cfg.batch_size
    b_local = B // dist.world_size
    steps_per_epoch = n_train // B
    gen = torch.Generator(device=dev)
    t_start = time.perf_counter()
    t_log, step_log = t_start, step
    last_loss: float | None = None
    interrupted = False
    start_step = step
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    say(
        f"training on {n_train} pairs ({'on the device' if on_device else 'memory-mapped'}), batch {B}"
        + (f" over {dist.world_size} processes" if dist.distributed else "")
        + f", steps {step} → {cfg.max_steps} on {dev}"
    )
    try:
        while step < end:
            epoch, pos = divmod(step, steps_per_epoch)
            perm = batches.permutation(cfg.seed, epoch)
            lo = pos * B + dist.rank * b_local
            x0, emb = batches.get(perm[lo : lo + b_local])
            gen.manual_seed(mix_seed(cfg.seed, 2, step, dist.rank))
            if cfg.embed_noise_scale > 0:
                emb = augment_embedding(emb, scale=cfg.embed_noise_scale, generator=gen)
            emb = emb * pcfg.text_embed_scale
            if amp_ctx is not None:
                with amp_ctx():
                    loss = training_loss(model, x0, emb, schedule, generator=gen, cond_drop_prob=cfg.cond_drop_prob)
            else:
                loss = training_loss(model, x0, emb, schedule, generator=gen, cond_drop_prob=cfg.cond_drop_prob)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step += 1
            ema.update(step)
            loss_sum = loss_sum + loss.detach().float()
            loss_count += 1
            if step % cfg.log_every == 0 or step == end:
                mean_loss = D.all_reduce_mean(dist, loss_sum / max(loss_count, 1))
                last_loss = float(mean_loss)  # the one host sync, every log_every steps
                now = time.perf_counter()
                rate = (step - step_log) / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                loss_sum = torch.zeros((), device=dev)
                loss_count = 0
                log({"step": step, "epoch": step // steps_per_epoch, "loss": last_loss, "steps_per_s": round(rate, 3),
                     "samples_per_s": round(rate * B, 1), "elapsed_s": round(now - t_start, 3)})
            if cfg.val_every and (step % cfg.val_every == 0 or (step == cfg.max_steps and best_score is None)):
                validate()  # a run shorter than val_every still gets a best/
            if step % cfg.ckpt_every == 0 or step == end:
                checkpoint()
    except KeyboardInterrupt:
        interrupted = True
        if not dist.distributed:
            checkpoint()
            say(f"interrupted: checkpoint at step {step} saved; continue with --resume")
        raise
    finally:
        if metrics is not None:
            metrics.close()
    ran = step - start_step
    elapsed = time.perf_counter() - t_start
    return TrainResult(
        run=run,
        step=step,
        best_score=best_score,
        best_step=best_step,
        last_loss=last_loss,
        steps_per_s=ran / elapsed if elapsed > 0 else 0.0,
        interrupted=interrupted,
    )
