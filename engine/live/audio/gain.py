"""The master gain (``/gain``, dB): per-frame targets → a sample-exact, ramped gain on the
decoded audio, before it is recorded, tapped or played.

The generator applies ``/gain`` at a frame boundary like every control; the decoder thread
gets each row's gain target with the row and hands it to :class:`GainRamp` for the frame that
row completes (so a gain change is heard with the next decoded frame, and a replay, which
decodes the same rows, applies it at the same sample). A change ramps linearly in amplitude
over :data:`RAMP_S` (no zipper noise, no click): between two samples the gain moves by at most
``|g1 − g0| / (RAMP_S · 24000)``, so the output's largest sample step is at most
``max(g0, g1) · (the signal's own largest step) + peak · |g1 − g0| / 480``.

Threading: used by the pipeline's decoder thread only. :meth:`GainRamp.process` works in place
on preallocated buffers (it allocates only if a block is longer than any before).
"""

from __future__ import annotations

import numpy as np

from engine import HOP_LENGTH, SAMPLE_RATE

RAMP_S = 0.02  # 480 samples at 24 kHz
MAX_GAIN_DB = 6.0  # the ceiling: louder than the model's own level by at most 6 dB
MIN_GAIN_DB = -60.0  # and at least this (the bottom of a fader)


def db_to_gain(db: float) -> float:
    """Decibels → linear amplitude gain."""
    return float(10.0 ** (db / 20.0))


class GainRamp:
    """Apply per-frame gain targets (dB) to audio, ramping between them.

    Args:
        ramp_samples: samples a change takes (from wherever the gain is to the new target).
        hop: samples per frame (320 at 24 kHz, 640 at 32 kHz).
    """

    def __init__(self, ramp_samples: int = int(RAMP_S * SAMPLE_RATE), hop: int = HOP_LENGTH):
        self.ramp_samples, self.hop = ramp_samples, hop
        self.gain: float | None = None  # current linear gain; None: take the first target
        self._target = 1.0
        self._slope = 0.0  # linear gain per sample while ramping
        self._index = np.arange(1, hop + 1, dtype=np.float64)  # [hop]
        self._ramp = np.empty(hop, dtype=np.float64)

    def process(self, audio: np.ndarray, targets_db: list[float]) -> None:
        """Scale ``audio`` ``[hop·m]`` float32 in place; frame j (samples hop·j …) ramps
        towards ``targets_db[j]``."""
        h = self.hop
        for j, db in enumerate(targets_db):
            self._frame(audio[j * h:(j + 1) * h], db_to_gain(db))

    def _frame(self, x: np.ndarray, target: float) -> None:
        if self.gain is None:
            self.gain = self._target = target
        if target != self._target:  # a new target: ramp from where the gain is now
            self._target = target
            self._slope = (target - self.gain) / self.ramp_samples
        if self.gain == self._target:
            if self.gain != 1.0:
                np.multiply(x, self.gain, out=x, casting="unsafe")
            return
        ramp = self._ramp[: len(x)]
        np.multiply(self._index[: len(x)], self._slope, out=ramp)
        np.add(ramp, self.gain, out=ramp)
        if self._slope > 0:
            np.minimum(ramp, self._target, out=ramp)
        else:
            np.maximum(ramp, self._target, out=ramp)
        np.multiply(x, ramp, out=x, casting="unsafe")
        self.gain = float(ramp[-1])
