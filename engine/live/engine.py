"""The live engine: the parts that run while a performer plays, wired together.

:class:`LiveEngine` builds and connects, one file each:

* the model family's generator — the rolling generator (:mod:`engine.live.generator`) for
  EnCodecGPT, :mod:`engine.live.rotary.generator` for the rotary family (slots hold audio
  prefixes, :mod:`engine.live.rotary.prefix`), :mod:`engine.live.musicgen.generator` for
  MusicGen (slots hold texts, encoded by :mod:`engine.live.musicgen.text_slots`) — and its
  control input
  (:mod:`engine.live.control_input`: initial slots, bundles validated as a whole);
* the two-thread pipeline, generator → decoder → sink (:mod:`engine.live.pipeline`);
* the output: a PortAudio device, or the null sink, with the watchdog that falls back to the
  null sink when the device fails (:mod:`engine.live.audio.output`);
* prompt loading for ``/prompt/load``, and priming for ``/prime`` and ``/prime/file``
  (:mod:`engine.live.prompt_loading`; :mod:`engine.model.tokens.priming`);
* transport: play / pause / panic (:mod:`engine.live.transport`);
* the listeners (recorder, control log, tap) and notices (:mod:`engine.live.listeners`);

and reports their figures in :meth:`LiveEngine.status`. What records sessions is attached
from above as a listener (:mod:`engine.session.live_session`).

Threading model
---------------
Which thread may call what, once :meth:`LiveEngine.start` has run:

* **Owner thread** (``run_engine.py``'s main thread, or a test): builds the engine, adds
  listeners (before ``start``), :meth:`~LiveEngine.start`, :meth:`~LiveEngine.stop`,
  :meth:`~LiveEngine.status`.
* **OSC thread** (:class:`osc.server.OSCServer`): :meth:`~LiveEngine.submit`,
  :meth:`~LiveEngine.play` / :meth:`~LiveEngine.pause` / :meth:`~LiveEngine.panic`,
  :meth:`~LiveEngine.load_prompt`, :meth:`~LiveEngine.status`, and the recorder's
  ``start`` / ``stop``. It validates and queues; it never touches the model, the decoder,
  the device or a file.
* **Generator thread** (``generator``, :class:`~engine.live.pipeline.Pipeline`): the only
  thread that runs the model and owns the :class:`RollingGenerator` (window, caches, RNG,
  controls). At each frame boundary it runs the boundary hooks (a recording's start and
  stop), applies the queued controls and logs them (``on_control``), steps, and hands the
  row to the listeners (``on_row``) and to the decoder's bounded queue. The **re-prefill
  worker** (``prefill``, ``fast`` mode) fills the shadow cache at frames the generator fixes.
* **Decoder thread** (``decoder``): owns the undelay and the streaming decoder; decodes
  chunks, hands each block to the listeners (``on_audio``: tap, recorder) and writes it to
  the sink, waiting while the ring is full (that back-pressure paces the generator).
* **Audio callback** (PortAudio's thread, :class:`~engine.live.audio.sound_device.AudioOut`):
  copies from the ring into the device buffer, zero-fills and counts an underrun, applies
  the fade gain; no allocation, locks, logging, torch or I/O. On the null sink a
  ``null-sink`` thread consumes the ring in real time instead.
* **Prompt loader** (``prompt-load``): reads and embeds a prompt file, then submits it like
  the OSC thread.
* **Recorder** (``recorder``, :mod:`engine.session.recorder`): the only thread that writes
  session files; rows, controls and audio reach it as copies through its own queue. The
  control log and the tap have their own writer threads.
* **Watchdog** (``device-watchdog``): checks the device every 0.1 s (stream ended, or no
  audio callback for 0.5 s) and, if it is lost, redirects the device's writer side to a null
  sink at the device's rate (:mod:`engine.live.audio.output`).
* **Feedback sender** (``osc-feedback``): reads :meth:`~LiveEngine.status` ten times a second.

Shared state, and what guards it: controls go OSC / loader → :class:`ControlInbox` (a lock) →
the generator's queue, and are applied on the generator thread only; rows go through a
bounded ``queue.Queue``; audio through a single-producer single-consumer ring (no lock);
pause is a ``threading.Event``, the fade a target gain the callback reads; the status
figures are counters written by one thread each and read without a lock (a stale value is
harmless).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.live.audio.output import LiveOutput
from engine.live.audio.seam import min_primed_rows
from engine.live.control_input import ControlInbox, initial_controls
from engine.live.controls import ControlError, ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.generator import DEFAULT_WINDOW, RollingGenerator
from engine.live.listen.capture import open_input
from engine.live.listen.updater import DEFAULT_INTERVAL_S, SILENCE_DB, ListenUpdater
from engine.live.listeners import EngineListener, Listeners
from engine.live.musicgen.generator import DEFAULT_WINDOW as MUSICGEN_WINDOW
from engine.live.musicgen.generator import MusicGenGenerator
from engine.live.musicgen.text_slots import TextSlots
from engine.live.pipeline import Pipeline, pinned_cpus
from engine.live.prompt_loading import PromptLoader, return_large_allocations
from engine.live.rotary.generator import RotaryGenerator
from engine.live.rotary.prefix import PrefixReader, prefix_frames
from engine.live.transport import Transport
from engine.model.musicgen.lm import MusicGenLM
from engine.model.prompt_files import PromptReader
from engine.model.rotary_lm import RotaryLM
from engine.model.tokens.priming import prime_frames, read_prime

WARM_UP_TIMEOUT_S = 30.0


@dataclass
class LiveConfig:
    window: int | None = None  # None: the family's (200 frames; rotary: max_seq_len tokens)
    mode: str = "fast"
    hop: int | None = None
    quantize: str = "none"  # resolved (engine.live.step.compute.resolve_weights)
    seed: int = 0
    compute: str = "cpu"  # model and decoder device (engine.live.step.compute.resolve_compute)
    runner: str | None = None  # exact mode off the CPU: graph (CUDA default), compile, eager
    device: str | None = None  # None = default device, "null" = no sound card
    hostapi: str | None = None
    buffer_s: float = 0.2
    blocksize: int = 512
    latency: float | str = "low"
    decode_chunk: int = 8
    threads: int = 1
    pin_threads: bool = False  # generator on one CPU, decoder + worker on another (Linux)
    prompt_dirs: list[Path] = field(default_factory=list)
    num_slots: int = 4
    prompt_seconds: float | None = 30.0  # /prompt/load embeds at most this much of a file
    control_log: Path | None = None  # JSON lines of every applied control
    tap: Path | None = None  # everything sent to the output, at its rate (WAV float)
    sessions_dir: Path = Path("sessions")  # control_log, tap, sessions_dir: engine.session
    scenes_dir: Path = Path("scenes")  # /scene/save, /scene/recall (engine.session.scenes)
    identity: dict = field(default_factory=dict)  # checkpoint/codec ids for session.json
    slot_sources: list = field(default_factory=list)  # where each initial prompt came from
    context_s: float | None = None  # the model's priming context (None: the window)
    limiter: bool = True  # the safety limiter at -0.3 dBFS (engine.live.audio.safety)
    input: str | None = None  # --input NAME|INDEX|file:PATH (engine.live.listen)
    input_hostapi: str | None = None
    listen_interval_s: float = DEFAULT_INTERVAL_S
    listen_silence_db: float = SILENCE_DB
    guidance: float = 3.0  # MusicGen's classifier-free guidance scale at start (/guidance)


class LiveEngine:
    """Everything that runs while a performer plays (see the module's threading model).

    Args:
        model, codec: the language model (an EnCodecGPT, a rotary ``RotaryLM`` or a
            ``MusicGenLM``) and its codec.
        slots: initial prompt embeddings ``[P]``, in slot order (at least one); for a rotary
            model, audio prefixes: codes ``[T, Q]`` (none: the start token alone); for
            MusicGen, texts (at least one).
        config: see :class:`LiveConfig`.
        encoder_factory: builds the prompt encoder on the first ``/prompt/load`` (lazy, so
            a session that never loads files never loads EnCodecMAE); for MusicGen, returns
            its :class:`~engine.model.musicgen.text.TextEncoder` (needed at once).
        log: console messages (one line each).
    """

    def __init__(self, model, codec, slots: list[np.ndarray], config: LiveConfig,
                 encoder_factory: Callable[[], object] | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)):
        self.config, self.log = config, log
        self.codec = codec
        self.prefixes: dict[int, np.ndarray] = {}  # audio-prefix slots: codes [T, Q]
        self.texts: TextSlots | None = None  # MusicGen's text slots
        decoder = StreamingDecoder(codec.model, device=config.compute)
        self.frame_rate = decoder.sample_rate / decoder.hop  # 75 Hz; MusicGen 50 Hz
        self.generator, controls = self._make_generator(model, slots, config, encoder_factory)
        self.inbox = ControlInbox(self.generator, controls)
        self.startup = {"capture_s": self.generator.startup_s, "decoder_warmup_s": 0.0}
        if decoder.device.type == "cuda":  # before the device opens: no first-second glitch
            chunks = range(1, max(1, config.decode_chunk) + 1)  # a recording start cuts one
            self.startup["decoder_warmup_s"] = decoder.warm_up(chunks, model.num_q)
        self.output = LiveOutput(config.device, config.hostapi, buffer_s=config.buffer_s,
                                 blocksize=config.blocksize, latency=config.latency, log=log,
                                 source_rate=decoder.sample_rate)
        # paced one frame at a time as playback advances (a control waits ~a device period,
        # not a chunk's idle gap), as far ahead as the ring plus a queue of a chunk and two
        lead_s = config.buffer_s + (max(1, config.decode_chunk) + 2) / self.frame_rate
        self.pipeline = Pipeline(self.generator, decoder, self.output.sink,
                                 decode_chunk=config.decode_chunk, threads=config.threads,
                                 lead_s=lead_s, buffered_s=lambda: self.output.buffered_s,
                                 pin=pinned_cpus() if config.pin_threads else None)
        if not config.limiter:
            self.pipeline.safety = None
        self.events = Listeners(log, rate=lambda: self.output.rate)
        if self.family == "rotary":  # a slot holds the codes of a file's first seconds
            gen = self.generator
            reader = PrefixReader(codec, gen.num_q,
                                  prefix_frames(gen.window, gen.num_q, config.prompt_seconds))
            store = self._store_prefix
        else:
            reader = PromptReader(encoder_factory,
                                  expected_dim=getattr(model, "prompt_dim", None),
                                  max_seconds=config.prompt_seconds)
            store = None
        self.prompts = PromptLoader(reader,
                                    config.prompt_dirs, controls.num_slots, self.submit,
                                    sources=config.slot_sources, store=store)
        if self.family == "musicgen":
            self.texts = TextSlots(self.generator.text, controls.num_slots, self.submit,
                                   [s for s in controls.slots if isinstance(s, str)])
        self.transport = Transport(self.pipeline, self.output, self.generator, self.events)
        self.input = open_input(config.input, config.input_hostapi) if config.input else None
        self.listener = None if self.input is None else ListenUpdater(
            self.input.ring, self._embed_input, self.submit, log,
            interval_s=config.listen_interval_s, silence_db=config.listen_silence_db)
        if self.input is not None:
            log(f"input: {self.input.name} at {self.input.ring.rate} Hz "
                "(/prompt/listen i [seconds] binds a slot to it)")
        self.recorder = None  # set by engine.session.live_session when sessions are recorded
        self.scenes = None  # likewise, the scene store (engine.session.scenes)
        self._connect()

    def _make_generator(self, model, slots: list, config: LiveConfig, encoder_factory):
        """The family's generator and its initial controls. EnCodecGPT: prompt vectors
        ``[P]`` in the slots. Rotary: ``slots`` are audio prefixes, codes ``[T, Q]`` (the
        first primes the window; none: the start token alone). MusicGen: texts (encoded
        here, before the first step)."""
        if isinstance(model, MusicGenLM):
            return self._musicgen_generator(model, slots, config, encoder_factory())
        if isinstance(model, RotaryLM):
            controls = ControlState(num_slots=config.num_slots)
            self.prefixes = dict(enumerate(slots))
            prefix = torch.from_numpy(np.ascontiguousarray(slots[0].T)) if slots else None
            gen = RotaryGenerator(model, controls, window=config.window, mode=config.mode,
                                  seed=config.seed, prefix=prefix)
            return gen, controls
        if not slots:
            raise UserError("the engine needs at least one prompt")
        controls = initial_controls(slots, num_slots=config.num_slots)
        gen = RollingGenerator(model, controls, window=config.window or DEFAULT_WINDOW,
                               mode=config.mode, hop=config.hop, quantize=config.quantize,
                               seed=config.seed, compute=config.compute, runner=config.runner)
        return gen, controls

    def _musicgen_generator(self, lm: MusicGenLM, texts: list, config: LiveConfig, text):
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise UserError("MusicGen needs at least one text (--prompt-text TEXT ...)")
        controls = ControlState(num_slots=max(config.num_slots, len(texts)),
                                frame_rate=self.frame_rate)
        for i, t in enumerate(texts):
            text.encode(t.strip())  # cached: the first steps never run T5
            controls.apply(ControlEvent("/prompt/slot/text", (i, t.strip())))
        gen = MusicGenGenerator(lm, text, controls, window=config.window or MUSICGEN_WINDOW,
                                guidance=config.guidance, seed=config.seed)
        return gen, controls

    @property
    def family(self) -> str:
        """The model family playing (``encodecgpt``, ``rotary`` or ``musicgen``)."""
        return getattr(self.generator, "family", "encodecgpt")

    @property
    def unsupported(self) -> dict[str, str]:
        """Engine commands this family answers with ``/error`` (address → why)."""
        return getattr(self.generator, "unsupported", {})

    def _connect(self) -> None:
        """Route the generator's, the pipeline's and the output's events to the listeners."""
        self.generator.on_control = self.events.on_control
        self.generator.on_error = lambda frame, event, message: self.events.error(message)
        self.generator.on_fault = self._fault
        self.pipeline.on_fault = self._fault
        self.pipeline.on_row = self.events.on_row
        if self.output.device is not None:  # what was played, at the device rate
            self.output.device.tap = self.events.on_output
        else:
            self.pipeline.on_audio = self.events.on_output

    def _fault(self, message: str) -> None:
        """A non-finite step or decoded block (generator or decoder thread): once per run of
        them, on the console and as ``/error``; the stream goes on."""
        self.log(f"warning: {message}")
        self.events.error(message)

    # -- wiring for the layers above (before start) -------------------------------------------
    def add_listener(self, listener: EngineListener) -> None:
        """Attach before :meth:`start`."""
        self.events.add(listener)

    @property
    def error_listeners(self) -> list[Callable[[str], None]]:
        """Called with the message of a refused control or a failed recording."""
        return self.events.error_listeners

    @property
    def recorder_listeners(self) -> list[Callable[[str, str], None]]:
        """Called with ``(kind, text)`` when a recording starts, stops or fails."""
        return self.events.recorder_listeners

    def notify(self, kind: str, text: str) -> None:
        """A recorder's notice (``started``, ``stopped``, ``error``): console and OSC."""
        self.events.notify(kind, text)

    @property
    def is_device(self) -> bool:
        """True while playing to a sound device (not the null sink)."""
        return self.output.device is not None

    @property
    def num_slots(self) -> int:
        """Prompt slots ``0 .. num_slots - 1`` (``--slots``; what ``/schema`` says)."""
        return self.inbox.num_slots

    @property
    def slot_sources(self) -> dict[int, str]:
        """Where each slot's vector came from (file path, ``random``, ...)."""
        return self.prompts.sources

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Warm up (generate until the output buffer is half full), then start playing."""
        self.pipeline.start()
        target = 0.5 * self.config.buffer_s
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        while (self.output.buffered_s < target and time.monotonic() < deadline
               and self.pipeline.error is None):
            time.sleep(0.01)
        self.output.start()
        if self.input is not None:
            self.input.start()
        # Everything built so far (torch, the model, the codec: ~400 000 tracked objects) out
        # of the cyclic collector's sight: a full collection over them holds the GIL ~165 ms,
        # a stall the audio threads cannot hide (the hour's soak lost 3 periods to one).
        gc.freeze()
        return_large_allocations()  # prompt loads' transient blocks must not grow RSS
        self.transport.playing = True

    def stop(self) -> None:
        """Fade out and stop everything (idempotent); a recording is finished first."""
        self.output.fade_out()
        self.pipeline.stop_nowait()
        self.output.close()
        self.pipeline.stop()
        self.events.close()
        self.generator.close()
        self.prompts.close()
        if self.texts is not None:
            self.texts.close()
        if self.listener is not None:
            self.listener.close()
        if self.input is not None:
            self.input.close()
        self.transport.playing = False
        gc.unfreeze()  # what this engine leaves behind can be collected again

    # -- commands (OSC thread) -------------------------------------------------------------------
    def submit(self, events: list[ControlEvent]) -> None:
        """Validate a bundle against the current state, then queue it for the next frame.

        Raises:
            ControlError: the bundle is refused as a whole.
        """
        self.inbox.submit(events)

    @property
    def playing(self) -> bool:
        return self.transport.playing

    def play(self) -> None:
        self.transport.play()

    def pause(self) -> None:
        self.transport.pause()

    def panic(self) -> None:
        """Silence now: fade out, drop buffered audio, reset the window, pause."""
        self.transport.panic()

    def set_text(self, slot: int, text: str, done: Callable[[int, str], None],
                 failed: Callable[[str], None]) -> None:
        """``/prompt/text``: encode ``text`` for MusicGen slot ``slot`` in the text worker,
        then queue it for a frame boundary; ``done(slot, text)`` or ``failed(message)``."""
        if self.texts is None:
            failed(f"the {self.family} model has no text slots (MusicGen's); "
                   + ("its slots hold audio prefixes: /prompt/load i FILE"
                      if self.family == "rotary" else
                      "its slots hold EnCodecMAE vectors of audio: /prompt/load i FILE"))
            return
        self.texts.set(slot, text, done, failed)

    def load_prompt(self, slot: int, path: str, done: Callable[[int, str], None],
                    failed: Callable[[str], None]) -> None:
        """Embed ``path`` into ``slot`` in the loader thread; then ``done(slot, path)`` or
        ``failed(message)``. The path must lie inside one of the prompt folders."""
        self.prompts.load(slot, path, done, failed)

    def prime(self, slot: int, done: Callable[[str, int], None],
              failed: Callable[[str], None]) -> None:
        """Continue slot ``slot``'s audio: its file's last seconds become the window's rows
        at a frame boundary (loader thread); then ``done(file, rows)`` or ``failed(message)``.
        Rotary: the window restarts from the slot's audio prefix (its file's first seconds)."""
        if self.family == "rotary":
            self._prime_prefix(slot, done, failed)
            return
        source = self.prompts.sources.get(slot)
        if source is None or Path(source).suffix.lower() == ".npy" or not Path(source).is_file():
            failed(f"slot {slot} holds no audio file to prime from (its source: {source})")
            return
        self.prompts.prime(source, self._prime_values, done, failed, check=False)

    def prime_file(self, path: str, done: Callable[[str, int], None],
                   failed: Callable[[str], None]) -> None:
        """As :meth:`prime`, from an audio file inside the prompt folders."""
        if self.family == "rotary":
            self.prompts.prime(path, lambda file: (self.prompts.reader.read(file),), done,
                               failed)
            return
        self.prompts.prime(path, self._prime_values, done, failed)

    # -- audio prefixes (the rotary family) -----------------------------------------------------
    def _store_prefix(self, slot: int, codes: np.ndarray) -> None:
        """``/prompt/load`` for the rotary family: keep the codes for ``/prime slot``."""
        self.prefixes[slot] = codes

    def _prime_prefix(self, slot: int, done: Callable[[str, int], None],
                      failed: Callable[[str], None]) -> None:
        codes = self.prefixes.get(slot)
        if codes is None:
            failed(f"slot {slot} holds no audio prefix (/prompt/load {slot} FILE first)")
            return
        try:
            self.submit([ControlEvent("/prime/rows", (codes,))])
        except ControlError as e:
            failed(str(e))
            return
        done(self.slot_sources.get(slot, f"slot {slot}"), int(codes.shape[0]))

    def _prime_values(self, file: Path) -> tuple:
        """The ``/prime/rows`` values for ``file`` (loader thread): its rows, and in fast
        mode the prompt their window cache was computed with, here, so that the frame that
        primes does not prefill a window (:mod:`engine.live.step.primed`); the decoder's
        warm-up for the seam is decoded here too (:meth:`Pipeline.prewarm`)."""
        rows = self._prime_rows(file)
        values = self.generator.prepare_prime(rows)
        self.pipeline.prewarm(rows)
        return values

    def _prime_rows(self, file: Path) -> np.ndarray:
        """``[T, Q]`` int64 rows: the file's last seconds (the model's context, at most the
        window; in fast mode the window less one hop), encoded and delayed (loader thread)."""
        gen = self.generator
        # fast mode: leave one hop free, so the shadow cache of the next window is filled in
        # the background over H steps instead of blocking the step right after the prime
        room = gen.window - (gen.hop if gen.mode == "fast" else 0)
        frames, note = prime_frames(self.config.context_s, room)
        rows = read_prime(self.codec, file, gen.num_q, frames).numpy()
        if rows.shape[0] < min_primed_rows(gen.num_q):
            raise UserError(f"{file}: too short to prime from ({rows.shape[0]} frames; at "
                            f"least {min_primed_rows(gen.num_q)}, "
                            f"{min_primed_rows(gen.num_q) / self.frame_rate:.2f} s)")
        if note:
            self.log(note)
        return rows

    def reopen_device(self, done: Callable[[str, int], None],
                      failed: Callable[[str], None]) -> None:
        """Close the output device and open it again at the same rate (``/device/reopen``),
        on its own thread: after a loss, once the device or its server is back."""
        reinit = not getattr(self.input, "portaudio", False)
        if not reinit:
            self.log("audio: the live input holds PortAudio open: reopening without a "
                     "re-scan (a restarted JACK server or a re-plugged card is not found)")
        self.output.reopen(reinit, done, failed)

    def listen(self, slot: int, seconds: float | None = None) -> float:
        """Bind ``slot`` to the live input (``/prompt/listen``); returns the analysis
        seconds. Raises :class:`UserError` without ``--input`` or EnCodecMAE."""
        if self.family == "rotary":
            raise UserError("the rotary model is unconditional: a slot holds an audio prefix, "
                            "not a vector a live input could update")
        if self.listener is None:
            raise UserError("no live input: start the engine with --input NAME|INDEX|file:PATH")
        if not 0 <= slot < self.num_slots:
            raise UserError(f"slot must be in 0..{self.num_slots - 1}, got {slot}")
        self.prompts.reader.encoder  # noqa: B018  (fails now, in one line, without EnCodecMAE)
        seconds = self.listener.listen(slot, seconds)
        self.slot_sources[slot] = f"input {self.input.name}"
        return seconds

    def unlisten(self, slot: int) -> bool:
        """Freeze ``slot`` at its last vector (``/prompt/unlisten``)."""
        return self.listener is not None and self.listener.unlisten(slot)

    def _embed_input(self, audio: np.ndarray) -> np.ndarray:
        """``[N]`` 24 kHz input → ``[P]``: as a prompt file is embedded (listen thread)."""
        with torch.inference_mode():
            return self.prompts.reader.encoder.mae.features(audio).mean(axis=0)

    def check_prompt_path(self, path: str) -> Path:
        """The resolved file, if inside a prompt folder (raises :class:`UserError` if not)."""
        return self.prompts.check_path(path)

    # -- status (any thread) ---------------------------------------------------------------
    def info(self) -> dict:
        """What runs where (``/engine/info``, the console, session.json): compute device,
        weight format, model family, window, mode."""
        gen = self.generator
        weights = "fp32" if gen.weight_format == "none" else gen.weight_format
        return {"compute": str(gen.compute), "weights": weights, "family": self.family,
                "window": gen.window, "mode": gen.mode}

    def status(self) -> dict:
        """The figures the console and ``/engine/status`` show (a consistent-enough
        snapshot: each value is read once, without a lock)."""
        stats = self.pipeline.stats
        mean = float(np.mean(stats.recent)) if stats.recent else 0.0
        c = self.generator.controls
        recording = self.recorder is not None and self.recorder.recording
        level = self.pipeline.level.read()
        safety = self.pipeline.safety
        return {
            "rtf": (1000.0 / self.frame_rate) / mean if mean > 0 else 0.0,
            "step_ms_p50": stats.percentile(50), "step_ms_p99": stats.percentile(99),
            "buffer_ms": 1000.0 * self.output.buffered_s,
            "underruns": self.output.underruns,
            "device_underflows": self.output.device_underflows,
            "mix": [float(w) for w in c.weights],
            "morph": float(c.weights[1]) if len(c.weights) > 1 else 0.0,
            "temperature": float(c.temperature), "topk": int(c.top_k), "topp": float(c.top_p),
            "recording": int(recording), "playing": int(self.playing),
            "frame": self.generator.t, "device": "device" if self.is_device else "null",
            "output": self.output.describe(),
            "weights": self.generator.weight_format,
            "gain_db": float(c.gain_db), "peak_db": level["peak_db"],
            "rms_db": level["rms_db"],
            "nonfinite_steps": self.generator.nonfinite_steps,
            "nonfinite_samples": safety.nonfinite if safety is not None else 0,
            "limited_frames": safety.limited_frames if safety is not None else 0,
            **self._input_status(),
        }

    def _input_status(self) -> dict:
        """The live input's level and who listens (empty without ``--input``)."""
        if self.input is None:
            return {}
        peak, rms = self.input.ring.level()
        lis = self.listener
        return {"input_peak_db": peak, "input_rms_db": rms, "listening": dict(lis.slots),
                "listen_interval_s": lis.interval, "listen_updates": lis.updates}
