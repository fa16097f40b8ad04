"""The rolling generator: endless generation inside a window of W < 300 frames, live controls.

Row ``t`` (delayed layout, ``[Q]`` int64, +1 / 0 = empty) is generated at step ``t`` from the
prompt and at most the ``W`` previous rows of the current sequence (a ``/reset`` starts a new
sequence). Once a window no longer starts at the sequence start, its first rows get the empty
start triangle re-created (:func:`engine.model.patterns.start_triangle_mask`), as in the original
demo. Two modes:

``exact``
    The whole ``[prompt, last W rows]`` is recomputed every step through the reference model
    — the same tokens as :func:`engine.model.reference.generate_window` and so as the original.

``fast``
    KV cache (:class:`engine.live.kv_step.LeanGPT`, or :class:`engine.live.ort_step.OrtKVStep`
    for ``int4``). The cache holds ``[prompt, rows b..t-2]`` and a step feeds row ``t-1``. When
    the context would exceed ``W``, the window start ``b`` jumps by the hop ``H`` (default
    ``W // 4``) and the cache is replaced by a **shadow** cache that already holds
    ``[prompt, rows b+H..]`` with the triangle re-created at ``b+H``. The shadow is filled by a
    background worker in jobs submitted at fixed steps (every :data:`PREFILL_EVERY` steps and
    at the step before the switch), so the re-prefill costs no single step its whole time and
    the result does not depend on thread timing. With ``H = 1`` every step switches to a
    freshly prefilled window: the same computation as ``exact`` (done directly: the window is
    prefilled with the step's own prompt, so H = 1 equals ``exact`` while the prompt moves
    too).

    Approximate, and only in ``fast`` mode: a prompt change recomputes the prompt position's
    keys/values before the next step (exact for that position), but rows already in the
    cache keep the keys/values computed while they attended to the older prompt; shadow rows
    attend to the prompt of the step the shadow was started at. With a constant prompt, step
    ``t`` computes exactly ``[prompt, rows b(t)..t-1]`` with ``b(t)`` the window start of the
    hop schedule (0, H, 2H, … after the sequence start), up to float rounding.

Controls (:mod:`engine.live.controls`) are queued from any thread with :meth:`submit` and applied
at the next frame boundary, all events of one call at the same frame; each applied event is
appended to :attr:`RollingGenerator.control_log` with its frame index, so a run can be
replayed by submitting the log's events at the same frames.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from engine.live.controls import AppliedControl, ControlError, ControlEvent, ControlState
from engine.live.kv_step import KVCache, KVStepInputs, RowGroup
from engine.live.weight_formats import build_kv_step
from engine.model.config import SamplingConfig
from engine.model.encodecgpt import EnCodecGPT
from engine.model.patterns import start_triangle_mask
from engine.model.sampling import sample_frame

MAX_WINDOW = 299  # < 300 frames = 4 s at 75 Hz
DEFAULT_WINDOW = 200  # 2.67 s, the original demo's buffer
PREFILL_EVERY = 8  # steps between background re-prefill jobs
MODES = ("exact", "fast")


def check_window(window: int, hop: int | None, max_positions: int) -> int:
    """Validate ``window`` (1..299, and fits GPT2's positions) and return the hop."""
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be 1..{MAX_WINDOW} frames (< 4 s at 75 Hz), got {window}")
    if window + 1 > max_positions:
        raise ValueError(f"window {window} needs {window + 1} positions; the model has "
                         f"{max_positions}")
    hop = max(1, window // 4) if hop is None else hop
    if not 1 <= hop <= window:
        raise ValueError(f"hop must be in 1..{window} (the window), got {hop}")
    return hop


@dataclass
class _Shadow:
    """The next window's cache while it is being filled."""

    start: int  # window start row b'
    cache: KVCache
    next_row: int  # first row not yet submitted
    prompt: np.ndarray  # the prompt its rows attended to
    jobs: list  # Futures of submitted jobs
    last_submit: int = -1  # step of the last job


class RollingGenerator:
    """Generate delayed token rows forever; see the module docstring.

    Args:
        model: the reference EnCodecGPT (eval mode).
        controls: initial control state (slot 0 must hold a prompt before the first step).
        window: W frames, 1..299 (default 200).
        mode: ``"exact"`` or ``"fast"``.
        hop: H for ``fast`` (default ``W // 4``).
        quantize: ``fast`` weights: ``"none"`` (fp32), ``"int8"``, ``"bf16"``, ``"int4"`` or
            ``"auto"`` (see :mod:`engine.live.weight_formats`).
        sampling: greedy flag; the temperature/top-k/top-p come from ``controls``.
        seed: RNG seed of the sampler.
        lean: an existing KV step (:class:`~engine.live.kv_step.LeanGPT` or
            :class:`~engine.live.ort_step.OrtKVStep`) to share (fast mode); built if omitted.
        background: run re-prefill jobs in a worker thread (False: inline, for debugging).
        worker_threads: torch threads of that worker.
    """

    def __init__(self, model: EnCodecGPT, controls: ControlState, *, window: int = DEFAULT_WINDOW,
                 mode: str = "fast", hop: int | None = None, quantize: str = "none",
                 sampling: SamplingConfig | None = None, seed: int = 0,
                 lean: KVStepInputs | None = None, background: bool = True,
                 worker_threads: int = 1):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.mode = model, mode
        self.num_q = model.num_q
        self.window = window
        self.hop = check_window(window, hop, model.max_positions)
        self.greedy = bool(sampling and sampling.greedy)
        self.controls = controls
        self.rng = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.lean = None
        if mode == "fast":
            self.lean = lean or build_kv_step(model, quantize)
        self.triangle = start_triangle_mask(self.num_q, self.num_q)  # [Q, Q] first rows
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._scheduled: dict[int, list[list[ControlEvent]]] = {}
        self._boundary: queue.SimpleQueue = queue.SimpleQueue()
        self.control_log: list[AppliedControl] = []
        self.errors: list[tuple[int, str]] = []  # (frame, message) of refused events
        self.on_control: Callable[[AppliedControl], None] | None = None
        self.on_error: Callable[[int, ControlEvent, str], None] | None = None
        self._executor = None
        if mode == "fast" and background:
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix="prefill",
                initializer=lambda: torch.set_num_threads(worker_threads))
        self._clear_sequence(start=0)
        self.t = 0

    # -- public API ----------------------------------------------------------------------
    def submit(self, events: Sequence[ControlEvent]) -> None:
        """Queue events (from any thread); they are applied together at the next frame."""
        self._pending.put((list(events), time.time()))

    def schedule(self, frame: int, events: Sequence[ControlEvent]) -> None:
        """Apply ``events`` together at the start of ``frame`` (before queued live events);
        used to replay a frame log or render automation. Not thread-safe: call before the
        generator runs or from its thread."""
        self._scheduled.setdefault(frame, []).append(list(events))

    def step(self) -> torch.Tensor:
        """Generate the next row; returns ``[Q]`` int64 delayed tokens."""
        self._apply_pending()
        prompt = self.controls.prompt()
        if self.mode == "exact":
            logits = self._exact_logits(prompt)
        else:
            logits = self._fast_logits(prompt)
        self.last_logits = logits  # [Q, 1025] of this step (read by tests and meters)
        c = self.controls
        row = sample_frame(logits[None], temperature=c.temperature, top_k=c.top_k,
                           top_p=c.top_p, greedy=self.greedy, generator=self.rng)[0]
        self._history.append(row)
        if len(self._history) > 2 * self.window + 1:
            del self._history[: len(self._history) - (2 * self.window + 1)]
        self.t += 1
        self.controls.advance()
        return row

    def close(self) -> None:
        """Stop the background worker (waits for a running job)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- controls ------------------------------------------------------------------------
    def at_boundary(self, fn: Callable[[RollingGenerator], None]) -> None:
        """Run ``fn(generator)`` on the generator thread at the next frame boundary, before
        that frame's controls (e.g. to snapshot the state a recording starts from)."""
        self._boundary.put(fn)

    def _apply_pending(self) -> None:
        while not self._boundary.empty():
            self._boundary.get()(self)
        for events in self._scheduled.pop(self.t, ()):
            self.apply_now(events)
        while True:
            try:
                events, wall = self._pending.get_nowait()
            except queue.Empty:
                return
            self.apply_now(events, wall)

    def apply_now(self, events: Sequence[ControlEvent], wall: float | None = None) -> bool:
        """Apply a bundle at the current frame boundary, all or nothing (generator thread
        only; :meth:`submit` is the thread-safe form). Returns False if it was refused."""
        wall = time.time() if wall is None else wall
        trial = ControlState.from_snapshot(self.controls.snapshot())
        applied = []
        try:
            for ev in events:
                applied.append((ev, trial.apply(ev)))
        except ControlError as e:
            self.errors.append((self.t, str(e)))
            if self.on_error is not None:
                self.on_error(self.t, ev, str(e))
            return False
        self.controls = trial
        for ev, values in applied:
            if ev.address == "/seed":
                self.rng.manual_seed(values[0])
            elif ev.address == "/reset":
                self._clear_sequence(start=self.t)
            entry = AppliedControl(self.t, ev.address, values, wall)
            self.control_log.append(entry)
            if self.on_control is not None:
                self.on_control(entry)
        return True

    # -- sequence bookkeeping ------------------------------------------------------------
    def _clear_sequence(self, start: int) -> None:
        self._wait_shadow()
        self.seq_start = start  # first row of the current sequence
        self._history: list[torch.Tensor] = []  # rows of the sequence (the last 2W+1)
        self.win_start = start  # fast: b, the row at cache position 1
        self.cache: KVCache | None = None
        self.cache_prompt: np.ndarray | None = None
        self.shadow: _Shadow | None = None

    def _row(self, i: int) -> torch.Tensor:
        """Row ``i`` (absolute index) of the current sequence."""
        return self._history[i - self.t + len(self._history)]

    def _window_rows(self, start: int, stop: int, win_start: int) -> torch.Tensor:
        """Rows ``start..stop-1`` as seen by a window starting at ``win_start``: ``[n, Q]``
        with the start triangle re-created unless the window is the sequence start."""
        rows = torch.stack([self._row(i) for i in range(start, stop)])
        if win_start > self.seq_start:
            for j, i in enumerate(range(start, min(stop, win_start + self.num_q))):
                rows[j].masked_fill_(self.triangle[i - win_start], 0)
        return rows

    @property
    def weight_format(self) -> str:
        """The weights the step runs: the fast step's format (``auto`` resolved), or
        ``"none"`` (fp32) for ``exact`` mode's reference model."""
        return self.lean.quantize if self.lean is not None else "none"

    # -- exact ---------------------------------------------------------------------------
    def _exact_logits(self, prompt: np.ndarray) -> torch.Tensor:
        n = self.t - self.seq_start  # rows so far in this sequence
        ctx_len = min(n, self.window)
        start = self.t - ctx_len
        if ctx_len:
            ctx = self._window_rows(start, self.t, start if n > self.window else self.seq_start)
        else:
            ctx = torch.zeros(0, self.num_q, dtype=torch.long)
        with torch.inference_mode():
            logits, _ = self.model(torch.from_numpy(prompt)[None], ctx[None], last_only=True)
        return logits[0, -1]

    # -- fast ----------------------------------------------------------------------------
    def _fast_logits(self, prompt: np.ndarray) -> torch.Tensor:
        lean = self.lean
        if self.hop == 1 and self.t - self.seq_start > self.window:
            return self._refill_window(prompt)
        if self.cache is not None and self.t - self.win_start > self.window:
            self._switch_to_shadow()
        groups = []
        if self.cache is None:
            self.cache = lean.new_cache(self.window + 1)
            self.win_start = self.t
            self.cache_prompt = None
        if self.cache_prompt is None or not np.array_equal(prompt, self.cache_prompt):
            groups.append(RowGroup(self.cache, 0, lean.embed_prompt(torch.from_numpy(prompt))))
            self.cache_prompt = prompt
        if self.t > self.win_start:  # feed row t-1 at position t - b
            row = self._window_rows(self.t - 1, self.t, self.win_start)
            groups.append(RowGroup(self.cache, self.t - self.win_start, lean.embed_tokens(row)))
        logits = lean.forward(groups, [sum(g.x.shape[0] for g in groups) - 1])[0]
        if self.hop > 1:
            self._plan_shadow()
        return logits

    def _refill_window(self, prompt: np.ndarray) -> torch.Tensor:
        """H = 1: every step is a switch, so prefill ``[prompt, last W rows]`` now, with this
        step's prompt (the exact computation, through the lean model)."""
        lean = self.lean
        self.win_start = self.t - self.window
        if self.cache is None:
            self.cache = lean.new_cache(self.window + 1)
        rows = self._window_rows(self.win_start, self.t, self.win_start)
        x = torch.cat([lean.embed_prompt(torch.from_numpy(prompt)), lean.embed_tokens(rows)])
        self.cache_prompt = prompt
        return lean.forward([RowGroup(self.cache, 0, x)], [self.window])[0]

    def _switch_to_shadow(self) -> None:
        sh = self.shadow
        assert sh is not None, "the shadow starts at the latest one step before the switch"
        self._wait_shadow(keep=True)
        self.cache, self.win_start, self.cache_prompt = sh.cache, sh.start, sh.prompt
        self.shadow = None

    def _plan_shadow(self) -> None:
        """In step t, after its forward (rows ``< t`` are known): start the next window's
        cache once its first row is near, and feed it every :data:`PREFILL_EVERY` steps and
        at the step before the switch, which needs rows up to ``switch − 2``."""
        nxt = self.win_start + self.hop
        if self.shadow is None and nxt <= self.t:
            self._start_shadow(nxt)
        sh = self.shadow
        if sh is None:
            return
        switch_step = self.win_start + self.window + 1
        if self.t + 1 >= switch_step or self.t - sh.last_submit >= PREFILL_EVERY:
            self._submit_shadow_rows()

    def _start_shadow(self, start: int) -> None:
        cache = self.lean.new_cache(self.window + 1)
        self.shadow = _Shadow(start, cache, next_row=start, prompt=self.cache_prompt, jobs=[])
        x = self.lean.embed_prompt(torch.from_numpy(self.cache_prompt))
        self._run_job(self.shadow, [RowGroup(cache, 0, x)])

    def _submit_shadow_rows(self) -> None:
        """Queue a job with the known rows (``< t``) the shadow has not been given yet."""
        sh = self.shadow
        stop = self.t
        sh.last_submit = self.t
        if stop <= sh.next_row:
            return
        rows = self._window_rows(sh.next_row, stop, sh.start)
        group = RowGroup(sh.cache, sh.next_row - sh.start + 1, self.lean.embed_tokens(rows))
        sh.next_row = stop
        self._run_job(sh, [group])

    def _run_job(self, sh: _Shadow, groups: list[RowGroup]) -> None:
        if self._executor is None:
            self.lean.forward(groups, [])
            return
        sh.jobs.append(self._executor.submit(self.lean.forward, groups, []))

    def _wait_shadow(self, keep: bool = False) -> None:
        sh = getattr(self, "shadow", None)
        if sh is None:
            return
        for job in sh.jobs:
            job.result()
        sh.jobs.clear()
        if not keep:
            self.shadow = None

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything the next steps depend on: rows, caches, RNG, controls, queued events
        excluded. :meth:`set_state` on a generator built with the same arguments
        continues identically."""
        self._wait_shadow(keep=True)
        sh = self.shadow
        return {
            "t": self.t, "seq_start": self.seq_start, "win_start": self.win_start,
            "history": [r.clone() for r in self._history],
            "rng": self.rng.get_state(),
            "controls": self.controls.snapshot(),
            "cache": None if self.cache is None else self.cache.clone(),
            "cache_prompt": None if self.cache_prompt is None else self.cache_prompt.copy(),
            "shadow": None if sh is None else {
                "start": sh.start, "cache": sh.cache.clone(), "next_row": sh.next_row,
                "prompt": sh.prompt.copy(), "last_submit": sh.last_submit},
            "mode": self.mode, "window": self.window, "hop": self.hop,
        }

    def set_state(self, state: dict) -> None:
        if (state["mode"], state["window"], state["hop"]) != (self.mode, self.window, self.hop):
            raise ValueError("state was saved by a generator with another mode/window/hop")
        self._wait_shadow()
        self.t, self.seq_start = state["t"], state["seq_start"]
        self.win_start = state["win_start"]
        self._history = [r.clone() for r in state["history"]]
        self.rng.set_state(state["rng"])
        self.controls = ControlState.from_snapshot(state["controls"])
        self.cache = None if state["cache"] is None else state["cache"].clone()
        cp = state["cache_prompt"]
        self.cache_prompt = None if cp is None else cp.copy()
        s = state["shadow"]
        self.shadow = None if s is None else _Shadow(
            s["start"], s["cache"].clone(), s["next_row"], s["prompt"].copy(), [],
            s["last_submit"])

