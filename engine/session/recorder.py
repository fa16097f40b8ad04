"""Recording a live session: the sound as played, every control, every token, and the state
needed to re-render it bit for bit.

A session folder ``<sessions>/<UTC time>-<name>/`` holds

* ``audio.wav`` — the audio as sent to the output, at its rate, float32, from the first sample
  of the first recorded frame (header kept valid while it grows);
* ``tokens.npy`` — ``[N, Q]`` int16 delayed rows, one per frame from ``first_frame``;
* ``controls.jsonl`` — every applied control: frame, sample (24 kHz), wall time, address,
  values (an embedding as ``{"embedding": P, "sha256": …}``; the vector is in ``slots/``);
* ``session.json`` — ``format`` and ``format_version`` (:mod:`engine.session.format`, which
  reads every version), checkpoint/codec identity, engine config, seed, window/hop/mode, the
  first frame, prompt slots (sources, hashes, ``slots/*.npy``);
* ``state.pt`` — the generator state at the first frame; ``decoder_state.pt`` — the streaming
  decoder's state just before that frame (both :mod:`engine.live.state` states, readable
  with ``torch.load(..., weights_only=True)``).

Only the recorder's own thread touches the disk. Start and stop happen at frame boundaries
(the generator thread takes its state there and hands it over). A write error (disk
full, folder gone) stops the recording and is reported; what is on disk stays valid.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from engine import HOP_LENGTH, SAMPLE_RATE
from engine.errors import UserError
from engine.live.engine import EngineListener, LiveEngine
from engine.session.files import GrowingNpy, GrowingWav
from engine.session.format import FORMAT, FORMAT_VERSION

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clean_session_name(name: str | None) -> str:
    """A safe folder-name part; path separators and '..' are refused, not rewritten."""
    if not name:
        return "session"
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise UserError(f"session name {name!r} refused: it must not contain '/', '\\' or '..'")
    return _UNSAFE.sub("_", name).strip("._")[:64] or "session"


def embedding_digest(vec: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vec, dtype=np.float32).tobytes()).hexdigest()[:16]


def control_record(entry, digest: Callable[[np.ndarray], str] = embedding_digest) -> dict:
    """A frame-log entry as JSON data (an embedding is logged by size and digest)."""
    values = []
    for v in entry.values:
        if isinstance(v, np.ndarray):
            values.append({"embedding": int(v.shape[0]), "sha256": digest(v)})
        elif isinstance(v, (np.integer, np.floating)):
            values.append(v.item())
        else:
            values.append(v)
    return {"frame": entry.frame, "sample": entry.frame * HOP_LENGTH,
            "wall_time": entry.wall_time, "address": entry.address, "values": values}


class Recorder(EngineListener):
    """Records one session at a time for a :class:`~engine.live.engine.LiveEngine`.

    Args:
        engine: the live engine (generator, pipeline, output rate, identity for session.json).
        sessions_dir: where session folders are created.
        notify: ``notify(kind, text)`` with kind ``started``, ``stopped`` or ``error``.
    """

    def __init__(self, engine, sessions_dir: Path, notify: Callable[[str, str], None]):
        self.engine, self.sessions_dir, self.notify = engine, Path(sessions_dir), notify
        self.path: Path | None = None
        self.active = False  # rows/controls/audio are being recorded
        self.first_frame: int | None = None
        self._audio_from: int | None = None  # 24 kHz output sample of first_frame
        self._audio_until: int | None = None  # ... of the frame after the last one
        self._audio_on = False
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        return self._thread is not None

    # -- control (any thread) ---------------------------------------------------------------
    def start(self, name: str | None = None) -> Path:
        """Plan a session folder and start at the next frame boundary; returns the folder.

        Raises:
            UserError: already recording, or a refused name.
        """
        with self._lock:
            if self._thread is not None:
                raise UserError(f"already recording to {self.path}")
            clean = clean_session_name(name)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = self.sessions_dir / f"{stamp}-{clean}"
            n = 2
            while path.exists():
                path = self.sessions_dir / f"{stamp}-{clean}-{n}"
                n += 1
            self.path = path
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._run, args=(path, self._queue),
                                            name="recorder", daemon=True)
            self._thread.start()
        self.engine.generator.at_boundary(self._begin)
        return path

    def stop(self) -> Path | None:
        """Stop at the next frame boundary and finish the files (returns the folder)."""
        with self._lock:
            if self._thread is None:
                raise UserError("not recording")
            path, q = self.path, self._queue
            q.stopping = True  # set before the check below, so a pause in between sees it
        self.engine.generator.at_boundary(lambda gen: self._end(gen, q))
        if not self.engine.playing:  # a paused engine reaches no frame boundary
            self.on_pause()
        return path

    def close(self, timeout: float = 10.0) -> None:
        """Stop now if recording (engine shutdown) and wait for the files."""
        with self._lock:
            thread, q = self._thread, self._queue
        if thread is None:
            return
        self.active = False
        self._finish_once(q)
        thread.join(timeout)

    # -- generator thread ----------------------------------------------------------------
    def _begin(self, gen) -> None:
        q = self._queue
        if q is None:
            return
        self.first_frame = gen.t
        q.put(("begin", {"first_frame": gen.t, "state": gen.get_state(),
                         "info": session_info(self.engine)}))
        self.engine.pipeline.at_frame(gen.t, self._decoder_mark)
        self.active = True

    def _end(self, gen, q) -> None:
        """Rows stop at this boundary; the audio goes on until that frame has been decoded
        (the generator keeps running), or 3 s at most (paused engine)."""
        if q is not self._queue or self._audio_until is not None:
            return
        self.active = False
        self._audio_until = gen.t * HOP_LENGTH
        timer = threading.Timer(3.0, self._finish_once, args=(q,))
        timer.daemon = True
        timer.start()

    def on_pause(self) -> None:
        """Paused while a stop is pending: no frame boundary and no more audio will come,
        so end where the rows and audio stopped."""
        with self._lock:
            q = self._queue
        if q is not None and getattr(q, "stopping", False):
            self.active = False
            self._finish_once(q)

    def _finish_once(self, q) -> None:
        with self._lock:
            if getattr(q, "ended", False):
                return
            q.ended = True
            self._audio_on = False
        q.put(("end",))

    # -- listeners (generator / decoder threads) -----------------------------------------
    def on_row(self, frame: int, row: torch.Tensor) -> None:
        q = self._queue
        if self.active and q is not None and frame >= (self.first_frame or 0):
            q.put(("row", row.numpy().astype(np.int16)))

    def on_control(self, entry) -> None:
        q = self._queue
        if self.active and q is not None:
            vecs = [v for v in entry.values if isinstance(v, np.ndarray)]
            q.put(("control", control_record(entry), vecs))

    def _decoder_mark(self, decoder_state: dict, sample_index: int) -> None:
        self._audio_from = sample_index
        if self._queue is not None:
            self._queue.put(("decoder", decoder_state))
            self._audio_on = True

    def on_audio(self, block: np.ndarray, start24: int, rate: int) -> None:
        """A block as sent to the output (at ``rate``) whose first input sample was the 24 kHz
        output sample ``start24``; audio before the first recorded frame is cut off."""
        q = self._queue
        if not self._audio_on or q is None or self._audio_from is None:
            return
        ratio = rate / SAMPLE_RATE
        stop = len(block)
        until = self._audio_until
        if until is not None:
            stop = min(stop, int(round((until - start24) * ratio)))
        skip = max(0, int(round((self._audio_from - start24) * ratio)))
        if skip < stop:
            q.put(("audio", np.array(block[skip:stop], dtype=np.float32), rate))
        if until is not None and start24 + len(block) / ratio >= until:
            self._finish_once(q)

    # -- recorder thread -------------------------------------------------------------------
    def _run(self, path: Path, q: queue.Queue) -> None:
        files: dict = {}
        failed = False
        info: dict = {}
        while True:
            kind, *payload = q.get()
            if kind == "end":
                if not failed and files:
                    try:
                        self._finish(path, info, files)
                    except OSError as e:
                        self._fail(path, e)
                break
            if failed:
                continue
            try:
                if kind == "begin":
                    info = self._open(path, payload[0], files)
                else:
                    self._write(path, kind, payload, files)
            except OSError as e:
                failed = True
                self._audio_on = False
                self._fail(path, e)
                break
        for f in files.values():
            try:
                f.close()
            except OSError:
                pass
        with self._lock:
            if self._queue is q:
                self._thread, self._queue, self.active = None, None, False
                self._audio_from = self._audio_until = None
                self._audio_on = False
        if not failed:
            self.notify("stopped", str(path))

    def _open(self, path: Path, begin: dict, files: dict) -> dict:
        path.mkdir(parents=True, exist_ok=False)
        (path / "slots").mkdir()
        torch.save(begin["state"], path / "state.pt")
        info = dict(begin["info"], format=FORMAT, format_version=FORMAT_VERSION,
                    first_frame=begin["first_frame"],
                    audio_start_sample_24k=begin["first_frame"] * HOP_LENGTH,
                    created_utc=datetime.now(timezone.utc).isoformat(), end_frame=None)
        for slot in info["prompt_slots"]:
            vec = slot.pop("embedding")
            np.save(path / "slots" / f"{slot['sha256']}.npy", vec)
            slot["file"] = f"slots/{slot['sha256']}.npy"
        _write_json(path / "session.json", info)
        files["controls"] = open(path / "controls.jsonl", "x", encoding="utf-8")  # noqa: SIM115
        files["tokens"] = GrowingNpy(path / "tokens.npy", info["engine"]["num_q"])
        self.notify("started", str(path))
        return info

    def _write(self, path: Path, kind: str, payload: list, files: dict) -> None:
        if kind == "row":
            files["tokens"].write(payload[0][None])
        elif kind == "control":
            record, vecs = payload
            for v in vecs:
                target = path / "slots" / f"{embedding_digest(v)}.npy"
                if not target.exists():
                    np.save(target, v)
            files["controls"].write(json.dumps(record) + "\n")
            files["controls"].flush()
        elif kind == "audio":
            block, rate = payload
            if "audio" not in files:
                files["audio"] = GrowingWav(path / "audio.wav", rate)
            files["audio"].write(block)
        elif kind == "decoder":
            torch.save(payload[0], path / "decoder_state.pt")

    def _finish(self, path: Path, info: dict, files: dict) -> None:
        rows = files["tokens"].rows if "tokens" in files else 0
        info["end_frame"] = info["first_frame"] + rows
        info["audio_samples"] = files["audio"].samples if "audio" in files else 0
        _write_json(path / "session.json", info)

    def _fail(self, path: Path, error: OSError) -> None:
        self.active = False
        self.notify("error", f"recording to {path} stopped: {error.strerror or error}; the "
                    "files written so far are kept (run_engine.py recover DIR fixes them up)")


def session_info(engine: LiveEngine) -> dict:
    """What session.json needs (called on the generator thread at a frame boundary)."""
    gen, cfg = engine.generator, engine.config
    slots = []
    for i, vec in enumerate(gen.controls.slots):
        if vec is not None:
            slots.append({"slot": i, "source": engine.slot_sources.get(i),
                          "sha256": embedding_digest(vec), "embedding": vec.copy()})
    return {"model": dict(cfg.identity), "sample_rate": engine.output_rate,
            "engine": {"window": gen.window, "hop": gen.hop, "mode": gen.mode,
                       "quantize": cfg.quantize, "compute": str(gen.compute),
                       "seed": cfg.seed, "greedy": gen.greedy,
                       "num_q": gen.num_q, "num_slots": gen.controls.num_slots,
                       "device": "device" if engine.is_device else "null"},
            "prompt_slots": slots}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)

