"""The clip2latent diffusion prior: CLIP embedding → StyleGAN W latent(s).

``load_prior`` reads a published clip2latent ``.ckpt`` (its EMA weights) or our own format;
``Prior.sample`` runs one of the samplers in :mod:`c2l_cli.diffusion.samplers` with classifier-free
guidance (conditional and unconditional passes as one batch of 2B) and returns ws ready for
``G.synthesis``. ``Prior.new`` + ``save_prior`` are for training (:mod:`c2l_cli.diffusion.objective`).

Latent spaces: the network works on *normalised* latents ``x = (w − latent_mean) / latent_std ·
image_embed_scale`` of shape :attr:`Prior.latent_shape` — ``(dim,)`` for one W vector (repeated to every
layer) or ``(n_latents, dim)`` for the paper's three-vector space (Appendix E), each vector repeated
``latent_repeats[i]`` times.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .accel import GraphedFunction, cuda_graphs_enabled
from .devices import resolve_device
from .diffusion.schedule import Schedule, make_schedule
from .errors import FormatError, ModelMismatchError, UsageError
from .nets.prior_net import PriorNetwork, convert_published_state_dict, infer_architecture

KIND = "prior"
SAMPLERS = ("reference", "ddpm", "ddim")

# Keys of the published EMA prior that are not network weights: the schedule buffers (recomputed),
# and clip2latent's unused CLIP-embedding statistics (its sampler discards the normalised embedding).
_SCHEDULE_KEYS = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
}
_IGNORED_KEYS = {"embed_mean", "embed_std"}


@dataclass
class PriorConfig:
    """Architecture and diffusion settings of a prior (saved as JSON beside the weights)."""

    # Transformer width; also the CLIP embedding size and the W size (the published network uses identity
    # projections for both, so all three must agree: 512 for ViT-B/32 + StyleGAN2/3).
    dim: int = 512
    # Transformer layers (12 in the paper's "mid" model that made the published checkpoints).
    depth: int = 12
    # Query heads per layer (keys/values have one shared head).
    heads: int = 12
    # Width of each head; rotary embedding covers the first min(32, dim_head) features.
    dim_head: int = 64
    # Latent vectors generated per sample: 1 (W, repeated to all layers) or 3 (coarse/mid/fine, Appendix E).
    n_latents: int = 1
    # How many StyleGAN layers each latent vector drives; sums to the generator's num_ws (18 for FFHQ 1024).
    latent_repeats: tuple[int, ...] = (18,)
    # Diffusion steps of training; one learned time embedding per step.
    timesteps: int = 1000
    # Feed-forward expansion (SwiGLU inner width = ff_mult * dim).
    ff_mult: int = 4
    # Noise schedule; clip2latent used DALLE2-pytorch's cosine schedule.
    beta_schedule: str = "cosine"
    # Multiplier applied to normalised latents before diffusion (1.0 in clip2latent; DALLE2's default is sqrt(dim)).
    image_embed_scale: float = 1.0
    # Multiplier applied to the CLIP embedding before it enters the network (1.0 in clip2latent).
    text_embed_scale: float = 1.0
    # Probability of dropping the condition in training, which makes classifier-free guidance possible.
    cond_drop_prob: float = 0.2
    # Scale of the Gaussian noise added to CLIP embeddings in training (paper App. A.1; 1.0, or 0.75 for w3).
    embed_noise_scale: float = 1.0

    def __post_init__(self) -> None:
        self.latent_repeats = tuple(int(r) for r in self.latent_repeats)

    def validate(self) -> "PriorConfig":
        """Raise UsageError for impossible settings; return self."""
        for name in ("dim", "depth", "heads", "dim_head", "n_latents", "timesteps", "ff_mult"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"prior config: {name} must be a positive integer, got {value!r}")
        if self.dim_head % 2:
            raise UsageError(f"prior config: dim_head must be even (rotary embedding), got {self.dim_head}")
        if len(self.latent_repeats) != self.n_latents or any(r < 1 for r in self.latent_repeats):
            raise UsageError(
                f"prior config: latent_repeats {list(self.latent_repeats)} must list {self.n_latents} positive counts"
            )
        if self.beta_schedule != "cosine":
            raise UsageError(f"prior config: unsupported beta_schedule {self.beta_schedule!r} (only 'cosine')")
        for name in ("image_embed_scale", "text_embed_scale"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UsageError(f"prior config: {name} must be a positive number")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise UsageError("prior config: cond_drop_prob must be in [0, 1]")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latent_repeats"] = list(self.latent_repeats)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PriorConfig":
        """From a JSON dict; unknown keys are a FormatError (a newer or foreign file)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FormatError(f"prior config has unknown fields: {', '.join(unknown)}")
        try:
            return cls(**d).validate()
        except (TypeError, ValueError, UsageError) as exc:
            raise FormatError(f"invalid prior config ({exc})") from exc


def _as_generator(generator: "torch.Generator | int | None") -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()  # fresh entropy; never touches the global RNG
    elif isinstance(generator, int) and not isinstance(generator, bool):
        g.manual_seed(generator)
    else:
        raise UsageError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return g


class Prior(nn.Module):
    """A diffusion prior: :class:`PriorNetwork` + W statistics + noise schedule. See the module docstring."""

    def __init__(self, config: PriorConfig, latent_mean: torch.Tensor, latent_std: torch.Tensor) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.net = PriorNetwork(
            dim=config.dim,
            depth=config.depth,
            heads=config.heads,
            dim_head=config.dim_head,
            num_timesteps=config.timesteps,
            n_latents=config.n_latents,
            ff_mult=config.ff_mult,
        )
        shape = self.latent_shape
        mean = torch.as_tensor(latent_mean, dtype=torch.float32)
        std = torch.as_tensor(latent_std, dtype=torch.float32)
        for name, t in (("latent_mean", mean), ("latent_std", std)):
            if t.numel() != math.prod(shape) and t.numel() != config.dim:
                raise ModelMismatchError(f"{name} has shape {tuple(t.shape)}; the prior's latents are {shape}")
        mean = mean.reshape(-1, config.dim).expand(config.n_latents, -1).reshape(shape).clone()
        std = std.reshape(-1, config.dim).expand(config.n_latents, -1).reshape(shape).clone()
        self.register_buffer("latent_mean", mean)
        self.register_buffer("latent_std", std)
        self._schedule_cpu = make_schedule(config.beta_schedule, config.timesteps)
        self._schedule_cache: dict[str, Schedule] = {}

    # --- shapes ---------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Size of the CLIP embedding the prior is conditioned on."""
        return self.config.dim

    @property
    def w_dim(self) -> int:
        return self.config.dim

    @property
    def num_ws(self) -> int:
        """Number of ws :meth:`sample` returns (``sum(latent_repeats)``)."""
        return int(sum(self.config.latent_repeats))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent: ``(dim,)`` or ``(n_latents, dim)``."""
        c = self.config
        return (c.dim,) if c.n_latents == 1 else (c.n_latents, c.dim)

    @property
    def device(self) -> torch.device:
        return self.latent_mean.device

    @property
    def schedule(self) -> Schedule:
        """The noise schedule on the prior's device."""
        key = str(self.device)
        if key not in self._schedule_cache:
            self._schedule_cache[key] = self._schedule_cpu.to(self.device)
        return self._schedule_cache[key]

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        config: PriorConfig,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        device: "torch.device | str | None" = None,
        *,
        seed: int | None = None,
    ) -> "Prior":
        """A randomly initialised prior (for training), in train mode; *seed* makes the init reproducible."""
        dev = resolve_device(device)
        std = torch.as_tensor(latent_std, dtype=torch.float32)
        if not bool(torch.isfinite(std).all() and (std > 0).all()):
            raise UsageError("latent_std must be finite and positive")
        if seed is None:
            seed = torch.Generator().seed()  # fresh entropy, without touching the global RNG
        with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG: fork and restore it
            torch.manual_seed(int(seed))
            prior = cls(config, latent_mean, latent_std)
        return prior.to(dev).train()

    # --- latents --------------------------------------------------------------------------------------------

    def normalise_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """W latents ``[B, *latent_shape]`` → the network's space (z-scored, times ``image_embed_scale``)."""
        return (latents - self.latent_mean) / self.latent_std * self.config.image_embed_scale

    def denormalise_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise_latents`."""
        return x / self.config.image_embed_scale * self.latent_std + self.latent_mean

    def repeat_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, *latent_shape]`` → ws ``[B, num_ws, w_dim]`` (each vector repeated per ``latent_repeats``)."""
        b = latents.shape[0]
        lat = latents.reshape(b, self.config.n_latents, self.config.dim)  # (B, n, D)
        reps = torch.tensor(self.config.latent_repeats, dtype=torch.long, device=lat.device)
        return lat.repeat_interleave(reps, dim=1, output_size=self.num_ws)

    # --- the denoiser ---------------------------------------------------------------------------------------

    def _check_embed(self, embed: torch.Tensor) -> torch.Tensor:
        if not isinstance(embed, torch.Tensor):
            raise UsageError(f"embed must be a tensor, got {type(embed).__name__}")
        if embed.dim() != 2:
            raise ModelMismatchError(f"embed must be [batch, {self.embed_dim}], got shape {tuple(embed.shape)}")
        if embed.shape[1] != self.embed_dim:
            raise ModelMismatchError(
                f"the prior expects CLIP embeddings of size {self.embed_dim}, got {embed.shape[1]}"
                " (is the CLIP model the one this prior was trained with?)"
            )
        if not bool(torch.isfinite(embed).all()):
            raise UsageError("the CLIP embedding contains NaN or infinite values")
        return embed.to(device=self.device, dtype=torch.float32)

    def _guided(
        self, guidance: float, embed: torch.Tensor, *, cached: bool
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(x_t, t) → x0`` for fixed *embed* with guidance ``null + (cond − null)·g``; cond and null as one 2B batch.

        *cached*: compute the embedding token's keys/values once (for a sampling loop).
        """
        g = float(guidance)
        net = self.net
        batch = embed.shape[0]
        if g == 1.0:  # the conditional pass alone (what the reference does at scale 1)
            keep, e = None, embed
        elif g == 0.0:
            keep, e = torch.zeros(batch, dtype=torch.bool, device=self.device), embed
        else:
            keep = torch.cat(
                (torch.ones(batch, dtype=torch.bool, device=self.device), torch.zeros(batch, dtype=torch.bool, device=self.device))
            )  # (2B,)
            e = torch.cat((embed, embed))  # (2B, D)
        cache = net.embed_cache(e) if cached else None
        if g in (0.0, 1.0):
            return lambda x, t: net(x, t, e, keep, cache)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = net(torch.cat((x, x)), torch.cat((t, t)), e, keep, cache)  # (2B, …)
            cond, null = out[:batch], out[batch:]
            return null + (cond - null) * g

        return fn

    def predict_x0(
        self,
        x_t: torch.Tensor,
        t: "torch.Tensor | int",
        embed: torch.Tensor,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Normalised x0 prediction ``[B, *latent_shape]`` with classifier-free guidance ``null + (cond − null)·g``.

        ``x_t`` ``[B, *latent_shape]`` (normalised), ``t`` an int or ``[B]`` int64 in ``[0, timesteps)``,
        ``embed`` ``[B, embed_dim]`` raw CLIP embeddings. Guidance 1 is conditional, 0 unconditional.
        """
        embed = self._check_embed(embed)
        b = embed.shape[0]
        if tuple(x_t.shape) != (b, *self.latent_shape):
            raise ModelMismatchError(f"x_t must have shape {(b, *self.latent_shape)}, got {tuple(x_t.shape)}")
        if not math.isfinite(float(guidance)):
            raise UsageError(f"guidance must be a finite number, got {guidance}")
        x_t = x_t.to(device=self.device, dtype=torch.float32)
        tt = torch.as_tensor(t, device=self.device).reshape(-1)
        if tt.is_floating_point() or tt.numel() not in (1, b):
            raise UsageError(f"t must be an integer or {b} integer timesteps, got {tuple(tt.shape)} {tt.dtype}")
        tt = tt.to(torch.long).expand(b)
        if bool(((tt < 0) | (tt >= self.config.timesteps)).any()):
            raise UsageError(f"timesteps must be in [0, {self.config.timesteps})")
        return self._guided(guidance, embed * self.config.text_embed_scale, cached=False)(x_t, tt)

    # --- sampling -------------------------------------------------------------------------------------------

    def _check_sampling(self, steps: int, sampler: str, guidance: float, truncation: float, eta: float) -> None:
        T = self.config.timesteps
        if sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {sampler!r} (use one of {', '.join(SAMPLERS)})")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or steps > T:
            raise UsageError(f"steps must be an integer from 1 to {T}, got {steps!r}")
        if sampler == "reference" and T % steps:
            divisors = [d for d in (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000) if T % d == 0]
            raise UsageError(
                f"the reference sampler needs steps that divide {T} (e.g. {', '.join(map(str, divisors[:10]))}),"
                f" got {steps}; use --sampler ddpm or ddim for any number of steps"
            )
        for name, value in (("guidance", guidance), ("truncation", truncation), ("eta", eta)):
            if not math.isfinite(float(value)):
                raise UsageError(f"{name} must be a finite number, got {value}")
        if eta < 0:
            raise UsageError(f"eta must be >= 0, got {eta}")
        if float(guidance) != 1.0 and self.config.cond_drop_prob <= 0:
            raise UsageError(
                "this prior was trained without condition dropout, so classifier-free guidance is undefined;"
                " use guidance 1"
            )

    def _sample_loop(
        self,
        noise: torch.Tensor,
        embed: torch.Tensor,
        steps: int,
        guidance: float,
        sampler: str,
        eta: float,
        truncation: float,
    ) -> torch.Tensor:
        """The sampling loop on checked inputs → de-normalised, truncated latents (no host syncs: CUDA-graphable)."""
        from .diffusion.samplers.ddim import sample_ddim
        from .diffusion.samplers.ddpm import sample_ddpm
        from .diffusion.samplers.reference import sample_reference

        denoise = self._guided(guidance, embed * self.config.text_embed_scale, cached=True)
        sched = self._schedule_cpu  # samplers only read host-side coefficients: no device→host copies
        if sampler == "reference":
            x0 = sample_reference(denoise, sched, noise)
        elif sampler == "ddpm":
            x0 = sample_ddpm(denoise, sched, noise)
        else:
            x0 = sample_ddim(denoise, sched, noise, eta=float(eta))

        latents = self.denormalise_latents(x0)
        if float(truncation) != 1.0:
            latents = self.latent_mean + float(truncation) * (latents - self.latent_mean)
        return latents

    def _graph_runner(self) -> "GraphedFunction":
        """The CUDA-graph cache of :meth:`_sample_loop` (created on first use; not copied with the module)."""
        runner = self.__dict__.get("_graphs")
        if runner is None:
            # capture_after=1: a one-off call runs eagerly at no extra cost; the second call of the same
            # (batch, steps, guidance, sampler, eta, truncation) records the whole loop, later ones replay it.
            runner = GraphedFunction(self._sample_loop, warmup=1, capture_after=1, max_entries=4)
            self.__dict__["_graphs"] = runner
        return runner

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_graphs", None)  # recorded CUDA graphs belong to this instance's tensors
        return state

    @torch.no_grad()
    def sample_latents(
        self,
        embed: torch.Tensor,
        steps: int = 4,
        guidance: float = 2.0,
        truncation: float = 1.0,
        sampler: str = "reference",
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: "torch.Generator | int | None" = None,
        graph: bool | None = None,
    ) -> torch.Tensor:
        """De-normalised, truncated latents ``[B, *latent_shape]`` (not repeated). See :meth:`sample`."""
        self._check_sampling(steps, sampler, guidance, truncation, eta)
        embed = self._check_embed(embed)
        b = embed.shape[0]
        shape = (steps + 1, b, *self.latent_shape)
        if noise is None:
            gen = _as_generator(generator)
            noise = torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise UsageError(f"noise must have shape {shape} ([steps+1, batch, *latent_shape]), got {tuple(noise.shape)}")
        noise = noise.to(device=self.device, dtype=torch.float32)
        args = (noise.contiguous(), embed.contiguous(), int(steps), float(guidance), sampler, float(eta), float(truncation))
        if not cuda_graphs_enabled(self.device, graph):
            return self._sample_loop(*args)
        # The weights are read at their recorded addresses: a re-allocation (e.g. .to(), .half()) is a new key;
        # so is compiling the network (Module.compile) after a recording.
        compiled = getattr(self.net, "_compiled_call_impl", None) is not None
        key = (self.net.time_embed.weight.data_ptr(), self.latent_mean.data_ptr(), self.latent_std.data_ptr(), compiled)
        return self._graph_runner()(*args, key=key, capture_after=0 if graph else None)

    def sample(
        self,
        embed: torch.Tensor,
        steps: int = 4,
        guidance: float = 2.0,
        truncation: float = 1.0,
        sampler: str = "reference",
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: "torch.Generator | int | None" = None,
        graph: bool | None = None,
    ) -> torch.Tensor:
        """ws ``[B, num_ws, w_dim]`` for CLIP embeddings ``embed`` ``[B, embed_dim]``, ready for ``G.synthesis``.

        ``sampler``: ``"reference"`` (clip2latent's, steps must divide 1000), ``"ddpm"`` or ``"ddim"`` (with
        ``eta``). ``truncation`` pulls toward ``latent_mean``. ``noise`` ``[steps+1, B, *latent_shape]``
        (index 0 = x_T, index k = step k's noise) overrides ``generator`` (a torch.Generator or an int seed).
        ``graph``: run the whole sampling loop as one CUDA graph (:mod:`c2l_cli.accel`): ``None`` = auto (on CUDA
        unless ``C2L_CUDA_GRAPHS=0``; recorded at the second call with the same batch and settings, replayed
        after), ``True`` = record on the first call, ``False`` = eager. No effect off CUDA.
        """
        latents = self.sample_latents(
            embed,
            steps=steps,
            guidance=guidance,
            truncation=truncation,
            sampler=sampler,
            eta=eta,
            noise=noise,
            generator=generator,
            graph=graph,
        )
        return self.repeat_latents(latents)


# --- files ----------------------------------------------------------------------------------------------------


def save_prior(prior: Prior, path: "str | Path", *, metadata: dict[str, Any] | None = None) -> Path:
    """Write *prior* in our format (a folder with ``config.json`` + ``model.safetensors``); returns the path."""
    from .formats.native import save_native

    tensors = {f"net.{k}": v for k, v in prior.net.state_dict().items()}
    tensors["latent_mean"] = prior.latent_mean
    tensors["latent_std"] = prior.latent_std
    return save_native(path, kind=KIND, config=prior.config.to_dict(), tensors=tensors, metadata=metadata or {})


def _load_weights(prior: Prior, net_sd: dict[str, torch.Tensor], where: str) -> None:
    expected = prior.net.state_dict()
    missing = sorted(set(expected) - set(net_sd))
    unexpected = sorted(set(net_sd) - set(expected))
    if missing:
        raise FormatError(f"{where}: missing weights {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        raise FormatError(f"{where}: unexpected weights {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    for k, v in net_sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise FormatError(
                f"{where}: the config does not match the weights ({k} is {tuple(v.shape)}, the config implies"
                f" {tuple(expected[k].shape)})"
            )
        if not v.is_floating_point():
            raise FormatError(f"{where}: {k} is not a floating-point tensor")
    prior.net.load_state_dict({k: v.to(torch.float32) for k, v in net_sd.items()})


def _from_native(root: Path) -> Prior:
    from .formats.native import load_native

    nf = load_native(root, kind=KIND)
    config = PriorConfig.from_dict(nf.config)
    t = nf.tensors
    for k in ("latent_mean", "latent_std"):
        if k not in t:
            raise FormatError(f"{root}: missing {k}")
    try:
        prior = Prior(config, t["latent_mean"], t["latent_std"])
    except ModelMismatchError as exc:
        raise FormatError(f"{root}: the config does not match the weights ({exc})") from exc
    net_sd = {k[len("net.") :]: v for k, v in t.items() if k.startswith("net.")}
    others = sorted(k for k in t if not k.startswith("net.") and k not in ("latent_mean", "latent_std"))
    if others:
        raise FormatError(f"{root}: unexpected tensors {', '.join(others[:5])}")
    _load_weights(prior, net_sd, str(root))
    return prior


_NETWORK_DEFAULTS: dict[str, Any] = {
    # DiffusionPriorNetwork / CausalTransformer keyword → the only value we support.
    "num_time_embeds": 1,
    "num_image_embeds": 1,
    "num_text_embeds": 1,
    "norm_out": True,
    "final_proj": True,
    "normformer": False,
    "rotary_emb": True,
}
_NETWORK_IGNORED = {"attn_dropout", "ff_dropout"}  # training-only


def config_from_clip2latent(cfg: dict[str, Any], weights: dict[str, torch.Tensor], where: str) -> PriorConfig:
    """A :class:`PriorConfig` from a clip2latent Hydra config, checked against the (converted) weights."""
    try:
        model = cfg["model"]
        network = dict(model["network"])
        diffusion = dict(model.get("diffusion") or {})
        data = dict(cfg.get("data") or {})
    except (KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{where}: not a clip2latent config (no model.network)") from exc
    arch = infer_architecture(weights)

    for key, value in network.items():
        if key in _NETWORK_DEFAULTS and value != _NETWORK_DEFAULTS[key]:
            raise FormatError(f"{where}: unsupported network setting {key}={value!r}")
        if key not in _NETWORK_DEFAULTS and key not in _NETWORK_IGNORED and key not in (
            "dim",
            "depth",
            "heads",
            "dim_head",
            "num_timesteps",
            "ff_mult",
        ):
            raise FormatError(f"{where}: unsupported network setting {key!r}")
    if network.get("num_timesteps") is None:
        raise FormatError(f"{where}: continuous-time (num_timesteps: null) priors are not supported")
    if diffusion.get("predict_x_start", True) is not True:
        raise FormatError(f"{where}: only x0-predicting priors (predict_x_start: true) are supported")
    for key in ("sampling_clamp_l2norm", "init_image_embed_l2norm"):
        if diffusion.get(key):
            raise FormatError(f"{where}: unsupported diffusion setting {key}: true")
    dim = network.get("dim")
    n_latents = int(data.get("n_latents", 1) or 1)
    scale = diffusion.get("image_embed_scale")
    try:
        config = PriorConfig(
            dim=int(dim),
            depth=int(network.get("depth", 6)),
            heads=int(network.get("heads", 8)),
            dim_head=int(network.get("dim_head", 64)),
            n_latents=n_latents,
            latent_repeats=tuple(int(r) for r in (data.get("latent_repeats") or ())),
            timesteps=int(diffusion.get("timesteps", network.get("num_timesteps", 1000))),
            ff_mult=int(network.get("ff_mult", 4)),
            beta_schedule=str(diffusion.get("beta_schedule", "cosine")),
            # DALLE2-pytorch's default when unset: sqrt(image_embed_dim).
            image_embed_scale=float(scale) if scale is not None else float(dim) ** 0.5,
            text_embed_scale=float(diffusion.get("text_embed_scale", 1.0)),
            cond_drop_prob=float(diffusion.get("cond_drop_prob", 0.0)),
            embed_noise_scale=float(data.get("embed_noise_scale", 0.0) or 0.0),
        )
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: invalid clip2latent config ({exc})") from exc
    if not config.latent_repeats:
        raise FormatError(f"{where}: the config has no data.latent_repeats")
    try:
        config.validate()
    except UsageError as exc:
        raise FormatError(f"{where}: {exc}") from exc
    embed_dim = diffusion.get("image_embed_dim")
    if embed_dim is not None and int(embed_dim) != config.dim:
        raise FormatError(f"{where}: image_embed_dim {embed_dim} differs from the network dim {config.dim}")
    checks = {
        "dim": (config.dim, arch["dim"]),
        "depth": (config.depth, arch["depth"]),
        "heads": (config.heads, arch["heads"]),
        "dim_head": (config.dim_head, arch["dim_head"]),
        "n_latents": (config.n_latents, arch["n_latents"]),
        "timesteps": (int(network.get("num_timesteps")), arch["num_timesteps"]),
        "ff_mult": (config.ff_mult, arch["ff_mult"]),
    }
    for name, (want, got) in checks.items():
        if want != got:
            raise FormatError(f"{where}: the config does not match the weights ({name} {want} in the config, {got} in the weights)")
    if config.timesteps != arch["num_timesteps"]:
        raise FormatError(f"{where}: diffusion timesteps {config.timesteps} differ from the network's {arch['num_timesteps']}")
    return config


def _from_clip2latent(path: Path, config: "str | Path | dict[str, Any] | None") -> Prior:
    from .formats.clip2latent_ckpt import read_checkpoint, read_yaml_config

    ckpt = read_checkpoint(path)
    if isinstance(config, dict):
        cfg = config
    elif config is not None:
        cfg = read_yaml_config(config)
    elif ckpt.cfg is not None:
        cfg = ckpt.cfg
    elif path.with_suffix(".yaml").is_file():
        cfg = read_yaml_config(path.with_suffix(".yaml"))
    else:
        raise FormatError(f"{path}: the checkpoint holds no config and no {path.with_suffix('.yaml').name} is beside it")

    raw = ckpt.tensors
    net_raw = {k[len("net.") :]: v for k, v in raw.items() if k.startswith("net.")}
    other = {k: v for k, v in raw.items() if not k.startswith("net.")}
    unknown = sorted(set(other) - _SCHEDULE_KEYS - _IGNORED_KEYS - {"latent_mean", "latent_std"})
    if unknown:
        raise FormatError(f"{path}: unexpected entries in the EMA prior: {', '.join(unknown[:5])}")
    try:
        net_sd = convert_published_state_dict(net_raw)
    except KeyError as exc:
        raise FormatError(f"{path}: unsupported prior network weight {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    needed = ("time_embed.weight", "learned_query", "rel_pos_bias.weight", "layers.0.attn.null_kv", "layers.0.ff.proj_out.weight")
    missing = [k for k in needed if k not in net_sd]
    if missing:
        raise FormatError(f"{path}: missing weights (e.g. {missing[0]})")
    for k in ("latent_mean", "latent_std"):
        if k not in other:
            raise FormatError(f"{path}: missing {k} (the W statistics; clip2latent's znorm_latent priors have them)")
    config = config_from_clip2latent(cfg, net_sd, str(path))
    if "alphas_cumprod" in other and other["alphas_cumprod"].shape[0] != config.timesteps:
        raise FormatError(f"{path}: the schedule has {other['alphas_cumprod'].shape[0]} steps, the config {config.timesteps}")
    try:
        prior = Prior(config, other["latent_mean"], other["latent_std"])
    except ModelMismatchError as exc:
        raise FormatError(f"{path}: the config does not match the weights ({exc})") from exc
    _load_weights(prior, net_sd, str(path))
    return prior


def _resolve_source(source: "str | Path") -> Path:
    """A registry name, URL or local path → a local path (through the weight cache)."""
    from .cache import resolve

    return Path(resolve(source, kind=KIND))


def load_prior(
    source: "str | Path",
    device: "torch.device | str | None" = None,
    *,
    config: "str | Path | dict[str, Any] | None" = None,
) -> Prior:
    """Load a prior: a clip2latent ``.ckpt`` (EMA weights) or our own folder; registry names and URLs too.

    *config*: for a ``.ckpt`` without an embedded config, the sidecar ``.yaml`` (path or parsed dict);
    by default the embedded config, else ``<name>.yaml`` beside the checkpoint. Returns the prior in eval mode
    with ``requires_grad_(False)``.
    """
    from .formats.clip2latent_ckpt import looks_like_torch_zip
    from .formats.native import native_root

    dev = resolve_device(device)
    path = _resolve_source(source)
    root = native_root(path)
    if root is not None:
        prior = _from_native(root)
    elif path.is_file() and looks_like_torch_zip(path):
        prior = _from_clip2latent(path, config)
    elif path.is_dir():
        raise FormatError(f"{path}: not a c2l prior folder (no config.json)")
    else:
        raise FormatError(f"{path}: not a prior checkpoint (expected a clip2latent .ckpt or a c2l prior folder)")
    prior.requires_grad_(False)
    return prior.to(dev).eval()


__all__ = ["Prior", "PriorConfig", "load_prior", "save_prior", "config_from_clip2latent", "SAMPLERS"]
