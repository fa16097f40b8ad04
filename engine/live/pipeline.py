"""Generator → decoder → sink, on two threads.

The generator thread only runs the language model (plus the background re-prefill worker
of ``fast`` mode); the decoder thread turns rows into frames (the generator's
``frame_assembler()``: the streaming inverse of its model family's token pattern), decodes them
in chunks of ``decode_chunk`` frames with the carried-state
:class:`~engine.live.decoder.StreamingDecoder`, applies the master gain (each row carries the
``/gain`` in force when it was generated, ramped per frame by
:class:`~engine.live.audio.gain.GainRamp`), measures the level
(:class:`~engine.live.audio.level.LevelMeter`) and writes the audio to the sink. A bounded queue
between them plus the sink's own back-pressure keeps the generator at most a buffer ahead
of playback, which bounds control latency. Both threads share one torch intra-op setting
(process-wide); ``threads=1`` keeps each op on the core its thread runs on.

Threading: :meth:`Pipeline.start` / :meth:`~Pipeline.stop` / :meth:`~Pipeline.join` on the
owner's thread. The ``generator`` thread is the only one that calls the generator (and
``on_row``); the ``decoder`` thread the only one that touches the undelay, the decoder and
the sink (and ``on_audio`` and the :meth:`~Pipeline.at_frame` hooks). They share only the
bounded row queue (and two counters the decoder writes and the generator reads, for pacing).
A ``/prime/rows`` control puts a seam marker before the first row of the
primed sequence; the decoder thread then crossfades into it (:mod:`engine.live.audio.seam`).
Any thread may pause (clear :attr:`~Pipeline.running`), request a frame
hook, or swap :attr:`~Pipeline.sink` (the device watchdog: the next block goes to the new
sink), and read :attr:`~Pipeline.stats` (written by the generator thread alone, plus
``samples_out`` by the decoder thread).

Pacing (``lead_s``): without it the generator runs until the row queue is full and then waits
for the decoder to take a whole chunk, so a faster-than-real-time model generates in bursts
of ``decode_chunk`` frames separated by idle gaps of most of a chunk's duration — a control
arriving in such a gap waits for it (~60 ms with chunks of 8). With ``lead_s`` the generator
instead steps whenever the audio it is ahead of playback (rows queued or in the decoder's hand,
samples not yet in the output ring, the ring's content) falls below ``lead_s``: one frame
at a time as playback advances, so the wait before a control takes effect is about one device
period. The lead is read from instantaneous counts, never from running totals (which a panic,
a prime or a device swap would skew).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from engine.errors import UserError
from engine.live.audio.gain import RAMP_S, GainRamp
from engine.live.audio.level import LevelMeter
from engine.live.audio.safety import SafetyLimiter
from engine.live.audio.seam import Crossfade, min_primed_rows, warm_state
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator

_STOP = object()
PACE_POLL_S = 0.002  # a paced generator's wait between looks at the lead


def pinned_cpus() -> tuple[int, int]:
    """The two CPUs ``--pin-threads`` uses: the generator on the first, the decoder and the
    re-prefill worker on the second (gpt2 int4-128 on a 2-vCPU AMD EPYC, 120 s paced: step
    p99 15.1 -> 11.9 ms, RTF 1.90 -> 2.06). Opt-in: a pinned thread cannot move away from
    another program busy on its core.

    Raises:
        UserError: not Linux (no ``sched_setaffinity``), or fewer than two CPUs allowed.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise UserError("--pin-threads needs Linux (sched_setaffinity); leave it off here")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise UserError(f"--pin-threads needs two CPUs; this process may use {len(cpus)}")
    return cpus[0], cpus[1]


class _Seam:
    """Queue marker: the rows after it continue these primed rows ``[T, Q]``."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows


class StepStats:
    """Recent step times (ms) and totals, readable from any thread."""

    def __init__(self, keep: int = 4096):
        self.recent: deque[float] = deque(maxlen=keep)
        self.all_ms: list[float] | None = None  # every step, when a benchmark asks for it
        self.frames = 0
        self.samples_out = 0

    def add(self, ms: float) -> None:
        self.recent.append(ms)
        if self.all_ms is not None:
            self.all_ms.append(ms)
        self.frames += 1

    def percentile(self, q: float) -> float:
        data = list(self.recent)
        return float(np.percentile(data, q)) if data else 0.0


class Pipeline:
    """Run ``generator`` endlessly (or for ``frames``) into ``sink``.

    Args:
        generator: a :class:`RollingGenerator` (used from the generator thread only).
        decoder: the streaming decoder for the generator's codec.
        sink: anything with ``write([n] float32)``.
        decode_chunk: frames per decoder call (larger = cheaper per frame, more latency).
        threads: torch intra-op threads for the whole process (None: leave them as they are).
        on_row: called on the generator thread with ``(frame, row)`` after each step.
        on_audio: called on the decoder thread with each audio block (at the decoder's rate:
            24 kHz, MusicGen 32 kHz) and the output sample index it starts at (frame f starts
            at sample hop·f), before the sink.
        lead_s: pace the generator to stay this far ahead of playback (see the module
            docstring); None: run ahead until the row queue is full.
        buffered_s: seconds of audio in the output's ring now (any thread); needed with
            ``lead_s``.
        pin: ``(generator CPU, decoder CPU)`` (:func:`pinned_cpus`): each thread, and the
            generator's re-prefill worker with the decoder, is bound to its CPU; None: the
            scheduler places them.
    """

    def __init__(self, generator: RollingGenerator, decoder: StreamingDecoder, sink, *,
                 decode_chunk: int = 4, threads: int | None = 1,
                 on_row: Callable[[int, torch.Tensor], None] | None = None,
                 on_audio: Callable[[np.ndarray, int], None] | None = None,
                 lead_s: float | None = None, buffered_s: Callable[[], float] | None = None,
                 pin: tuple[int, int] | None = None):
        self.generator, self.decoder, self.sink = generator, decoder, sink
        self.pin = pin
        if lead_s is not None and buffered_s is None:
            raise ValueError("lead_s needs buffered_s (the output ring's content)")
        self.lead_s, self._buffered_s = lead_s, buffered_s
        self._in_hand = 0  # rows the decoder took but has not decoded (decoder thread writes)
        self._held = 0  # samples decoded but not yet in the sink (decoder thread writes)
        self.decode_chunk = max(1, decode_chunk)
        self.threads = threads
        self.on_row, self.on_audio = on_row, on_audio
        self.stats = StepStats()
        # the decoder's audio format: frames of `hop` samples at `rate` (24 kHz: 320 at 75 Hz)
        self.hop, self.rate = decoder.hop, decoder.sample_rate
        self.frame_rate = self.rate / self.hop
        self.gain = GainRamp(int(RAMP_S * self.rate), hop=self.hop)  # decoder thread only
        # decoder thread only; None = off (--no-limiter)
        self.safety = SafetyLimiter(frame=self.hop, rate=self.rate)
        self.on_fault: Callable[[str], None] | None = None  # decoder or generator thread
        self._audio_fault = False  # in a run of blocks with non-finite samples
        self.level = LevelMeter(rate=self.rate)  # written by the decoder thread, read by anyone
        self._frame_gains: deque[float] = deque()  # dB of each frame not decoded yet
        # Small: rows waiting here are generated but unheard, i.e. control latency.
        self.rows: queue.Queue = queue.Queue(maxsize=self.decode_chunk + 2)
        self._stop = threading.Event()
        self._limit: int | None = None
        self._gen_thread: threading.Thread | None = None
        self._dec_thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.running = threading.Event()  # cleared = paused
        self.running.set()
        self._frame_hooks: queue.SimpleQueue = queue.SimpleQueue()
        self._fade: Crossfade | None = None  # decoder thread: a seam being crossfaded
        self._warmer: StreamingDecoder | None = None  # prewarm's own stream (CPU)
        self._warm: tuple[bytes, dict] | None = None  # (primed rows, their warm state)
        self._warm_lock = threading.Lock()
        self.prewarmed_seams = 0  # seams whose decoder warm-up was decoded ahead

    def at_frame(self, frame: int, hook: Callable[[dict, int], None]) -> None:
        """Call ``hook(decoder_state, sample_index)`` on the decoder thread just before frame
        ``frame`` is decoded (the chunk is cut there), e.g. to start a recording whose replay
        must continue the decoder exactly. ``frame`` must not be decoded yet."""
        self._frame_hooks.put((frame, hook))

    def prewarm(self, rows: np.ndarray) -> None:
        """Decode the seam's warm-up for primed ``rows`` ``[T, Q]`` now, on the calling
        thread (the prime's loader, below the decoder), so that the seam only crossfades
        (:func:`~engine.live.audio.seam.warm_state`, on a fork of the decoder: the same
        computation). CPU decoders only; a GPU decoder warms up in the seam."""
        if self.decoder.device.type != "cpu" or rows.shape[0] < min_primed_rows(rows.shape[1]):
            return
        if self._warmer is None:  # (one prime loader thread: the warmer's only user)
            self._warmer = self.decoder.fork()
        state = warm_state(self._warmer, rows)  # outside the lock: the decoder never waits
        with self._warm_lock:
            self._warm = (np.ascontiguousarray(rows).tobytes(), state)

    def _take_warm(self, rows: np.ndarray) -> dict | None:
        """The prewarmed state of these primed rows, once (decoder thread)."""
        with self._warm_lock:
            warm, self._warm = self._warm, None
        if warm is not None and warm[0] == np.ascontiguousarray(rows).tobytes():
            self.prewarmed_seams += 1
            return warm[1]
        return None

    def start(self, frames: int | None = None) -> None:
        """Start both threads; stop by itself after ``frames`` rows if given."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self._limit = frames
        reprefill = getattr(self.generator, "reprefill", None)  # fast mode's worker
        if self.pin is not None and reprefill is not None:
            reprefill.pin(self.pin[1])
        self._gen_thread = threading.Thread(target=self._generate, name="generator", daemon=True)
        self._dec_thread = threading.Thread(target=self._decode, name="decoder", daemon=True)
        self._dec_thread.start()
        self._gen_thread.start()

    def run(self, frames: int) -> None:
        """Generate ``frames`` rows, decode all complete frames, then return."""
        self.start(frames)
        self.join()

    def join(self) -> None:
        for t in (self._gen_thread, self._dec_thread):
            if t is not None:
                t.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop generating; the decoder finishes the rows already queued."""
        self.stop_nowait()
        self.join()

    def stop_nowait(self) -> None:
        self._stop.set()
        self.running.set()

    def _generate(self) -> None:
        gen = self.generator
        if self.pin is not None:
            os.sched_setaffinity(0, {self.pin[0]})  # 0: the calling thread
        try:
            while not self._stop.is_set():
                if self._limit is not None and self.stats.frames >= self._limit:
                    break
                if not self.running.is_set():
                    self.running.wait(0.05)
                    continue
                if self.lead_s is not None and self._ahead_s() >= self.lead_s:
                    time.sleep(PACE_POLL_S)
                    continue
                t0 = time.perf_counter()
                row = gen.step()
                self.stats.add((time.perf_counter() - t0) * 1e3)
                seam = gen.take_seam()
                if seam is not None:  # before the first row of the primed sequence
                    self._put(_Seam(seam))
                if self.on_row is not None:
                    self.on_row(gen.t - 1, row)
                self._put((row, float(gen.controls.gain_db)))
        except BaseException as e:  # surfaced by join(); the decoder still drains
            self.error = e
        finally:
            self._put(_STOP)

    def _ahead_s(self) -> float:
        """Seconds of audio generated but not yet played (generator thread; the counts are
        each read once, without a lock: a stale one errs by a frame for one poll)."""
        # + the frames a non-causal decoder holds back (its look-ahead): decoded, not emitted
        rows = self.rows.qsize() + self._in_hand + self.decoder.lookahead_frames
        return rows / self.frame_rate + self._held / self.rate + self._buffered_s()

    def _put(self, item) -> None:
        while True:
            try:
                self.rows.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and item is not _STOP:
                    return

    def _decode(self) -> None:
        if self.pin is not None:
            os.sched_setaffinity(0, {self.pin[1]})
        undelay = self.generator.frame_assembler()  # the family's streaming un-pattern
        chunk: list[torch.Tensor] = []
        hooks: list[tuple[int, Callable]] = []
        frames = 0  # frames completed so far = index of the next one
        try:
            while True:
                item = self.rows.get()
                if item is _STOP:
                    break
                if isinstance(item, _Seam):  # the old stream's unfinished frames are dropped
                    if chunk:
                        self._emit(chunk)
                        chunk = []
                    flat = getattr(self.generator, "pattern", "delay") == "flatten"
                    self._fade = Crossfade(self.decoder, item.rows, self._take_warm(item.rows),
                                           self.generator.frame_assembler() if flat else None)
                    undelay = self._fade.undelay
                    continue
                row, gain_db = item
                frame = undelay.push(row)
                if frame is not None:
                    self._frame_gains.append(gain_db)
                    while not self._frame_hooks.empty():
                        hooks.append(self._frame_hooks.get())
                    due = [h for h in hooks if h[0] <= frames]
                    if due:
                        if chunk:
                            self._emit(chunk)
                            chunk = []
                        state = self.decoder.get_state()
                        for h in due:
                            hooks.remove(h)
                            h[1](state, frames * self.hop)
                    chunk.append(frame)
                    frames += 1
                if len(chunk) >= self.decode_chunk:
                    self._emit(chunk)
                    chunk = []
                self._in_hand = len(chunk)
            if chunk:
                self._emit(chunk)
        except BaseException as e:
            self.error = e
            self._stop.set()

    def _guard(self, audio: np.ndarray) -> None:
        """Non-finite samples out and peaks limited (:mod:`engine.live.audio.safety`); the
        first block of a run of broken ones is reported, not every block."""
        if self.safety is None:
            if not np.isfinite(audio).all():  # even without the limiter nothing non-finite
                np.nan_to_num(audio, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            return
        bad = self.safety.process(audio)
        if bad and not self._audio_fault and self.on_fault is not None:
            self.on_fault(f"the decoder produced {bad} non-finite samples; they were replaced "
                          "by silence (the limiter guards the output)")
        self._audio_fault = bool(bad)

    def _emit(self, frames: list[torch.Tensor]) -> None:
        codes = torch.stack(frames, dim=1)[None]  # [1, Q, n]
        fade = self._fade
        audio = (self.decoder.push(codes) if fade is None else fade.push(codes))[0, 0].numpy()
        if fade is not None and fade.done:
            self._fade = None
        if audio.size == 0:
            return
        gains = [self._frame_gains.popleft() if self._frame_gains else self.generator.controls
                 .gain_db for _ in range(audio.size // self.hop)]
        self.gain.process(audio, gains)
        self._guard(audio)
        self.level.add(audio)
        if self.on_audio is not None:
            self.on_audio(audio, self.stats.samples_out)
        self._write(audio)
        self.stats.samples_out += audio.size

    def _write(self, audio: np.ndarray) -> None:
        """Into the sink a frame at a time, so that :meth:`_ahead_s` sees the samples still
        held here while the sink waits for room (the whole chunk would hide up to a chunk)."""
        if self.lead_s is None:
            self.sink.write(audio)
            return
        self._held, self._in_hand = audio.size, 0  # the chunk's frames are now these samples
        for start in range(0, audio.size, self.hop):
            self._held = audio.size - start
            self.sink.write(audio[start: start + self.hop])
        self._held = 0
