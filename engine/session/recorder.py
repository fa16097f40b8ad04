"""Recording a live session: the sound as played, every control, every token, and the state
needed to re-render it bit for bit.

A session folder ``<sessions>/<UTC time>-<name>/`` holds

* ``audio.wav`` — the audio as sent to the output, at its rate, float32, from the first sample
  of the first recorded frame (header kept valid while it grows);
* ``input.wav`` — with ``--input``: the live input as it came in, at its rate, mono float32,
  from the moment the first frame was recorded (the input is what a performer played; it
  is not needed to replay: every embedding of it is a logged control);
* ``tokens.npy`` — ``[N, Q]`` int16 delayed rows, one per frame from ``first_frame``;
* ``controls.jsonl`` — every applied control: frame, sample (24 kHz), wall time, address,
  values (an embedding as ``{"embedding": P, "sha256": …}``, primed tokens as
  ``{"tokens": [T, Q], "sha256": …}``; the array is in ``slots/``);
* ``session.json`` — ``format`` and ``format_version`` (:mod:`engine.session.format`, which
  reads every version), checkpoint/codec identity, engine config, seed, window/hop/mode, the
  first frame, prompt slots (sources, hashes, ``slots/*.npy``);
* ``state.pt`` — the generator state at the first frame; ``decoder_state.pt`` — the streaming
  decoder's state just before that frame (both :mod:`engine.live.state` states, readable
  with ``torch.load(..., weights_only=True)``).

A recording moves through the phases of :class:`Phase` (the moves are listed once, in
:data:`MOVES`, and made under one lock):

* ``IDLE → STARTING`` (``start``): the folder is planned, the recorder thread waits;
* ``STARTING → RECORDING`` at the next frame boundary: the generator thread hands over its
  state; rows and controls are recorded from this frame, audio from the moment the decoder
  reaches it (the decoder state is saved then);
* ``RECORDING → STOPPING`` (``stop``): rows and controls end at the next frame boundary,
  the audio once that frame's last sample has gone to the output, so the audio covers the
  tokens (or after :data:`AUDIO_WAIT_S` if the output goes quiet, e.g. a lost device);
* ``→ FINISHING`` when that audio is out, or at once on a pause while stopping or a stop
  given while paused (no frame and no audio will come), on engine shutdown, and on a write
  error; a stop before the first frame (``STARTING``) cancels: no folder is made;
* ``FINISHING → IDLE`` when the recorder thread has closed the files; then ``stopped`` is
  notified, or only ``error`` if a write failed (disk full, folder gone: what is on disk
  stays valid, ``recover`` completes it).

Threading: ``start`` / ``stop`` on the OSC (or main) thread; the frame-boundary hooks,
``on_row`` and ``on_control`` on the generator thread; the decoder mark and ``on_audio`` on
the decoder thread; ``on_pause`` on the thread that paused; ``close`` on the thread that
stops the engine. They only move the phase and queue copies; the ``recorder`` thread is the
only one that touches the disk.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import numpy as np
import torch

from engine import HOP_LENGTH
from engine.atomic_write import write_json_atomic
from engine.errors import UserError
from engine.live.engine import LiveEngine
from engine.live.listeners import EngineListener
from engine.session.files import GrowingNpy, GrowingWav
from engine.session.format import FORMAT, FORMAT_VERSION

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
AUDIO_WAIT_S = 3.0  # a stop waits this long at most for its last frame's audio
POLL_S = 0.2  # the recorder thread checks that deadline this often
INPUT_EVERY_S = 0.1  # the recorder thread copies new input samples this often (ring: 10 s)


def clean_session_name(name: str | None) -> str:
    """A safe folder-name part; path separators and '..' are refused, not rewritten."""
    if not name:
        return "session"
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise UserError(f"session name {name!r} refused: it must not contain '/', '\\' or '..'")
    return _UNSAFE.sub("_", name).strip("._")[:64] or "session"


def embedding_digest(vec: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vec, dtype=np.float32).tobytes()).hexdigest()[:16]


def control_record(entry, digest: Callable[[np.ndarray], str] = embedding_digest,
                   hop: int = HOP_LENGTH) -> dict:
    """A frame-log entry as JSON data (an embedding is logged by size and digest; ``sample``
    counts at the decoder's rate, ``hop`` samples a frame: 320 at 24 kHz, MusicGen 640)."""
    values = []
    for v in entry.values:
        if isinstance(v, np.ndarray) and v.ndim == 2:  # /prime/rows: tokens [T, Q]
            values.append({"tokens": list(v.shape), "sha256": digest(v)})
        elif isinstance(v, np.ndarray):
            values.append({"embedding": int(v.shape[0]), "sha256": digest(v)})
        elif isinstance(v, (np.integer, np.floating)):
            values.append(v.item())
        else:
            values.append(v)
    return {"frame": entry.frame, "sample": entry.frame * hop,
            "wall_time": entry.wall_time, "address": entry.address, "values": values}


class Phase(Enum):
    """Where a recording is (see the module docstring for what each phase records)."""

    IDLE = "idle"
    STARTING = "starting"
    RECORDING = "recording"
    STOPPING = "stopping"
    FINISHING = "finishing"


# Every move the recorder makes; any other is a bug (RuntimeError).
MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.STARTING}),
    Phase.STARTING: frozenset({Phase.RECORDING, Phase.FINISHING}),  # begun / cancelled
    Phase.RECORDING: frozenset({Phase.STOPPING, Phase.FINISHING}),  # stop / close, error
    Phase.STOPPING: frozenset({Phase.FINISHING}),  # audio done, pause, timeout, close, error
    Phase.FINISHING: frozenset({Phase.IDLE}),  # files closed
}
_TAKING = (Phase.RECORDING, Phase.STOPPING)  # phases in which data is written


@dataclass(eq=False)
class _Take:
    """One recording: its folder, its queue to the recorder thread, where it starts and ends.

    Rows and controls of frames ``[first_frame, end_frame)`` are kept, and the output audio
    from sample ``audio_from`` (24 kHz, set when the decoder reaches ``first_frame``) to
    ``audio_until`` (the first sample of ``end_frame``).
    """

    path: Path
    phase: Phase = Phase.IDLE
    queue: queue.Queue = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None
    first_frame: int | None = None
    end_frame: int | None = None
    audio_from: int | None = None
    audio_until: int | None = None
    deadline: float | None = None  # STOPPING: finish by then even if the audio stalls

    def takes_frame(self, frame: int) -> bool:
        return (self.phase in _TAKING and self.first_frame is not None
                and frame >= self.first_frame
                and (self.end_frame is None or frame < self.end_frame))


class Recorder(EngineListener):
    """Records one session at a time for a :class:`~engine.live.engine.LiveEngine`.

    Args:
        engine: the live engine (generator, pipeline, output rate, identity for session.json).
        sessions_dir: where session folders are created.
        notify: ``notify(kind, text)`` with kind ``started``, ``stopped`` or ``error``.
    """

    def __init__(self, engine, sessions_dir: Path, notify: Callable[[str, str], None]):
        self.engine, self.sessions_dir, self.notify = engine, Path(sessions_dir), notify
        self._take: _Take | None = None  # None = IDLE
        self._lock = threading.Lock()  # guards every phase move and self._take

    @property
    def phase(self) -> Phase:
        take = self._take
        return take.phase if take is not None else Phase.IDLE

    @property
    def recording(self) -> bool:
        """A recording is under way (from ``start`` until its files are closed)."""
        return self._take is not None

    @property
    def active(self) -> bool:
        """Rows and controls are being recorded (the first frame has passed, the last not)."""
        take = self._take
        return take is not None and take.phase in _TAKING and take.end_frame is None

    # -- phase moves -------------------------------------------------------------------------
    def _move(self, take: _Take, allowed: tuple[Phase, ...], to: Phase) -> bool:
        """Move ``take`` to ``to`` if it is in one of the ``allowed`` phases; returns whether
        it moved (False: another thread moved it first, e.g. a pause during a stop)."""
        with self._lock:
            return self._move_locked(take, allowed, to)

    def _move_locked(self, take: _Take, allowed: tuple[Phase, ...], to: Phase) -> bool:
        if take.phase not in allowed:
            return False
        if to not in MOVES[take.phase]:
            raise RuntimeError(f"recorder: no move {take.phase.name} -> {to.name}")
        take.phase = to
        if to is Phase.IDLE and self._take is take:
            self._take = None
        return True

    def _finish(self, take: _Take, allowed: tuple[Phase, ...] = (Phase.STOPPING,)) -> None:
        """End ``take`` now: nothing more is taken; the recorder thread closes the files."""
        if self._move(take, allowed, Phase.FINISHING):
            take.queue.put(("end",))

    # -- control (any thread) ---------------------------------------------------------------
    def start(self, name: str | None = None) -> Path:
        """Plan a session folder and start at the next frame boundary; returns the folder.

        Raises:
            UserError: already recording, or a refused name.
        """
        with self._lock:
            if self._take is not None:
                raise UserError(f"already recording to {self._take.path}")
            take = _Take(self._plan_folder(name))
            self._move_locked(take, (Phase.IDLE,), Phase.STARTING)
            self._take = take
            take.thread = threading.Thread(target=self._run, args=(take,), name="recorder",
                                           daemon=True)
            take.thread.start()
        self.engine.generator.at_boundary(lambda gen: self._begin(gen, take))
        return take.path

    def _plan_folder(self, name: str | None) -> Path:
        clean = clean_session_name(name)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = self.sessions_dir / f"{stamp}-{clean}"
        n = 2
        while path.exists():
            path = self.sessions_dir / f"{stamp}-{clean}-{n}"
            n += 1
        return path

    def stop(self) -> Path:
        """Stop at the next frame boundary and finish the files once that frame's audio is
        out (at once if paused); returns the folder. A stop before the first frame cancels
        the recording (no folder is made).

        Raises:
            UserError: not recording.
        """
        with self._lock:
            take = self._take
            if take is None:
                raise UserError("not recording")
            cancel = self._move_locked(take, (Phase.STARTING,), Phase.FINISHING)
            stopping = self._move_locked(take, (Phase.RECORDING,), Phase.STOPPING)
        if cancel:
            take.queue.put(("end",))
        elif stopping:
            self.engine.generator.at_boundary(lambda gen: self._end(gen, take))
            if not self.engine.playing:  # no frame boundary and no audio will come
                self._finish(take)  # (a pause from now on finishes it too: on_pause)
        return take.path

    def on_pause(self) -> None:
        """Paused while stopping: no frame boundary and no more audio will come, so end
        where the rows and audio stopped."""
        take = self._take
        if take is not None:
            self._finish(take)

    def close(self, timeout: float = 10.0) -> None:
        """Stop now if recording (engine shutdown) and wait for the files."""
        take = self._take
        if take is None:
            return
        self._finish(take, (Phase.STARTING, Phase.RECORDING, Phase.STOPPING))
        take.thread.join(timeout)

    # -- generator thread ----------------------------------------------------------------
    def _begin(self, gen, take: _Take) -> None:
        """First frame: hand the generator state to the recorder thread, mark the decoder."""
        if take.phase is not Phase.STARTING:
            return  # cancelled
        begin = {"first_frame": gen.t, "state": gen.get_state(),
                 "info": session_info(self.engine)}
        with self._lock:  # "begin" is queued before any "end"
            if not self._move_locked(take, (Phase.STARTING,), Phase.RECORDING):
                return
            take.first_frame = gen.t
            take.queue.put(("begin", begin))
        self.engine.pipeline.at_frame(gen.t, lambda state, sample:
                                      self._decoder_mark(take, state, sample))

    def _end(self, gen, take: _Take) -> None:
        """Rows stop at this boundary; the audio goes on until this frame has been decoded
        (the generator keeps running), or :data:`AUDIO_WAIT_S` at most."""
        with self._lock:
            if take.phase is not Phase.STOPPING or take.end_frame is not None:
                return
            take.end_frame = gen.t
            take.audio_until = gen.t * self.engine.pipeline.hop
            take.deadline = time.monotonic() + AUDIO_WAIT_S

    def on_row(self, frame: int, row: torch.Tensor) -> None:
        take = self._take
        if take is not None and take.takes_frame(frame):
            take.queue.put(("row", row.numpy().astype(np.int16)))

    def on_control(self, entry) -> None:
        take = self._take
        if take is not None and take.takes_frame(entry.frame):
            vecs = [v for v in entry.values if isinstance(v, np.ndarray)]
            take.queue.put(("control", control_record(entry, hop=self.engine.pipeline.hop),
                            vecs))

    # -- decoder thread ---------------------------------------------------------------------
    def _decoder_mark(self, take: _Take, decoder_state: dict, sample_index: int) -> None:
        if take.phase in _TAKING:
            take.queue.put(("decoder", decoder_state))
            take.audio_from = sample_index

    def on_audio(self, block: np.ndarray, start24: int, rate: int) -> None:
        """A block as sent to the output (at ``rate``) whose first input sample was the 24 kHz
        output sample ``start24``; audio before the first recorded frame is cut off, and
        the recording finishes with the block that holds the last one."""
        take = self._take
        if take is None or take.audio_from is None or take.phase not in _TAKING:
            return
        ratio = rate / self.engine.pipeline.rate  # device rate / the decoder's
        stop = len(block)
        until = take.audio_until
        if until is not None:
            stop = min(stop, int(round((until - start24) * ratio)))
        skip = max(0, int(round((take.audio_from - start24) * ratio)))
        if skip < stop:
            take.queue.put(("audio", np.array(block[skip:stop], dtype=np.float32), rate))
        if until is not None and start24 + len(block) / ratio >= until:
            self._finish(take)

    # -- recorder thread -------------------------------------------------------------------
    def _run(self, take: _Take) -> None:
        folder = SessionFolder(take.path)
        live_input = getattr(getattr(self.engine, "input", None), "ring", None)
        failed = False
        while True:
            try:
                kind, *payload = take.queue.get(timeout=POLL_S)
            except queue.Empty:
                kind, payload = "idle", []
            try:
                if kind == "end":
                    if folder.opened:
                        folder.take_input(live_input)
                        folder.finish()
                    break
                if kind == "begin":
                    folder.open(payload[0], live_input)
                    self.notify("started", str(take.path))
                elif kind == "idle":
                    if take.deadline is not None and time.monotonic() > take.deadline:
                        self._finish(take)  # the output went quiet (device lost): end here
                else:
                    folder.write(kind, payload)
                if folder.opened:
                    folder.take_input(live_input, every_s=INPUT_EVERY_S)
            except OSError as e:
                failed = True
                self._move(take, _TAKING, Phase.FINISHING)
                self.notify("error", f"recording to {take.path} stopped: "
                            f"{e.strerror or e}; the files written so far are kept "
                            "(run_engine.py recover DIR fixes them up)")
                break
        folder.close()
        self._move(take, (Phase.FINISHING,), Phase.IDLE)
        if not failed:
            self.notify("stopped", str(take.path))


class SessionFolder:
    """The files of one session folder (layout in the module docstring); used by the
    recorder thread only. Every method may raise OSError (disk full, folder gone)."""

    def __init__(self, path: Path):
        self.path = path
        self.info: dict = {}  # session.json
        self._files: dict = {}
        self._input_at = 0  # the next input sample (LatestAudio.written) to record
        self._input_lost = 0
        self._input_checked = 0.0

    @property
    def opened(self) -> bool:
        return bool(self._files)

    def open(self, begin: dict, live_input=None) -> None:
        """Create the folder: generator state, slots, session.json, empty logs.

        Args:
            begin: ``first_frame``, ``state`` (the generator's), ``info`` (:func:`session_info`).
            live_input: the live input's :class:`~engine.live.listen.capture.LatestAudio`
                (``input.wav`` starts with its next sample), or None.
        """
        path = self.path
        path.mkdir(parents=True, exist_ok=False)
        (path / "slots").mkdir()
        torch.save(begin["state"], path / "state.pt")
        info = dict(begin["info"], format=FORMAT, format_version=FORMAT_VERSION,
                    first_frame=begin["first_frame"],
                    audio_start_sample_24k=begin["first_frame"] * HOP_LENGTH,  # EnCodec 24k
                    created_utc=datetime.now(timezone.utc).isoformat(), end_frame=None)
        for slot in info["prompt_slots"]:
            if "text" in slot:  # a MusicGen text slot: the text is in session.json
                continue
            vec = slot.pop("embedding")
            np.save(path / "slots" / f"{slot['sha256']}.npy", vec)
            slot["file"] = f"slots/{slot['sha256']}.npy"
        write_json_atomic(path / "session.json", info)
        self.info = info
        self._files["controls"] = open(path / "controls.jsonl", "x",  # noqa: SIM115
                                       encoding="utf-8")
        self._files["tokens"] = GrowingNpy(path / "tokens.npy", info["engine"]["num_q"])
        if live_input is not None:
            self._input_at = live_input.written
            self._files["input"] = GrowingWav(path / "input.wav", live_input.rate)

    def take_input(self, live_input, every_s: float = 0.0) -> None:
        """Append the input samples that came in since the last call (at most every
        ``every_s`` seconds) to ``input.wav``."""
        now = time.monotonic()
        if live_input is None or "input" not in self._files or now - self._input_checked < every_s:
            return
        self._input_checked = now
        block, self._input_at, lost = live_input.since(self._input_at)
        self._input_lost += lost
        if len(block):
            self._files["input"].write(block)

    def write(self, kind: str, payload: list) -> None:
        """One item from the recorder's queue: ``row``, ``control``, ``audio`` or ``decoder``."""
        files = self._files
        if kind == "row":
            files["tokens"].write(payload[0][None])
        elif kind == "control":
            record, vecs = payload
            for v in vecs:
                target = self.path / "slots" / f"{embedding_digest(v)}.npy"
                if not target.exists():
                    np.save(target, v)
            files["controls"].write(json.dumps(record) + "\n")
            files["controls"].flush()
        elif kind == "audio":
            block, rate = payload
            if "audio" not in files:
                files["audio"] = GrowingWav(self.path / "audio.wav", rate)
            files["audio"].write(block)
        elif kind == "decoder":
            torch.save(payload[0], self.path / "decoder_state.pt")

    def finish(self) -> None:
        """Complete session.json: the end frame and the audio length."""
        files, info = self._files, self.info
        info["end_frame"] = info["first_frame"] + files["tokens"].rows
        info["audio_samples"] = files["audio"].samples if "audio" in files else 0
        if "input" in files:
            info["input_samples"] = files["input"].samples
            info["input_lost_samples"] = self._input_lost  # the recorder fell > 5 s behind
        write_json_atomic(self.path / "session.json", info)

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass


def session_info(engine: LiveEngine) -> dict:
    """What session.json needs (called on the generator thread at a frame boundary)."""
    gen, cfg = engine.generator, engine.config
    slots = []
    for i, vec in enumerate(gen.controls.slots):
        if isinstance(vec, str):  # MusicGen: a text slot
            slots.append({"slot": i, "source": engine.slot_sources.get(i), "text": vec})
        elif vec is not None:
            slots.append({"slot": i, "source": engine.slot_sources.get(i),
                          "sha256": embedding_digest(vec), "embedding": vec.copy()})
    return {"model": dict(cfg.identity), "sample_rate": engine.output.rate,
            "source_rate": engine.pipeline.rate,  # the decoder's (24 kHz; MusicGen 32 kHz)
            "engine": {"window": gen.window, "hop": gen.hop, "mode": gen.mode,
                       "quantize": gen.weight_format, "compute": str(gen.compute),
                       "seed": cfg.seed, "greedy": gen.greedy,
                       "num_q": gen.num_q, "num_slots": gen.controls.num_slots,
                       "limiter": cfg.limiter,
                       "device": "device" if engine.is_device else "null"},
            "prompt_slots": slots}

