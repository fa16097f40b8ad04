"""``exact`` mode for the rotary family: every step recomputes ``[start token, window]``.

Each step is the model's plain causal forward over the start token and the last ``≤ W - 1``
tokens from a codebook-0 token (:func:`engine.live.rotary.window.window_start`), exactly as
the model would see that excerpt in training. Cost per token: a ``≤ W``-position forward
(about W times the work of a ``fast`` step at a full window).
"""

from __future__ import annotations

import torch

from engine.live.rotary.window import window_start
from engine.live.state import StateReader
from engine.model.rotary_lm import RotaryLM


class RecomputeStep:
    """Whole-window recompute over a :class:`RotaryLM` (batch 1); same verbs as
    :class:`engine.live.rotary.sliding_step.SlidingStep`."""

    def __init__(self, model: RotaryLM, window: int):
        self.model, self.cfg, self.window = model, model.cfg, window
        self.keep = window - 1
        self.tokens = torch.zeros(0, dtype=torch.long)  # the window after the start token
        self.count = 0

    @torch.no_grad()
    def _forward(self) -> torch.Tensor:
        seq = torch.cat([torch.tensor([self.cfg.start_token]), self.tokens])[None]
        return self.model(seq)[0, -1]

    def start(self, prefix: torch.Tensor) -> torch.Tensor:
        """Window = ``prefix`` cut to the rule; returns the next logits ``[num_tokens]``."""
        self.tokens = prefix[window_start(len(prefix), self.keep, self.cfg.codebooks):].long()
        self.count = len(prefix)
        return self._forward()

    def push(self, token: int) -> torch.Tensor:
        """Append one token, slide by whole frames, recompute; next logits ``[num_tokens]``."""
        tokens = torch.cat([self.tokens, torch.tensor([token])])
        self.tokens = tokens[window_start(len(tokens), self.keep, self.cfg.codebooks):]
        self.count += 1
        return self._forward()

    def get_state(self) -> dict:
        """The window's tokens ``[n]`` (after the start token) and the token count."""
        return {"tokens": self.tokens.clone(), "count": int(self.count)}

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state` (raises ``ValueError`` on missing or unused keys,
        or more tokens than the window holds)."""
        with StateReader(state, "recompute step") as s:
            tokens, count = s.pop("tokens"), int(s.pop("count"))
        if tokens.ndim != 1 or len(tokens) > self.keep:
            raise ValueError(f"recompute step state: {len(tokens)} tokens for a window of "
                             f"{self.keep}")
        self.tokens, self.count = tokens.clone().long(), count
