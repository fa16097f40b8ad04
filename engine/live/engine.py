"""The live engine: model + rolling generator + decoder + sound device, driven by commands.

:class:`LiveEngine` owns the pipeline and the output (a PortAudio device, or the paced null
sink), and exposes what the OSC server and the console need: thread-safe control
submission, transport (play/pause/panic), prompt loading in a worker thread, and a status
snapshot. A device that fails to open, or stops while playing, is replaced by the null sink
(said on the console) so generation and control go on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import FRAME_RATE
from engine.errors import UserError
from engine.live.controls import ControlError, ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator
from engine.live.pipeline import Pipeline
from engine.live.sinks import NullSink
from engine.live.sound_device import open_output
from engine.model.prompt_files import PromptReader


class EngineListener:
    """What the engine tells a listener (recorder, control log, tap); every hook is optional.

    ``on_control`` and ``on_row`` run on the generator thread, ``on_audio`` on the decoder
    thread (null sink) or the device's output thread (tap of what was played), ``on_pause``
    on the caller's thread, ``close`` once when the engine stops. A hook must be quick and
    must not raise.
    """

    def on_control(self, entry) -> None:
        """A control took effect (``AppliedControl``)."""

    def on_row(self, frame: int, row) -> None:
        """Row ``frame`` (``[Q]`` int64) was generated."""

    def on_audio(self, block: np.ndarray, start24: int, rate: int) -> None:
        """``block`` (float32 at ``rate``) was sent to the output; its first sample is the
        24 kHz output sample ``start24``."""

    def on_pause(self) -> None:
        """The engine was paused."""

    def close(self) -> None:
        """The engine is stopping: finish files."""


MODEL_FAMILY = "encodecgpt"  # what /engine/info names; one family plugs in today


@dataclass
class LiveConfig:
    window: int = 200
    mode: str = "fast"
    hop: int | None = None
    quantize: str = "none"  # resolved (engine.live.compute.resolve_weights)
    seed: int = 0
    compute: str = "cpu"  # the model and decoder's device (engine.live.compute.resolve_compute)
    runner: str | None = None  # exact mode off the CPU: graph (CUDA default), compile, eager
    device: str | None = None  # None = default device, "null" = no sound card
    hostapi: str | None = None
    buffer_s: float = 0.2
    blocksize: int = 512
    latency: float | str = "low"
    decode_chunk: int = 8
    threads: int = 1
    prompt_dirs: list[Path] = field(default_factory=list)
    num_slots: int = 4
    control_log: Path | None = None  # JSON lines of every applied control
    tap: Path | None = None  # everything sent to the output, at its rate (WAV float)
    sessions_dir: Path = Path("sessions")  # control_log, tap, sessions_dir: engine.session
    identity: dict = field(default_factory=dict)  # checkpoint/codec ids for session.json
    slot_sources: list = field(default_factory=list)  # where each initial prompt came from


class LiveEngine:
    """Everything that runs while a performer plays.

    Args:
        model, codec: the language model and its codec.
        slots: initial prompt embeddings, in slot order (at least one).
        config: see :class:`LiveConfig`.
        encoder_factory: builds the prompt encoder on the first ``/prompt/load`` (lazy, so
            a session that never loads files never loads EnCodecMAE).
        log: console messages (one line each).
    """

    def __init__(self, model, codec, slots: list[np.ndarray], config: LiveConfig,
                 encoder_factory: Callable[[], object] | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)):
        if not slots:
            raise UserError("the engine needs at least one prompt")
        self.config, self.log = config, log
        self.model, self.codec = model, codec
        controls = ControlState(num_slots=max(config.num_slots, len(slots)))
        for i, vec in enumerate(slots):
            controls.apply(ControlEvent("/prompt/slot", (i, vec)))
        self.generator = RollingGenerator(model, controls, window=config.window,
                                          mode=config.mode, hop=config.hop,
                                          quantize=config.quantize, seed=config.seed,
                                          compute=config.compute, runner=config.runner)
        self.generator.on_error = self._on_apply_error
        self._future = controls.copy()
        self._submit_lock = threading.Lock()
        decoder = StreamingDecoder(codec.model, device=config.compute)
        self.startup = {"capture_s": self.generator.startup_s, "decoder_warmup_s": 0.0}
        if decoder.device.type == "cuda":  # before the device opens: no first-second glitch
            chunks = range(1, max(1, config.decode_chunk) + 1)  # a recording start cuts one
            self.startup["decoder_warmup_s"] = decoder.warm_up(chunks, model.num_q)
        self.output = self._open_output()
        self.pipeline = Pipeline(self.generator, decoder, self.output,
                                 decode_chunk=config.decode_chunk, threads=config.threads)
        self.prompts = PromptReader(encoder_factory, expected_dim=model.prompt_dim)
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="prompt-load")
        self.error_listeners: list[Callable[[str], None]] = []
        self.recorder_listeners: list[Callable[[str, str], None]] = []
        self.listeners: list[EngineListener] = []
        self.recorder = None  # set by engine.session.live_session when sessions are recorded
        self.playing = False
        self.generator.on_control = self._dispatch_control
        self.pipeline.on_row = self._dispatch_row
        if self.is_device:
            self.output.tap = self._dispatch_audio
        else:
            self.pipeline.on_audio = self._dispatch_audio
        self.slot_sources = {i: str(src) for i, src in enumerate(config.slot_sources)}
        self._watchdog_stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch_device, daemon=True,
                                          name="device-watchdog")

    # -- output ----------------------------------------------------------------------------
    def _open_output(self):
        cfg = self.config
        if cfg.device == "null":
            self.log("audio: null sink (no sound card), paced in real time")
            return self._null_sink()
        try:
            out = open_output(cfg.device, cfg.hostapi, buffer_s=cfg.buffer_s,
                              blocksize=cfg.blocksize, latency=cfg.latency)
        except UserError as e:
            self.log(f"audio: {e}")
            self.log("audio: going on with the null sink (no sound); fix the device and "
                     "restart, or pass --device null to silence this")
            return self._null_sink()
        resample = "" if out.rate == 24000 else f", resampled 24000 -> {out.rate} Hz"
        self.log(f"audio: {out.device_name} at {out.rate} Hz, {out.channels} ch{resample}")
        return out

    def _null_sink(self) -> NullSink:
        return NullSink(buffer_s=self.config.buffer_s, block=self.config.blocksize,
                        prefill_s=self.config.buffer_s / 2)

    @property
    def is_device(self) -> bool:
        return not isinstance(self.output, NullSink)

    def _watch_device(self) -> None:
        while not self._watchdog_stop.wait(0.2):
            failed = getattr(self.output, "failed", None)
            if failed:
                self.log(f"audio: {failed}; going on with the null sink")
                sink = self._null_sink()
                self.pipeline.sink = sink
                self.output = sink

    @property
    def output_rate(self) -> int:
        return int(getattr(self.output, "rate", 24000))

    def add_listener(self, listener: EngineListener) -> None:
        """Attach before :meth:`start`."""
        self.listeners.append(listener)

    def notify(self, kind: str, text: str) -> None:
        """A recorder's notice (``started``, ``stopped``, ``error``): console and OSC."""
        if kind == "error":
            self.log(f"recording: {text}")
            for listener in self.error_listeners:
                listener(text)
        else:
            self.log(f"recording {kind}: {text}")
        for listener in self.recorder_listeners:
            listener(kind, text)

    def _dispatch_control(self, entry) -> None:
        for listener in self.listeners:
            listener.on_control(entry)

    def _dispatch_row(self, frame, row) -> None:
        for listener in self.listeners:
            listener.on_row(frame, row)

    def _dispatch_audio(self, block, start24) -> None:
        rate = self.output_rate
        for listener in self.listeners:
            listener.on_audio(block, start24, rate)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Warm up (generate until the output buffer is half full), then start playing."""
        self.pipeline.start()
        target = 0.5 * self.config.buffer_s
        deadline = time.monotonic() + 30.0
        while (getattr(self.output, "buffered_s", target) < target and
               time.monotonic() < deadline and self.pipeline.error is None):
            time.sleep(0.01)
        if self.is_device:
            self.output.start()
        self.playing = True
        self._watchdog.start()

    def stop(self) -> None:
        """Fade out and stop everything (idempotent); a recording is finished first."""
        self._watchdog_stop.set()
        if self.is_device:
            self.output.fade_out()
        self.pipeline.stop_nowait()
        self.output.close()
        self.pipeline.stop()
        for listener in self.listeners:
            listener.close()
        self.generator.close()
        self._loader.shutdown(wait=False, cancel_futures=True)
        self.playing = False

    # -- commands --------------------------------------------------------------------------
    def submit(self, events: list[ControlEvent]) -> None:
        """Validate a bundle against the current state, then queue it for the next frame.

        Raises:
            ControlError: the bundle is refused as a whole.
        """
        with self._submit_lock:  # validate against the state once everything queued applies
            trial = self._future.copy()
            for ev in events:
                trial.apply(ev)
            self._future = trial
            self.generator.submit(events)

    def play(self) -> None:
        self.pipeline.running.set()
        if self.is_device:
            self.output.fade_in()
        self.playing = True

    def pause(self) -> None:
        if self.is_device:
            self.output.fade_out(wait=False)
        self.pipeline.running.clear()
        self.playing = False
        for listener in self.listeners:
            listener.on_pause()

    def panic(self) -> None:
        """Silence now: fade out, drop buffered audio, reset the window, pause."""
        self.pause()
        if self.is_device:
            self.output.fade_out(wait=True)
            self.output.clear()
        self.generator.submit([ControlEvent("/reset")])

    def load_prompt(self, slot: int, path: str, done: Callable[[int, str], None],
                    failed: Callable[[str], None]) -> None:
        """Embed ``path`` into ``slot`` in the loader thread; then ``done(slot, path)`` or
        ``failed(message)``. The path must lie inside one of the prompt folders."""
        try:
            file = self.check_prompt_path(path)
            if not 0 <= slot < self.generator.controls.num_slots:
                raise ControlError(f"slot must be in 0..{self.generator.controls.num_slots - 1}")
        except UserError as e:
            failed(str(e))
            return

        def work():
            try:
                vec = self.prompts.read(file)
                self.submit([ControlEvent("/prompt/slot", (slot, vec))])
                self.slot_sources[slot] = str(file)
            except UserError as e:
                failed(str(e))
                return
            except Exception as e:  # an encoder bug must not kill the loader thread
                failed(f"{path}: could not be embedded ({type(e).__name__}: {e})")
                return
            done(slot, path)

        self._loader.submit(work)

    def check_prompt_path(self, path: str) -> Path:
        file = Path(path).expanduser()
        resolved = file.resolve()
        dirs = [d.resolve() for d in self.config.prompt_dirs]
        if not any(resolved.is_relative_to(d) for d in dirs):
            raise UserError(f"{path}: outside the prompt folders "
                            f"({', '.join(map(str, dirs)) or 'none'}); see --prompt-dir")
        if not resolved.is_file():
            raise UserError(f"{path}: no such file")
        return resolved

    def _on_apply_error(self, frame: int, event: ControlEvent, message: str) -> None:
        for listener in self.error_listeners:
            listener(message)

    # -- status ----------------------------------------------------------------------------
    def info(self) -> dict:
        """What runs where (``/engine/info``, the console, session.json): compute device,
        weight format, model family, window, mode."""
        gen = self.generator
        weights = "fp32" if self.config.quantize == "none" else self.config.quantize
        return {"compute": str(gen.compute), "weights": weights, "family": MODEL_FAMILY,
                "window": gen.window, "mode": gen.mode}

    def status(self) -> dict:
        stats = self.pipeline.stats
        p50, p99 = stats.percentile(50), stats.percentile(99)
        mean = float(np.mean(stats.recent)) if stats.recent else 0.0
        c = self.generator.controls
        recording = self.recorder is not None and self.recorder.recording
        return {
            "rtf": (1000.0 / FRAME_RATE) / mean if mean > 0 else 0.0,
            "step_ms_p50": p50, "step_ms_p99": p99,
            "buffer_ms": 1000.0 * getattr(self.output, "buffered_s", 0.0),
            "underruns": int(self.output.underruns),
            "mix": [float(w) for w in c.weights],
            "morph": float(c.weights[1]) if len(c.weights) > 1 else 0.0,
            "temperature": float(c.temperature), "topk": int(c.top_k), "topp": float(c.top_p),
            "recording": int(recording), "playing": int(self.playing),
            "frame": self.generator.t, "device": "device" if self.is_device else "null",
        }

