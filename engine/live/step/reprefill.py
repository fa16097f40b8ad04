"""The shadow re-prefill of the rolling generator's ``fast`` mode.

The live cache holds ``[prompt, rows b..]``. Before the context would exceed the window
``W``, the next window's cache — the **shadow**, ``[prompt, rows b+H..]`` with the start
triangle re-created at ``b+H`` — must be ready, so the step can switch to it without a long
prefill. :class:`ShadowPrefill` fills it in jobs submitted at fixed steps, each before its
step's forward so that it runs beside it: the step the shadow starts (its prompt position
and the rows it lacks, one forward), every :data:`PREFILL_EVERY` steps, and in the
:data:`PREFILL_EVERY` steps before the last job every :data:`FINAL_ROWS` steps; the last
job is :data:`LAST_JOB` steps before the switch. The switch's step feeds the rows after that job
itself (:attr:`Shadow.next_row` onwards, ``LAST_JOB`` rows with its own) instead of waiting
for a job that ran while the decoder, at a higher priority, held the other core: gpt2
int4-128, paced 60 s, switch steps waited p50 1.8 / p90 10 / max 17 ms for the job submitted
the step before. The next shadow fills the cache the switch left
(:meth:`ShadowPrefill.recycle`). Jobs run in a background worker (or inline); since *what*
each job computes is fixed by the step it was submitted at, the tokens never depend on
thread timing.

Threading: every method is called from the generator thread; the worker thread only runs
:meth:`engine.live.step.kv_step.LeanGPT.forward` on the shadow's own cache, and the generator waits
for those jobs before it reads the shadow (switch, state, reset).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from engine.live.prompt_loading import lower_thread_priority
from engine.live.state import StateReader
from engine.live.step.kv_step import KVCache, LeanGPT, RowGroup

PREFILL_EVERY = 8  # steps between background re-prefill jobs
FINAL_ROWS = 2  # rows a job carries in the last PREFILL_EVERY steps before a switch
LAST_JOB = 3  # steps between the last job and the switch, whose step feeds the rows after it

#: ``rows(start, stop, win_start) -> [n, Q]``: rows ``start..stop-1`` as seen by a window
#: starting at ``win_start`` (start triangle re-created).
WindowRows = Callable[[int, int, int], torch.Tensor]


@dataclass
class Shadow:
    """The next window's cache while it is being filled.

    Attributes:
        start: its window start row ``b'`` (the row at cache position 1).
        cache: its KV cache.
        next_row: the first row not yet submitted.
        prompt: ``[P]`` float32, the prompt its rows attend to.
        last_submit: the step of the last job.
    """

    start: int
    cache: KVCache
    next_row: int
    prompt: torch.Tensor
    last_submit: int = -1
    jobs: list[Future] = field(default_factory=list)


class ShadowPrefill:
    """Plans, submits and hands over the shadow cache of one ``fast`` generator.

    Args:
        lean: the live step model.
        window: W frames; caches hold ``W + 1`` positions.
        hop: H, the window-start jump.
        background: run jobs in a worker thread (False: inline, for debugging).
        worker_threads: torch threads of that worker.
    """

    def __init__(self, lean: LeanGPT, window: int, hop: int, *, background: bool = True,
                 worker_threads: int = 1):
        self.lean, self.window, self.hop = lean, window, hop
        self.shadow: Shadow | None = None
        self._spare: KVCache | None = None  # a cache to fill next (see recycle)
        self._executor = None
        if background:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="prefill",
                                                initializer=_worker_setup,
                                                initargs=(worker_threads,))

    def plan(self, t: int, win_start: int, prompt: torch.Tensor, rows: WindowRows) -> None:
        """In step ``t``, before its forward (rows ``< t`` are known): start the next window's
        cache once its first row has been generated, give it its prompt and the rows it lacks
        in one job, then every :data:`PREFILL_EVERY` steps, and every :data:`FINAL_ROWS` steps
        in the :data:`PREFILL_EVERY` steps before the last job, :data:`LAST_JOB` steps before
        the switch.

        Args:
            t: the step.
            win_start: the live cache's window start ``b``.
            prompt: ``[P]``, the prompt of the live cache (a new shadow attends to it).
            rows: the generator's rows (see :data:`WindowRows`).
        """
        nxt = win_start + self.hop
        # not in the step of the switch to win_start (at win_start + W + 1 - H): that step
        # feeds LAST_JOB rows, and a long job starting beside it slows it (gpt2 int4-128,
        # paced: that 4-row forward p50 9.5 ms alone on its core, 11.1 with the job starting)
        if self.shadow is None and nxt <= t and t > win_start + self.window + 1 - self.hop:
            self._start(nxt, prompt)
        sh = self.shadow
        if sh is None:
            return
        to_switch = win_start + self.window + 1 - t  # steps until the switch, >= 1
        # Jobs of PREFILL_EVERY rows, aligned so that near the switch they carry FINAL_ROWS
        # rows: each job starts before its step's forward and runs beside it; the last one
        # LAST_JOB steps before the switch, so that it has that many steps to finish (the
        # switch's step feeds the rows after it).
        period = FINAL_ROWS if to_switch < LAST_JOB + PREFILL_EVERY else PREFILL_EVERY
        first = sh.last_submit < 0
        if first or (to_switch >= LAST_JOB and (to_switch - LAST_JOB) % period == 0):
            self._submit_rows(t, rows, with_prompt=first)

    def take(self) -> Shadow:
        """The shadow, for the switch (waits for its jobs; rows from its ``next_row`` on are
        the switch's step's to feed); the next one starts later."""
        sh = self.shadow
        assert sh is not None, "the shadow starts at the latest one step before the switch"
        self._wait()
        self.shadow = None
        return sh

    def drop(self) -> None:
        """Forget the shadow (a new sequence); waits for its running jobs first."""
        self._wait()
        self.shadow = None

    def pin(self, cpu: int) -> None:
        """Bind the worker thread to ``cpu`` (Linux; see
        :func:`engine.live.pipeline.pinned_cpus`). Inline jobs run on the caller's thread."""
        if self._executor is not None:
            self._executor.submit(os.sched_setaffinity, 0, {cpu}).result()

    def close(self) -> None:
        """Stop the worker (waits for a running job)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict | None:
        """``None`` without a shadow, else its start, cache state, next row, prompt ``[P]``
        and last submit step (after its jobs have finished)."""
        self._wait()
        sh = self.shadow
        if sh is None:
            return None
        return {"start": sh.start, "cache": sh.cache.get_state(), "next_row": sh.next_row,
                "prompt": sh.prompt.clone(), "last_submit": sh.last_submit}

    def set_state(self, state: dict | None) -> None:
        """Continue from :meth:`get_state` (``None``: no shadow)."""
        shadow = None
        if state is not None:
            with StateReader(state, "shadow") as s:
                start, cache_state, next_row = s.pop("start"), s.pop("cache"), s.pop("next_row")
                prompt, last_submit = s.pop("prompt"), s.pop("last_submit")
            cache = self.lean.new_cache(self.window + 1)
            cache.set_state(cache_state)
            shadow = Shadow(start, cache, next_row, prompt.clone(), last_submit)
        self.drop()
        self.shadow = shadow

    # -- jobs ------------------------------------------------------------------------------
    def recycle(self, cache: KVCache) -> None:
        """Give back the live cache a switch left: the next shadow reuses it (no 15 MB
        allocation in the switch's step, and the step's bindings to it stay valid)."""
        self._spare = cache

    def _start(self, start: int, prompt: torch.Tensor) -> None:
        cache, self._spare = self._spare, None
        if cache is None:
            cache = self.lean.new_cache(self.window + 1)
        cache.length = 0  # positions past the length are never read
        self.shadow = Shadow(start, cache, next_row=start, prompt=prompt)

    def _submit_rows(self, t: int, rows: WindowRows, with_prompt: bool = False) -> None:
        """Queue a job with the known rows (``< t``) the shadow has not been given yet (and
        its prompt position first: one forward, whose weights are read once for both)."""
        sh = self.shadow
        sh.last_submit = t
        groups = [RowGroup(sh.cache, 0, self.lean.embed_prompt(sh.prompt))] if with_prompt else []
        if t > sh.next_row:
            x = self.lean.embed_tokens(rows(sh.next_row, t, sh.start))
            groups.append(RowGroup(sh.cache, sh.next_row - sh.start + 1, x))
            sh.next_row = t
        if groups:
            self._run(groups)

    def _run(self, groups: list[RowGroup]) -> None:
        if self._executor is None:
            self.lean.forward(groups, [])
            return
        self.shadow.jobs.append(self._executor.submit(self.lean.forward, groups, []))

    def _wait(self) -> None:
        sh = self.shadow
        if sh is None:
            return
        for job in sh.jobs:
            job.result()
        sh.jobs.clear()


def _worker_setup(threads: int) -> None:
    """The worker's torch threads, and the loader threads' lower priority, so that the
    scheduler gives the generator and the decoder their cores first; the jobs have a whole
    hop to finish. gpt2 int4 on 2 cores, flat out, two interleaved pairs: RTF 1.32/1.29 ->
    1.35/1.36, step p99 20.2/20.7 -> 17.2/18.2 ms."""
    torch.set_num_threads(threads)
    lower_thread_priority()
