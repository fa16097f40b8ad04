"""``fast`` mode for the rotary family: a KV cache that slides, one token per step, no
re-prefill ever.

What it computes is **sliding-window attention**: at every layer, each token attends to the
start token and the tokens of the window *as it was when that token was computed*. Keys and
values of a token are computed once and kept; when the window drops a frame, the oldest
entries are simply removed. With depth > 1 the kept hidden states still carry information
from tokens that have since left the window, so this differs from ``exact`` mode (a
recompute of the current window, :mod:`engine.live.rotary.recompute_step`); at depth 1
the two are equal.

Positions stay bounded: keys are stored *unrotated* and rotated at every step by their
place in the cache (start token 0, window tokens 1..n), as StreamingLLM assigns positions.
Attention scores between window tokens depend only on their offsets, which sliding does not
change; the start token always sits just before the oldest window token, as in training.
An hour of play therefore uses the same angles as the first second (no fp32 precision loss
at positions in the hundreds of thousands).

Cost per token: one token through ``depth`` layers against ``≤ W`` cached keys, plus the
re-rotation of those keys (``depth · heads · W · rotary_dim`` multiply-adds).
"""

from __future__ import annotations

import torch

from engine.live.rotary.window import window_start
from engine.model.rotary_lm import RotaryLM, apply_rotary, attend, rotary_angles


class SlidingStep:
    """Sliding KV cache over a :class:`RotaryLM` (batch 1).

    Args:
        model: the decoder (not modified).
        window: W, the most positions attended, start token included (``<= max_seq_len``
            unless the caller allows more).
    """

    def __init__(self, model: RotaryLM, window: int):
        self.model, self.cfg, self.window = model, model.cfg, window
        self.keep = window - 1
        self.angles = rotary_angles(torch.arange(window + 1), self.cfg)  # [W + 1, rot]
        self.keys: list[torch.Tensor] = []  # per layer [1, H, 1 + n, Dh], unrotated
        self.values: list[torch.Tensor] = []
        self.count = 0  # tokens after the start token, ever (for the codebook phase)
        self.length = 0  # tokens after the start token in the cache now

    @torch.no_grad()
    def start(self, prefix: torch.Tensor) -> torch.Tensor:
        """Fill the cache with ``[start token, prefix]`` (prefix starts on codebook 0 and is
        cut to the window's rule) and return the next token's logits ``[num_tokens]``."""
        self.count = len(prefix)
        prefix = prefix[window_start(len(prefix), self.keep, self.cfg.codebooks):]
        tokens = torch.cat([torch.tensor([self.cfg.start_token]), prefix.long()])[None]
        n = tokens.shape[1]
        angles, causal = self.angles[:n], torch.ones(n, n, dtype=torch.bool).tril()
        x = self.model.token_emb(tokens)  # [1, n, D]
        self.keys, self.values = [], []
        for block in self.model.blocks:
            q, k, v = block.qkv(x)
            self.keys.append(k)
            self.values.append(v)
            pairs = self.cfg.rotary_pairs
            x = block.finish(x, attend(apply_rotary(q, angles, pairs),
                                       apply_rotary(k, angles, pairs), v, causal))
        self.length = n - 1
        return self.model.logits(x)[0, -1]

    @torch.no_grad()
    def push(self, token: int) -> torch.Tensor:
        """Append one token (dropping the oldest frame first if the window is full) and
        return the next token's logits ``[num_tokens]``."""
        if self.length + 1 > self.keep:
            drop = self.cfg.codebooks
            self.keys = [torch.cat([k[:, :, :1], k[:, :, 1 + drop:]], dim=2) for k in self.keys]
            self.values = [torch.cat([v[:, :, :1], v[:, :, 1 + drop:]], dim=2)
                           for v in self.values]
            self.length -= drop
        n = self.length + 2  # start token + window + this token
        angles, pairs = self.angles[:n], self.cfg.rotary_pairs
        x = self.model.token_emb(torch.tensor([[token]]))  # [1, 1, D]
        allowed = torch.ones(1, n, dtype=torch.bool)
        for i, block in enumerate(self.model.blocks):
            q, k, v = block.qkv(x)
            self.keys[i] = torch.cat([self.keys[i], k], dim=2)
            self.values[i] = torch.cat([self.values[i], v], dim=2)
            x = block.finish(x, attend(apply_rotary(q, angles[-1:], pairs),
                                       apply_rotary(self.keys[i], angles, pairs),
                                       self.values[i], allowed))
        self.length += 1
        self.count += 1
        return self.model.logits(x)[0, -1]
