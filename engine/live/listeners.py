"""What the engine tells the rest of the program: per-frame events and notices.

* :class:`EngineListener` — the recorder, the control log and the tap: every applied control,
  every generated row, every audio block sent to the output, pauses, and shutdown.
* :class:`Listeners` — fans those events out, and the notices (a refused control, a
  recording started / stopped / failed) to their subscribers (the OSC server's replies).

Threading: ``on_control`` and ``on_row`` run on the generator thread, ``on_audio`` on the
decoder thread, ``on_pause`` on the thread that paused (OSC or console), ``close`` on the
thread that stops the engine; notices on whichever thread noticed (generator, recorder,
prompt loader). Listeners are added before the engine starts and never removed, so the lists
are read without a lock.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class EngineListener:
    """What the engine tells a listener (recorder, control log, tap); every hook is optional.

    A hook must be quick and must not raise (see the module's threading note for which
    thread runs each).
    """

    def on_control(self, entry) -> None:
        """A control took effect (``AppliedControl``)."""

    def on_row(self, frame: int, row) -> None:
        """Row ``frame`` (``[Q]`` int64) was generated."""

    def on_audio(self, block: np.ndarray, start24: int, rate: int) -> None:
        """``block`` (float32 at ``rate``) was sent to the output; its first sample is the
        output sample ``start24`` counted at the decoder's rate (24 kHz; MusicGen 32 kHz)."""

    def on_pause(self) -> None:
        """The engine was paused."""

    def close(self) -> None:
        """The engine is stopping: finish files."""


class Listeners:
    """Every :class:`EngineListener` of an engine as one, plus the notice subscribers.

    Args:
        log: console messages (one line each).
        rate: the output's current sample rate (for ``on_audio``).
    """

    def __init__(self, log: Callable[[str], None], rate: Callable[[], int]):
        self.log, self.rate = log, rate
        self.listeners: list[EngineListener] = []
        self.error_listeners: list[Callable[[str], None]] = []  # message
        self.recorder_listeners: list[Callable[[str, str], None]] = []  # kind, text

    def add(self, listener: EngineListener) -> None:
        self.listeners.append(listener)

    def on_control(self, entry) -> None:
        for listener in self.listeners:
            listener.on_control(entry)

    def on_row(self, frame: int, row) -> None:
        for listener in self.listeners:
            listener.on_row(frame, row)

    def on_output(self, block: np.ndarray, start24: int) -> None:
        """A block went to the output (the sink's tap or the pipeline's ``on_audio``)."""
        rate = self.rate()
        for listener in self.listeners:
            listener.on_audio(block, start24, rate)

    def on_pause(self) -> None:
        for listener in self.listeners:
            listener.on_pause()

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()

    # -- notices ---------------------------------------------------------------------------
    def error(self, message: str) -> None:
        """A refused control or a failed recording: to every error subscriber."""
        for listener in self.error_listeners:
            listener(message)

    def notify(self, kind: str, text: str) -> None:
        """A recorder's notice (``started``, ``stopped``, ``error``): console and OSC."""
        if kind == "error":
            self.log(f"recording: {text}")
            self.error(text)
        else:
            self.log(f"recording {kind}: {text}")
        for listener in self.recorder_listeners:
            listener(kind, text)
