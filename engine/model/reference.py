"""Offline generation: the two reference generators, with per-step prompt and temperature.

(1) :func:`generate_kv` — KV-cached and unbounded in spirit (the blog's ``generate()``):
    step 0 feeds the prompt alone; each step feeds the summed embeddings of the tokens just
    drawn, at the next position. Nothing forces the empty triangle. Limited to
    ``n_positions - 1`` frames by GPT2's position table.
(2) :func:`generate_window` — a rolling window of ``W`` frames recomputed whole at every step
    (encodecgpt's ``gen_utils.generate_interp``): before each forward, position 0 is the
    step's prompt; once ``W`` rows exist the window is the last ``W`` rows with the
    start-of-sequence triangle re-created
    (:func:`engine.model.tokens.patterns.start_triangle_mask`).

Both return tokens ``[N, Q]`` in the delayed layout (+1, 0 = empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.model.codec import Codec
from engine.model.config import SamplingConfig
from engine.model.encodecgpt import EnCodecGPT
from engine.model.sampling import sample_frame
from engine.model.tokens.patterns import start_triangle_mask, tokens_to_codes, undelay

GREEDY = SamplingConfig(greedy=True)


@dataclass
class Generation:
    """Tokens ``[N, Q]`` (delayed layout) and, if asked for, the logits of every step."""

    tokens: torch.Tensor
    step_logits: torch.Tensor | None = None  # [N, Q, 1025]


def prompt_schedule(p0: np.ndarray, p1: np.ndarray | None, steps: int) -> np.ndarray:
    """``[N, D]`` float32 prompts: constant ``p0``, or step ``i`` = (1 − a_i)·p0 + a_i·p1 with
    ``a_i = i / (N − 1)`` (``np.linspace(0, 1, N)``), computed in float64."""
    p0 = np.asarray(p0, dtype=np.float64)
    if p1 is None:
        return np.tile(p0.astype(np.float32), (steps, 1))
    a = np.linspace(0.0, 1.0, steps)[:, None]
    return ((1.0 - a) * p0[None] + a * np.asarray(p1, dtype=np.float64)[None]).astype(np.float32)


def _as_steps(values: float | np.ndarray | torch.Tensor, steps: int) -> list[float]:
    arr = np.broadcast_to(np.asarray(values, dtype=np.float64), (steps,))
    return [float(v) for v in arr]


def _sample(logits: torch.Tensor, sampling: SamplingConfig, temperature: float,
            generator: torch.Generator | None) -> torch.Tensor:
    return sample_frame(logits, temperature=temperature, top_k=sampling.top_k,
                        top_p=sampling.top_p, greedy=sampling.is_greedy, generator=generator)


def _replace_prompt_kv(model: EnCodecGPT, cache, prompt: torch.Tensor) -> None:
    """Recompute the keys/values of position 0 for a new prompt, in place.

    Exact for position 0 (it attends only to itself); positions after it keep the keys and
    values computed while they attended to the old prompt — an approximation.
    """
    _, fresh = model(prompt, None, use_cache=True)
    for layer, new in zip(cache.layers, fresh.layers, strict=True):
        layer.keys[:, :, :1] = new.keys
        layer.values[:, :, :1] = new.values


@torch.inference_mode()
def generate_kv(
    model: EnCodecGPT,
    prompts: torch.Tensor,
    sampling: SamplingConfig = GREEDY,
    temperatures: float | np.ndarray | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> Generation:
    """Generator (1): KV cache, one frame per step.

    Args:
        prompts: ``[N, P]`` per-step prompt (N = number of frames); a change between steps
            recomputes the prompt position's keys/values (see :func:`_replace_prompt_kv`).
        temperatures: a scalar or ``[N]`` schedule (default: ``sampling.temperature``).

    Returns:
        :class:`Generation` with tokens ``[N, Q]``.
    """
    steps = prompts.shape[0]
    if steps > model.max_positions - 1:
        raise ValueError(f"generator (1) can make at most {model.max_positions - 1} frames "
                         f"(GPT2 n_positions); asked for {steps}. Use a rolling window.")
    temps = _as_steps(sampling.temperature if temperatures is None else temperatures, steps)
    logits, cache = model(prompts[:1], None, use_cache=True, last_only=True)
    rows, kept = [], []
    for i in range(steps):
        last = logits[:, -1]  # [1, Q, V], computed under prompts[i]
        tok = _sample(last, sampling, temps[i], generator)  # [1, Q]
        rows.append(tok[0])
        if return_logits:
            kept.append(last[0].float().clone())
        if i + 1 < steps:
            if not torch.equal(prompts[i + 1], prompts[i]):  # before the forward it conditions
                _replace_prompt_kv(model, cache, prompts[i + 1 : i + 2])
            logits, cache = model(None, tok[:, None, :], past_key_values=cache, use_cache=True,
                                  last_only=True)
    return Generation(torch.stack(rows), torch.stack(kept) if return_logits else None)


@torch.inference_mode()
def generate_window(
    model: EnCodecGPT,
    prompts: torch.Tensor,
    window: int,
    sampling: SamplingConfig = GREEDY,
    temperatures: float | np.ndarray | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    primed: torch.Tensor | None = None,
) -> Generation:
    """Generator (2): rolling window of ``window`` frames, recomputed whole at every step.

    Args:
        prompts: ``[N, P]`` per-step prompt; step ``i`` runs ``[prompts[i], window rows]``.
        window: ``W``; the context never exceeds ``W + 1`` positions.
        primed: ``[T, Q]`` rows (``T <= W``) the sequence starts with, fed after the prompt
            as if generated (:mod:`engine.model.tokens.priming`); they are not returned.

    Returns:
        :class:`Generation` with tokens ``[N, Q]``.
    """
    steps = prompts.shape[0]
    if window < 1 or window + 1 > model.max_positions:
        raise ValueError(f"window must be in 1..{model.max_positions - 1}, got {window}")
    temps = _as_steps(sampling.temperature if temperatures is None else temperatures, steps)
    triangle = start_triangle_mask(window, model.num_q).to(prompts.device)
    ctx = torch.zeros(0, model.num_q, dtype=torch.long, device=prompts.device)  # [L, Q]
    if primed is not None:
        if not 1 <= primed.shape[0] <= window:
            raise ValueError(f"primed rows must number 1..{window}, got {primed.shape[0]}")
        ctx = primed.to(device=prompts.device, dtype=torch.long)
    rows, kept = list(ctx), []
    for i in range(steps):
        logits, _ = model(prompts[i : i + 1], ctx[None], last_only=True)
        last = logits[:, -1]
        tok = _sample(last, sampling, temps[i], generator)[0]  # [Q]
        rows.append(tok)
        if return_logits:
            kept.append(last[0].float().clone())
        if len(rows) <= window:
            ctx = torch.cat([ctx, tok[None]])
        else:
            ctx = torch.stack(rows[-window:]).masked_fill(triangle, 0)
    new = rows[len(rows) - steps:]
    return Generation(torch.stack(new), torch.stack(kept) if return_logits else None)


def tokens_to_audio(codec: Codec, tokens: torch.Tensor) -> np.ndarray:
    """Delayed tokens ``[N, Q]`` → audio ``[(N − Q + 1) · 320]`` float32 (every complete frame;
    empty tokens decode as code 0, as the reference does)."""
    q = tokens.shape[1]
    if tokens.shape[0] < q:
        raise ValueError(f"need at least {q} frames of tokens to decode, got {tokens.shape[0]}")
    codes = tokens_to_codes(undelay(tokens.T[None]))  # [1, Q, N - Q + 1]
    return codec.decode(codes)[0, 0].float().cpu().numpy()
