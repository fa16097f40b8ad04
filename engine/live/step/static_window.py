"""The exact-mode step on static device buffers: window forward, sampling and window advance.

Exact mode recomputes ``[prompt, last W rows]`` every step (see :mod:`engine.live.generator`).
Here that step is one fixed-shape call over buffers whose addresses never change, so it can
be captured once in a CUDA graph (:mod:`engine.live.step.graph_runner`) and replayed each frame;
a control change writes new values into the buffers and never recaptures.

Buffers (on the compute device):

=========  ===============  ==============================================================
rows       ``[W, Q]`` int64  the sequence's last ``min(n, W)`` rows, oldest first, as drawn
                             (no triangle); the rows after them are stale padding
count      0-d int64         ``n``, the rows drawn so far in this sequence
prompt     ``[P]`` float32   the prompt vector of the next step
sampling   0-d each          temperature, top-k, top-p, greedy (:class:`DeviceSampling`)
noise      ``[Q, 1025]``     the exponential race's Exp(1) draws
token      ``[Q]`` int64     the row the last step drew
logits     ``[Q, 1025]``     its logits (float32)
=========  ===============  ==============================================================

One step, all on the device: the window is ``rows`` with the start triangle re-created over
its first rows once ``n > W`` (the window no longer starts at the sequence start), the logits
are those of position ``min(n, W)`` of ``[prompt, window]`` (:class:`WindowGPT`), a token row is
drawn (:func:`sample_on_device`) and appended to ``rows``, and ``count`` becomes ``n + 1``.
Worked example, ``W = 3``, rows ``a b c d e …`` (``a'`` = ``a`` with the triangle)::

    n  position  window (positions 1..3)   draws  rows after
    0  0         _  _  _                   a      a  _  _
    1  1         a  _  _                   b      a  b  _
    2  2         a  b  _                   c      a  b  c
    3  3         a  b  c                   d      b  c  d
    4  3         b' c' d'                  e      c  d  e

The only device→host transfer of a step is the new ``[Q]`` row.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from engine.live.state import StateReader
from engine.live.step.graph_runner import GraphRunner
from engine.live.step.window_gpt import WindowGPT
from engine.model.config import VOCAB_PER_CODEBOOK
from engine.model.device_sampling import DeviceSampling, draw_noise, sample_on_device
from engine.model.encodecgpt import EnCodecGPT
from engine.model.tokens.patterns import start_triangle_mask

RUNNERS = ("graph", "compile", "eager")


class _Upload:
    """Host → device writes into one static buffer without a host sync: through a pinned
    staging copy on CUDA (its event is waited on before the staging copy is reused, which
    in practice the previous step's result copy has already done)."""

    def __init__(self, dst: torch.Tensor):
        self.dst = dst
        self.cuda = dst.device.type == "cuda"
        self.host = torch.empty(dst.shape, dtype=dst.dtype, pin_memory=self.cuda)
        self.done = torch.cuda.Event() if self.cuda else None

    def write(self, src: torch.Tensor) -> None:
        if not self.cuda:
            self.dst.copy_(src)
            return
        self.done.synchronize()
        self.host.copy_(src)
        self.dst.copy_(self.host, non_blocking=True)
        self.done.record()


class StaticWindowStep:
    """Exact mode's step as one captured call; see the module docstring.

    Args:
        model: the reference model (copied to ``device`` in ``dtype``).
        window: W frames.
        device: the compute device.
        dtype: float32, bfloat16 or float16 weights and activations.
        seed: seed of the device generator the draws come from.
        runner: ``"graph"`` (CUDA graph replay, CUDA only), ``"compile"``
            (``torch.compile``; ``compile_options`` default to ``mode="reduce-overhead"``) or
            ``"eager"`` (the same callable, called; every device).
        compile_options: keyword arguments of ``torch.compile`` for ``runner="compile"``.

    Attributes:
        startup_s: warm-up and capture (or compile) time in seconds.
    """

    def __init__(self, model: EnCodecGPT, *, window: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32, seed: int = 0, runner: str = "eager",
                 compile_options: dict | None = None):
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
        self.device = torch.device(device)
        self.net = WindowGPT(model, window, self.device, dtype)
        self.window, self.num_q, self.runner_name = window, model.num_q, runner
        self._allocate(model.prompt_dim)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        # Generator work runs on its own stream (the decoder has another).
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        body = self._eager_body
        if runner == "compile":
            body = self._compiled_body(compile_options or {"mode": "reduce-overhead"})
        self._runner = GraphRunner(body, self.device, graphs=runner == "graph",
                                   generator=self.generator, snapshot=self.get_state,
                                   restore=self.set_state, stream=self.stream)
        self.startup_s = self._runner.startup_s

    def _allocate(self, prompt_dim: int) -> None:
        w, q, dev = self.window, self.num_q, self.device
        self.rows = torch.zeros(w, q, dtype=torch.long, device=dev)
        self.count = torch.zeros((), dtype=torch.long, device=dev)
        self.prompt = torch.zeros(prompt_dim, device=dev)
        self.sampling = DeviceSampling.on(dev)
        self.noise = torch.ones(q, VOCAB_PER_CODEBOOK, device=dev)
        self.token = torch.zeros(q, dtype=torch.long, device=dev)
        self.logits = torch.zeros(q, VOCAB_PER_CODEBOOK, device=dev)
        self.triangle = start_triangle_mask(w, q).to(dev)  # [W, Q]
        self._prompt_upload = _Upload(self.prompt)
        self._token_host = torch.empty(q, dtype=torch.long, pin_memory=dev.type == "cuda")
        self._token_ready = torch.cuda.Event() if dev.type == "cuda" else None
        self._prompt_host: np.ndarray | None = None
        self._settings: tuple | None = None

    # -- the step, as pure tensor code -------------------------------------------------
    def advance(self, rows: torch.Tensor, count: torch.Tensor, prompt: torch.Tensor,
                temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                greedy: torch.Tensor, noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step without side effects (what ``torch.compile`` traces).

        Returns:
            ``token [Q]`` int64, ``logits [Q, 1025]`` float32 and the next ``rows [W, Q]``.
        """
        w = self.window
        window = rows.masked_fill(self.triangle & (count > w), 0)
        logits = self.net.logits(prompt, window, count.clamp(max=w))
        token = sample_on_device(logits, DeviceSampling(temperature, top_k, top_p, greedy),
                                 noise)
        appended = torch.cat([rows, token[None]])  # [W+1, Q]; row W is the new token
        j = torch.arange(w, device=rows.device)
        # Filling (n < W): row n becomes the token. Full: shift by one, the token comes last.
        source = torch.where(j == count, w, j + (count >= w).long())
        return token, logits, appended.index_select(0, source)

    def _inputs(self) -> tuple[torch.Tensor, ...]:
        s = self.sampling
        return (self.rows, self.count, self.prompt, s.temperature, s.top_k, s.top_p,
                s.greedy, self.noise)

    def _write(self, token: torch.Tensor, logits: torch.Tensor, rows: torch.Tensor) -> None:
        self.token.copy_(token)
        self.logits.copy_(logits)
        self.rows.copy_(rows)
        self.count.add_(1)

    def _eager_body(self) -> None:
        draw_noise(self.noise, self.generator)
        self._write(*self.advance(*self._inputs()))

    def _compiled_body(self, options: dict):
        for t in self.net.tensors():  # weights are not inputs to copy on each replay
            torch._dynamo.mark_static_address(t)
        compiled = torch.compile(self.advance, fullgraph=True, **options)

        def body() -> None:
            # The draw stays outside: a compiled graph cannot take a torch.Generator.
            draw_noise(self.noise, self.generator)
            self._write(*compiled(*self._inputs()))

        return body

    # -- host side ---------------------------------------------------------------------
    def _on_stream(self):
        """Uploads, the step and the result's copy run in order on the step's stream."""
        return contextlib.nullcontext() if self.stream is None else torch.cuda.stream(self.stream)

    def set_prompt(self, prompt: np.ndarray) -> None:
        """The prompt vector ``[P]`` of the next step (uploaded only when it changed)."""
        if self._prompt_host is not None and np.array_equal(prompt, self._prompt_host):
            return
        self._prompt_host = np.array(prompt, dtype=np.float32)
        with self._on_stream():
            self._prompt_upload.write(torch.from_numpy(self._prompt_host))

    def set_sampling(self, temperature: float, top_k: int, top_p: float, greedy: bool) -> None:
        """Sampling settings of the next step (written only when they changed)."""
        settings = (float(temperature), int(top_k), float(top_p), bool(greedy))
        if settings != self._settings:
            with self._on_stream():
                self.sampling.set(*settings)
            self._settings = settings

    def reseed(self, seed: int) -> None:
        """Restart the device generator from ``seed`` (``/seed``)."""
        self.generator.manual_seed(seed)

    def step(self) -> torch.Tensor:
        """Run one step; returns the drawn row ``[Q]`` int64 on the CPU.

        The logits stay on the device in :attr:`logits` until read.
        """
        with self._on_stream():
            self._runner()
            if self._token_ready is None:
                return self.token.clone()
            self._token_host.copy_(self.token, non_blocking=True)
            self._token_ready.record()
        self._token_ready.synchronize()  # the one wait of a step: for its [Q] row
        return self._token_host.clone()

    def load(self, rows: torch.Tensor, count: int) -> None:
        """Start from a sequence with ``count`` rows whose last ``min(count, W)`` are ``rows``
        (``[n, Q]``, oldest first); ``load(empty, 0)`` is a ``/reset``. Blocking copies: this
        runs at a reset or a state restore, not every frame."""
        n = min(count, self.window)
        if rows.shape[0] != n:
            raise ValueError(f"{count} rows in the sequence need the last {n}, got "
                             f"{rows.shape[0]}")
        with self._on_stream():
            self.rows.zero_()
            self.rows[:n].copy_(rows)
            self.count.fill_(count)

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything the next step depends on besides the controls: the window, the row
        count and the device generator's state, with the device they were made on (CPU
        copies; this syncs, so it is for a recording's start or a restore, not per frame)."""
        with self._on_stream():
            return {"rows": self.rows.to("cpu", copy=True), "count": int(self.count.item()),
                    "rng": self.generator.get_state(), "device": str(self.device)}

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state` of a step with the same model, window and device
        type (a generator state does not carry across device types).

        Raises:
            ValueError: a missing or unused key, or a state made on another device type.
        """
        with StateReader(state, "static window step") as s:
            rows, count, rng, made_on = s.pop("rows"), s.pop("count"), s.pop("rng"), \
                s.pop("device")
        if torch.device(made_on).type != self.device.type:
            raise ValueError(f"state was made on {made_on}; this step runs on "
                             f"{self.device}: its random stream cannot continue here")
        with self._on_stream():
            self.rows.copy_(rows)
            self.count.fill_(count)
            self.generator.set_state(rng)
