"""``/prompt/load``: embed an audio or ``.npy`` file into a prompt slot, off the OSC thread;
``/prime`` and ``/prime/file``: encode a recording into primed rows on the same thread.

A path is accepted only inside one of the prompt folders (``--prompt-dir``), so an OSC
sender cannot make the engine read arbitrary files. The file is embedded by a single loader
thread (EnCodecMAE on audio takes long; the encoder is built on the first load) and then
submitted as a ``/prompt/slot`` control, validated like any other bundle, so it takes
effect at a frame boundary. The loader thread runs at a lower CPU priority than generation
(nice +10 on Linux) and the reader embeds at most a stated length of a file
(``LiveConfig.prompt_seconds``), so a long song dropped on a slot cannot starve playback. A
second load to a slot supersedes one still waiting or running for it: the older one is
answered ``failed(... superseded ...)`` and never reaches the slot.

Threading: :meth:`PromptLoader.load` and :meth:`~PromptLoader.check_path` may be called
from any thread (the OSC thread); reading, embedding, ``submit`` and the ``done`` /
``failed`` callbacks run on the ``prompt-load`` thread. :attr:`PromptLoader.sources` is
written there and read by the generator thread (a recording's session.json).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.errors import UserError
from engine.live.controls import ControlError, ControlEvent
from engine.model.prompt_files import PromptReader


class PromptLoader:
    """Load prompt files into slots, one at a time, in a worker thread.

    Args:
        reader: turns a file into an embedding ``[P]`` (``.npy`` or audio).
        prompt_dirs: the folders a path must lie in.
        num_slots: slots are ``0 .. num_slots - 1``.
        submit: queues a control bundle (validates it as a whole; raises
            :class:`ControlError` if refused).
        sources: where each initial slot's vector came from (file, ``random``...).
        store: ``store(slot, value)`` puts what ``reader`` read into a slot (default: a
            ``/prompt/slot`` bundle through ``submit``; the rotary family keeps audio
            prefixes in the engine instead).
    """

    def __init__(self, reader: PromptReader, prompt_dirs: Sequence[Path], num_slots: int,
                 submit: Callable[[list[ControlEvent]], None], sources: Sequence = (),
                 store: Callable[[int, object], None] | None = None):
        self.reader, self.num_slots, self.submit = reader, num_slots, submit
        self.store = store or (lambda slot, vec: submit([ControlEvent("/prompt/slot",
                                                                      (slot, vec))]))
        self.prompt_dirs = [Path(d) for d in prompt_dirs]
        self.sources: dict[int, str] = {i: str(src) for i, src in enumerate(sources)}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="prompt-load",
                                          initializer=lower_thread_priority)
        self._latest: dict[int, int] = {}  # slot -> number of the newest load asked for it
        self._count = 0
        self._lock = threading.Lock()

    def check_path(self, path: str) -> Path:
        """The resolved file if ``path`` lies inside a prompt folder and exists.

        Raises:
            UserError: outside the prompt folders (naming them), or no such file.
        """
        resolved = Path(path).expanduser().resolve()
        dirs = [d.resolve() for d in self.prompt_dirs]
        if not any(resolved.is_relative_to(d) for d in dirs):
            raise UserError(f"{path}: outside the prompt folders "
                            f"({', '.join(map(str, dirs)) or 'none'}); see --prompt-dir")
        if not resolved.is_file():
            raise UserError(f"{path}: no such file")
        return resolved

    def load(self, slot: int, path: str, done: Callable[[int, str], None],
             failed: Callable[[str], None]) -> None:
        """Embed ``path`` into ``slot`` in the loader thread; then ``done(slot, path)`` or
        ``failed(message)`` (at once, on this thread, for a refused path or slot)."""
        try:
            file = self.check_path(path)
            if not 0 <= slot < self.num_slots:
                raise ControlError(f"slot must be in 0..{self.num_slots - 1}")
        except UserError as e:
            failed(str(e))
            return
        with self._lock:
            self._count += 1
            self._latest[slot] = ticket = self._count
        self._worker.submit(self._load, slot, path, file, done, failed, ticket)

    def _superseded(self, slot: int, ticket: int) -> bool:
        with self._lock:
            return self._latest.get(slot) != ticket

    def _load(self, slot: int, path: str, file: Path, done: Callable[[int, str], None],
              failed: Callable[[str], None], ticket: int) -> None:
        superseded = f"{path}: superseded by a later /prompt/load to slot {slot}"
        try:
            if self._superseded(slot, ticket):
                raise UserError(superseded)
            vec = self.reader.read(file)
            with self._lock:  # the check and the queueing as one step
                if self._latest.get(slot) != ticket:
                    raise UserError(superseded)
                self.store(slot, vec)
            self.sources[slot] = str(file)
        except UserError as e:
            failed(str(e))
            return
        except Exception as e:  # an encoder bug must not kill the loader thread
            failed(f"{path}: could not be embedded ({type(e).__name__}: {e})")
            return
        done(slot, path)

    def prime(self, path: str, make_values: Callable[[Path], tuple],
              done: Callable[[str, int], None], failed: Callable[[str], None],
              check: bool = True) -> None:
        """Encode ``path`` into the values of a ``/prime/rows`` control (primed rows first)
        with ``make_values`` in the loader thread and submit it; then ``done(path, rows)`` or
        ``failed(message)``. ``check``: the path must lie inside a prompt folder (a path
        from OSC); a slot's own source file is the engine's and is not checked."""
        try:
            file = self.check_path(path) if check else Path(path)
        except UserError as e:
            failed(str(e))
            return
        self._worker.submit(self._prime, path, file, make_values, done, failed)

    def _prime(self, path: str, file: Path, make_values: Callable[[Path], tuple],
               done: Callable[[str, int], None], failed: Callable[[str], None]) -> None:
        try:
            values = make_values(file)
            rows = values[0]
            self.submit([ControlEvent("/prime/rows", values)])
        except UserError as e:
            failed(str(e))
            return
        except Exception as e:  # a codec bug must not kill the loader thread
            failed(f"{path}: could not be encoded ({type(e).__name__}: {e})")
            return
        done(path, int(rows.shape[0]))

    def close(self) -> None:
        """Drop loads not started yet; one running finishes in the background."""
        self._worker.shutdown(wait=False, cancel_futures=True)


def lower_thread_priority() -> None:
    """Nice the loader thread (Linux: a thread's own priority) so embedding yields to
    generation; where that is not possible it runs at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


#: Allocations of at least this size get their own mapping, returned to the OS when freed.
LARGE_ALLOCATION_BYTES = 4 << 20


def return_large_allocations() -> bool:
    """Make large freed blocks go back to the OS (glibc only; True where it applied).

    Embedding 30 s of audio allocates hundreds of MB for a moment (EnCodecMAE's attention
    maps). glibc's default mmap threshold rises after such blocks are freed, so the next
    loads come from the heap, and a small block that outlives a load pins the pages above
    it: in an hour's soak the engine's RSS stepped up by ~30 MB within 10 minutes of loads.
    A fixed threshold (and trim threshold) of :data:`LARGE_ALLOCATION_BYTES` keeps RSS flat
    (measured, RSS after each of 12 loads of the 10-minute file's first 30 s: 627 -> 662 MB
    with the defaults, 571 -> 572 MB with this). The live hot path allocates nothing that large.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, LARGE_ALLOCATION_BYTES)
                and mallopt(m_trim_threshold, LARGE_ALLOCATION_BYTES))
