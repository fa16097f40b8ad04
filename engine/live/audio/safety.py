"""The last stage before anything is heard: non-finite samples out, and a safety limiter.

A NaN or an infinity that reaches a sound card is a full-scale click (or worse, a stuck
speaker cone on some drivers), and a model that blows up can put out samples far above
full scale. :class:`SafetyLimiter` runs on the pipeline's decoder thread, after the master
gain and before the level meter, the recorder, the tap and the ring, so what is played,
metered, recorded and replayed is the same guarded audio:

* Non-finite samples become 0 and are counted (:attr:`SafetyLimiter.nonfinite`).
* A peak limiter keeps every sample at or below the ceiling (default −0.3 dBFS). Its gain is
  set per 320-sample frame from that frame's peak: a frame louder than the ceiling gets the
  gain that brings its peak to the ceiling at once (no look-ahead, so no added latency; the
  gain steps only when the signal already exceeds the ceiling), and the gain returns to 1
  with an exponential release (:data:`RELEASE_S`), ramped linearly inside each frame and
  never above the frame's own safe gain, so the ceiling holds on every sample.

Why not in the audio callback: the callback must stay allocation- and branch-light, and the
recorder and the tap must get exactly what is played; the decoder thread is the last place
that sees every sample first.

Threading: decoder thread only. Quiet audio (the usual case) costs one ``isfinite`` and one
peak per block.
"""

from __future__ import annotations

import math

import numpy as np

from engine import HOP_LENGTH, SAMPLE_RATE

CEILING_DB = -0.3  # dBFS: a little below full scale, so resampling overshoot stays inside
RELEASE_S = 0.25  # time constant of the gain's return to 1 after limiting


class SafetyLimiter:
    """Replace non-finite samples and limit peaks, in place.

    Args:
        ceiling_db: the largest absolute sample allowed, in dBFS.
        release_s: the time constant of the release (seconds).
        frame: samples per gain decision (one codec frame).
        rate: sample rate of the audio given to :meth:`process`.

    Attributes:
        nonfinite: non-finite samples replaced so far.
        limited_frames: frames whose gain was below 1.
        gain: the current gain (1.0 = not limiting).
    """

    def __init__(self, ceiling_db: float = CEILING_DB, release_s: float = RELEASE_S,
                 frame: int = HOP_LENGTH, rate: int = SAMPLE_RATE):
        self.ceiling = float(10.0 ** (ceiling_db / 20.0))
        self.frame = frame
        self.release = 1.0 - math.exp(-frame / (release_s * rate))  # per-frame step to target
        self.gain = 1.0
        self.nonfinite = 0
        self.limited_frames = 0
        self._ramp = np.linspace(1.0 / frame, 1.0, frame)  # [frame], reused

    def process(self, audio: np.ndarray) -> int:
        """Guard ``audio`` ``[n]`` float32 in place.

        Returns:
            the number of non-finite samples replaced in this block.
        """
        bad = 0
        if not np.isfinite(audio).all():
            mask = ~np.isfinite(audio)
            bad = int(mask.sum())
            audio[mask] = 0.0
            self.nonfinite += bad
        if self.gain == 1.0 and (audio.size == 0 or np.abs(audio).max() <= self.ceiling):
            return bad
        for start in range(0, audio.size, self.frame):
            self._frame(audio[start:start + self.frame])
        return bad

    def _frame(self, x: np.ndarray) -> None:
        peak = float(np.abs(x).max()) if x.size else 0.0
        safe = min(1.0, self.ceiling / peak) if peak > 0.0 else 1.0
        if safe < self.gain:  # attack: the whole frame at the gain that makes it safe
            self.gain = safe
            x *= safe
        elif self.gain < 1.0:  # release toward the safe gain, never above it
            new = min(safe, self.gain + (1.0 - self.gain) * self.release)
            if new > 1.0 - 1e-3:  # the last 0.01 dB in one ramp: inaudible, and then
                new = 1.0  # quiet audio passes untouched again
            x *= self.gain + (new - self.gain) * self._ramp[:x.size]
            self.gain = new
        if self.gain < 1.0:
            self.limited_frames += 1
        np.clip(x, -self.ceiling, self.ceiling, out=x)  # float rounding only

    @property
    def limiting(self) -> bool:
        return self.gain < 1.0
