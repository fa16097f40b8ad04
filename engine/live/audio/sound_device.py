"""The sound device: a PortAudio output stream (sounddevice) fed from a sample ring.

Data path: decoder thread → :meth:`AudioOut.write` (24 kHz mono; resampled to the device
rate with a streaming soxr resampler if they differ) → :class:`SampleRing` → the PortAudio
callback, which copies into the device buffer (every channel gets the mono signal),
zero-fills and counts an underrun if the ring ran dry, and applies the fade gain. The
callback only does numpy copies/multiplies on preallocated arrays: no locks, no logging,
no torch, no allocation of buffers.

When the device is lost (:attr:`AudioOut.failed`, set by PortAudio's finished callback or by
the watchdog when the callbacks stop: a killed JACK server ends neither the stream nor the
callbacks' absence with any call), :meth:`AudioOut.redirect` sends what is written to a
stand-in sink at the same rate (the null sink): the resampler and the tap go on, so a
recording and ``--tap`` keep every block without a change of rate. PortAudio calls on a lost
device may block for good, so :meth:`AudioOut.close` gives them a bounded time.

Threading: :meth:`AudioOut.write` runs on the pipeline's decoder thread (the ring's only
producer); :meth:`AudioOut._callback` on PortAudio's audio thread (the ring's only
consumer), which also reads the fade target and writes the counters
(:attr:`~AudioOut.underruns`, :attr:`~AudioOut.output_underflows`) that status readers read
without a lock, and counts its calls (:attr:`~AudioOut.callbacks`, the watchdog's heartbeat);
``_finished`` on PortAudio's thread when the stream ends (sets :attr:`~AudioOut.failed` for
the watchdog). :meth:`~AudioOut.redirect` on the watchdog thread. :meth:`~AudioOut.start`,
the fades, :meth:`~AudioOut.clear` and :meth:`~AudioOut.close` run on the engine's owner or OSC
thread. Device queries (:func:`list_devices`, :func:`resolve_device`) on any thread.
"""

from __future__ import annotations

import atexit
import threading
import time

import numpy as np

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.ringbuffer import SampleRing

FADE_S = 0.02
CLOSE_TIMEOUT_S = 1.0  # a lost device's stop/close may never return (JACK server killed)


def _sd():
    try:
        import sounddevice
    except OSError as e:  # libportaudio missing
        raise UserError(f"PortAudio is not available ({e}); install libportaudio2 "
                        "(Debian/Ubuntu) or use --device null") from None
    return sounddevice


_JACK_NAME: bytes | None = None  # PortAudio keeps the pointer: the bytes must stay alive


def set_jack_client_name(name: str) -> None:
    """Name the engine's JACK client (``--jack-name``; PortAudio's default is ``PortAudio``).

    PortAudio reads the name when it initialises, so it is set between a terminate and an
    initialise of sounddevice's PortAudio (before any stream is open). Other host APIs have
    no client name; this changes nothing for them.

    Raises:
        UserError: the PortAudio library has no JACK support.
    """
    global _JACK_NAME
    import ctypes

    sd = _sd()
    try:
        set_name = ctypes.CDLL(sd._libname).PaJack_SetClientName
    except (OSError, AttributeError):
        raise UserError("--jack-name: this PortAudio has no JACK support") from None
    _JACK_NAME = name.encode()
    sd._terminate()
    set_name.argtypes = [ctypes.c_char_p]
    set_name(_JACK_NAME)
    sd._initialize()


def list_devices() -> str:
    """Output devices, one per line: ``index: name (host API, channels, default rate)``."""
    sd = _sd()
    apis = sd.query_hostapis()
    lines = []
    for i, dev in enumerate(sd.query_devices()):
        if dev["max_output_channels"] > 0:
            api = apis[dev["hostapi"]]["name"]
            lines.append(f"{i:3d}: {dev['name']} ({api}, {dev['max_output_channels']} out, "
                         f"{dev['default_samplerate']:.0f} Hz)")
    return "\n".join(lines) if lines else "(no output devices found)"


def resolve_device(spec: str | int | None, hostapi: str | None = None) -> int | None:
    """``spec`` (an index, a name substring, or None = the default) → a device index.

    Raises:
        UserError: naming the device and listing the choices.
    """
    sd = _sd()
    apis = sd.query_hostapis()
    outputs = [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]
    if hostapi:
        keep = [j for j, a in enumerate(apis) if hostapi.lower() in a["name"].lower()]
        if not keep:
            names = ", ".join(a["name"] for a in apis)
            raise UserError(f"host API '{hostapi}' not found; available: {names}")
        outputs = [(i, d) for i, d in outputs if d["hostapi"] in keep]
        if spec is None:
            default = apis[keep[0]]["default_output_device"]
            if default >= 0:
                return default
    choices = "\n" + list_devices()
    if not outputs:
        wanted = "the default output device" if spec is None else f"audio device '{spec}'"
        raise UserError(f"cannot open {wanted}: no audio output device found"
                        + (f" for host API {hostapi}" if hostapi else "")
                        + "; use --device null to run without sound" + choices)
    if spec is None:
        default = sd.default.device[1]
        return default if default is not None and default >= 0 else outputs[0][0]
    text = str(spec)
    if text.isdigit():
        index = int(text)
        if any(i == index for i, _ in outputs):
            return index
        raise UserError(f"audio device {index} is not an output device; choices:{choices}")
    matches = [i for i, d in outputs if text.lower() in d["name"].lower()]
    if not matches:
        raise UserError(f"no output device matches '{text}'; choices:{choices}")
    return matches[0]


class AudioOut:
    """An open output stream. Use :meth:`start` after prefilling with :meth:`write`.

    Args:
        device: a device index (see :func:`resolve_device`).
        buffer_s: ring size in seconds (generator run-ahead, i.e. the control latency
            budget on top of the device latency).
        blocksize: frames per callback (0 lets PortAudio choose).
        latency: PortAudio's suggested latency (seconds or 'low'/'high').
    """

    def __init__(self, device: int | None, *, buffer_s: float = 0.3, blocksize: int = 512,
                 latency: float | str = "low", rate: int | None = None,
                 source_rate: int = SAMPLE_RATE):
        sd = _sd()
        info = sd.query_devices(device, "output")
        self.device_name = info["name"]
        self.source_rate = int(source_rate)  # what the decoder writes (24 or 32 kHz)
        self.rate = int(rate or self._pick_rate(sd, device, info, self.source_rate))
        self.channels = max(1, min(2, int(info["max_output_channels"])))
        self.ring = SampleRing(max(int(buffer_s * self.rate), 4 * max(blocksize, 256)))
        self._resampler = None
        if self.rate != self.source_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.source_rate, self.rate, 1,
                                                  dtype="float32",
                                                  quality="HQ")
        max_block = max(blocksize, 8192)
        self._mono = np.zeros((max_block, 1), dtype=np.float32)
        self._ramp = np.zeros((max_block, 1), dtype=np.float32)
        self._index = np.arange(1, max_block + 1, dtype=np.float32)[:, None]
        self._fade_step = 1.0 / (FADE_S * self.rate)
        self.gain, self.target_gain = 0.0, 1.0
        self.underruns = 0  # callbacks our ring could not fill (the generator was late)
        self.output_underflows = 0  # callbacks PortAudio ran late (the device ran dry first)
        self.callbacks = 0  # the watchdog's heartbeat
        self.failed: str | None = None
        self.ended = False  # PortAudio ended the stream (it does not come back by itself)
        self.closed = False
        self.fallback = None  # where writes go once the device is lost (see redirect)
        self.tap = None  # callable(block at device rate, start24) on the writer side
        self._in24 = 0  # source-rate samples received so far (24 kHz for EnCodecGPT)
        try:
            self.stream = sd.OutputStream(
                device=device, samplerate=self.rate, channels=self.channels, dtype="float32",
                blocksize=blocksize, latency=latency, callback=self._callback,
                finished_callback=self._finished)
        except Exception as e:  # PortAudioError, ValueError: report, caller falls back
            raise UserError(f"cannot open audio device '{self.device_name}' ({e})") from None
        self._stopping = False

    @staticmethod
    def _pick_rate(sd, device, info, source_rate: int) -> int:
        """The source's rate if the device takes it (no resampling), else its default."""
        try:
            sd.check_output_settings(device=device, samplerate=source_rate, channels=1,
                                     dtype="float32")
            return source_rate
        except Exception:
            return int(info["default_samplerate"])

    # -- writer side (decoder thread) -----------------------------------------------------
    def write(self, block: np.ndarray) -> None:
        """Source-rate mono block in: resampled, tapped, then played here (:meth:`play`) or
        handed to the stand-in set by :meth:`redirect`."""
        start24 = self._in24
        self._in24 += len(block)
        if self._resampler is not None:
            block = self._resampler.resample_chunk(np.asarray(block, dtype=np.float32))
        if self.tap is not None:
            self.tap(block, start24)
        fallback = self.fallback
        if fallback is not None:
            fallback.write(block)
            return
        self.play(block)

    def play(self, block: np.ndarray) -> None:
        """A block at the device rate into the ring, waiting while it is full
        (back-pressure); gives up on the rest once the device failed or is stopping."""
        done = 0
        while done < len(block):
            done += self.ring.write(block[done:])
            if done < len(block):
                if self.failed or self._stopping:
                    return  # the rest of this block was tapped, never played
                time.sleep(0.002)

    def redirect(self, sink) -> None:
        """From now on write (resampled, tapped) blocks to ``sink`` (its ``rate`` must be
        :attr:`rate`) instead of this device's ring; ``None`` plays them here again."""
        if sink is not None and getattr(sink, "rate", self.rate) != self.rate:
            raise ValueError(f"stand-in sink at {sink.rate} Hz for a {self.rate} Hz device")
        self.fallback = sink

    def mute(self) -> None:
        """Silence at once and drop what is buffered (a lost device: if its callbacks come
        back, they play silence, not stale audio, until :meth:`fade_in`)."""
        self.gain = self.target_gain = 0.0
        self.ring.clear()

    @property
    def buffered_s(self) -> float:
        return self.ring.available / self.rate

    def start(self) -> None:
        self.gain, self.target_gain = 0.0, 1.0  # fade in
        self.stream.start()

    def fade_out(self, wait: bool = True) -> None:
        """Ramp to silence over :data:`FADE_S`."""
        self.target_gain = 0.0
        if wait and self.failed is None and self.stream.active:
            deadline = time.monotonic() + FADE_S + 0.2
            while self.gain > 0.0 and time.monotonic() < deadline:
                time.sleep(0.005)

    def fade_in(self) -> None:
        self.target_gain = 1.0

    def clear(self) -> None:
        """Drop buffered audio (after a fade-out)."""
        self.ring.clear()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Fade out, stop and close the stream, waiting at most ``timeout`` seconds.

        Returns:
            False when PortAudio did not return in time (a lost device: the call is left
            blocked in a daemon thread, the engine goes on).
        """
        if self.closed:
            return True
        self._stopping = True
        if self.failed is None:
            self.fade_out()
        closer = threading.Thread(target=self._stop_stream, daemon=True, name="device-close")
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            _skip_portaudio_exit()
            return False
        self.closed = True
        return True

    def _stop_stream(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:  # a device that vanished cannot be stopped cleanly
            pass

    # -- real-time side --------------------------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        self.callbacks += 1
        if status.output_underflow:
            self.output_underflows += 1
        mono = self._mono[:frames]
        got = self.ring.read_into(mono)
        if got < frames and self.target_gain > 0.0:
            self.underruns += 1
        self._apply_gain(mono, frames)
        outdata[:] = mono  # broadcast to every channel

    def _apply_gain(self, mono: np.ndarray, frames: int) -> None:
        g, target = self.gain, self.target_gain
        if g == target:
            if g != 1.0:
                np.multiply(mono, g, out=mono)
            return
        step = self._fade_step if target > g else -self._fade_step
        ramp = self._ramp[:frames]
        np.multiply(self._index[:frames], step, out=ramp)
        np.add(ramp, g, out=ramp)
        np.clip(ramp, 0.0, 1.0, out=ramp)
        if target > g:
            np.minimum(ramp, target, out=ramp)
        else:
            np.maximum(ramp, target, out=ramp)
        np.multiply(mono, ramp, out=mono)
        self.gain = float(ramp[frames - 1, 0])

    def _finished(self) -> None:
        if not self._stopping:
            self.ended = True
            self.failed = f"audio device '{self.device_name}' stopped unexpectedly"


def _skip_portaudio_exit() -> None:
    """Do not terminate PortAudio at exit: ``Pa_Terminate`` closes every stream, and closing
    a stream whose server died blocks for good, so the process would never end."""
    sd = _sd()
    atexit.unregister(sd._exit_handler)  # sounddevice's own atexit hook (private name)


def open_output(spec: str | None, hostapi: str | None, **kw) -> AudioOut:
    """Resolve and open; raises UserError with the device name and the choices."""
    return AudioOut(resolve_device(spec, hostapi), **kw)



def reinitialise_portaudio(timeout: float = CLOSE_TIMEOUT_S) -> bool:
    """Terminate and initialise PortAudio again, so that devices, and a JACK server that was
    restarted, are found afresh (PortAudio enumerates once, when it initialises; this is
    the re-scan sounddevice's documentation describes). Every stream must be closed first:
    termination closes what is left. False when PortAudio did not return within ``timeout``
    (the call is left in a daemon thread)."""
    sd = _sd()

    def cycle() -> None:
        sd._terminate()
        sd._initialize()

    worker = threading.Thread(target=cycle, daemon=True, name="portaudio-reinit")
    worker.start()
    worker.join(timeout)
    return not worker.is_alive()
