"""Disk writers that run on their own thread, so the generator, decoder and audio callback
never wait on a disk.

* :class:`AudioFileWriter`: blocks of samples → a WAV/FLAC file written incrementally;
* :class:`JsonLinesWriter`: dicts → one JSON object per line, flushed line by line.

``put`` copies and enqueues (never blocks); a write failure (disk full, folder gone) is
kept in :attr:`error`, reported once through ``on_error``, and later items are dropped —
what was written before stays valid.

Threading: ``put`` from any one producer thread (the generator thread for the control log,
the decoder thread for the tap); each writer's own thread (``jsonl-writer``,
``audio-writer``) is the only one that touches its file; ``close`` from the thread that
stops the engine, which waits for the queue to drain.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

_CLOSE = object()


class _BackgroundWriter:
    def __init__(self, name: str, on_error: Callable[[str], None] | None = None):
        self.on_error = on_error
        self.error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        if self.error is None:
            self._queue.put(item)

    def close(self) -> None:
        self._queue.put(_CLOSE)
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                break
            if self.error is not None:
                continue
            try:
                self._write(item)
            except Exception as e:  # OSError, LibsndfileError: disk full, unwritable
                self.error = f"{self._target()}: write failed ({e})"
                if self.on_error is not None:
                    self.on_error(self.error)
        try:
            self._finish()
        except Exception as e:
            if self.error is None:
                self.error = f"{self._target()}: close failed ({e})"

    def _write(self, item) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _target(self) -> str:
        raise NotImplementedError


class AudioFileWriter(_BackgroundWriter):
    """Mono float blocks → ``path`` (``subtype``: FLOAT, PCM_24, ...)."""

    def __init__(self, path: str | Path, rate: int, subtype: str = "FLOAT",
                 on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.file = sf.SoundFile(self.path, "w", rate, 1, subtype=subtype)
        super().__init__("audio-writer", on_error)

    def put(self, block: np.ndarray) -> None:
        super().put(np.array(block, dtype=np.float32).reshape(-1))

    def _write(self, block: np.ndarray) -> None:
        self.file.write(block)

    def _finish(self) -> None:
        self.file.close()

    def _target(self) -> str:
        return str(self.path)


class JsonLinesWriter(_BackgroundWriter):
    """Dicts → ``path``, one JSON line each, flushed per line."""

    def __init__(self, path: str | Path, on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by _finish)
        super().__init__("jsonl-writer", on_error)

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record, default=_jsonable) + "\n")
        self.file.flush()

    def _finish(self) -> None:
        self.file.close()

    def _target(self) -> str:
        return str(self.path)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)
