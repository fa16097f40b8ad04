"""The engine's output: a PortAudio device, or the paced null sink when there is none.

:class:`LiveOutput` opens the device named on the command line; if it cannot (no such device,
no PortAudio), it says so on the console and uses the null sink, so generation and OSC
control go on. A watchdog thread does the same when an open device stops while playing:
PortAudio ends the stream (unplugged), or its callbacks stop coming for :data:`STALL_S`
(a killed JACK server ends nothing and may leave every PortAudio call blocked). It says so
on the console and redirects the device's writer side to a null sink at the device's rate,
so generation, OSC, the recording's audio and the tap go on unchanged (within
``STALL_S + WATCH_PERIOD_S`` ≤ 1 s).

Coming back, two ways:

* **by itself** when a lost device's callbacks come back (a stalled server, a suspended
  machine): after :data:`RESUME_S` of steady callbacks the watchdog plays on it again, from
  silence, fading in once half the buffer is refilled;
* **on request** (:meth:`LiveOutput.reopen`, OSC ``/device/reopen``): the lost (or playing)
  stream is closed, PortAudio re-initialised so that a device plugged in again or a
  restarted JACK server is found, and the same device opened again *at the same rate*
  (the recording and ``--tap`` never change rate inside a file). A stream PortAudio cannot
  close (a JACK server that died: its close blocks for good) makes that impossible in this
  process; the reopen says so and the engine stays on the null sink.

The writer side never changes: the pipeline writes into the first device's
:class:`~engine.live.audio.sound_device.AudioOut` (its resampler and tap stay), which plays
into its own ring, a null sink, or a reopened device's ring (:meth:`AudioOut.play
<engine.live.audio.sound_device.AudioOut.play>`). Fades and clearing only exist on a
device; on the null sink they do nothing. Underruns are counted across every swap.

Threading: opened, started and closed by the thread that owns the engine; fades, clear and
the figures (:attr:`buffered_s`, :attr:`underruns`, ...) from any thread (the OSC thread on
/play, /pause, /panic, /status); the watchdog thread and the reopen thread swap
:attr:`sink` under one lock. The writer's ``write`` is called by the pipeline's decoder
thread, a device's callback by PortAudio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.sinks import NullSink
from engine.live.audio.sound_device import (
    CLOSE_TIMEOUT_S,
    AudioOut,
    open_output,
    reinitialise_portaudio,
)

WATCH_PERIOD_S = 0.1
STALL_S = 0.5  # no audio callback for this long while started = the device is gone
RESUME_S = 0.5  # steady callbacks for this long = a lost device is back
REFILL_WAIT_S = 1.0  # a device played again waits at most this long for half a buffer


class _PlayOn:
    """The writer's stand-in that plays (already resampled) blocks on another device."""

    def __init__(self, device: AudioOut):
        self.device, self.rate = device, device.rate

    def write(self, block) -> None:
        self.device.play(block)


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
                 blocksize: int, latency: float | str, log: Callable[[str], None],
                 source_rate: int = SAMPLE_RATE):
        self.buffer_s, self.blocksize, self.log = buffer_s, blocksize, log
        self.source_rate = int(source_rate)  # the decoder's rate (24 kHz; MusicGen 32 kHz)
        self._spec = (device, hostapi, latency)
        self.sink: AudioOut | NullSink = self._open(device, hostapi, latency)
        self.front = self.sink  # what the pipeline writes into, for good
        self.playing: AudioOut | None = self.device  # the device that should be playing
        self.lost: AudioOut | None = None  # the device we fell back from, watched for return
        self.left: list[AudioOut] = []  # devices that could not be closed (a dead server)
        self.stuck: str | None = None  # why PortAudio cannot be re-initialised any more
        self._lock = threading.Lock()  # the watchdog's and the reopen's swaps
        self._reopening = False
        self._paused = False
        self._refilling: tuple[AudioOut, float] | None = None  # (device, since) to fade in
        self._beats, self._beat_at, self._resumed_at = 0, 0.0, None
        self._past_underruns, self._underrun_base = 0, 0
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _open(self, device: str | None, hostapi: str | None,
              latency: float | str) -> AudioOut | NullSink:
        if device == "null":
            self.log("audio: null sink (no sound card), paced in real time")
            return self._null_sink()
        try:
            out = open_output(device, hostapi, buffer_s=self.buffer_s,
                              blocksize=self.blocksize, latency=latency,
                              source_rate=self.source_rate)
        except UserError as e:
            self.log(f"audio: {e}")
            self.log("audio: going on with the null sink (no sound); fix the device and "
                     "restart, or pass --device null to silence this")
            return self._null_sink()
        resample = ("" if out.rate == self.source_rate
                    else f", resampled {self.source_rate} -> {out.rate} Hz")
        self.log(f"audio: {out.device_name} at {out.rate} Hz, {out.channels} ch{resample}")
        return out

    def _null_sink(self, rate: int | None = None) -> NullSink:
        return NullSink(rate=rate or self.source_rate, buffer_s=self.buffer_s, block=self.blocksize,
                        prefill_s=self.buffer_s / 2)

    # -- what it is, and its figures --------------------------------------------------------
    @property
    def device(self) -> AudioOut | None:
        """The sound device playing now, or None when playing into the null sink."""
        sink = self.sink
        return sink if isinstance(sink, AudioOut) else None

    @property
    def rate(self) -> int:
        """Samples per second the output takes (the device's rate; the decoder's for the null
        sink); a fallback or a reopen keeps it."""
        return int(self.front.rate)

    @property
    def buffered_s(self) -> float:
        return self.sink.buffered_s

    @property
    def underruns(self) -> int:
        """Periods our ring could not fill (the generator was late), over every device and
        null sink played so far."""
        return self._past_underruns + int(self.sink.underruns) - self._underrun_base

    @property
    def device_underflows(self) -> int:
        """Callbacks for which PortAudio reported an output underflow (the device ran dry
        before the callback ran: a late callback, an overloaded machine); 0 on the null sink."""
        device = self.device
        return device.output_underflows if device is not None else 0

    def describe(self) -> str:
        """Where the audio goes now, in words (the status line)."""
        if self.device is not None:
            return self.device.device_name
        if self.lost is not None:
            return f"null sink (lost '{self.lost.device_name}')"
        return "null sink"

    # -- lifecycle and transport -----------------------------------------------------------
    def start(self) -> None:
        """Start the device (the null sink starts by itself once prefilled) and the watchdog,
        which falls back to the null sink if the device fails and comes back with it."""
        if self.device is None:
            return
        self.device.start()
        self._beats, self._beat_at = self.device.callbacks, time.monotonic()
        self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                          name="device-watchdog")
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_PERIOD_S):
            with self._lock:
                if self._reopening:
                    continue
                now = time.monotonic()
                if self._refilling is not None:
                    self._fade_in_when_refilled(now)
                elif self.playing is not None:
                    self._check_playing(self.playing, now)
                elif self.lost is not None:
                    self._check_return(self.lost, now)

    def _check_playing(self, device: AudioOut, now: float) -> None:
        if device.callbacks != self._beats:
            self._beats, self._beat_at = device.callbacks, now
        elif now - self._beat_at >= STALL_S and device.failed is None:
            device.failed = (f"audio device '{device.device_name}' stopped responding "
                             f"(no audio callback for {now - self._beat_at:.1f} s)")
        if device.failed:
            self._fall_back(device, now)

    def _fall_back(self, device: AudioOut, now: float) -> None:
        """Go on at the same rate in a null sink (the writer's resampler and tap stay)."""
        device.mute()  # if its callbacks come back, they play silence until we return
        self._route(self._null_sink(self.rate))
        self.playing, self.lost = None, device
        self._beats, self._resumed_at = device.callbacks, None
        self.log(f"audio: {device.failed}; going on with the null sink at {self.rate} Hz "
                 "(generation, OSC and recording continue)")

    def _check_return(self, device: AudioOut, now: float) -> None:
        """A lost device whose callbacks came back steadily for :data:`RESUME_S` plays again
        (one that PortAudio ended needs ``/device/reopen``)."""
        if device.ended or device.closed:
            return
        if device.callbacks == self._beats:
            self._resumed_at = None
            return
        self._beats = device.callbacks
        if self._resumed_at is None:
            self._resumed_at = now
        elif now - self._resumed_at >= RESUME_S:
            device.failed = None
            self._play_on(device, now)
            self.log(f"audio: '{device.device_name}' responds again; playing on it again")

    def _play_on(self, device: AudioOut, now: float) -> None:
        """Route the writer to ``device`` (muted); the watchdog fades it in once refilled."""
        self._route(device)
        self.playing, self.lost = device, None
        self._beats, self._beat_at = device.callbacks, now
        self._refilling = (device, now)

    def _fade_in_when_refilled(self, now: float) -> None:
        device, since = self._refilling
        if device.buffered_s < self.buffer_s / 2 and now - since < REFILL_WAIT_S:
            return
        self._refilling = None  # muted until now: no underrun was counted
        self._beats, self._beat_at = device.callbacks, now
        if not self._paused:
            device.fade_in()

    def _route(self, target: AudioOut | NullSink) -> None:
        """Send the writer's blocks to ``target`` from now on; keeps the underrun count."""
        old = self.sink
        self._past_underruns += int(old.underruns) - self._underrun_base
        front = self.front
        if target is front:
            front.redirect(None)
        elif isinstance(target, AudioOut):
            front.redirect(_PlayOn(target))
        else:
            front.redirect(target)
        self.sink, self._underrun_base = target, int(target.underruns)
        if isinstance(old, NullSink):
            old.close()

    # -- reopening on request --------------------------------------------------------------
    def reopen(self, reinit: bool, done: Callable[[str, int], None],
               failed: Callable[[str], None]) -> None:
        """Close the output device and open it again at the same rate, on its own thread
        (a few hundred ms; up to ~2 s when PortAudio hangs); then ``done(name, rate)`` or
        ``failed(message)``, after which the engine plays on the null sink.

        Args:
            reinit: re-initialise PortAudio between (needed to find a restarted JACK
                server or a device plugged in again; False while another PortAudio stream,
                the live input, is open: re-initialising would close it).
        """
        if not isinstance(self.front, AudioOut):
            failed("no device to reopen: the engine started on the null sink (--device "
                   "null, or the device could not be opened); restart it with the device")
            return
        if self.stuck is not None:
            failed(self.stuck)
            return
        with self._lock:
            if self._reopening:
                failed("a reopen is already under way")
                return
            self._reopening = True
        threading.Thread(target=self._reopen, args=(reinit, done, failed), daemon=True,
                         name="device-reopen").start()

    def _reopen(self, reinit: bool, done: Callable[[str, int], None],
                failed: Callable[[str], None]) -> None:
        try:
            name, rate = self._reopen_device(reinit)
        except UserError as e:
            failed(str(e))
        else:
            done(name, rate)
        finally:
            with self._lock:
                self._reopening = False

    def _reopen_device(self, reinit: bool) -> tuple[str, int]:
        with self._lock:
            old = self.playing or self.lost
            if self.playing is not None:  # the decoder must never wait on a closing stream
                old.failed = "reopening"
                old.mute()
                self._route(self._null_sink(self.rate))
                self.playing, self.lost = None, old
        if old is not None and not old.close(CLOSE_TIMEOUT_S):
            with self._lock:
                self.left.append(old)
                self.lost = None  # not watched, not closed again
            self.stuck = (f"cannot reopen '{old.device_name}': PortAudio cannot close its "
                          "lost stream (a JACK server that died leaves it blocked); still on "
                          "the null sink: restart the engine to play on the device again")
            raise UserError(self.stuck)
        if reinit and not reinitialise_portaudio(CLOSE_TIMEOUT_S):
            self.stuck = ("cannot reopen: PortAudio did not re-initialise (it is blocked); "
                          "still on the null sink: restart the engine")
            raise UserError(self.stuck)
        device, hostapi, latency = self._spec
        try:
            new = open_output(device, hostapi, buffer_s=self.buffer_s, blocksize=self.blocksize,
                              latency=latency, rate=self.rate, source_rate=self.source_rate)
        except UserError as e:
            raise UserError(f"{e}; still on the null sink (try /device/reopen again once "
                            "the device is back)") from None
        new.mute()
        with self._lock:
            self._route(new)
            self.lost = None
        deadline = time.monotonic() + REFILL_WAIT_S  # start with half a buffer, no underruns
        while new.buffered_s < self.buffer_s / 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        new.start()  # fades in
        with self._lock:
            if self._paused:
                new.target_gain = 0.0
            self.playing = new
            self._underrun_base = int(new.underruns)
            self._beats, self._beat_at = new.callbacks, time.monotonic()
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="device-watchdog")
            self._watchdog.start()
        self.log(f"audio: reopened {new.device_name} at {new.rate} Hz")
        return new.device_name, new.rate

    # -- transport ---------------------------------------------------------------------------
    def fade_in(self) -> None:
        self._paused = False
        if isinstance(self.sink, NullSink):  # it counts underruns again (play)
            self.sink.paused = False
        if self.device is not None and self._refilling is None:
            self.device.fade_in()

    def fade_out(self, wait: bool = True) -> None:
        self._paused = True
        if isinstance(self.sink, NullSink):  # paused: running dry is no underrun
            self.sink.paused = True
        if self.device is not None:
            self.device.fade_out(wait=wait)

    def clear(self) -> None:
        """Drop the buffered audio (after a fade-out); the null sink drops its own too, so
        ``/panic`` does on the null device what it does on a sound card."""
        self.sink.clear()

    def close(self) -> None:
        """Stop the watchdog and close everything opened (a device fades out first;
        idempotent); a lost device gets a bounded time to close."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)
        with self._lock:
            sinks = [self.sink, self.front, self.lost]
        seen: set[int] = set()
        for sink in sinks:
            if sink is None or id(sink) in seen:
                continue
            seen.add(id(sink))
            if isinstance(sink, NullSink):
                sink.close()
            elif not sink.close():
                self.log(f"audio: '{sink.device_name}' did not close (lost); left behind")
