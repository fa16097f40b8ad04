"""The listen updater: the latest seconds of input → EnCodecMAE → a listening slot's vector.

Every update interval the ``listen`` thread (nice +10, below the generator and the decoder)
takes, for each listening slot, that slot's analysis length of the latest input
(:class:`~engine.live.listen.capture.LatestAudio`), resamples it to 24 kHz, and — unless it is
quieter than the silence threshold — embeds it exactly as a prompt file is embedded (the time
mean of EnCodecMAE's features over 4 s chunks) and submits ``/prompt/slot`` with the vector.
The generator applies that at a frame boundary and logs it (the vector by digest, the array
in a recording's ``slots/``), so a recorded listening session replays token-identically with
no input device.

The interval adapts upward: when two rounds of embeddings in a row take more than half the
interval, the interval becomes 2.5 × the shorter of the two (rounded up to 0.25 s, at most
30 s) and the console says so, so the worker competes with the generator for at most ~40 %
of a core, and one round starved by a burst of other work does not set it.

Threading: :meth:`ListenUpdater.listen` / :meth:`~ListenUpdater.unlisten` from the OSC thread
(a dict replaced whole, read by the worker); the worker submits like the OSC thread does.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import soxr

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.controls import ControlEvent
from engine.live.listen.capture import LatestAudio

DEFAULT_SECONDS = 3.0  # analysis length: most of one 4 s EnCodecMAE chunk, 3 s behind
MAX_SECONDS = 4.0  # one EnCodecMAE chunk
MIN_SECONDS = 0.5
DEFAULT_INTERVAL_S = 1.0
MAX_INTERVAL_S = 30.0
SILENCE_DB = -50.0  # RMS below this: the slot keeps its vector


class ListenUpdater:
    """Embed the input into the listening slots, every :attr:`interval` seconds.

    Args:
        ring: the input's latest audio.
        embed: ``[N]`` float32 audio at 24 kHz → ``[P]`` prompt vector (EnCodecMAE).
        submit: queue a bundle of controls (the engine's ``submit``).
        log: console lines.
        interval_s: the starting update interval.
        silence_db: RMS threshold below which nothing is submitted.

    Attributes:
        updates: vectors submitted; ``silent``: analyses skipped as silence;
        embed_ms: the last embedding's time; ``last``: per slot, ``(end sample, samples)``
        of the input the last vector was computed from (ring rate).
    """

    def __init__(self, ring: LatestAudio, embed: Callable[[np.ndarray], np.ndarray],
                 submit: Callable[[list[ControlEvent]], None], log: Callable[[str], None],
                 interval_s: float = DEFAULT_INTERVAL_S, silence_db: float = SILENCE_DB):
        self.ring, self.embed, self.submit, self.log = ring, embed, submit, log
        self.interval = float(interval_s)
        self.silence_db = float(silence_db)
        self.slots: dict[int, float] = {}  # listening slot → analysis seconds
        self.updates = self.silent = 0
        self.embed_ms = 0.0
        self.last: dict[int, tuple[int, int]] = {}
        self.error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listen", daemon=True)

    # -- OSC thread ------------------------------------------------------------------------
    def listen(self, slot: int, seconds: float | None = None) -> float:
        """Bind ``slot`` to the input with an analysis length of ``seconds``; returns it.

        Raises:
            UserError: ``seconds`` outside 0.5..4.
        """
        seconds = DEFAULT_SECONDS if seconds is None else float(seconds)
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise UserError(f"/prompt/listen: seconds must be in {MIN_SECONDS}..{MAX_SECONDS} "
                            f"(one EnCodecMAE chunk at most), got {seconds:g}")
        self.slots = {**self.slots, slot: seconds}
        if not self._thread.is_alive():
            self._thread.start()
        self._wake.set()  # the first vector comes now, not an interval later
        return seconds

    def unlisten(self, slot: int) -> bool:
        """Freeze ``slot`` at its last vector; False if it was not listening."""
        if slot not in self.slots:
            return False
        self.slots = {k: v for k, v in self.slots.items() if k != slot}
        return True

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    # -- worker ----------------------------------------------------------------------------
    def _run(self) -> None:
        _lower_priority()
        first = True
        previous: float | None = None  # the last round's time, if it was slow
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            for slot, seconds in list(self.slots.items()):
                try:
                    self._update(slot, seconds)
                except Exception as e:  # a bad input or model must not kill the worker
                    self.error = f"listen: slot {slot}: {e}"
                    self.log(self.error)
            spent = time.perf_counter() - t0
            slow = not first and spent > 0.5 * self.interval  # the first round loads the model
            if slow and previous is not None:  # two slow rounds in a row: not a hiccup
                typical = min(spent, previous)
                self.interval = min(MAX_INTERVAL_S, math.ceil(2.5 * typical * 4) / 4)
                self.log(f"listen: embedding takes {typical:.2f} s per update; update interval "
                         f"raised to {self.interval:.2f} s")
                previous = None
            else:
                previous = spent if slow else None
            first = first and not self.slots

    def _update(self, slot: int, seconds: float) -> None:
        n = int(round(seconds * self.ring.rate))
        got = self.ring.latest(n)
        if got is None:
            return  # not that much input yet
        audio, end = got
        if self.ring.rate != SAMPLE_RATE:
            audio = soxr.resample(audio, self.ring.rate, SAMPLE_RATE, quality="HQ")
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if 20 * math.log10(max(rms, 1e-9)) < self.silence_db:
            self.silent += 1
            return
        t0 = time.perf_counter()
        vec = np.asarray(self.embed(audio.astype(np.float32)), dtype=np.float32)
        self.embed_ms = 1e3 * (time.perf_counter() - t0)
        if slot not in self.slots:  # unlistened while embedding: frozen means frozen
            return
        self.submit([ControlEvent("/prompt/slot", (slot, vec))])
        self.last[slot] = (end, n)
        self.updates += 1


def _lower_priority() -> None:
    """Below the generator and decoder: on Linux ``os.nice`` acts on the calling thread."""
    try:
        os.nice(10)
    except (OSError, AttributeError):
        pass
