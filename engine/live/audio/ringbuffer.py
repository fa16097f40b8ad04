"""A preallocated single-producer / single-consumer ring of float32 samples.

The consumer may be a real-time audio callback: :meth:`read_into` only copies between
preallocated arrays and moves an integer; it never blocks, locks or allocates a buffer.
Each index is written by one side only, and Python int assignment is atomic under the GIL,
so no lock is needed.
"""

from __future__ import annotations

import numpy as np


class SampleRing:
    """``capacity`` samples of ``channels`` channels (``[capacity, channels]`` float32)."""

    def __init__(self, capacity: int, channels: int = 1):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.buf = np.zeros((capacity, channels), dtype=np.float32)
        self.capacity = capacity
        self._written = 0  # total samples written (producer only)
        self._read = 0  # total samples read (consumer only)

    @property
    def available(self) -> int:
        """Samples ready to read."""
        return self._written - self._read

    @property
    def free(self) -> int:
        return self.capacity - self.available

    def write(self, samples: np.ndarray) -> int:
        """Copy as many of ``[n]`` or ``[n, channels]`` samples as fit; returns how many."""
        n = min(len(samples), self.free)
        if n <= 0:
            return 0
        src = samples[:n].reshape(n, -1)
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self.buf[start : start + first] = src[:first]
        self.buf[: n - first] = src[first:]
        self._written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out [frames, channels]`` from the ring; returns how many samples were real.
        The rest of ``out`` is zero-filled (an underrun when fewer than asked)."""
        want = out.shape[0]
        n = min(want, self.available)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self.buf[start : start + first]
        out[first:n] = self.buf[: n - first]
        if n < want:
            out[n:] = 0.0
        self._read += n
        return n

    def clear(self) -> None:
        """Drop everything unread (consumer side)."""
        self._read = self._written
