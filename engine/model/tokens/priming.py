"""Priming: a recording's last seconds as the first rows of a sequence ("initial values").

The original code continues a sound by encoding it with the codec, applying the delay pattern
and feeding the tokens after the prompt; generation goes on from there. The delayed layout of
``T`` frames has ``T + Q − 1`` columns, and the last ``Q − 1`` are unfinished (codebook ``k`` of
column ``c`` belongs to frame ``c − k``; columns ``≥ T`` lack the low codebooks of frames that do
not exist yet). They are stripped, so the primed rows are the first ``T`` columns — with the
empty start triangle the model saw at the start of every training sequence — and the model
generates the missing high codebooks of the last ``Q − 1`` frames itself. With Q = 3, T = 4::

    codes [Q, T]     delayed, stripped to T columns = primed rows [T, Q] (transposed)
    a0 b0 c0 d0      a0 b0 c0 d0
    a1 b1 c1 d1  ->  .  a1 b1 c1        (d1 and c2 d2 are left to the model)
    a2 b2 c2 d2      .  .  a2 b2

How much audio: the model's context (the published models': 3 s or 10 s), capped by the token
window, since the primed rows must fit in it (a rolling window of W < 300 frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine import FRAME_RATE, HOP_LENGTH, SAMPLE_RATE
from engine.errors import UserError
from engine.model.audio_io import read_audio
from engine.model.codec import Codec
from engine.model.tokens.patterns import apply_delay


def prime_frames(context_s: float | None, window: int) -> tuple[int, str | None]:
    """Frames of audio priming uses, and a note when the window cuts the context.

    Args:
        context_s: the model's context in seconds; None when unknown (then the window).
        window: the frames the primed rows may fill (the token window W; the live engine's
            fast mode passes W − H).

    Returns:
        (frames, note or None).
    """
    if context_s is None:
        return window, None
    frames = max(1, round(context_s * FRAME_RATE))
    if frames <= window:
        return frames, None
    return window, (f"priming uses the last {window / FRAME_RATE:.2f} s ({window} frames, the "
                    f"token window), not the model's context of {context_s:g} s")


def prime_rows(codec: Codec, audio: np.ndarray, num_q: int, frames: int) -> torch.Tensor:
    """Encode the last ``frames`` frames of ``audio`` into primed rows.

    Args:
        codec: the checkpoint's codec.
        audio: ``[N]`` float32 at 24 kHz; shorter audio gives fewer rows.
        num_q: codebooks Q of the model.
        frames: at most this many rows (the last ``frames · 320`` samples are encoded).

    Returns:
        ``[T, Q]`` int64 delayed tokens (+1, 0 = empty), ``T = min(frames, ceil(N / 320))``.
    """
    clip = np.ascontiguousarray(audio[-frames * HOP_LENGTH:], dtype=np.float32)
    if clip.size == 0:
        raise UserError("priming audio is empty")
    codes = codec.encode(torch.from_numpy(clip)[None, None], num_q)  # [1, Q, T]
    t = codes.shape[-1]
    return apply_delay(codes)[0, :, :t].T.contiguous()  # [Q, T + Q - 1] -> first T -> [T, Q]


def read_prime(codec: Codec, path: str | Path, num_q: int, frames: int) -> torch.Tensor:
    """:func:`prime_rows` of an audio file (any format, downmixed, resampled to 24 kHz)."""
    return prime_rows(codec, read_audio(path, SAMPLE_RATE), num_q, frames)
