"""The rolling generator: endless generation inside a window of W < 300 frames, live controls.

Row ``t`` (delayed layout, ``[Q]`` int64, +1 / 0 = empty) is generated at step ``t`` from the
prompt and at most the ``W`` previous rows of the current sequence (a ``/reset`` starts a new
sequence). Once a window no longer starts at the sequence start, its first rows get the empty
start triangle re-created (:func:`engine.model.tokens.patterns.start_triangle_mask`), as in
the original demo. Two modes:

``exact``
    The whole ``[prompt, last W rows]`` is recomputed every step through the reference model
    — the same tokens as :func:`engine.model.reference.generate_window` and so as the original.
    On a GPU (``compute`` not the CPU) the step is :class:`engine.live.step.static_window.
    StaticWindowStep`: the same window as one padded fixed-shape forward, sampled on the device
    (:mod:`engine.model.device_sampling`) and replayed from a CUDA graph; the tokens follow the
    same distribution, not the CPU sampler's random stream.

``fast``
    KV cache (:class:`engine.live.step.kv_step.LeanGPT`, or
    :class:`engine.live.step.ort_step.OrtKVStep` for ``int4``). The cache holds ``[prompt, rows
    b..t-2]`` and a step feeds row ``t-1``. When the context would exceed ``W``, the window
    start ``b`` jumps by the hop ``H`` (default ``W // 4``) and the cache is replaced by a
    **shadow** cache that already holds ``[prompt, rows b+H..]`` with the triangle re-created at
    ``b+H``. The shadow is filled in background jobs at fixed steps
    (:mod:`engine.live.step.reprefill`), so the re-prefill costs no single step its whole time
    and the result does not depend on thread timing. With ``H = 1`` every step switches to a
    freshly prefilled window: the same computation as ``exact`` (done directly: the window is
    prefilled with the step's own prompt, so H = 1 equals ``exact`` while the prompt moves too).

    Approximate, and only in ``fast`` mode: a prompt change recomputes the prompt position's
    keys/values before the next step (exact for that position), but rows already in the
    cache keep the keys/values computed while they attended to the older prompt; shadow rows
    attend to the prompt of the step the shadow was started at. With a constant prompt, step
    ``t`` computes exactly ``[prompt, rows b(t)..t-1]`` with ``b(t)`` the window start of the
    hop schedule (0, H, 2H, … after the sequence start), up to float rounding.

Controls (:mod:`engine.live.controls`) are queued from any thread with :meth:`submit` and applied
at the next frame boundary, all events of one call at the same frame
(:mod:`engine.live.control_queue`); each applied event is appended to
:attr:`RollingGenerator.control_log` with its frame index, so a run can be replayed by
scheduling the log's events at the same frames. :meth:`RollingGenerator.get_state` /
:meth:`~RollingGenerator.set_state` follow :mod:`engine.live.state`.

Threading: :meth:`~RollingGenerator.submit` and :meth:`~RollingGenerator.at_boundary` may be
called from any thread; everything else runs on the generator thread.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.live.control_queue import ControlledGenerator, ControlQueue
from engine.live.controls import AppliedControl, ControlError, ControlState
from engine.live.state import StateReader
from engine.live.step.kv_step import KVCache, KVStepInputs, RowGroup
from engine.live.step.primed import PrimedPrefill
from engine.live.step.reprefill import ShadowPrefill
from engine.live.step.static_window import StaticWindowStep
from engine.live.step.weight_formats import build_kv_step
from engine.model.encodecgpt import EnCodecGPT
from engine.model.sampling import sample_frame
from engine.model.tokens.patterns import StreamingUndelay, start_triangle_mask

MAX_WINDOW = 299  # < 300 frames = 4 s at 75 Hz
DEFAULT_WINDOW = 200  # 2.67 s, the original demo's buffer
MODES = ("exact", "fast")
_STATIC_DTYPES = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# What EnCodecGPT cannot do, and why (ControlInbox refuses the controls, the OSC dispatcher
# the commands; the OSC address table's families column is made from both).
REFUSED = {"/guidance": "EnCodecGPT has no classifier-free guidance (a MusicGen control)",
           "/prompt/slot/text": "EnCodecGPT's slots hold EnCodecMAE vectors, not texts"}
UNSUPPORTED = {"/prompt/text": "EnCodecGPT's slots hold EnCodecMAE vectors of audio files "
                               "(/prompt/load i FILE), not texts (MusicGen's)"}


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


class RollingGenerator(ControlledGenerator):
    """Generate delayed token rows forever; see the module docstring.

    Controls it refuses: :data:`REFUSED`; engine commands it lacks: :data:`UNSUPPORTED`.

    Args:
        model: the reference EnCodecGPT (eval mode).
        controls: initial control state (slot 0 must hold a prompt before the first step).
        window: W frames, 1..299 (default 200).
        mode: ``"exact"`` or ``"fast"``.
        hop: H for ``fast`` (default ``W // 4``).
        quantize: ``fast`` weights: ``"none"`` (fp32), ``"int8"``, ``"bf16"``, ``"int4"`` or
            ``"auto"`` (see :mod:`engine.live.step.weight_formats`).
        greedy: take the most likely token; otherwise sample with the temperature, top-k and
            top-p of ``controls``.
        seed: RNG seed of the sampler.
        lean: an existing KV step (:class:`~engine.live.step.kv_step.LeanGPT` or
            :class:`~engine.live.step.ort_step.OrtKVStep`) to share (fast mode); built if omitted.
        background: run re-prefill jobs in a worker thread (False: inline, for debugging).
        worker_threads: torch threads of that worker.
        compute: the device the model runs on. Not the CPU: ``exact`` mode only, through
            :class:`StaticWindowStep` with ``quantize`` ``none`` (fp32), ``bf16`` or ``fp16``.
        runner: the static step's runner (``graph``, ``compile``, ``eager``); default
            ``graph`` on CUDA, ``eager`` elsewhere. Given on the CPU, exact mode runs the
            static step there too (tests; the CPU default is the reference model).

    Attributes:
        startup_s: seconds spent building and capturing the step (0 for the CPU paths).
    """

    refused = REFUSED
    unsupported = UNSUPPORTED

    def __init__(self, model: EnCodecGPT, controls: ControlState, *, window: int = DEFAULT_WINDOW,
                 mode: str = "fast", hop: int | None = None, quantize: str = "none",
                 greedy: bool = False, seed: int = 0, lean: KVStepInputs | None = None,
                 background: bool = True, worker_threads: int = 1,
                 compute: torch.device | str = "cpu", runner: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.compute = torch.device(compute)
        if self.compute.type == "cuda" and self.compute.index is None:  # say which GPU
            self.compute = torch.device("cuda", torch.cuda.current_device())
        self.model, self.mode = model, mode
        self.num_q = model.num_q
        self.window = window
        self.hop = check_window(window, hop, model.max_positions)
        self.greedy = greedy
        self.controls = controls
        self.rng = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.queue = ControlQueue()
        self.lean: KVStepInputs | None = None
        self.reprefill: ShadowPrefill | None = None
        self.primed: PrimedPrefill | None = None
        if mode == "fast":
            self.lean = lean or build_kv_step(model, quantize)
            self.reprefill = ShadowPrefill(self.lean, window, self.hop, background=background,
                                           worker_threads=worker_threads)
            self.primed = PrimedPrefill(self.lean, window)
        self.static = self._static_step(quantize, runner, seed)
        self.startup_s = 0.0 if self.static is None else self.static.startup_s
        self.triangle = start_triangle_mask(self.num_q, self.num_q)  # [Q, Q] first rows
        self._clear_sequence(start=0)
        self.t = 0
        self.seam = None  # np [T, Q]: rows primed at this step (pipeline: take_seam)
        self.nonfinite_steps = 0  # steps whose logits were not finite (see _nonfinite_row)
        self._faulted = False
        self.on_fault: Callable[[str], None] | None = None  # generator thread

    def _static_step(self, quantize: str, runner: str | None,
                     seed: int) -> StaticWindowStep | None:
        on_cpu = self.compute.type == "cpu"
        if on_cpu and runner is None:
            return None
        if self.mode != "exact":
            raise ValueError(f"fast mode runs on the CPU only; on {self.compute} use exact "
                             "mode (the default there)")
        if quantize not in _STATIC_DTYPES:
            raise ValueError(f"exact mode on {self.compute} runs fp32, bf16 or fp16 weights, "
                             f"not {quantize!r}")
        runner = runner or ("graph" if self.compute.type == "cuda" else "eager")
        return StaticWindowStep(self.model, window=self.window, device=self.compute,
                                dtype=_STATIC_DTYPES[quantize], seed=seed, runner=runner)

    # -- public API ----------------------------------------------------------------------
    def step(self) -> torch.Tensor:
        """Generate the next row; returns ``[Q]`` int64 delayed tokens."""
        self._apply_pending()
        if self.static is not None:
            return self._finish_step(self._static_row())
        prompt = torch.from_numpy(self.controls.prompt())  # [P] float32
        if self.mode == "exact":
            logits = self._exact_logits(prompt)
        else:
            logits = self._fast_logits(prompt)
        self.last_logits = logits  # [Q, 1025] of this step (read by tests and meters)
        if not bool(torch.isfinite(logits).all()):
            return self._finish_step(self._nonfinite_row())
        self._faulted = False
        c = self.controls
        row = sample_frame(logits[None], temperature=c.temperature, top_k=c.top_k,
                           top_p=c.top_p, greedy=self.greedy, generator=self.rng)[0]
        return self._finish_step(row)

    def _nonfinite_row(self) -> torch.Tensor:
        """The step's logits hold NaN or Inf (a broken prompt, weights or cache): repeat the
        last row instead of sampling from them, and rebuild the caches from the window's
        tokens, so a poisoned KV cache does not keep the stream broken. Reported once per run
        of such steps (``on_fault``); counted in :attr:`nonfinite_steps`."""
        self.nonfinite_steps += 1
        if not self._faulted and self.on_fault is not None:
            self.on_fault(f"frame {self.t}: the model's logits are not finite (NaN or Inf); "
                          "repeating the last row and rebuilding the window's cache")
        self._faulted = True
        last = self._history[-1] if self._history else torch.zeros(self.num_q,
                                                                    dtype=torch.long)
        if self._history:  # the tokens are fine: only the cached activations are suspect
            rows = torch.stack(self._history[-self.window:])
            self._clear_sequence(start=self.t - rows.shape[0])
            self._history = list(rows)
        return last.clone()

    def frame_assembler(self) -> StreamingUndelay:
        """Rows in, complete frames out: the streaming inverse of the delay pattern (the
        pipeline's decoder thread asks each model family for its own)."""
        return StreamingUndelay(self.num_q)

    def _static_row(self) -> torch.Tensor:
        """The static step: the window, its advance and the draw live on the device; only
        the controls go in and the ``[Q]`` row comes out."""
        c, static = self.controls, self.static
        static.set_prompt(c.prompt())
        static.set_sampling(c.temperature, c.top_k, c.top_p, self.greedy)
        row = static.step()
        self.last_logits = static.logits  # on the device; copied only if someone reads it
        return row

    def _finish_step(self, row: torch.Tensor) -> torch.Tensor:
        self._history.append(row)
        if len(self._history) > 2 * self.window + 1:
            del self._history[: len(self._history) - (2 * self.window + 1)]
        self.t += 1
        self.controls.advance()
        return row

    def prime(self, rows: torch.Tensor, prompt: np.ndarray | None = None) -> None:
        """Start a new sequence whose first rows are ``rows``, as if they had been generated
        (:mod:`engine.model.tokens.priming`); the next step continues them. Generator thread only
        (or before it runs); the frame counter ``t`` does not move.

        Args:
            rows: ``[T, Q]`` int64 delayed tokens, ``1 <= T <= W``.
            prompt: ``[P]`` float32, fast mode: the window's cache is
                ``[prompt, rows[:-1]]`` (:mod:`engine.live.step.primed`: prepared on the
                loader thread by :meth:`prepare_prime`, else computed now). None: the next
                step prefills the rows itself, with its own prompt (sessions before
                prepared primes; exact mode).
        """
        if rows.ndim != 2 or rows.shape[1] != self.num_q or not 1 <= rows.shape[0] <= self.window:
            raise ValueError(f"primed rows must be [T, {self.num_q}] with 1 <= T <= "
                             f"{self.window} (the window), got {list(rows.shape)}")
        n = rows.shape[0]
        self._clear_sequence(start=self.t - n)  # the sequence began n rows ago
        self._history = list(rows.to(torch.long).clone())
        if self.static is not None:
            self.static.load(rows.to(torch.long), n)
        elif prompt is not None and self.primed is not None:
            self.cache = self.primed.cache(rows.numpy(), prompt)
            self.cache_prompt = torch.from_numpy(np.asarray(prompt, dtype=np.float32))

    def prepare_prime(self, rows: np.ndarray) -> tuple:
        """The values of the ``/prime/rows`` control for ``rows`` ``[T, Q]`` int64, its window
        cache computed now on the calling thread (the prime loader, below the generator) in
        fast mode: ``(rows, prompt)`` with the mix's prompt ``[P]`` as it is now; elsewhere
        ``(rows,)``, and the step after the prime prefills them."""
        if self.primed is None or self.static is not None:
            return (rows,)
        try:
            prompt = self.controls.prompt()  # a copy of the controls taken by one read
        except ControlError:
            return (rows,)
        self.primed.prepare(rows, prompt)
        return (rows, prompt)

    def take_seam(self):
        """The rows a ``/prime/rows`` control primed the last step with (``[T, Q]`` int64
        numpy), once; None otherwise. Generator thread."""
        seam, self.seam = self.seam, None
        return seam

    def close(self) -> None:
        """Stop the background re-prefill worker (waits for a running job)."""
        if self.reprefill is not None:
            self.reprefill.close()

    # -- controls (see engine.live.control_queue) ------------------------------------------
    def _on_applied(self, entry: AppliedControl) -> None:
        if entry.address == "/seed":
            self.rng.manual_seed(entry.values[0])
            if self.static is not None:
                self.static.reseed(entry.values[0])
        elif entry.address == "/reset":
            self._clear_sequence(start=self.t)
        elif entry.address == "/prime/rows":
            self.prime(torch.from_numpy(entry.values[0]),
                       entry.values[1] if len(entry.values) > 1 else None)
            self.seam = entry.values[0]  # the decoder crossfades into the new sequence

    # -- sequence bookkeeping ------------------------------------------------------------
    def _clear_sequence(self, start: int) -> None:
        if self.reprefill is not None:
            self.reprefill.drop()
        self.seq_start = start  # first row of the current sequence
        self._history: list[torch.Tensor] = []  # rows of the sequence (the last 2W+1)
        self.win_start = start  # fast: b, the row at cache position 1
        self.cache: KVCache | None = None
        self.cache_prompt: torch.Tensor | None = None  # [P], the prompt the cache holds
        if self.static is not None:
            self.static.load(torch.zeros(0, self.num_q, dtype=torch.long), 0)

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
    def _exact_logits(self, prompt: torch.Tensor) -> torch.Tensor:
        n = self.t - self.seq_start  # rows so far in this sequence
        ctx_len = min(n, self.window)
        start = self.t - ctx_len
        if ctx_len:
            ctx = self._window_rows(start, self.t, start if n > self.window else self.seq_start)
        else:
            ctx = torch.zeros(0, self.num_q, dtype=torch.long)
        with torch.inference_mode():
            logits, _ = self.model(prompt[None], ctx[None], last_only=True)
        return logits[0, -1]

    # -- fast ----------------------------------------------------------------------------
    def _fast_logits(self, prompt: torch.Tensor) -> torch.Tensor:
        lean = self.lean
        if self.hop == 1 and self.t - self.seq_start > self.window:
            return self._refill_window(prompt)
        first = self.t - 1  # the first row this step feeds: its own, or a switch's lag
        if self.cache is not None and self.t - self.win_start > self.window:
            sh = self.reprefill.take()  # switch to the next window
            self.reprefill.recycle(self.cache)  # the next shadow fills the old one
            self.cache, self.win_start, self.cache_prompt = sh.cache, sh.start, sh.prompt
            first = min(first, sh.next_row)  # rows after the shadow's last job
        groups = []
        fresh = self.cache is None
        if fresh:  # a new sequence: empty, or primed with rows seq_start..t-1
            self.cache = lean.new_cache(self.window + 1)
            self.win_start = self.seq_start
            self.cache_prompt = None
        if self.cache_prompt is None or not torch.equal(prompt, self.cache_prompt):
            groups.append(RowGroup(self.cache, 0, lean.embed_prompt(prompt)))
            self.cache_prompt = prompt
        if fresh and self.t > self.win_start:  # primed rows, all at once from position 1
            rows = self._window_rows(self.win_start, self.t, self.win_start)
            groups.append(RowGroup(self.cache, 1, lean.embed_tokens(rows)))
        elif self.t > self.win_start:  # feed rows first..t-1 at positions first-b+1..t-b
            rows = self._window_rows(first, self.t, self.win_start)
            groups.append(RowGroup(self.cache, first - self.win_start + 1,
                                   lean.embed_tokens(rows)))
        if self.hop > 1:  # before the forward: the shadow's job runs beside this step's
            self.reprefill.plan(self.t, self.win_start, self.cache_prompt, self._window_rows)
        return lean.forward(groups, [sum(g.x.shape[0] for g in groups) - 1])[0]

    def _refill_window(self, prompt: torch.Tensor) -> torch.Tensor:
        """H = 1: every step is a switch, so prefill ``[prompt, last W rows]`` now, with this
        step's prompt (the exact computation, through the lean model)."""
        lean = self.lean
        self.win_start = self.t - self.window
        if self.cache is None:
            self.cache = lean.new_cache(self.window + 1)
        rows = self._window_rows(self.win_start, self.t, self.win_start)
        x = torch.cat([lean.embed_prompt(prompt), lean.embed_tokens(rows)])
        self.cache_prompt = prompt
        return lean.forward([RowGroup(self.cache, 0, x)], [self.window])[0]

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything the next steps depend on (see :mod:`engine.live.state`); queued
        events are not state. :meth:`set_state` on a generator built with the same
        arguments continues identically.

        Returns:
            ``mode``, ``window``, ``hop`` (checked on restore); ``t``, ``seq_start``,
            ``win_start``; ``history`` ``[n, Q]`` int64 (the rows kept, the last is row
            ``t − 1``); ``rng`` (the sampler's generator state) and ``compute`` (the device
            that generator and the model ran on, e.g. ``"cpu"``, ``"cuda:0"``);
            ``controls``; ``cache`` (KV cache state or None), ``cache_prompt`` ``[P]`` or
            None; ``shadow`` (:meth:`ShadowPrefill.get_state`, None in ``exact`` mode).
        """
        history = (torch.stack(self._history) if self._history
                   else torch.zeros(0, self.num_q, dtype=torch.long))
        return {
            "mode": self.mode, "window": self.window, "hop": self.hop,
            "t": self.t, "seq_start": self.seq_start, "win_start": self.win_start,
            "history": history, "compute": str(self.compute),
            "rng": (self.rng if self.static is None else self.static.generator).get_state(),
            "controls": self.controls.get_state(),
            "cache": None if self.cache is None else self.cache.get_state(),
            "cache_prompt": None if self.cache_prompt is None else self.cache_prompt.clone(),
            "shadow": None if self.reprefill is None else self.reprefill.get_state(),
        }

    def set_state(self, state: dict, *, other_device: bool = False) -> None:
        """Continue from :meth:`get_state`.

        Args:
            state: a generator state.
            other_device: accept a state made on another device type (a GPU session
                replayed on the CPU, or the reverse). Rows, window and controls carry over;
                the sampler's random stream cannot (each device has its own generator and
                sampler), so it goes on from this generator's seed: the tokens are not
                bit-identical to the recording's.

        Raises:
            ValueError: a missing or unused key (here or in a nested state), a state of a
                generator with another mode, window or hop, or (without ``other_device``)
                one made on another device type.
        """
        with StateReader(state, "generator") as s:
            config = (s.pop("mode"), s.pop("window"), s.pop("hop"))
            t, seq_start, win_start = s.pop("t"), s.pop("seq_start"), s.pop("win_start")
            history, rng, controls = s.pop("history"), s.pop("rng"), s.pop("controls")
            cache, prompt, shadow = s.pop("cache"), s.pop("cache_prompt"), s.pop("shadow")
            made_on = torch.device(s.pop("compute"))
        same_device = made_on.type == self.compute.type
        if not (same_device or other_device):
            raise ValueError(f"state was made on {made_on}, this generator runs on "
                             f"{self.compute}: its random stream cannot continue here")
        if config != (self.mode, self.window, self.hop):
            raise ValueError(f"state was saved by a generator with mode/window/hop {config}, "
                             f"this one has {(self.mode, self.window, self.hop)}")
        if (cache is not None or shadow is not None) and self.mode != "fast":
            raise ValueError("an exact-mode generator state holds no KV cache")
        new_controls = ControlState(num_slots=self.controls.num_slots)
        new_controls.set_state(controls)
        new_cache = None
        if cache is not None:
            new_cache = self.lean.new_cache(self.window + 1)
            new_cache.set_state(cache)
        if self.reprefill is not None:  # the last check that can refuse the state
            self.reprefill.set_state(shadow)
        self.t, self.seq_start, self.win_start = t, seq_start, win_start
        self._history = list(history.clone())
        if same_device:
            (self.rng if self.static is None else self.static.generator).set_state(rng)
        self.controls, self.cache = new_controls, new_cache
        self.cache_prompt = None if prompt is None else prompt.clone()
        if self.static is not None:  # the device window: the sequence's last rows
            n = t - seq_start
            self.static.load(history[len(history) - min(n, self.window):], n)
