"""``/prompt/text i s``: put a text into a MusicGen slot without stopping the audio.

T5 runs in a worker thread (``prompt-text``, nice +10 like the prompt loader), filling the
:class:`~engine.model.musicgen.text.TextEncoder`'s cache; only then is the text submitted as a
``/prompt/slot/text`` control, validated like any other bundle, so it takes effect at a frame
boundary and the generator's step finds the encoding cached (the step never runs T5). A
second text for a slot supersedes one still waiting or running for it: the older one is
answered ``failed(... superseded ...)`` and never reaches the slot. A text already cached (a
slot's earlier text, a scene's) costs no T5 at all.

Threading: :meth:`TextSlots.set` from any thread (the OSC thread); encoding, ``submit`` and
the ``done`` / ``failed`` callbacks run on the ``prompt-text`` thread. :attr:`TextSlots.texts`
is written there and read anywhere (what each slot holds, for session.json and the status).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from engine.live.controls import ControlError, ControlEvent
from engine.live.prompt_loading import lower_thread_priority
from engine.model.musicgen.text import TextEncoder

MAX_TEXT_CHARS = 1000  # a slot's text (an OSC string could be ~64 KB)


class TextSlots:
    """Encode texts into slots, one at a time, in a worker thread.

    Args:
        text: the MusicGen's text encoder and its cache.
        num_slots: slots are ``0 .. num_slots - 1``.
        submit: queues a control bundle (raises :class:`ControlError` if refused).
        texts: the initial slots' texts, in slot order.
    """

    def __init__(self, text: TextEncoder, num_slots: int,
                 submit: Callable[[list[ControlEvent]], None], texts: Sequence[str] = ()):
        self.text, self.num_slots, self.submit = text, num_slots, submit
        self.texts: dict[int, str] = dict(enumerate(texts))
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="prompt-text",
                                          initializer=lower_thread_priority)
        self._latest: dict[int, int] = {}  # slot -> number of the newest text asked for it
        self._count = 0
        self._lock = threading.Lock()
        self.encoded = 0  # texts T5 actually ran for (the others were cached)

    def set(self, slot: int, text: str, done: Callable[[int, str], None],
            failed: Callable[[str], None]) -> None:
        """Encode ``text`` for ``slot`` in the worker, then queue it; ``done(slot, text)`` or
        ``failed(message)`` (at once, on this thread, for a refused slot or text)."""
        if not 0 <= slot < self.num_slots:
            failed(f"slot must be in 0..{self.num_slots - 1}, got {slot}")
            return
        text = text.strip()
        if not text or len(text) > MAX_TEXT_CHARS:
            failed(f"a text slot takes 1..{MAX_TEXT_CHARS} characters, got {len(text)}")
            return
        with self._lock:
            self._count += 1
            number = self._count
            self._latest[slot] = number
        self._worker.submit(self._encode, slot, text, number, done, failed)

    def _current(self, slot: int, number: int) -> bool:
        with self._lock:
            return self._latest.get(slot) == number

    def _encode(self, slot: int, text: str, number: int, done, failed) -> None:
        if not self._current(slot, number):
            failed(f"slot {slot}: {text!r} superseded by a newer /prompt/text")
            return
        try:
            if self.text.cached(text) is None:
                self.text.encode(text)
                self.encoded += 1
        except Exception as e:  # a tokenizer or T5 failure must not kill the worker
            failed(f"{text!r}: could not be encoded ({type(e).__name__}: {e})")
            return
        if not self._current(slot, number):  # a newer text arrived while T5 ran
            failed(f"slot {slot}: {text!r} superseded by a newer /prompt/text")
            return
        try:
            self.submit([ControlEvent("/prompt/slot/text", (slot, text))])
        except ControlError as e:
            failed(str(e))
            return
        self.texts[slot] = text
        done(slot, text)

    def close(self) -> None:
        """Drop texts not started yet; one running finishes in the background."""
        self._worker.shutdown(wait=False, cancel_futures=True)
