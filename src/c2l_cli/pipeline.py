"""The text → image pipeline of clip2latent (Pinkney & Li 2022, §4.3), shared by the CLI and Python.

CLIP text (or image) embedding → diffusion prior → W → StyleGAN synthesis → CLIP re-ranking:
each condition gets ``candidates`` W latents from the prior and keeps the ``num_images`` whose
images are closest (cosine) to the condition embedding. Models are loaded once; all prompts are
embedded in one CLIP pass; the prior runs over every candidate of every prompt at once (its
classifier-free guidance evaluates cond and null as one batch); synthesis and re-ranking run in
batches of ``batch_size`` spanning prompts.

Reproducibility: every random draw comes from its own ``torch.Generator`` whose seed is derived
from the run seed (``derive_seed``): candidate ``c`` of prompt ``p`` draws its diffusion noise from
``candidate_seed(seed, p, c)`` and its style-mixing z from ``style_seed(seed, p, c)``. The draws are
made on the CPU and moved to the device, so an image depends only on (seed, p, c, settings) — not on
the batch size, the number of prompts or the device's RNG.

Reference: https://github.com/justinpinkney/clip2latent/blob/1f95e9c/clip2latent/models.py
(``Clip2StyleGAN.forward``: embed_text → repeat_interleave → prior.sample → G.synthesis →
cosine re-rank).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from ._version import __version__
from .errors import C2LError, FormatError, ModelMismatchError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

SAMPLERS = ("reference", "ddpm", "ddim")
RECIPE_FORMAT = "c2l-recipe/1"
#: Rows the prior denoises at once (bounds memory for many prompts; results do not depend on it).
PRIOR_CHUNK = 256
#: At most this many noise values per prior chunk (128 MiB of float32: long schedules get smaller chunks).
NOISE_BUDGET = 2**25
#: Largest seed accepted (seeds are recorded as JSON integers; 63 bits stay exact in every reader).
MAX_SEED = 2**63 - 1

Progress = Optional[Callable[[str], None]]


# ----------------------------------------------------------------------------------------------
# seeds


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed derived from *seed* and *keys* by sha256 (stable across runs and platforms)."""
    text = "c2l/" + "/".join(str(k) for k in (int(seed), *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & MAX_SEED


def candidate_seed(seed: int, prompt_index: int, candidate_index: int) -> int:
    """Seed of the diffusion noise of candidate *candidate_index* of prompt *prompt_index*."""
    return derive_seed(seed, "prior", prompt_index, candidate_index)


def style_seed(seed: int, prompt_index: int, candidate_index: int) -> int:
    """Seed of the random z whose W supplies the style-mixed layers of that candidate."""
    return derive_seed(seed, "style", prompt_index, candidate_index)


def random_seed() -> int:
    """A fresh random run seed (31 bits: short enough to type back)."""
    return secrets.randbelow(2**31)


# ----------------------------------------------------------------------------------------------
# settings and validation


@dataclass
class SampleSettings:
    """The controls of one sampling run (recorded in every recipe and manifest)."""

    steps: int = 4  # denoising steps (paper: 4 = timestep skip 250 of 1000)
    guidance: float = 2.0  # classifier-free guidance scale, null + (cond - null) * guidance
    sampler: str = "reference"  # reference (clip2latent's), ddpm or ddim
    eta: float = 0.0  # DDIM eta (0 = deterministic DDIM); ignored by the other samplers
    truncation: float = 1.0  # pull W toward the prior's mean latent (1 = none)
    candidates: int = 16  # prior samples per prompt, re-ranked by CLIP (paper: 16)
    num_images: int = 1  # images kept per prompt (the best by CLIP similarity)
    style_mix: Optional[int] = None  # layers >= K come from a random W (None = off)
    batch_size: int = 8  # synthesis/re-ranking batch (does not change results)
    noise_mode: str = "const"  # StyleGAN per-pixel noise: const (deterministic), none or random

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return asdict(self)


def validate_settings(s: SampleSettings, *, timesteps: Optional[int] = None, num_ws: Optional[int] = None) -> None:
    """Raise :class:`UsageError` for out-of-range controls (model-dependent checks when given)."""
    if s.num_images < 1:
        raise UsageError(f"--num-images must be at least 1, got {s.num_images}")
    if s.candidates < s.num_images:
        raise UsageError(f"--candidates ({s.candidates}) must be at least --num-images ({s.num_images})")
    if s.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {s.steps}")
    if not math.isfinite(s.guidance) or s.guidance < 0:
        raise UsageError(f"--guidance must be >= 0, got {s.guidance}")
    if not (0.0 <= s.truncation <= 2.0):
        raise UsageError(f"--truncation must be in [0, 2], got {s.truncation}")
    if s.sampler not in SAMPLERS:
        raise UsageError(f"unknown --sampler {s.sampler!r} (use {', '.join(SAMPLERS)})")
    if not math.isfinite(s.eta) or s.eta < 0:
        raise UsageError(f"--eta must be >= 0, got {s.eta}")
    if s.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {s.batch_size}")
    if s.noise_mode not in ("const", "none", "random"):
        raise UsageError(f"unknown noise mode {s.noise_mode!r} (use const, none or random)")
    if s.style_mix is not None and s.style_mix < 1:
        raise UsageError(f"--style-mix must be a layer index >= 1, got {s.style_mix}")
    T = 1000 if timesteps is None else int(timesteps)
    if s.steps > T:
        raise UsageError(f"--steps {s.steps} is more than the prior's {T} timesteps")
    if s.sampler == "reference" and T % s.steps != 0:
        divisors = [d for d in (1, 2, 4, 5, 8, 10, 20, 25, 50, 100, 250, 1000) if T % d == 0]
        raise UsageError(
            f"--steps {s.steps} does not divide the prior's {T} timesteps, which the reference sampler needs "
            f"(e.g. {', '.join(map(str, divisors[:10]))}; or use --sampler ddim)"
        )
    if num_ws is not None and s.style_mix is not None and s.style_mix >= num_ws:
        raise UsageError(f"--style-mix {s.style_mix} must be below the generator's {num_ws} ws (1..{num_ws - 1})")


def mix_embeddings(text: "torch.Tensor", image: "torch.Tensor", image_weight: float) -> "torch.Tensor":
    """Condition on text and image together: ``normalize((1-w)·t̂ + w·î) · ((1-w)|t| + w|i|)``.

    The direction is the weighted sum of the unit embeddings; the length is the weighted mean of
    the two lengths, so ``w = 0`` gives exactly the text embedding and ``w = 1`` exactly the image
    embedding (the kind the prior was trained on). Broadcasts ``[N, D]`` with ``[1, D]``.
    """
    import torch

    w = float(image_weight)
    if not 0.0 <= w <= 1.0:
        raise UsageError(f"--image-weight must be in [0, 1], got {w}")
    t_norm = text.norm(dim=-1, keepdim=True)
    i_norm = image.norm(dim=-1, keepdim=True)
    direction = (1 - w) * text / t_norm + w * image / i_norm
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(direction.dtype).tiny)
    return direction * ((1 - w) * t_norm + w * i_norm)


# ----------------------------------------------------------------------------------------------
# results


@dataclass
class SampleItem:
    """One kept image: where it came from and how it scored."""

    prompt: Optional[str]  # the text prompt (None when conditioned on an image alone)
    prompt_index: int  # index of the condition in the run
    rank: int  # 0 = best of its prompt
    candidate_index: int  # which of the prompt's candidates it was
    candidate_seed: int  # seed of its diffusion noise
    style_seed: Optional[int]  # seed of its style-mixing z (None without --style-mix)
    score: float  # cosine similarity of its CLIP image embedding to the condition embedding


@dataclass
class SampleResult:
    """What :meth:`Pipeline.sample` returns. Tensors are on the CPU, float32."""

    images: "torch.Tensor"  # [N, 3, H, W] in [-1, 1], N = prompts × num_images, grouped by prompt
    ws: "torch.Tensor"  # [N, num_ws, w_dim], the ws that made each image (after mixing)
    scores: "torch.Tensor"  # [N]
    seeds: list[int]  # candidate seed of each image
    items: list[SampleItem]  # per-image metadata, same order
    candidate_scores: "torch.Tensor"  # [P, candidates]: every candidate's score (re-ranking input)
    prompts: list[Optional[str]]  # one per condition
    seed: int  # the run seed
    settings: SampleSettings
    image_condition: Optional[dict] = None  # {"path", "sha256", "weight"} with --image

    def pil(self) -> "list[Image.Image]":
        """The images as PIL images."""
        from .images import to_pil

        return to_pil(self.images)


# ----------------------------------------------------------------------------------------------
# the pipeline


def _model_device(module: Any) -> "torch.device":
    import torch

    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _model_dtype(module: Any) -> "torch.dtype":
    import torch

    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _file_sha256(path: Path) -> Optional[str]:
    from . import cache

    try:
        if path.is_file():
            return cache.sha256_of(path)
        if path.is_dir():  # our native format: a folder; its weights file identifies it
            for name in ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                if (path / name).is_file():
                    return cache.sha256_of(path / name)
    except (OSError, C2LError):
        return None
    return None


def _source_text(source: Union[str, os.PathLike]) -> str:
    """Local paths recorded absolute (so a recipe replays from anywhere); names and URLs as given."""
    text = os.fspath(source).strip()
    if text.startswith(("http://", "https://")):
        return text
    p = Path(text).expanduser()
    if ("/" in text or os.sep in text or p.suffix) and p.exists():
        return str(p.resolve())
    return text


def _clip_record(spec: str, clip: Any) -> dict:
    """``{"spec", "sha256"}`` for a CLIP model; sha256 of its weights file when one can be found."""
    sha = None
    path = getattr(clip, "weights_path", None) or getattr(clip, "checkpoint_path", None)
    if path:
        sha = _file_sha256(Path(path))
    elif spec.startswith("local-dir:"):
        sha = _file_sha256(Path(spec[len("local-dir:") :]).expanduser())
    return {"spec": spec, "sha256": sha}


def _clip_spec_text(spec: str) -> str:
    if spec.startswith("local-dir:"):
        p = Path(spec[len("local-dir:") :]).expanduser()
        if p.exists():
            return "local-dir:" + str(p.resolve())
    return spec


class Pipeline:
    """StyleGAN + diffusion prior + CLIP, loaded once, with the paper's sampling pipeline."""

    def __init__(self, generator: Any, prior: Any, clip: Any, device: Any = None, *, models: Optional[dict] = None):
        import torch

        from .devices import resolve_device

        self.generator = generator
        self.prior = prior
        self.clip = clip
        self.device = resolve_device(device) if device is not None else _model_device(generator)
        #: ``{"generator": {"source", "sha256"}, "prior": {...}, "clip": {"spec", "sha256"}}`` (recipes).
        self.models = models or {}
        self._check_shapes()
        self._torch = torch

    # -- construction ------------------------------------------------------------------------

    def _check_shapes(self) -> None:
        G, P, C = self.generator, self.prior, self.clip
        if G is not None and P is not None:
            if int(G.w_dim) != int(P.w_dim):
                raise ModelMismatchError(
                    f"the generator's w_dim ({G.w_dim}) does not match the prior's ({P.w_dim}): "
                    "use the generator the prior was trained for"
                )
            if int(G.num_ws) != int(P.num_ws):
                raise ModelMismatchError(
                    f"the generator has {G.num_ws} ws but the prior produces {P.num_ws}: "
                    "use the generator the prior was trained for"
                )
        if C is not None and P is not None and int(C.dim) != int(P.embed_dim):
            raise ModelMismatchError(
                f"the CLIP model's embedding size ({C.dim}) does not match the prior's ({P.embed_dim}): "
                "use the CLIP model the prior was trained with"
            )

    @classmethod
    def from_sources(
        cls,
        model: Optional[str] = "ffhq",
        generator: Optional[Union[str, os.PathLike]] = None,
        prior: Optional[Union[str, os.PathLike]] = None,
        clip: Optional[str] = None,
        device: Any = None,
        dtype: Any = None,
        *,
        progress: Progress = None,
    ) -> "Pipeline":
        """Load the three models once (registry bundle *model*, each overridable) and check they fit.

        The prior is loaded first and each other model is checked against it as soon as it is
        loaded, so a mismatch fails before the large downloads/loads that follow it.
        """
        from . import cache, registry
        from .devices import resolve_device, resolve_dtype

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        if generator is None or prior is None or clip is None:
            b = registry.bundle(model)
            generator = b.generator if generator is None else generator
            prior = b.prior if prior is None else prior
            clip = b.clip if clip is None else clip
        say = progress or (lambda _m: None)

        from .prior import load_prior

        say(f"loading prior {prior}")
        prior_path = cache.resolve(prior, kind="prior")
        P = load_prior(prior_path, device=dev)
        models: dict = {"prior": {"source": _source_text(prior), "sha256": _file_sha256(prior_path)}}

        from .generator import load_generator

        say(f"loading generator {generator}")
        gen_path = cache.resolve(generator, kind="generator")
        G = load_generator(gen_path, device=dev, dtype=dt)
        models["generator"] = {"source": _source_text(generator), "sha256": _file_sha256(gen_path)}
        cls(G, P, None, dev)._check_shapes()

        from .clip import load_clip

        say(f"loading CLIP {clip}")
        C = load_clip(clip, device=dev, dtype=dt)
        models["clip"] = _clip_record(_clip_spec_text(str(clip)), C)
        models = {k: models[k] for k in ("generator", "prior", "clip")}
        return cls(G, P, C, dev, models=models)

    # -- building blocks -----------------------------------------------------------------------

    @property
    def num_ws(self) -> int:
        return int(self.generator.num_ws)

    @property
    def resolution(self) -> int:
        return int(self.generator.img_resolution)

    @property
    def timesteps(self) -> int:
        cfg = getattr(self.prior, "config", None)
        return int(getattr(cfg, "timesteps", 1000) or 1000)

    def embed_texts(self, texts: Sequence[str]) -> "torch.Tensor":
        """CLIP text embeddings ``[N, D]`` (float32, on the pipeline's device), one batched pass."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise UsageError("empty prompt: give some text to condition on")
        with self._torch.no_grad():
            return self.clip.embed_text(texts).float().to(self.device)

    def embed_images(self, images: Sequence[Any]) -> "torch.Tensor":
        """CLIP image embeddings ``[N, D]`` of file paths, PIL images or generator tensors in [-1, 1]."""
        with self._torch.no_grad():
            return self.clip.embed_image(images).float().to(self.device)

    def noise_for(self, seeds: Sequence[int], steps: int) -> "torch.Tensor":
        """Diffusion noise ``[steps+1, B, *latent_shape]``; row i drawn on the CPU from ``seeds[i]``."""
        torch = self._torch
        shape = (int(steps) + 1, *tuple(self.prior.latent_shape))
        rows = []
        for s in seeds:
            g = torch.Generator(device="cpu").manual_seed(int(s))
            rows.append(torch.randn(shape, generator=g, dtype=torch.float32))  # (steps+1, *latent)
        return torch.stack(rows, dim=1).to(self.device)  # (steps+1, B, *latent)

    def sample_ws(
        self,
        embed: "torch.Tensor",
        seeds: Sequence[int],
        steps: int = 4,
        guidance: float = 2.0,
        truncation: float = 1.0,
        sampler: str = "reference",
        eta: float = 0.0,
    ) -> "torch.Tensor":
        """Prior samples ``[B, num_ws, w_dim]`` for embeddings ``[B, D]``; row i's noise from ``seeds[i]``."""
        torch = self._torch
        if embed.shape[0] != len(seeds):
            raise UsageError(f"sample_ws got {embed.shape[0]} embeddings but {len(seeds)} seeds")
        out = []
        per_row = (int(steps) + 1) * math.prod(self.prior.latent_shape)
        rows = max(1, min(PRIOR_CHUNK, NOISE_BUDGET // per_row))
        with torch.no_grad():
            for i in range(0, len(seeds), rows):
                chunk = list(seeds[i : i + rows])
                noise = self.noise_for(chunk, steps)
                ws = self.prior.sample(
                    embed[i : i + rows].float().to(self.device),
                    steps=int(steps),
                    guidance=float(guidance),
                    truncation=float(truncation),
                    sampler=sampler,
                    eta=float(eta),
                    noise=noise,
                )
                out.append(ws.float())
        return torch.cat(out, dim=0)  # (B, num_ws, w_dim)

    def random_ws(self, seeds: Sequence[int], truncation: float = 1.0) -> "torch.Tensor":
        """``G.mapping`` of one z per seed (drawn on the CPU) → ``[B, num_ws, w_dim]``."""
        torch = self._torch
        G = self.generator
        z = torch.stack(
            [torch.randn((int(G.z_dim),), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        )  # (B, z_dim)
        with torch.no_grad():
            c = None
            c_dim = int(getattr(G, "c_dim", 0) or 0)
            if c_dim:
                c = torch.zeros((len(seeds), c_dim), device=self.device)
            ws = G.mapping(z.to(self.device, _model_dtype(G.mapping)), c, truncation_psi=float(truncation))
        return ws.float()

    def mix(self, ws: "torch.Tensor", seeds: Sequence[int], k: int, truncation: float = 1.0) -> "torch.Tensor":
        """Style mixing (§5.2.2): layers ``[:k]`` from *ws*, ``[k:]`` from a random W per seed.

        The random W is truncated with the same *truncation* (toward the generator's W mean), so
        ``--truncation`` tames the mixed-in fine layers too.
        """
        from .generator import style_mix

        return style_mix(ws, self.random_ws(seeds, truncation).to(ws.device, ws.dtype), int(k))

    def synthesize(self, ws: "torch.Tensor", batch_size: int = 8, noise_mode: str = "const") -> "torch.Tensor":
        """StyleGAN synthesis in batches → images ``[B, 3, H, W]`` (float32, nominally [-1, 1])."""
        torch = self._torch
        G = self.generator
        dt = _model_dtype(G.synthesis)
        out = []
        with torch.no_grad():
            for i in range(0, ws.shape[0], max(1, int(batch_size))):
                out.append(G.synthesis(ws[i : i + batch_size].to(self.device, dt), noise_mode=noise_mode).float())
        return torch.cat(out, dim=0)

    def score(self, images: "torch.Tensor", embed: "torch.Tensor") -> "torch.Tensor":
        """Re-ranking score: cosine of each image's CLIP embedding to its condition embedding ``[B]``."""
        torch = self._torch
        with torch.no_grad():
            emb = self.embed_images(images)
            return torch.nn.functional.cosine_similarity(emb, embed.to(emb.device, emb.dtype), dim=-1)

    # -- conditions ----------------------------------------------------------------------------

    def conditions(
        self,
        prompts: Optional[Sequence[str]] = None,
        image: Any = None,
        image_weight: Optional[float] = None,
    ) -> tuple[list[Optional[str]], "torch.Tensor"]:
        """(prompt of each condition, condition embeddings ``[P, D]``).

        Text prompts only: their CLIP text embeddings (one batched pass). *image* only: one
        condition, its CLIP image embedding. Both: every prompt mixed with the image by
        :func:`mix_embeddings` (default weight 0.5).
        """
        prompts = [p for p in (prompts or [])]
        if not prompts and image is None:
            raise UsageError("nothing to condition on: give a prompt or an image")
        if prompts:
            text = self.embed_texts(prompts)
            if image is None:
                if image_weight is not None:
                    raise UsageError("--image-weight needs --image")
                return list(prompts), text
            img = self.embed_images([image])
            w = 0.5 if image_weight is None else float(image_weight)
            return list(prompts), mix_embeddings(text, img, w)
        return [None], self.embed_images([image])

    # -- the full pipeline ---------------------------------------------------------------------

    def sample(
        self,
        prompts: Optional[Union[str, Sequence[str]]] = None,
        num_images: int = 1,
        candidates: int = 16,
        seed: Optional[int] = None,
        steps: int = 4,
        guidance: float = 2.0,
        truncation: float = 1.0,
        sampler: str = "reference",
        eta: float = 0.0,
        style_mix: Optional[int] = None,
        batch_size: int = 8,
        noise_mode: str = "const",
        *,
        image: Any = None,
        image_weight: Optional[float] = None,
        progress: Progress = None,
        exact: bool = True,
    ) -> SampleResult:
        """The paper's §4.3 pipeline for every prompt: keep the best *num_images* of *candidates*.

        *image*: a path or PIL image to condition on (alone, or mixed with each prompt by
        *image_weight*). *seed*: the run seed (random when None; always in the result).
        *exact*: render each kept image again alone, so it is bit-identical whatever the batch size
        and to :meth:`replay` (costs one batch-1 prior + synthesis per kept image); ``False`` keeps
        the batched renders (equal to the exact ones up to float rounding).
        """
        torch = self._torch
        say = progress or (lambda _m: None)
        if isinstance(prompts, str):
            prompts = [prompts]
        s = SampleSettings(
            steps=int(steps),
            guidance=float(guidance),
            sampler=str(sampler),
            eta=float(eta),
            truncation=float(truncation),
            candidates=int(candidates),
            num_images=int(num_images),
            style_mix=None if style_mix is None else int(style_mix),
            batch_size=int(batch_size),
            noise_mode=str(noise_mode),
        )
        validate_settings(s, timesteps=self.timesteps, num_ws=self.num_ws)
        seed = random_seed() if seed is None else int(seed)
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"--seed must be in [0, 2^63-1], got {seed}")

        labels, cond = self.conditions(prompts, image, image_weight)  # cond: (P, D)
        P, C, K = len(labels), s.candidates, s.num_images
        rows_p = [p for p in range(P) for _ in range(C)]  # prompt of each flat candidate row
        rows_c = [c for _ in range(P) for c in range(C)]
        seeds = [candidate_seed(seed, p, c) for p, c in zip(rows_p, rows_c)]
        embed = cond.repeat_interleave(C, dim=0)  # (P*C, D)

        say(f"sampling {P * C} latents ({P} prompt{'s' if P > 1 else ''} × {C} candidates, "
            f"{s.steps} {s.sampler} steps, guidance {s.guidance:g})")
        ws = self.sample_ws(embed, seeds, s.steps, s.guidance, s.truncation, s.sampler, s.eta)  # (P*C, num_ws, w_dim)
        sseeds: list[Optional[int]] = [None] * len(seeds)
        if s.style_mix is not None:
            sseeds = [style_seed(seed, p, c) for p, c in zip(rows_p, rows_c)]
            ws = self.mix(ws, sseeds, s.style_mix, s.truncation)

        # synthesis + re-ranking in batches spanning prompts; scores stay on the device (one sync at the end)
        scores = torch.empty(P * C, dtype=torch.float32, device=self.device)
        pool: dict[int, list] = {p: [] for p in range(P)}  # exact=False: running top-K images per prompt
        bs = s.batch_size
        nb = math.ceil(P * C / bs)
        for b, j0 in enumerate(range(0, P * C, bs)):
            j1 = min(j0 + bs, P * C)
            say(f"synthesising and scoring batch {b + 1}/{nb}")
            imgs = self.synthesize(ws[j0:j1], bs, s.noise_mode)  # (b, 3, H, W)
            scores[j0:j1] = self.score(imgs, embed[j0:j1]).float()
            if not exact:
                row = scores[j0:j1].tolist()
                for r, j in enumerate(range(j0, j1)):
                    pool[rows_p[j]].append((-row[r], rows_c[j], imgs[r]))
                for p in set(rows_p[j0:j1]):
                    pool[p] = sorted(pool[p], key=lambda e: (e[0], e[1]))[:K]
            del imgs
        all_scores = scores.cpu().view(P, C)

        # keep the best K per prompt (ties: the lower candidate index). exact=True renders each kept
        # image again on its own (batch of 1) so its pixels depend only on its seeds, never on the
        # batching — exactly what replay() computes from the recipe.
        images, out_ws, items, out_seeds = [], [], [], []
        if exact:
            say(f"rendering the best {K} of {C} for {P} prompt{'s' if P > 1 else ''}")
        for p in range(P):
            row = all_scores[p].tolist()
            best = sorted(range(C), key=lambda c: (-row[c], c))[:K]
            if exact:
                cond_p = cond[p : p + 1] if P == 1 else self.conditions(
                    [labels[p]] if labels[p] is not None else None, image, image_weight)[1]  # (1, D)
            for rank, c in enumerate(best):
                j = p * C + c
                if exact:
                    img, w = self.render(cond_p, seeds[j], sseeds[j], s)
                    score = float(self.score(img, cond_p).float().cpu()[0])
                    img, w = img[0], w[0]
                else:
                    img, w, score = pool[p][rank][2], ws[j], row[c]
                images.append(img.float().cpu())
                out_ws.append(w.float().cpu())
                out_seeds.append(seeds[j])
                items.append(SampleItem(labels[p], p, rank, c, seeds[j], sseeds[j], score))
        image_condition = None
        if image is not None:
            image_condition = {
                "path": str(Path(image).resolve()) if isinstance(image, (str, os.PathLike)) else None,
                "sha256": _image_sha(image),
                "weight": (0.5 if image_weight is None else float(image_weight)) if any(labels) else 1.0,
            }
        return SampleResult(
            images=torch.stack(images),
            ws=torch.stack(out_ws),
            scores=torch.tensor([it.score for it in items], dtype=torch.float32),
            seeds=out_seeds,
            items=items,
            candidate_scores=all_scores.view(P, C),
            prompts=labels,
            seed=seed,
            settings=s,
            image_condition=image_condition,
        )

    def render(
        self, cond: "torch.Tensor", cand_seed: int, style_seed_: Optional[int], s: SampleSettings
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """One image from its seeds, alone (batch of 1): ``(image [1, 3, H, W], ws [1, num_ws, w_dim])``.

        Used for every kept image of :meth:`sample` and by :meth:`replay`, so a recipe reproduces
        the pixels exactly (batched float kernels can differ in the last bits between batch sizes).
        """
        ws = self.sample_ws(cond, [cand_seed], s.steps, s.guidance, s.truncation, s.sampler, s.eta)
        if s.style_mix is not None:
            if style_seed_ is None:
                raise UsageError("style mixing needs a style seed")
            ws = self.mix(ws, [style_seed_], s.style_mix, s.truncation)
        return self.synthesize(ws, 1, s.noise_mode), ws

    # -- recipes -------------------------------------------------------------------------------

    def recipe(self, result: SampleResult, index: int, *, extra: Optional[dict] = None) -> dict:
        """The JSON recipe of image *index* of *result* (what ``--replay`` needs, and more)."""
        it = result.items[index]
        torch = self._torch
        rec = {
            "format": RECIPE_FORMAT,
            "c2l_version": __version__,
            "prompt": it.prompt,
            "image": result.image_condition,
            "seed": result.seed,
            "prompt_index": it.prompt_index,
            "candidate_index": it.candidate_index,
            "rank": it.rank,
            "candidate_seed": it.candidate_seed,
            "style_seed": it.style_seed,
            "score": round(it.score, 6),
            "models": self.models,
            "settings": result.settings.to_dict(),
            "device": str(self.device),
            "dtype": str(getattr(self.generator, "compute_dtype", None) or _model_dtype(self.generator)).replace("torch.", ""),
            "torch_version": torch.__version__,
        }
        if extra:
            rec.update(extra)
        return rec

    def replay(self, recipe: dict, *, overrides: Optional[dict] = None, progress: Progress = None) -> SampleResult:
        """Regenerate the image a recipe describes (same candidate seed, style seed and settings).

        *overrides* replaces settings (e.g. ``{"truncation": 0.5}``, or ``{"style_mix": None}`` to
        switch mixing off) for a variation of it.
        """
        torch = self._torch
        if recipe.get("format") != RECIPE_FORMAT:
            raise FormatError(f"unsupported recipe format {recipe.get('format')!r} (expected {RECIPE_FORMAT})")
        try:
            known = set(SampleSettings.__dataclass_fields__)
            s = SampleSettings(**{k: v for k, v in recipe["settings"].items() if k in known})
            cseed = int(recipe["candidate_seed"])
            sseed = recipe.get("style_seed")
            prompt = recipe.get("prompt")
            image_cond = recipe.get("image")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"incomplete c2l recipe ({exc})") from exc
        for key, value in (overrides or {}).items():
            if key not in known:
                raise UsageError(f"unknown setting {key!r} to override (known: {', '.join(sorted(known))})")
            setattr(s, key, value)
        validate_settings(s, timesteps=self.timesteps, num_ws=self.num_ws)
        image = None
        if image_cond:
            path = image_cond.get("path")
            if not path or not Path(path).is_file():
                raise C2LError(f"the recipe's conditioning image {path!r} is not there any more")
            if image_cond.get("sha256") and _image_sha(path) != image_cond["sha256"]:
                raise C2LError(f"the recipe's conditioning image {path} has changed since (sha256 differs)")
            image = path
        labels, cond = self.conditions([prompt] if prompt else None, image, image_cond.get("weight") if (image_cond and prompt) else None)
        say = progress or (lambda _m: None)
        say("replaying 1 latent")
        if s.style_mix is not None and sseed is None:
            sseed = style_seed(int(recipe.get("seed", 0)), int(recipe.get("prompt_index", 0)),
                               int(recipe.get("candidate_index", 0)))
        if s.style_mix is None:
            sseed = None
        imgs, ws = self.render(cond, cseed, None if sseed is None else int(sseed), s)
        sc = self.score(imgs, cond).float().cpu()
        item = SampleItem(
            labels[0], int(recipe.get("prompt_index", 0)), int(recipe.get("rank", 0)),
            int(recipe.get("candidate_index", 0)), cseed, None if sseed is None else int(sseed), float(sc[0]),
        )
        return SampleResult(
            images=imgs.float().cpu(),
            ws=ws.float().cpu(),
            scores=sc,
            seeds=[cseed],
            items=[item],
            candidate_scores=sc.view(1, 1),
            prompts=labels,
            seed=int(recipe.get("seed", 0)),
            settings=s,
            image_condition=image_cond or None,
        )


def _image_sha(image: Any) -> Optional[str]:
    if isinstance(image, (str, os.PathLike)):
        h = hashlib.sha256()
        with open(image, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    return None
