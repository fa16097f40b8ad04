"""The output level meter (``/engine/level``): peak and RMS in dBFS of the audio most
recently sent to the output, after the gain.

Threading: :meth:`LevelMeter.add` on the pipeline's decoder thread (one block at a time, no
allocation: two reductions and a dot product); :meth:`LevelMeter.read` from any thread (the
feedback sender, the console) — it copies the small block history (``deque`` appends and
copies are atomic in CPython), so it never blocks the writer.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from engine import SAMPLE_RATE

FLOOR_DB = -120.0  # what silence reads as


def to_dbfs(amplitude: float) -> float:
    """Linear amplitude (1.0 = full scale) → dBFS, floored at :data:`FLOOR_DB`."""
    return 20.0 * math.log10(amplitude) if amplitude > 10 ** (FLOOR_DB / 20) else FLOOR_DB


class LevelMeter:
    """Peak and RMS over the last ``window_s`` of audio (whole blocks, at least one)."""

    def __init__(self, window_s: float = 0.1, rate: int = SAMPLE_RATE):
        self.window = max(1, int(window_s * rate))
        self.samples = 0  # samples measured so far (the end of the last block)
        # (n, peak, sumsq, end sample): each block carries its own end, so a reader that
        # copies the deque while a block is added still sees a consistent history.
        self._blocks: deque[tuple[int, float, float, int]] = deque(maxlen=256)

    def add(self, block: np.ndarray) -> None:
        """Measure one block ``[n]`` float32 (as it goes to the output)."""
        if block.size == 0:
            return
        peak = max(float(block.max()), -float(block.min()))
        self.samples += block.size
        self._blocks.append((block.size, peak, float(np.dot(block, block)), self.samples))

    def read(self) -> dict:
        """``{"peak_db", "rms_db", "end", "count"}``: dBFS over the most recent blocks that
        cover the window; ``end`` is the sample index just after them, ``count`` how many
        samples they hold (0: nothing measured yet, levels at the floor)."""
        blocks = list(self._blocks)
        end = blocks[-1][3] if blocks else 0
        count, peak, sumsq = 0, 0.0, 0.0
        for n, p, s, _ in reversed(blocks):
            count, peak, sumsq = count + n, max(peak, p), sumsq + s
            if count >= self.window:
                break
        rms = math.sqrt(sumsq / count) if count else 0.0
        return {"peak_db": to_dbfs(peak), "rms_db": to_dbfs(rms), "end": end, "count": count}
