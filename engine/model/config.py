"""Frozen configuration dataclasses and named presets.

Modules take plain typed arguments; only the CLI maps flags onto these objects.
"""

from __future__ import annotations

from dataclasses import dataclass

NUM_CODES = 1024  # EnCodec codebook size
EMPTY_TOKEN = 0  # delayed layout: token = code + 1, 0 = "empty" (outside the delay pattern)
VOCAB_PER_CODEBOOK = NUM_CODES + 1


@dataclass(frozen=True)
class GPTSize:
    """GPT2 body sizes. ``vocab_size`` only sizes GPT2's unused word table (``wte``)."""

    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int = 1024
    vocab_size: int = 50257


# tiny: fast enough for tests and laptops; gpt2: the original checkpoints' size (124M);
# gpt2-medium: a bigger body for training (355M).
PRESETS: dict[str, GPTSize] = {
    "tiny": GPTSize(n_layer=6, n_head=8, n_embd=512, vocab_size=1),
    "gpt2": GPTSize(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTSize(n_layer=24, n_head=16, n_embd=1024),
}


@dataclass(frozen=True)
class SamplingConfig:
    """How one frame of tokens is drawn from the logits.

    ``greedy`` (or ``temperature == 0``) takes the argmax; otherwise temperature, then top-k
    (0 = off), then top-p (1.0 = off), then a draw from a seeded ``torch.Generator``.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature <= 0.0
