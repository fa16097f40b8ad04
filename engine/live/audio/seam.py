"""The decoder side of priming: from the stream that was playing into the primed continuation.

When ``/prime/rows`` starts a new sequence at row ``t0``, the rows that follow belong to the
primed sequence, not to the one the decoder was playing:

* The old stream's last ``Q − 1`` frames are unfinished (their high codebooks would have come
  from rows that will now never be generated); they are dropped. Row ``t0`` completes primed
  frame ``T − Q + 1``, so one frame per row still comes out and the output's sample clock
  stays ``320 · (row − Q + 1)``: control-log samples and recording hooks keep their meaning.
* The new stream gets its own undelay, seeded with the primed rows, and its own decoder
  state: a fresh stream that has decoded the last :data:`WARM_FRAMES` complete primed frames
  (unheard), so its convolutions and LSTM carry the recording's context.
* For :data:`CROSSFADE_FRAMES` frames both decode the new codes — the old state continues the
  sound that was playing without a jump, the new one is the continuation — and a linear
  ramp crossfades from the first to the second; then only the new state remains.

The rotary family (flattened codebooks, ``Crossfade(..., assembler=...)``) primes with codes
``[T, Q]``: every primed row is a whole frame, nothing is in flight, and the new stream is
warmed on the last :data:`WARM_FRAMES` frames the same way before the same ramp.

Threading: decoder thread only (:class:`engine.live.pipeline.Pipeline`).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.live.decoder import FIRST_CHUNK_FRAMES, StreamingDecoder
from engine.model.tokens.patterns import StreamingUndelay

WARM_FRAMES = 16  # primed frames decoded unheard: the decoder's context for the new stream
CROSSFADE_FRAMES = 4  # 53 ms at 75 frames/s


def min_primed_rows(num_q: int) -> int:
    """The fewest primed rows a seam needs: ``Q − 1`` in flight plus a decoder's first chunk."""
    return num_q - 1 + FIRST_CHUNK_FRAMES


def warm_state(decoder: StreamingDecoder, rows: np.ndarray) -> dict:
    """The new stream's decoder state for primed ``rows`` ``[T, Q]``: a fresh stream that has
    decoded the last :data:`WARM_FRAMES` complete primed frames (resets ``decoder``). The
    prime's loader thread computes it ahead on a :meth:`~StreamingDecoder.fork` (see
    :meth:`engine.live.pipeline.Pipeline.prewarm`); the same computation as the seam's own."""
    num_q = rows.shape[1]
    undelay = StreamingUndelay(num_q)
    keep = rows[-(WARM_FRAMES + num_q - 1):]
    frames = [f for r in torch.from_numpy(keep) if (f := undelay.push(r)) is not None]
    decoder.reset()
    decoder.push(torch.stack(frames, dim=1)[None])  # [1, Q, n], heard by nobody
    return decoder.get_state()


class Crossfade:
    """Decode with the old and the new stream state and ramp from one to the other.

    Args:
        decoder: the pipeline's decoder, currently holding the old stream's state.
        rows: ``[T, Q]`` int64 primed rows, ``T >= min_primed_rows(Q)``.
        warm: :func:`warm_state` of these rows, computed ahead (None: computed here).

    Attributes:
        undelay: the new stream's undelay (seeded with the primed rows); the pipeline uses it
            for the rows that follow.
    """

    def __init__(self, decoder: StreamingDecoder, rows: np.ndarray, warm: dict | None = None,
                 assembler=None):
        num_q = rows.shape[1]
        if assembler is not None:  # a flattened family: every primed row is a whole frame
            self._flat_seam(decoder, rows, assembler)
            return
        if rows.shape[0] < min_primed_rows(num_q):
            raise ValueError(f"a seam needs at least {min_primed_rows(num_q)} primed rows, "
                             f"got {rows.shape[0]}")
        self.decoder = decoder
        self.undelay = StreamingUndelay(num_q)
        for r in torch.from_numpy(rows[-(num_q - 1):]):  # the frames in flight
            self.undelay.push(r)
        self.old = decoder.get_state()
        self.new = warm if warm is not None else warm_state(decoder, rows)
        self.length = CROSSFADE_FRAMES * decoder.hop
        self.pos = 0  # samples of the ramp done

    def _flat_seam(self, decoder: StreamingDecoder, codes: np.ndarray, assembler) -> None:
        """The rotary family's seam: ``codes`` ``[T, Q]`` are frames (no delay, nothing in
        flight); the new stream is warmed on the last :data:`WARM_FRAMES` of them and the
        rows that follow go through a fresh ``assembler`` (the family's un-flatten)."""
        if codes.shape[0] < FIRST_CHUNK_FRAMES:
            raise ValueError(f"a seam needs at least {FIRST_CHUNK_FRAMES} primed frames, got "
                             f"{codes.shape[0]}")
        self.decoder, self.undelay = decoder, assembler
        self.old = decoder.get_state()
        decoder.reset()
        decoder.push(torch.from_numpy(codes[-WARM_FRAMES:]).T[None])  # heard by nobody
        self.new = decoder.get_state()
        decoder.set_state(self.old)
        self.length = CROSSFADE_FRAMES * decoder.hop
        self.pos = 0  # samples of the ramp done

    @property
    def done(self) -> bool:
        return self.pos >= self.length

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """``[1, Q, n]`` codes → ``[1, 1, 320·n]`` audio; leaves the decoder in the new
        stream's state (for good once :attr:`done`)."""
        d = self.decoder
        d.set_state(self.old)
        old = d.push(codes)
        self.old = d.get_state()
        d.set_state(self.new)
        new = d.push(codes)
        self.new = d.get_state()
        n = new.shape[-1]
        ramp = torch.clamp((torch.arange(n) + self.pos + 1) / self.length, max=1.0)
        self.pos += n
        return old * (1.0 - ramp) + new * ramp
