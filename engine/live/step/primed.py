"""The primed window's KV cache, computed before the frame that primes it.

A live ``/prime`` puts up to a window of recorded rows into the generator at once. Prefilling
``[prompt, T rows]`` inside the step after the prime is one long step (a whole window's
prefill: hundreds of ms for the gpt2 size on a CPU) and the output runs dry. Instead the
prime's loader thread (niced below the generator) computes the cache while the engine plays
on, and the frame boundary only installs it.

What is computed is fixed by the control, not by timing: ``/prime/rows (rows, prompt)``
carries the prompt ``[P]`` the cache was computed with (the mix when the prime was asked
for), and it is logged, so a replay computes the same cache synchronously with
:meth:`PrimedPrefill.cache`. The cache holds the prompt at position 0 and rows ``0..T−2`` at
``1..T−1``; the first step after the prime feeds row ``T−1`` as every step feeds its newest
row (and, as always in fast mode, re-computes the prompt position if the mix moved since).

Threading: :meth:`PrimedPrefill.prepare` on the loader thread (the model's forward runs
there on a cache of its own, as the shadow re-prefill's worker does);
:meth:`PrimedPrefill.cache` on the generator thread. One lock guards the hand-over.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import torch

from engine.live.step.kv_step import KVCache, LeanGPT, RowGroup


def _key(rows: np.ndarray, prompt: np.ndarray) -> str:
    """Which prime a prepared cache belongs to."""
    h = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(prompt, dtype=np.float32).tobytes())
    return h.hexdigest()


class PrimedPrefill:
    """Computes, hands over and (for a replay) recomputes primed window caches.

    Args:
        lean: the fast step's model (:class:`~engine.live.step.kv_step.LeanGPT` or the int4
            step, same interface).
        window: the generator's window ``W`` (caches hold ``W + 1`` positions).
    """

    def __init__(self, lean: LeanGPT, window: int):
        self.lean, self.window = lean, window
        self._lock = threading.Lock()
        self._ready: tuple[str, KVCache] | None = None
        self.prepared = 0  # caches installed ready-made (for benchmarks and tests)
        self.computed = 0  # caches computed in the step (replay, or a prime not prepared)

    def compute(self, rows: np.ndarray, prompt: np.ndarray) -> KVCache:
        """``[prompt, rows[:-1]]`` into a new cache (``rows`` ``[T, Q]`` int64, ``prompt``
        ``[P]`` float32)."""
        lean = self.lean
        cache = lean.new_cache(self.window + 1)
        x = lean.embed_prompt(torch.from_numpy(np.asarray(prompt, dtype=np.float32)))
        if rows.shape[0] > 1:
            x = torch.cat([x, lean.embed_tokens(torch.from_numpy(
                np.asarray(rows[:-1], dtype=np.int64)))])
        with torch.inference_mode():
            lean.forward([RowGroup(cache, 0, x)], [x.shape[0] - 1])
        return cache

    def prepare(self, rows: np.ndarray, prompt: np.ndarray) -> None:
        """Compute the cache now (the calling thread) for the ``/prime/rows`` control that
        will carry ``(rows, prompt)``; it replaces one prepared before and not used."""
        cache = self.compute(rows, prompt)
        with self._lock:
            self._ready = (_key(rows, prompt), cache)

    def cache(self, rows: np.ndarray, prompt: np.ndarray) -> KVCache:
        """The cache for ``(rows, prompt)``: the prepared one if it is theirs, else computed
        now (a replay; or a prime submitted without :meth:`prepare`)."""
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None and ready[0] == _key(rows, prompt):
            self.prepared += 1
            return ready[1]
        self.computed += 1
        return self.compute(rows, prompt)
