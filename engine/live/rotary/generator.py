"""The rotary family's frame generator: one EnCodec frame (``Q`` flattened tokens) per step.

It plugs into :class:`engine.live.pipeline.Pipeline` as :class:`RollingGenerator` does:
``step()`` returns a row ``[Q]``, ``num_q`` and ``t`` say where it is, and
:meth:`frame_assembler` gives the decoder thread the streaming inverse of the family's token
pattern (here :class:`StreamingUnflatten`; ``delay`` for EnCodecGPT).

The recipe is unconditional, so a slot holds an *audio prefix* (codes ``[Q, T]``) rather than
a prompt vector: :meth:`prime` re-primes the window from it at the next frame boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.live.rotary.recompute_step import RecomputeStep
from engine.live.rotary.sliding_step import SlidingStep
from engine.model.rotary_lm import RotaryLM
from engine.model.sampling import sample_frame
from engine.model.tokens.patterns import StreamingUnflatten, flatten_codes

MODES = ("fast", "exact")


@dataclass
class RotarySampling:
    """The controls this family has: temperature, top-k, top-p (seed/reset at the engine),
    and the output gain the pipeline applies."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    gain_db: float = 0.0


class UnflattenRows:
    """A generator row ``[Q]`` (one frame's flat tokens) in, that frame's codes out, through
    the token-by-token :class:`StreamingUnflatten`."""

    def __init__(self, num_q: int):
        self.stream = StreamingUnflatten(num_q)

    def push(self, row: torch.Tensor) -> torch.Tensor | None:
        frame = None
        for token in row.tolist():
            frame = self.stream.push(token)
        return frame


class RotaryGenerator:
    """Flattened-codebook generation with a rolling window.

    Args:
        model: the decoder.
        window: W positions including the start token (default and cap: ``max_seq_len``).
        mode: ``fast`` (sliding KV cache) or ``exact`` (recompute the window each token).
        greedy: argmax instead of sampling.
        seed: sampler seed.
        prefix: codes ``[Q, T]`` to start from (None: the start token alone).
    """

    def __init__(self, model: RotaryLM, *, window: int | None = None, mode: str = "fast",
                 greedy: bool = False, seed: int = 0, prefix: torch.Tensor | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.mode = model, mode
        self.num_q = model.cfg.codebooks
        self.window = window or model.cfg.max_seq_len
        step_class = SlidingStep if mode == "fast" else RecomputeStep
        self.stepper = step_class(model, self.window)
        self.sampling = RotarySampling()
        self.controls = self.sampling  # what the pipeline reads (gain_db)
        self.greedy, self.rng = greedy, torch.Generator().manual_seed(seed)
        self.t = 0
        self._pending_prefix: torch.Tensor | None = None
        self.logits = self.stepper.start(self._flat(prefix))

    def _flat(self, prefix: torch.Tensor | None) -> torch.Tensor:
        if prefix is None:
            return torch.zeros(0, dtype=torch.long)
        return flatten_codes(prefix[None, : self.num_q].long())[0]

    def frame_assembler(self) -> UnflattenRows:
        return UnflattenRows(self.num_q)

    def take_seam(self) -> None:
        """No decoder crossfade for this family: a re-prime cuts at a frame boundary and the
        decoder carries its state on (the pipeline asks every family)."""
        return None

    def prime(self, prefix: torch.Tensor) -> None:
        """Re-prime the window from codes ``[Q, T]`` at the next frame boundary (any thread:
        one reference assignment)."""
        self._pending_prefix = prefix

    def step(self) -> torch.Tensor:
        """Generate the next frame; returns ``[Q]`` int64 tokens (= codes, codebook order)."""
        pending, self._pending_prefix = self._pending_prefix, None
        if pending is not None:
            self.logits = self.stepper.start(self._flat(pending))
        s, row = self.sampling, []
        for _ in range(self.num_q):
            token = sample_frame(self.logits[None, None], temperature=s.temperature,
                                 top_k=s.top_k, top_p=s.top_p, greedy=self.greedy,
                                 generator=self.rng)[0, 0]
            row.append(token)
            self.logits = self.stepper.push(int(token))
        self.t += 1
        return torch.stack(row)

    def close(self) -> None:
        """Nothing runs in the background (no re-prefill in either mode)."""
