"""The NSynth-guitar tutorial's decoder: our own inference arithmetic for an x-transformers
``TransformerWrapper(num_tokens, max_seq_len, attn_layers=Decoder(dim, depth, heads,
rotary_pos_emb=True))``.

Pre-norm blocks, attention then feed-forward, ``depth`` of each::

    x = token_emb(tokens)                                   # [B, N, D]
    x = x + to_out(attend(rotary(to_q(ln(x))), rotary(to_k(ln(x))), to_v(ln(x))))
    x = x + ff_out(gelu(ff_in(ln(x))))
    logits = to_logits(final_norm(x))                       # [B, N, num_tokens]

Rotary embedding on the first ``rotary_dim`` (head dim / 2) channels of every head, base
10000. x-transformers changed how it pairs those channels in 1.31.0: up to 1.30 the two
halves are rotated together (GPT-NeoX), from 1.31 neighbouring channels (GPT-J);
``RotaryLMConfig.rotary_pairs`` names which (the loader reads it from the state dict).

Keys are kept *unrotated* by :class:`engine.live.step.sliding_step.SlidingStep`, so that a
window can slide and its positions be re-based without recomputing anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RotaryLMConfig:
    """Sizes of the flattened-codebook rotary decoder.

    ``max_seq_len`` is the trained length (the window W, start token included);
    ``codebooks`` is how many EnCodec codebooks are flattened per frame; ``start_token`` is
    prepended to every sequence; ``norm_bias``/``logits_bias`` exist in x-transformers
    up to 1.26.
    """

    dim: int = 256
    depth: int = 6
    heads: int = 4
    num_tokens: int = 1024
    max_seq_len: int = 250
    codebooks: int = 2
    start_token: int = 0
    ff_mult: int = 4
    rotary_pairs: str = "interleaved"  # "interleaved" (x-transformers >= 1.31) or "halves"
    norm_bias: bool = False
    logits_bias: bool = False
    dim_head: int = 64  # x-transformers' attn_dim_head default, whatever dim / heads is
    rotary_dim: int = 32  # rotated channels per head: head dim / 2 (at least 32 up to 1.30)

    @property
    def inner_dim(self) -> int:
        return self.heads * self.dim_head


def rotary_angles(positions: torch.Tensor, cfg: RotaryLMConfig) -> torch.Tensor:
    """Rotation angles, laid out as the configured pairing expects.

    Args:
        positions: ``[N]`` integer positions.

    Returns:
        ``[N, rotary_dim]`` fp32 angles.
    """
    half = cfg.rotary_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, cfg.rotary_dim, 2).float() / cfg.rotary_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [N, rotary_dim / 2]
    if cfg.rotary_pairs == "halves":
        return torch.cat((freqs, freqs), dim=-1)
    return torch.stack((freqs, freqs), dim=-1).reshape(-1, 2 * half)


def apply_rotary(t: torch.Tensor, angles: torch.Tensor, pairs: str) -> torch.Tensor:
    """Rotate the first ``angles.shape[-1]`` channels of ``t`` ([B, H, N, Dh]) by ``angles``."""
    rot = angles.shape[-1]
    x, rest = t[..., :rot], t[..., rot:]
    if pairs == "halves":
        x1, x2 = x.chunk(2, dim=-1)
        turned = torch.cat((-x2, x1), dim=-1)
    else:
        pair = x.unflatten(-1, (-1, 2))  # [..., rot/2, 2]
        turned = torch.stack((-pair[..., 1], pair[..., 0]), dim=-1).flatten(-2)
    return torch.cat((x * angles.cos() + turned * angles.sin(), rest), dim=-1)


class RotaryBlock(nn.Module):
    """One attention sub-layer and one feed-forward sub-layer (x-transformers 'a', 'f')."""

    def __init__(self, cfg: RotaryLMConfig):
        super().__init__()
        d, inner = cfg.dim, cfg.inner_dim
        self.attn_norm = nn.LayerNorm(d, bias=cfg.norm_bias)
        self.to_q = nn.Linear(d, inner, bias=False)
        self.to_k = nn.Linear(d, inner, bias=False)
        self.to_v = nn.Linear(d, inner, bias=False)
        self.to_out = nn.Linear(inner, d, bias=False)
        self.ff_norm = nn.LayerNorm(d, bias=cfg.norm_bias)
        self.ff_in = nn.Linear(d, d * cfg.ff_mult)
        self.ff_out = nn.Linear(d * cfg.ff_mult, d)
        self.heads = cfg.heads

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unrotated queries, keys and values ``[B, H, N, Dh]`` of ``x`` ``[B, N, D]``."""
        h = self.attn_norm(x)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731
        return split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h))

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual after attention (``attended`` [B, H, N, Dh]), then the feed-forward."""
        x = x + self.to_out(attended.transpose(1, 2).flatten(-2))
        return x + self.ff_out(F.gelu(self.ff_in(self.ff_norm(x))))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention with an explicit mask.

    Args:
        q: ``[B, H, N, Dh]``; k, v: ``[B, H, M, Dh]``; allowed: ``[N, M]`` bool.

    Returns:
        ``[B, H, N, Dh]``.
    """
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v


class RotaryLM(nn.Module):
    """The decoder. Parameter names are ours; :mod:`engine.model.loading.xtransformers` maps
    x-transformers' nested names onto them."""

    def __init__(self, cfg: RotaryLMConfig):
        super().__init__()
        self.cfg = cfg
        self.token_emb = nn.Embedding(cfg.num_tokens, cfg.dim)
        self.blocks = nn.ModuleList(RotaryBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(cfg.dim, bias=cfg.norm_bias)
        self.to_logits = nn.Linear(cfg.dim, cfg.num_tokens, bias=cfg.logits_bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, N, D]`` to logits ``[B, N, num_tokens]``."""
        return self.to_logits(self.final_norm(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Causal forward over a whole sequence at positions ``0..N-1``.

        Args:
            tokens: ``[B, N]`` token ids (the start token first).

        Returns:
            ``[B, N, num_tokens]`` logits.
        """
        n = tokens.shape[1]
        angles = rotary_angles(torch.arange(n), self.cfg).to(tokens.device)
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        x = self.token_emb(tokens)
        for block in self.blocks:
            q, k, v = block.qkv(x)
            q = apply_rotary(q, angles, self.cfg.rotary_pairs)
            k = apply_rotary(k, angles, self.cfg.rotary_pairs)
            x = block.finish(x, attend(q, k, v, causal))
        return self.logits(x)
