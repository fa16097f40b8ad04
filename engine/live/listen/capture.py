"""The live input: a capture stream or a looping file, into a ring of the latest audio.

:class:`LatestAudio` keeps the last :attr:`~LatestAudio.capacity` mono samples in a
preallocated array. The writer (PortAudio's input callback, or the file feeder thread) only
copies into it and then advances :attr:`~LatestAudio.written`; a reader copies the latest
``n`` samples out. There is no lock: the ring holds more than twice the longest analysis plus
a block, so the samples a reader copies are not overwritten while it copies them.

Sources (``--input``):

* ``NAME|INDEX``: a PortAudio input device (``--input-hostapi`` picks the host API; on JACK
  the engine gets input ports to connect). Several channels are mixed to mono.
* ``file:PATH``: an audio file played in a loop at real-time pace, for tests and rehearsal
  (the same data path as a device, without one).

Threading: the writer is PortAudio's callback or the ``input-file`` thread; readers are the
listen updater and the status/feedback threads (:meth:`LatestAudio.level`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from engine import SAMPLE_RATE
from engine.errors import UserError
from engine.live.audio.sound_device import _sd
from engine.model.audio_io import read_audio

RING_SECONDS = 10.0  # > 2 × the longest analysis (4 s) + a block
FILE_BLOCK = 512  # samples the file feeder writes at a time


class LatestAudio:
    """The last ``seconds`` of a mono input at ``rate``, written by one thread.

    Attributes:
        rate: samples per second.
        written: samples written since the start (only the writer changes it).
    """

    def __init__(self, rate: int, seconds: float = RING_SECONDS, max_block: int = 8192):
        self.rate = int(rate)
        self.capacity = int(seconds * rate) + max_block
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._mono = np.zeros(max_block, dtype=np.float32)  # the callback's scratch
        self.written = 0

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` ``[n]`` or ``[n, C]`` float32 (mixed to mono, no allocation for
        ``n ≤ max_block``)."""
        if block.ndim == 2:
            n = block.shape[0]
            mono = self._mono[:n] if n <= self._mono.size else np.empty(n, np.float32)
            np.mean(block, axis=1, out=mono)
            block = mono
        n = block.shape[0]
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = block[:first]
        if first < n:
            self._buf[:n - first] = block[first:]
        self.written += n  # after the copy: a reader never sees samples not yet there

    def latest(self, n: int) -> tuple[np.ndarray, int] | None:
        """A copy of the last ``n`` samples and the sample count they end at, or None while
        fewer than ``n`` have arrived."""
        end = self.written
        if end < n or n > self.capacity // 2:
            return None
        idx = (np.arange(end - n, end) % self.capacity)
        return self._buf[idx].copy(), end

    def since(self, start: int) -> tuple[np.ndarray, int, int]:
        """A copy of what was written from sample ``start`` on, where it ends, and how many
        samples from ``start`` on were already gone (overwritten: a reader that waited
        longer than half the ring); the recorder's ``input.wav`` reads this way."""
        end = self.written
        first = max(start, end - self.capacity // 2)
        idx = np.arange(first, end) % self.capacity
        return self._buf[idx].copy(), end, max(0, first - start)

    def level(self, seconds: float = 0.1) -> tuple[float, float]:
        """Peak and RMS (dBFS) of the last ``seconds`` (-120 = silence or nothing yet)."""
        got = self.latest(max(1, int(seconds * self.rate)))
        if got is None:
            return -120.0, -120.0
        x = got[0]
        peak = float(np.abs(x).max())
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        return (20 * np.log10(max(peak, 1e-6)), 20 * np.log10(max(rms, 1e-6)))


class FileInput:
    """``--input file:PATH``: the file at 24 kHz, looped, written at real-time pace.

    Attributes:
        audio: the file's samples ``[N]`` (the loop), at :attr:`LatestAudio.rate`.
        ring: where they go.
    """

    portaudio = False  # holds no PortAudio stream

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"--input file:{path}: no such file")
        self.audio = read_audio(path, SAMPLE_RATE)
        if self.audio.size < FILE_BLOCK:
            raise UserError(f"--input file:{path}: too short to loop")
        self.ring = LatestAudio(SAMPLE_RATE)
        self.name = f"file:{path.name}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="input-file", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _feed(self) -> None:
        t0, pos, n = time.monotonic(), 0, self.audio.size
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * SAMPLE_RATE)  # samples owed by now
            while self.ring.written + FILE_BLOCK <= due:
                block = np.take(self.audio, np.arange(pos, pos + FILE_BLOCK), mode="wrap")
                self.ring.write(block)
                pos = (pos + FILE_BLOCK) % n
            self._stop.wait(FILE_BLOCK / SAMPLE_RATE / 2)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


class DeviceInput:
    """A PortAudio capture stream into a :class:`LatestAudio` (mono mix of its channels).

    Args:
        spec: device index or name substring (None = the default input).
        hostapi: restrict the choice to this host API (e.g. ``JACK``).
    """

    portaudio = True  # a PortAudio input stream (re-initialising PortAudio closes it)

    def __init__(self, spec: str | None, hostapi: str | None = None):
        sd = _sd()
        index = resolve_input(spec, hostapi)
        info = sd.query_devices(index)
        self.name = info["name"]
        rate = int(info["default_samplerate"])
        channels = min(2, int(info["max_input_channels"]))
        self.ring = LatestAudio(rate)
        self.overflows = 0
        self._stream = sd.InputStream(device=index, samplerate=rate, channels=channels,
                                      dtype="float32", callback=self._callback)

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        self.ring.write(indata)  # copies only: no allocation, lock, log or torch

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception:  # a device that went away: nothing left to release
            pass


def resolve_input(spec: str | None, hostapi: str | None = None) -> int:
    """``--input NAME|INDEX`` (None = the default input) → a device index with inputs.

    Raises:
        UserError: one line naming the device, and the input devices there are.
    """
    sd = _sd()
    apis = sd.query_hostapis()
    devices = list(enumerate(sd.query_devices()))
    inputs = [(i, d) for i, d in devices if d["max_input_channels"] > 0]
    if hostapi:
        keep = [j for j, a in enumerate(apis) if hostapi.lower() in a["name"].lower()]
        if not keep:
            raise UserError(f"--input-hostapi: host API '{hostapi}' not found; available: "
                            + ", ".join(a["name"] for a in apis))
        inputs = [(i, d) for i, d in inputs if d["hostapi"] in keep]
    names = "; ".join(f"{i}: {d['name']}" for i, d in inputs) or "none"
    if spec is None:
        default = sd.default.device[0]
        if default is not None and default >= 0 and any(i == default for i, _ in inputs):
            return default
        if inputs:
            return inputs[0][0]
        raise UserError("--input: no audio input device found (input devices: none)")
    text = str(spec)
    if text.isdigit():
        index = int(text)
        if any(i == index for i, _ in inputs):
            return index
        what = (f"'{devices[index][1]['name']}' has no inputs" if index < len(devices)
                else "no such device")
        raise UserError(f"--input {index}: {what} (input devices: {names})")
    matches = [i for i, d in inputs if text.lower() in d["name"].lower()]
    if not matches:
        outputs = [d["name"] for _, d in devices if text.lower() in d["name"].lower()]
        what = f"'{outputs[0]}' has no inputs" if outputs else "no device matches"
        raise UserError(f"--input {text}: {what} (input devices: {names})")
    return matches[0]


def _parse_input(spec: str) -> tuple[str, str | None]:
    """``--input`` → ``("file", path)`` or ``("device", name or None for the default)``."""
    if spec.startswith("file:"):
        return "file", spec[len("file:"):]
    return "device", None if spec in ("", "default") else spec


def check_input(spec: str, hostapi: str | None = None) -> None:
    """Refuse (:class:`UserError`) an ``--input`` that is not there, without opening it:
    cheap enough to run before a model loads."""
    kind, name = _parse_input(spec)
    if kind == "file":
        path = Path(name).expanduser()  # as FileInput opens it
        if not path.is_file():
            raise UserError(f"--input file:{path}: no such file")
    else:
        resolve_input(name, hostapi)


def open_input(spec: str, hostapi: str | None = None) -> FileInput | DeviceInput:
    """``--input`` → an input source, not started."""
    kind, name = _parse_input(spec)
    return FileInput(name) if kind == "file" else DeviceInput(name, hostapi)
