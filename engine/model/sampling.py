"""Drawing one frame of tokens from ``[B, Q, V]`` logits, vectorised over codebooks.

Order of operations (as in common LM samplers): temperature, top-k, top-p (nucleus), then one
``torch.multinomial`` over all ``B·Q`` rows with a seeded ``torch.Generator``. Greedy takes the
first maximal index (``torch.argmax``), which is also what the reference goldens used.
"""

from __future__ import annotations

import torch


def filter_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest scores per row (``k <= 0`` or ``k >= V``: keep all)."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def filter_top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of top tokens whose probability reaches ``p`` (always ≥ 1)."""
    if p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def sample_frame(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample one token per codebook.

    Args:
        logits: ``[B, Q, V]`` (V = 1025: class 0 = empty, class j+1 = code j).
        temperature: divides the logits; ``<= 0`` means greedy.
        top_k: keep the k best tokens per codebook (0 = off).
        top_p: nucleus mass per codebook (1.0 = off).
        greedy: argmax instead of a draw.
        generator: the RNG for the draw (its state advances by one multinomial call).

    Returns:
        ``[B, Q]`` int64 tokens.
    """
    if greedy or temperature <= 0.0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    scores = filter_top_p(filter_top_k(scores, top_k), top_p)
    probs = scores.softmax(dim=-1)
    b, q, v = probs.shape
    draw = torch.multinomial(probs.reshape(b * q, v), 1, generator=generator)
    return draw.view(b, q)
