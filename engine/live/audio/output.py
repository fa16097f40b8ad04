"""The engine's output: a PortAudio device, or the paced null sink when there is none.

:class:`LiveOutput` opens the device named on the command line; if it cannot (no such device,
no PortAudio), it says so on the console and uses the null sink, so generation and OSC
control go on. A watchdog thread does the same when an open device stops while playing:
PortAudio ends the stream (unplugged), or its callbacks stop coming for :data:`STALL_S`
(a killed JACK server ends nothing and may leave every PortAudio call blocked). It says so
on the console and redirects the device's writer side to a null sink at the device's rate,
so generation, OSC, the recording's audio and the tap go on unchanged (within
``STALL_S + WATCH_PERIOD_S`` ≤ 1 s). Fades and clearing only exist on a device; on the null
sink they do nothing. Closing a lost device is given :data:`~sound_device.CLOSE_TIMEOUT_S`.

Threading: opened, started and closed by the thread that owns the engine; fades, clear and
the figures (:attr:`buffered_s`, :attr:`underruns`, ...) from any thread (the OSC thread on
/play, /pause, /panic, /status); the watchdog thread only redirects the lost device and
swaps :attr:`sink`. The sink's
``write`` is called by the pipeline's decoder thread, its callback by PortAudio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.sinks import NullSink
from engine.live.audio.sound_device import AudioOut, open_output

WATCH_PERIOD_S = 0.1
STALL_S = 0.5  # no audio callback for this long while started = the device is gone


class LiveOutput:
    """Open ``device`` (None = the default, ``"null"`` = no sound card) or the null sink.

    Args:
        device, hostapi: what to open (see :func:`engine.live.audio.sound_device.resolve_device`).
        buffer_s: output ring size in seconds (generator run-ahead); the null sink starts
            once half of it is buffered.
        blocksize, latency: PortAudio's block size and suggested latency.
        log: console messages (one line each).
    """

    def __init__(self, device: str | None, hostapi: str | None, *, buffer_s: float,
                 blocksize: int, latency: float | str, log: Callable[[str], None]):
        self.buffer_s, self.blocksize, self.log = buffer_s, blocksize, log
        self.sink: AudioOut | NullSink = self._open(device, hostapi, latency)
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.lost: AudioOut | None = None  # the device we fell back from, if any

    def _open(self, device: str | None, hostapi: str | None,
              latency: float | str) -> AudioOut | NullSink:
        if device == "null":
            self.log("audio: null sink (no sound card), paced in real time")
            return self._null_sink()
        try:
            out = open_output(device, hostapi, buffer_s=self.buffer_s,
                              blocksize=self.blocksize, latency=latency)
        except UserError as e:
            self.log(f"audio: {e}")
            self.log("audio: going on with the null sink (no sound); fix the device and "
                     "restart, or pass --device null to silence this")
            return self._null_sink()
        resample = "" if out.rate == SAMPLE_RATE else f", resampled 24000 -> {out.rate} Hz"
        self.log(f"audio: {out.device_name} at {out.rate} Hz, {out.channels} ch{resample}")
        return out

    def _null_sink(self, rate: int = SAMPLE_RATE) -> NullSink:
        return NullSink(rate=rate, buffer_s=self.buffer_s, block=self.blocksize,
                        prefill_s=self.buffer_s / 2)

    # -- what it is, and its figures --------------------------------------------------------
    @property
    def device(self) -> AudioOut | None:
        """The open sound device, or None when playing into the null sink."""
        return self.sink if isinstance(self.sink, AudioOut) else None

    @property
    def rate(self) -> int:
        """Samples per second the output takes (the device's rate, 24 kHz for the null sink)."""
        return int(self.sink.rate)

    @property
    def buffered_s(self) -> float:
        return self.sink.buffered_s

    @property
    def underruns(self) -> int:
        """Periods our ring could not fill (the generator was late)."""
        return int(self.sink.underruns)

    @property
    def device_underflows(self) -> int:
        """Callbacks for which PortAudio reported an output underflow (the device ran dry
        before the callback ran: a late callback, an overloaded machine); 0 on the null sink."""
        device = self.device
        return device.output_underflows if device is not None else 0

    # -- lifecycle and transport -----------------------------------------------------------
    def start(self) -> None:
        """Start the device (the null sink starts by itself once prefilled) and the watchdog,
        which falls back to the null sink if the device fails."""
        if self.device is None:
            return
        self.device.start()
        self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                          name="device-watchdog")
        self._watchdog.start()

    def _watch(self) -> None:
        device = self.device
        beats, since = device.callbacks, time.monotonic()
        while not self._stop.wait(WATCH_PERIOD_S):
            now = time.monotonic()
            if device.callbacks != beats:
                beats, since = device.callbacks, now
            elif now - since >= STALL_S and device.failed is None:
                device.failed = (f"audio device '{device.device_name}' stopped responding "
                                 f"(no audio callback for {now - since:.1f} s)")
            if device.failed:
                self._fall_back(device)
                return

    def _fall_back(self, device: AudioOut) -> None:
        """Go on at the device's rate in a null sink (the device's resampler and tap stay)."""
        sink = self._null_sink(device.rate)
        device.redirect(sink)
        self.lost, self.sink = device, sink
        self.log(f"audio: {device.failed}; going on with the null sink at {device.rate} Hz "
                 "(generation, OSC and recording continue)")

    def fade_in(self) -> None:
        if isinstance(self.sink, NullSink):  # it counts underruns again (play)
            self.sink.paused = False
        if self.device is not None:
            self.device.fade_in()

    def fade_out(self, wait: bool = True) -> None:
        if isinstance(self.sink, NullSink):  # paused: running dry is no underrun
            self.sink.paused = True
        if self.device is not None:
            self.device.fade_out(wait=wait)

    def clear(self) -> None:
        """Drop the buffered audio (after a fade-out); the null sink drops its own too, so
        ``/panic`` does on the null device what it does on a sound card."""
        self.sink.clear()

    def close(self) -> None:
        """Stop the watchdog and close the sink (a device fades out first; idempotent); a
        lost device gets a bounded time to close."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)
        self.sink.close()
        if self.lost is not None and not self.lost.close():
            self.log(f"audio: '{self.lost.device_name}' did not close (lost); left behind")
