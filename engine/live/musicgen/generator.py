"""MusicGen's rolling generator: endless generation over text slots, one delayed row a step.

Row ``t`` (``[K]`` int64 in the engine's convention: code + 1, 0 = empty) is generated at step
``t`` from the last ``≤ W`` rows of the current sequence (``exact`` mode: the whole window is
recomputed every step, :class:`~engine.model.musicgen.lm.MusicGenLM`), under classifier-free
guidance over the active text slots (:mod:`engine.model.musicgen.guidance`)::

    logits = uncond + g · (Σᵢ wᵢ · condᵢ − uncond)

The **slots** of :class:`~engine.live.controls.ControlState` hold texts (``str``); their T5
encodings come from the :class:`~engine.model.musicgen.text.TextEncoder` cache (encoded on
first use: a live caller warms the cache in a worker first, so the step never runs T5). The
weights ``wᵢ`` are the control state's (glided) mix weights, so ``/morph``, ``/morph/xy``,
``/mix`` and ``/glide`` work across text slots; ``g`` is :attr:`MusicGenGenerator.guidance`
(an applied ``/guidance f`` event sets it). Temperature, top-k and top-p are the control
state's; MusicGen's published sampling is temperature 1, top-k 250.

With a window at least as long as the sequence, greedy rows equal
``MusicgenForConditionalGeneration.generate(do_sample=False)`` token for token (see
``tests/test_musicgen.py``).

Threading: :meth:`~MusicGenGenerator.submit` and :meth:`~MusicGenGenerator.at_boundary` from
any thread; everything else on the generator thread.
"""

from __future__ import annotations

import torch

from engine.live.control_queue import ControlledGenerator, ControlQueue
from engine.live.controls import AppliedControl, ControlError, ControlState
from engine.live.state import StateReader
from engine.model.musicgen.guidance import condition_batch, guided_logits
from engine.model.musicgen.lm import MusicGenLM
from engine.model.musicgen.text import TextCondition, TextEncoder
from engine.model.sampling import sample_frame
from engine.model.tokens.patterns import StreamingUndelay

DEFAULT_WINDOW = 150  # 3 s at 50 Hz
MAX_WINDOW = 199  # < 4 s at 50 Hz, as for EnCodecGPT
DEFAULT_GUIDANCE = 3.0  # MusicGen's published guidance scale
MODES = ("exact",)
FAMILY = "musicgen"
_WHY = "MusicGen's slots hold texts (/prompt/text i TEXT)"
# What this family cannot do, and why (ControlInbox refuses the controls, the OSC dispatcher
# the commands; the OSC address table's families column is made from both).
REFUSED = {"/prompt/slot": f"{_WHY}, not EnCodecMAE vectors",
           "/prime/rows": "MusicGen is not primed from audio in the live engine"}
UNSUPPORTED = {
    "/prompt/load": f"{_WHY}, not audio files",
    "/prime": "MusicGen is not primed from audio in the live engine",
    "/prime/file": "MusicGen is not primed from audio in the live engine",
    "/prompt/listen": f"{_WHY}; a live input cannot update a text",
    "/prompt/unlisten": f"{_WHY}; a live input cannot update a text",
}


def check_window(window: int, max_positions: int, limit: int = MAX_WINDOW) -> None:
    """Refuse a window outside ``1..limit`` rows or beyond the model's positions."""
    if not 1 <= window <= limit:
        raise ValueError(f"window must be 1..{limit} frames, got {window}")
    if window + 1 > max_positions:
        raise ValueError(f"window {window} needs {window + 1} positions; the model has "
                         f"{max_positions}")


class MusicGenGenerator(ControlledGenerator):
    """Generate MusicGen's delayed rows forever; see the module docstring.

    Args:
        lm: the decoder (:class:`MusicGenLM`).
        text: the text encoder and its cache.
        controls: initial control state; its slots hold texts (slot 0 before the first step).
        window: W rows, 1..``max_window`` (default 150 = 3 s).
        guidance: the CFG scale ``g`` (1 = none; default 3).
        greedy: argmax instead of sampling.
        seed: the sampler's seed.
        max_window: the largest window accepted (offline renders may pass the model's
            whole context; live keeps < 4 s).
    """

    family = FAMILY
    pattern = "delay"
    refused = REFUSED
    unsupported = UNSUPPORTED
    hop = None  # (no shadow re-prefill: exact mode recomputes the window)
    weight_format = "none"  # fp32 weights (what /engine/info and session.json say)
    startup_s = 0.0
    nonfinite_steps = 0  # (the pipeline's safety limiter guards the audio)

    def __init__(self, lm: MusicGenLM, text: TextEncoder, controls: ControlState, *,
                 window: int = DEFAULT_WINDOW, guidance: float = DEFAULT_GUIDANCE,
                 greedy: bool = False, seed: int = 0, max_window: int = MAX_WINDOW):
        check_window(window, lm.max_positions, max_window)
        self.lm, self.text, self.controls = lm, text, controls
        self.num_q, self.window, self.mode = lm.num_q, window, "exact"
        self.guidance, self.greedy = float(guidance), greedy
        self.compute = lm.device
        self.on_fault = None
        self.rng = torch.Generator().manual_seed(seed)
        self.queue = ControlQueue()
        self.t = 0
        self.seq_start = 0
        self._history: list[torch.Tensor] = []  # rows of the sequence (the last W)
        self.seam = None  # np [T, K]: rows primed at this step (pipeline: take_seam)
        self.last_logits: torch.Tensor | None = None

    # -- the step ------------------------------------------------------------------------
    def step(self) -> torch.Tensor:
        """Generate the next row; returns ``[K]`` int64 delayed tokens (code + 1, 0 = empty)."""
        self._apply_pending()
        logits = self.step_logits()
        self.last_logits = logits  # [K, card] guided, float32 on the CPU
        c = self.controls
        codes = sample_frame(logits[None], temperature=c.temperature, top_k=c.top_k,
                             top_p=c.top_p, greedy=self.greedy, generator=self.rng)[0]
        row = codes + 1
        n = self.t - self.seq_start
        if n < self.num_q - 1:  # the start triangle: codebooks k > n do not exist yet
            row[n + 1:] = 0
        return self._finish_step(row)

    def step_logits(self) -> torch.Tensor:
        """The guided logits ``[K, card]`` of the next row (nothing advances)."""
        conditions, weights = self.active_conditions()
        batch = condition_batch(conditions, weights, self.guidance, self.text.width)
        n = self.t - self.seq_start
        rows = (torch.stack(self._history[-self.window:]) if self._history
                else torch.zeros(0, self.num_q, dtype=torch.long))
        columns = self.lm.columns(rows, fresh_start=n > self.window)
        return guided_logits(self.lm.logits(columns, batch), batch, self.guidance).cpu()

    def active_conditions(self) -> tuple[list[TextCondition], list[float]]:
        """The encodings and weights of the slots with weight > 0, in slot order."""
        c = self.controls
        used = [i for i in range(c.num_slots) if c.weights[i] > 0.0]
        if not used or any(not isinstance(c.slots[i], str) for i in used):
            raise ControlError("no text: the mix uses a slot without a text")
        return [self.text.encode(c.slots[i]) for i in used], [float(c.weights[i]) for i in used]

    def _finish_step(self, row: torch.Tensor) -> torch.Tensor:
        self._history.append(row)
        if len(self._history) > self.window:
            del self._history[: len(self._history) - self.window]
        self.t += 1
        self.controls.advance()
        return row

    # -- what the pipeline asks every family ----------------------------------------------
    def frame_assembler(self) -> StreamingUndelay:
        """Rows in, frames of codes ``[K]`` (0..2047) out: the streaming inverse of the delay
        pattern (empty → code 0 only in rows that complete no frame)."""
        return StreamingUndelay(self.num_q)

    def prime(self, rows: torch.Tensor) -> None:
        """Start a new sequence whose first rows are ``rows`` (``[T, K]`` delayed, code + 1,
        ``1 <= T <= W``), as if they had been generated; ``t`` does not move."""
        if rows.ndim != 2 or rows.shape[1] != self.num_q or not 1 <= rows.shape[0] <= self.window:
            raise ValueError(f"primed rows must be [T, {self.num_q}] with 1 <= T <= "
                             f"{self.window} (the window), got {list(rows.shape)}")
        self.seq_start = self.t - rows.shape[0]
        self._history = list(rows.to(torch.long).clone())

    def take_seam(self):
        """The rows a ``/prime/rows`` control primed the last step with (``[T, K]`` numpy),
        once; None otherwise."""
        seam, self.seam = self.seam, None
        return seam

    def close(self) -> None:
        """Nothing runs in the background."""

    # -- sessions (engine.session) --------------------------------------------------------
    def get_state(self) -> dict:
        """Everything the next steps depend on: ``family`` and ``window`` (checked on
        restore), ``t``, ``seq_start``, the window's rows ``history`` ``[n, K]``, ``rng``,
        ``controls`` (text slots included), ``guidance`` and ``compute``."""
        history = (torch.stack(self._history) if self._history
                   else torch.zeros(0, self.num_q, dtype=torch.long))
        return {"family": FAMILY, "window": self.window, "t": self.t,
                "seq_start": self.seq_start, "history": history.clone(),
                "rng": self.rng.get_state(), "controls": self.controls.get_state(),
                "guidance": self.guidance, "compute": str(self.compute)}

    def set_state(self, state: dict, *, other_device: bool = False) -> None:
        """Continue from :meth:`get_state` of a generator with the same model and window
        (``other_device``: the replay's signature; the rows carry no device).

        Raises:
            ValueError: missing or unused keys, another family or window.
        """
        with StateReader(state, "musicgen generator") as s:
            config = (s.pop("family"), s.pop("window"))
            t, seq_start, history = s.pop("t"), s.pop("seq_start"), s.pop("history")
            rng, controls, guidance = s.pop("rng"), s.pop("controls"), s.pop("guidance")
            s.pop("compute")
        if config != (FAMILY, self.window):
            raise ValueError(f"state was saved by a generator with family/window {config}, "
                             f"this one has {(FAMILY, self.window)}")
        self.controls.set_state(controls)
        self.t, self.seq_start, self.guidance = int(t), int(seq_start), float(guidance)
        self._history = list(history.to(torch.long))
        self.rng.set_state(rng)

    # -- controls (engine.live.control_queue.ControlledGenerator) -------------------------
    def _on_applied(self, entry: AppliedControl) -> None:
        if entry.address == "/seed":
            self.rng.manual_seed(entry.values[0])
        elif entry.address == "/guidance":
            self.guidance = float(entry.values[0])
        elif entry.address == "/reset":
            self.seq_start, self._history = self.t, []
        elif entry.address == "/prime/rows":
            self.prime(torch.from_numpy(entry.values[0]))
            self.seam = entry.values[0]
