"""Offline text-to-music: MusicGen over its whole context, continued audiocraft-style beyond it.

Rows are generated with a KV cache in **segments** of at most ``C`` rows (the context: the
model's 30 s for the published ones, or less). The first segment starts at the sequence start;
once a segment holds ``C`` rows, a new one starts from the last ``C − S`` rows (``S`` = the
stride), laid out afresh — start column, start triangle re-created, positions from 0 — and
generation goes on for ``S`` more rows, and so on. audiocraft continues the same way (keep the
last ``max_duration − extend_stride`` seconds, default 30 − 18 s; its kept part is whole frames,
here it is whole rows of the delayed layout). With ``C`` rows at ``50`` Hz and stride ``S``:

    segment 1: rows 0 … C−1                       (one pass, cached)
    segment 2: context rows C−(C−S) … C−1, generates rows C … C+S−1
    segment 3: context rows C+S−(C−S) … C+S−1, generates C+S … C+2S−1 …

Within the first segment (a render no longer than ``C`` rows) the greedy rows equal
``MusicgenForConditionalGeneration.generate(do_sample=False)``. Text slots are mixed at every
step with the rule of :mod:`engine.model.musicgen.guidance` (a morph: weights per step).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from engine.model.config import SamplingConfig
from engine.model.musicgen.guidance import condition_batch, guided_logits
from engine.model.musicgen.lm import MusicGenLM
from engine.model.musicgen.text import TextEncoder
from engine.model.sampling import sample_frame

DEFAULT_STRIDE_S = 18.0  # audiocraft's extend_stride for its 30 s context


def segment_starts(steps: int, context: int, stride: int) -> list[int]:
    """The row each step's window starts at (the schedule in the module docstring).

    Args:
        steps: rows to generate.
        context: ``C``, the most rows a window holds.
        stride: ``S``, rows generated per continued segment (1..C).

    Returns:
        ``[steps]``: step ``t`` predicts row ``t`` from rows ``start[t] … t − 1``.
    """
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be 1..{context} rows (the context), got {stride}")
    starts, begin = [], 0
    for t in range(steps):
        if t - begin == context:  # the segment is full: keep its last C - S rows
            begin = t - (context - stride)
        starts.append(begin)
    return starts


def render_rows(lm: MusicGenLM, text: TextEncoder, texts: list[str], weights: np.ndarray,
                *, guidance: float, sampling: SamplingConfig, context: int,
                stride: int) -> torch.Tensor:
    """Generate ``len(weights)`` rows from text slots.

    Args:
        lm: the decoder.
        text: the text encoder (cached).
        texts: the slots' texts.
        weights: ``[steps, len(texts)]`` mixing weights of every step (rows sum to 1).
        guidance: the CFG scale.
        sampling: temperature, top-k, top-p, greedy, seed.
        context: ``C`` rows per window (at most ``max_positions − 1``).
        stride: ``S`` rows per continued segment.

    Returns:
        ``[steps, K]`` int64 delayed rows (code + 1, 0 = empty).
    """
    steps, num_q = weights.shape[0], lm.num_q
    starts = segment_starts(steps, context, stride)
    batch = condition_batch([text.encode(t) for t in texts], [1.0] * len(texts), guidance,
                            text.width)
    rng = torch.Generator().manual_seed(sampling.seed)
    rows: list[torch.Tensor] = []
    cache = None
    for t in range(steps):
        if t == 0 or starts[t] != starts[t - 1]:  # a new segment: prefill its context
            cache = lm.new_cache()
            context_rows = (torch.stack(rows[starts[t]:]) if rows
                            else torch.zeros(0, num_q, dtype=torch.long))
            columns = lm.columns(context_rows, fresh_start=starts[t] > 0)
        else:  # the previous row's column only
            columns = lm.columns(rows[-1][None], fresh_start=False)[:, 1:]
        step_batch = dataclasses.replace(batch, weights=torch.from_numpy(weights[t]))
        logits = guided_logits(lm.logits(columns, batch, cache), step_batch, guidance).cpu()
        codes = sample_frame(logits[None], temperature=sampling.temperature,
                             top_k=sampling.top_k, top_p=sampling.top_p,
                             greedy=sampling.greedy, generator=rng)[0]
        row = codes + 1
        row[t + 1:] = 0  # the start triangle (rows t < K - 1)
        rows.append(row)
    return torch.stack(rows)


def morph_weights(steps: int, slots: int) -> np.ndarray:
    """``[steps, slots]``: slot 0 alone (one slot), or a linear morph from slot 0 to slot 1
    over the render (step ``i`` has weights ``(1 − i/(N−1), i/(N−1))``)."""
    if slots == 1:
        return np.ones((steps, 1))
    x = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    return np.stack([1.0 - x, x], axis=1)
