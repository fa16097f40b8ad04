"""Audio prefixes: what a slot holds for the rotary family (``--prompt``, ``/prompt/load``).

The recipe is unconditional, so a slot is the start of a sound rather than a vector: the
codes ``[T, Q]`` of a file's first seconds (at most what the window holds after the start
token), which ``/prime i`` re-primes the window from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.errors import UserError
from engine.live.decoder import FIRST_CHUNK_FRAMES
from engine.model.audio_io import read_audio
from engine.model.codec import Codec


def prefix_frames(window: int, num_q: int, seconds: float | None) -> int:
    """Frames a prefix holds: the window's room after the start token (``(W − 1) // Q``), and
    at most ``seconds`` (``--prompt-seconds``; None or 0: no further limit)."""
    room = (window - 1) // num_q
    return room if not seconds else max(1, min(room, int(seconds * FRAME_RATE)))


class PrefixReader:
    """A file's first ``frames`` frames as codes (the rotary family's ``PromptReader``).

    Args:
        codec: EnCodec 24 kHz.
        num_q: codebooks kept.
        frames: frames at most (the window's room after the start token).
    """

    def __init__(self, codec: Codec, num_q: int, frames: int):
        self.codec, self.num_q, self.frames = codec, num_q, frames

    @property
    def max_seconds(self) -> float:
        return self.frames / FRAME_RATE

    def read(self, path: str | Path) -> np.ndarray:
        """``[T, Q]`` int64 codes of ``path``'s first :attr:`max_seconds`.

        Raises:
            UserError: unreadable, or shorter than the decoder's first chunk (7 frames).
        """
        audio = read_audio(path, SAMPLE_RATE, self.max_seconds)
        with torch.inference_mode():
            codes = self.codec.encode(torch.from_numpy(audio)[None, None], self.num_q)[0]
        if codes.shape[1] < FIRST_CHUNK_FRAMES:  # what the decoder needs to warm a seam on
            raise UserError(f"{path}: too short for an audio prefix ({codes.shape[1]} frames; "
                            f"at least {FIRST_CHUNK_FRAMES}, "
                            f"{FIRST_CHUNK_FRAMES / FRAME_RATE:.2f} s)")
        return codes[:, : self.frames].T.numpy().astype(np.int64)
