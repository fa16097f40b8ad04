"""``fast`` mode for the rotary family: a KV cache that slides, one token per step, no
re-prefill ever.

What it computes is **sliding-window attention**: at every layer, each token attends to the
start token and the tokens of the window *as it was when that token was computed*. Keys and
values of a token are computed once and kept; when the window drops a frame, the oldest
entries are simply removed. With depth > 1 the kept hidden states still carry information
from tokens that have since left the window, so this differs from ``exact`` mode (a
recompute of the current window, :mod:`engine.live.rotary.recompute_step`); at depth 1
the two are equal.

Positions stay bounded: each key is rotated once, at its own position, and kept; a window
token's position never changes while it is cached, and scores between window tokens depend
only on their offsets. The start token's key is kept unrotated and re-rotated whenever the
window slides, so that it always sits just before the oldest window token (as in training,
where it is position 0 and the first token position 1). Every ``rebase_every`` tokens all
cached keys are rotated back by the same angle (positions restart near 0), so an hour of
play uses angles as small as the first seconds' (no fp32 precision loss at positions in the
hundreds of thousands) and the step never re-rotates the whole cache in between.

Cost per token: one token through ``depth`` layers against ``<= W`` cached keys; the start
token's re-rotation when a frame drops; all keys' re-rotation once per ``rebase_every``.
"""

from __future__ import annotations

import torch

from engine.live.rotary.window import window_start
from engine.live.state import StateReader
from engine.model.rotary_lm import RotaryLM, apply_rotary, attend, rotary_angles


class SlidingStep:
    """Sliding KV cache over a :class:`RotaryLM` (batch 1).

    The cache is a ring: slot 0 holds the start token, slots ``1..W-1`` the window's tokens
    in arrival order modulo ``W - 1`` (attention without a mask does not depend on the order
    of its keys, and each key carries its position in its rotation), so a step writes one
    slot instead of copying the cache.

    Args:
        model: the decoder (not modified).
        window: W, the most positions attended, start token included (``<= max_seq_len``
            unless the caller allows more).
        rebase_every: how far positions may grow before the cache is rotated back.
    """

    def __init__(self, model: RotaryLM, window: int, rebase_every: int = 4096):
        self.model, self.cfg, self.window = model, model.cfg, window
        self.keep, self.rebase_every = window - 1, rebase_every
        self.angles = rotary_angles(torch.arange(rebase_every + window + 2), self.cfg)
        shape = (model.cfg.depth, model.cfg.heads, window, model.cfg.dim_head)
        self.keys = torch.zeros(shape)  # [L, H, W, Dh], rotated; slot 0 = start token
        self.values = torch.zeros(shape)
        self.sink_keys = torch.zeros(shape[:2] + (1, shape[3]))  # [L, H, 1, Dh], unrotated
        self.slot_pos = torch.full((window,), -1, dtype=torch.long)  # position per slot
        self.count = 0  # tokens after the start token, ever (for the codebook phase)
        self.length = 0  # tokens after the start token in the cache now
        self.next_pos = 1  # position of the next token; the oldest is next_pos - length
        self.written = 0  # tokens written into the ring (the next slot is 1 + written % (W-1))
        self.qkv = [torch.cat([b.to_q.weight, b.to_k.weight, b.to_v.weight]).T.contiguous()
                    for b in model.blocks]  # [D, 3 * inner]: one matmul instead of three

    def _rotate(self, t: torch.Tensor, first: int, n: int = 1) -> torch.Tensor:
        return apply_rotary(t, self.angles[first:first + n], self.cfg.rotary_pairs)

    @torch.no_grad()
    def start(self, prefix: torch.Tensor) -> torch.Tensor:
        """Fill the cache with ``[start token, prefix]`` (prefix starts on codebook 0 and is
        cut to the window's rule) and return the next token's logits ``[num_tokens]``."""
        self.count = len(prefix)
        prefix = prefix[window_start(len(prefix), self.keep, self.cfg.codebooks):]
        tokens = torch.cat([torch.tensor([self.cfg.start_token]), prefix.long()])[None]
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        x = self.model.token_emb(tokens)  # [1, n, D]
        self.slot_pos.fill_(-1)
        self.slot_pos[:n] = torch.arange(n)
        for i, block in enumerate(self.model.blocks):
            q, k, v = block.qkv(x)
            self.sink_keys[i] = k[0, :, :1]
            k = self._rotate(k, 0, n)
            self.keys[i, :, :n], self.values[i, :, :n] = k[0], v[0]
            x = block.finish(x, attend(self._rotate(q, 0, n), k, v, causal))
        self.length, self.next_pos, self.written = n - 1, n, n - 1
        return self.model.logits(x)[0, -1]

    def _drop_frame(self) -> None:
        """Forget the oldest frame; the start token moves up to stay just before the window."""
        self.length -= self.cfg.codebooks
        sink_pos = self.next_pos - self.length - 1
        self.slot_pos[1:][self.slot_pos[1:] <= sink_pos] = -1
        self.keys[:, :, :1] = self._rotate(self.sink_keys, sink_pos)

    def _rebase(self) -> None:
        """Rotate every cached key back so that the start token is at position 0 again."""
        shift = self.next_pos - self.length - 1
        back = -rotary_angles(torch.tensor([shift]), self.cfg)
        self.keys = apply_rotary(self.keys, back, self.cfg.rotary_pairs)
        tokens = self.slot_pos[1:]  # slot 0, the start token, always stays allowed
        tokens[tokens >= 0] -= shift
        self.next_pos -= shift

    @torch.no_grad()
    def push(self, token: int) -> torch.Tensor:
        """Append one token (dropping the oldest frame first if the window is full) and
        return the next token's logits ``[num_tokens]``."""
        if self.length + 1 > self.keep:
            self._drop_frame()
        if self.next_pos >= self.rebase_every:
            self._rebase()
        pos, slot = self.next_pos, 1 + self.written % self.keep
        self.slot_pos[slot] = pos
        allowed = (self.slot_pos >= 0)[None]  # [1, W]
        x = self.model.token_emb(torch.tensor([[token]]))  # [1, 1, D]
        heads = self.cfg.heads
        for i, block in enumerate(self.model.blocks):
            qkv = block.attn_norm(x) @ self.qkv[i]  # [1, 1, 3 * inner]
            q, k, v = qkv.view(3, heads, 1, -1).unbind(0)  # each [H, 1, Dh]
            self.keys[i, :, slot:slot + 1] = self._rotate(k, pos)
            self.values[i, :, slot:slot + 1] = v
            x = block.finish(x, attend(self._rotate(q, pos)[None], self.keys[i][None],
                                       self.values[i][None], allowed))
        self.length += 1
        self.count += 1
        self.written += 1
        self.next_pos += 1
        return self.model.logits(x)[0, -1]

    _TENSORS = ("keys", "values", "sink_keys", "slot_pos")
    _COUNTS = ("count", "length", "next_pos", "written")

    def get_state(self) -> dict:
        """The cache and its counters (copies): ``keys``/``values`` ``[L, H, W, Dh]``,
        ``sink_keys`` ``[L, H, 1, Dh]``, ``slot_pos`` ``[W]``, and the token counters."""
        return {**{k: getattr(self, k).clone() for k in self._TENSORS},
                **{k: int(getattr(self, k)) for k in self._COUNTS}}

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state` of a step over the same model and window.

        Raises:
            ValueError: missing or unused keys, or a cache of another shape.
        """
        with StateReader(state, "sliding step") as s:
            tensors = {k: s.pop(k) for k in self._TENSORS}
            counts = {k: int(s.pop(k)) for k in self._COUNTS}
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(getattr(self, k).shape):
                raise ValueError(f"sliding step state: {k} is {list(v.shape)}, this window "
                                 f"needs {list(getattr(self, k).shape)}")
        for k, v in tensors.items():
            setattr(self, k, v.clone())
        for k, v in counts.items():
            setattr(self, k, v)
