"""The clip2latent diffusion-prior network: a DALL-E-2-style causal transformer that predicts x0.

Rebuilt from the description of ``DiffusionPriorNetwork`` in DALLE2-pytorch 0.2.38 (the version
clip2latent trained with) and clip2latent's ``WPlusPriorNetwork`` (three-vector W space), so that the
published checkpoints load through :func:`convert_published_state_dict`:

- tokens ``[CLIP embedding, time embedding, noised latent(s), learned query(s)]`` — one latent and
  one query token per latent vector (``n_latents``);
- ``depth`` pre-norm blocks of causal self-attention (many query heads, one shared key/value head,
  a learned null key/value every query can attend to, T5 relative position bias, rotary embedding
  on the first ``min(32, dim_head)`` features of q and k) and a SwiGLU feed-forward;
- a final LayerNorm and a bias-free projection; the outputs at the query positions are x0.

Classifier-free guidance drops the condition by masking the CLIP-embedding token out of attention
(``keep[b] = False``); the null key/value keeps every softmax row non-empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Fixed by DALLE2-pytorch 0.2.38 (never configured by clip2latent).
REL_POS_BUCKETS = 32
REL_POS_MAX_DISTANCE = 128
ROTARY_MAX_DIM = 32
ROTARY_THETA = 10000.0


def _layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm with a learned gain and no bias (upstream keeps a constant zero bias buffer)."""
    return nn.LayerNorm(dim, eps=1e-5, elementwise_affine=True, bias=False)


def relative_position_buckets(num_queries: int, num_keys: int) -> torch.Tensor:
    """T5 causal buckets ``[num_queries, num_keys]`` for ``distance = query - key`` (negative → 0).

    Key 0 is the null key, so key ``j`` sits at position ``j`` while query ``i`` sits at ``i``, as upstream.
    """
    q = torch.arange(num_queries, dtype=torch.long)
    k = torch.arange(num_keys, dtype=torch.long)
    n = (q[:, None] - k[None, :]).clamp(min=0)  # (Q, K)
    max_exact = REL_POS_BUCKETS // 2
    # log of 0 is -inf for the small distances; those entries are replaced by `n` below.
    with torch.no_grad():
        large = max_exact + (
            torch.log(n.float() / max_exact) / math.log(REL_POS_MAX_DISTANCE / max_exact) * (REL_POS_BUCKETS - max_exact)
        ).nan_to_num(neginf=0.0).long()
    large = large.clamp(max=REL_POS_BUCKETS - 1)
    return torch.where(n < max_exact, n, large)


def rotary_tables(seq_len: int, rot_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[seq_len, rot_dim]`` of rotary-embedding-torch 0.1.5 (``freqs_for='lang'``, pairs interleaved)."""
    inv_freq = 1.0 / (ROTARY_THETA ** (torch.arange(0, rot_dim, 2)[: rot_dim // 2].float() / rot_dim))
    angles = torch.arange(seq_len).float()[:, None] * inv_freq[None, :]  # (N, rot/2)
    angles = angles.repeat_interleave(2, dim=-1)  # (N, rot): f0 f0 f1 f1 …
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive feature pairs ``(x0, x1) → (x0 c - x1 s, x1 c + x0 s)`` on the first ``cos.shape[-1]`` dims."""
    rot = cos.shape[-1]
    head, tail = x[..., :rot], x[..., rot:]
    pairs = head.unflatten(-1, (rot // 2, 2))  # (..., rot/2, 2)
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (..., rot)
    head = head * cos + rotated_half * sin
    return torch.cat((head, tail), dim=-1)


class Attention(nn.Module):
    """Pre-norm causal multi-query attention with a learned null key/value and a post-projection LayerNorm."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.norm = _layer_norm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)  # one key/value head shared by all query heads
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.out_norm = _layer_norm(dim)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        key_mask: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x ``(B, N, D)``; bias ``(H, N, P+N+1)`` incl. the causal mask; key_mask ``(B, P+N+1)`` bool.

        ``prefix_kv``: keys/values ``(B, P, d)`` of P earlier tokens (already rotated), placed after the null key.
        """
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2) * self.scale  # (B, H, N, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)  # (B, N, d) each
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        null_k, null_v = self.null_kv.unbind(0)
        ks = [null_k.expand(b, 1, -1), k]
        vs = [null_v.expand(b, 1, -1), v]
        if prefix_kv is not None:
            ks.insert(1, prefix_kv[0])
            vs.insert(1, prefix_kv[1])
        k = torch.cat(ks, dim=1)  # (B, P+N+1, d)
        v = torch.cat(vs, dim=1)  # (B, P+N+1, d)
        sim = torch.matmul(q, k.unsqueeze(1).transpose(-1, -2)) + bias  # (B, H, N, P+N+1)
        sim = sim.masked_fill(~key_mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.matmul(attn, v.unsqueeze(1))  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)  # (B, N, H*d)
        return self.out_norm(self.to_out(out))


    def key_value(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (rotated) key and the value ``(B, N, d)`` that tokens *x* contribute to later queries."""
        k, v = self.to_kv(self.norm(x)).chunk(2, dim=-1)
        return apply_rotary(k, cos, sin), v


class FeedForward(nn.Module):
    """Pre-norm SwiGLU feed-forward: ``W2 (a * silu(g))`` with ``[a, g] = W1 x`` (no biases)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = int(mult * dim)
        self.norm = _layer_norm(dim)
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(a * F.silu(gate))


class Block(nn.Module):
    """One transformer layer: residual attention then residual feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, ff_mult)


class PriorNetwork(nn.Module):
    """x0-predicting causal transformer over ``[embed, time, x_t (n), query (n)]`` tokens.

    ``forward(x_t, t, embed, keep)``: ``x_t`` ``(B, dim)`` when ``n_latents == 1`` else ``(B, n_latents, dim)``,
    ``t`` ``(B,)`` int64 in ``[0, num_timesteps)``, ``embed`` ``(B, dim)``, ``keep`` ``(B,)`` bool (False drops the
    condition) or None (keep all). Returns the x0 prediction in the shape of ``x_t``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        num_timesteps: int = 1000,
        n_latents: int = 1,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.dim_head = dim_head
        self.num_timesteps = num_timesteps
        self.n_latents = n_latents
        self.ff_mult = ff_mult
        self.time_embed = nn.Embedding(num_timesteps, dim)
        self.learned_query = nn.Parameter(torch.randn(n_latents, dim))
        self.rel_pos_bias = nn.Embedding(REL_POS_BUCKETS, heads)
        self.layers = nn.ModuleList(Block(dim, heads, dim_head, ff_mult) for _ in range(depth))
        self.norm_out = _layer_norm(dim)
        self.project_out = nn.Linear(dim, dim, bias=False)

        seq = 2 + 2 * n_latents
        self.seq_len = seq
        self.register_buffer("_buckets", relative_position_buckets(seq, seq + 1), persistent=False)
        causal = torch.ones(seq, seq + 1, dtype=torch.bool).triu(2)  # key j (j-1 is the token) > query i masked
        self.register_buffer("_causal", causal, persistent=False)
        cos, sin = rotary_tables(seq, min(ROTARY_MAX_DIM, dim_head))
        self.register_buffer("_rot_cos", cos, persistent=False)
        self.register_buffer("_rot_sin", sin, persistent=False)

    def _bias(self, dtype: torch.dtype) -> torch.Tensor:
        bias = self.rel_pos_bias(self._buckets).permute(2, 0, 1).to(dtype)  # (H, N, N+1)
        return bias.masked_fill(self._causal, -torch.finfo(dtype).max)

    def _key_mask(self, b: int, keep: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        # Keys: [null, embed, time, x…, query…]; only the embed key can be dropped.
        key_mask = torch.ones(b, self.seq_len + 1, dtype=torch.bool, device=device)  # (B, N+1)
        if keep is not None:
            key_mask[:, 1] = keep.to(device=device, dtype=torch.bool)
        return key_mask

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        embed: torch.Tensor,
        keep: torch.Tensor | None = None,
        cache: "list[tuple[torch.Tensor, torch.Tensor]] | None" = None,
    ) -> torch.Tensor:
        """x0 prediction; *cache* (from :meth:`embed_cache` for this *embed*) skips the embedding token."""
        b = x_t.shape[0]
        x = x_t.reshape(b, self.n_latents, self.dim)  # (B, n, D)
        rest = (
            self.time_embed(t).reshape(b, 1, self.dim).to(x.dtype),
            x,
            self.learned_query.to(x.dtype).expand(b, -1, -1),
        )
        bias = self._bias(x.dtype)
        key_mask = self._key_mask(b, keep, x.device)
        cos = self._rot_cos.to(x.dtype)
        sin = self._rot_sin.to(x.dtype)
        if cache is None:
            h = torch.cat((embed.reshape(b, 1, self.dim).to(x.dtype), *rest), dim=1)  # (B, 2 + 2n, D)
            for block in self.layers:
                h = block.attn(h, bias, key_mask, cos, sin) + h
                h = block.ff(h) + h
        else:
            # The embedding token (position 0) attends only to the null key and itself, so its keys/values
            # do not change across diffusion steps; they come from the cache and only positions 1… run.
            h = torch.cat(rest, dim=1)  # (B, 1 + 2n, D)
            bias, cos, sin = bias[:, 1:], cos[1:], sin[1:]
            for block, kv in zip(self.layers, cache):
                h = block.attn(h, bias, key_mask, cos, sin, prefix_kv=kv) + h
                h = block.ff(h) + h
        out = self.project_out(self.norm_out(h[:, -self.n_latents :, :]))  # (B, n, D)
        return out.reshape(x_t.shape)

    def embed_cache(self, embed: torch.Tensor) -> "list[tuple[torch.Tensor, torch.Tensor]]":
        """Per-layer key/value ``(B, 1, d)`` of the embedding token, for :meth:`forward`'s *cache*.

        Valid for any keep mask: a dropped condition masks this key out of every attention row.
        """
        b = embed.shape[0]
        h = embed.reshape(b, 1, self.dim).to(self.learned_query.dtype)  # (B, 1, D)
        bias = self._bias(h.dtype)[:, :1, :2]  # query 0 sees the null key and itself
        key_mask = torch.ones(b, 2, dtype=torch.bool, device=h.device)
        cos = self._rot_cos[:1].to(h.dtype)
        sin = self._rot_sin[:1].to(h.dtype)
        cache = []
        for block in self.layers:
            cache.append(block.attn.key_value(h, cos, sin))
            h = block.attn(h, bias, key_mask, cos, sin) + h
            h = block.ff(h) + h
        return cache


# --- the published DALLE2-pytorch / clip2latent state-dict names -----------------------------------------

_ATTN = {
    "0.null_kv": "attn.null_kv",
    "0.norm.gamma": "attn.norm.weight",
    "0.to_q.weight": "attn.to_q.weight",
    "0.to_kv.weight": "attn.to_kv.weight",
    "0.to_out.0.weight": "attn.to_out.weight",
    "0.to_out.1.gamma": "attn.out_norm.weight",
    "1.0.gamma": "ff.norm.weight",
    "1.1.weight": "ff.proj_in.weight",
    "1.5.weight": "ff.proj_out.weight",
}
# Constant buffers upstream saves but whose values are fixed (zero LayerNorm biases, rotary frequencies).
_ZERO_BUFFERS = ("0.norm.beta", "0.to_out.1.beta", "1.0.beta")


def convert_published_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a DALLE2-pytorch ``DiffusionPriorNetwork`` state dict (prefix already stripped) to our names.

    Raises ``KeyError`` naming the first unknown key and ``ValueError`` for a non-zero constant bias.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "learned_query":
            out["learned_query"] = value.reshape(-1, value.shape[-1])  # (dim,) for one latent → (1, dim)
        elif key == "to_time_embeds.0.weight":
            out["time_embed.weight"] = value
        elif key == "causal_transformer.rel_pos_bias.relative_attention_bias.weight":
            out["rel_pos_bias.weight"] = value
        elif key == "causal_transformer.norm.gamma":
            out["norm_out.weight"] = value
        elif key == "causal_transformer.norm.beta":
            _check_zero(key, value)
        elif key == "causal_transformer.project_out.weight":
            out["project_out.weight"] = value
        elif key.startswith("causal_transformer.layers."):
            rest = key[len("causal_transformer.layers.") :]
            index, _, name = rest.partition(".")
            if not index.isdigit():
                raise KeyError(key)
            if name in _ATTN:
                out[f"layers.{index}.{_ATTN[name]}"] = value
            elif name in _ZERO_BUFFERS:
                _check_zero(key, value)
            elif name == "0.rotary_emb.freqs":
                continue  # derived from dim_head; recomputed
            else:
                raise KeyError(key)
        else:
            raise KeyError(key)
    return out


def _check_zero(key: str, value: torch.Tensor) -> None:
    if bool(torch.any(value != 0)):
        raise ValueError(f"{key} is not zero (unsupported LayerNorm bias)")


def infer_architecture(sd: dict[str, torch.Tensor]) -> dict[str, int]:
    """dim, depth, heads, dim_head, num_timesteps, n_latents, ff_mult from a state dict in *our* names."""
    num_timesteps, dim = sd["time_embed.weight"].shape
    depth = 0
    while f"layers.{depth}.attn.to_q.weight" in sd:
        depth += 1
    dim_head = sd["layers.0.attn.null_kv"].shape[-1] if depth else 64
    heads = sd["rel_pos_bias.weight"].shape[-1]
    n_latents = sd["learned_query"].shape[0]
    ff_mult = sd["layers.0.ff.proj_out.weight"].shape[-1] // dim if depth else 4
    return {
        "dim": int(dim),
        "depth": int(depth),
        "heads": int(heads),
        "dim_head": int(dim_head),
        "num_timesteps": int(num_timesteps),
        "n_latents": int(n_latents),
        "ff_mult": int(ff_mult),
    }
