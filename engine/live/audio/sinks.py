"""Where decoded audio goes when there is no sound card: a file, or a paced null device.

A sink takes ``[n]`` float32 blocks at 24 kHz through :meth:`write`, which may block (that
back-pressure is what keeps the generator from running too far ahead of playback).

* :class:`FileSink` writes a WAV/FLAC incrementally, as fast as blocks come.
* :class:`NullSink` behaves like a sound card: a consumer thread takes ``block`` samples
  every ``block / rate`` seconds (absolute deadlines, so it does not drift) from a bounded
  :class:`~engine.live.audio.ringbuffer.SampleRing`, counts an underrun each time fewer were ready,
  and starts once ``prefill`` samples are buffered. ``paced=False`` consumes immediately.
* :class:`MemorySink` keeps everything (tests, replay).

Threading: ``write`` is called by one producer (the pipeline's decoder thread). The null
sink's ``null-sink`` thread is the ring's only consumer and the only writer of its counters
(:attr:`~NullSink.underruns`, :attr:`~NullSink.consumed`), which others read without a lock;
``close`` is called once by the thread that owns the sink.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.ringbuffer import SampleRing
from engine.model.audio_io import default_subtype


class FileSink:
    """Write blocks to ``path`` (WAV float32, or whatever the suffix says, e.g. FLAC)."""

    def __init__(self, path: str | Path, rate: int = SAMPLE_RATE):
        self.path = Path(path)
        try:
            self._file = sf.SoundFile(self.path, "w", rate, 1, subtype=default_subtype(self.path))
        except (sf.LibsndfileError, OSError, ValueError) as e:
            raise UserError(f"{self.path}: cannot write audio ({e})") from None
        self.underruns = 0

    def write(self, block: np.ndarray) -> None:
        self._file.write(np.asarray(block, dtype=np.float32))

    def close(self) -> None:
        self._file.close()


class MemorySink:
    """Keep every block (for tests and short renders)."""

    def __init__(self):
        self.blocks: list[np.ndarray] = []
        self.underruns = 0

    def write(self, block: np.ndarray) -> None:
        self.blocks.append(np.array(block, dtype=np.float32))

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)

    def close(self) -> None:
        pass


class NullSink:
    """A sound card that plays into nothing, in real time.

    Args:
        buffer_s: ring size in seconds (how far the generator may run ahead).
        block: samples taken per period (like a device's block size).
        prefill_s: buffered audio needed before consumption starts.
        paced: consume in real time (False: as fast as written, never underruns).
    """

    def __init__(self, rate: int = SAMPLE_RATE, buffer_s: float = 0.5, block: int = 512,
                 prefill_s: float = 0.25, paced: bool = True):
        self.rate, self.block, self.paced = rate, block, paced
        self.ring = SampleRing(max(int(buffer_s * rate), 2 * block))
        self.prefill = min(int(prefill_s * rate), self.ring.capacity)
        self.underruns = 0
        self.consumed = 0
        self.paused = False  # set while the transport is paused: running dry is not late then
        self._out = np.zeros((block, 1), dtype=np.float32)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._drop = threading.Event()  # set by clear(), done by the consumer thread
        self._thread = threading.Thread(target=self._consume, name="null-sink", daemon=True)
        self._thread.start()

    def write(self, block: np.ndarray) -> None:
        """Copy ``block`` into the ring, waiting while it is full."""
        block = np.asarray(block, dtype=np.float32)
        done = 0
        while done < len(block) and not self._stop.is_set():
            done += self.ring.write(block[done:])
            if self.ring.available >= self.prefill:
                self._started.set()
            if done < len(block):
                time.sleep(self.block / self.rate / 4)

    @property
    def buffered_s(self) -> float:
        return self.ring.available / self.rate

    def clear(self) -> None:
        """Drop buffered audio, as a device's ``clear`` does (``/panic``). Done by the
        consumer thread at its next period: the ring's read side is that thread's."""
        self._drop.set()

    def _consume(self) -> None:
        self._started.wait()
        period = self.block / self.rate
        deadline = time.perf_counter()
        while not self._stop.is_set():
            if self.paced:
                deadline += period
                delay = deadline - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if self._drop.is_set():
                self._drop.clear()
                self.ring.clear()
            got = self.ring.read_into(self._out)
            self.consumed += got
            if got < self.block and self.paced:
                self.underruns += not self.paused
            elif not self.paced and got == 0:
                time.sleep(0.001)

    def close(self) -> None:
        self._stop.set()
        self._started.set()
        self._thread.join(timeout=2.0)
