"""The rotary family's frame generator: one EnCodec frame (``Q`` flattened tokens) per step.

It plugs into :class:`engine.live.pipeline.Pipeline` as :class:`RollingGenerator` does:
``step()`` returns a row ``[Q]``, ``num_q`` and ``t`` say where it is, and
:meth:`frame_assembler` gives the decoder thread the streaming inverse of the family's token
pattern (here :class:`StreamingUnflatten`; ``delay`` for EnCodecGPT).

The recipe is unconditional, so a slot holds an *audio prefix* (codes ``[Q, T]``) rather than
a prompt vector: :meth:`prime` re-primes the window from it at the next frame boundary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.live.control_queue import ControlledGenerator, ControlQueue
from engine.live.controls import AppliedControl, ControlState
from engine.live.rotary.recompute_step import RecomputeStep
from engine.live.rotary.sliding_step import SlidingStep
from engine.live.state import StateReader
from engine.model.rotary_lm import RotaryLM
from engine.model.sampling import sample_frame
from engine.model.tokens.patterns import StreamingUnflatten, flatten_codes

MODES = ("fast", "exact")
FAMILY = "rotary"
# What this family cannot do, and why (ControlInbox refuses these with the reason; the OSC
# address table's family column is made from it): the recipe is unconditional.
REFUSED = {address: ("the rotary model (x-transformers, flattened codebooks) is "
                     "unconditional: it has no prompt mix; its slots hold audio prefixes "
                     "(/prompt/load i FILE, then /prime i)")
           for address in ("/morph", "/morph/xy", "/mix", "/prompt/slot", "/prompt/slot/text")}
REFUSED["/guidance"] = ("the rotary model is unconditional: it has no classifier-free "
                        "guidance (a MusicGen control)")
# Engine commands this family answers with /error (no prompt vector for a live input to
# update, no mix for a scene to hold).
UNSUPPORTED_COMMANDS = ("/prompt/listen", "/prompt/unlisten", "/scene/save", "/scene/recall")
# ... and those the OSC dispatcher refuses for it before any engine method runs
UNSUPPORTED = {"/prompt/text": "the rotary model is unconditional: its slots hold audio "
                               "prefixes (/prompt/load i FILE), not texts (MusicGen's)"}


class UnflattenRows:
    """A generator row ``[Q]`` (one frame's flat tokens) in, that frame's codes out, through
    the token-by-token :class:`StreamingUnflatten`."""

    def __init__(self, num_q: int):
        self.stream = StreamingUnflatten(num_q)

    def push(self, row: torch.Tensor) -> torch.Tensor | None:
        frame = None
        for token in row.tolist():
            frame = self.stream.push(token)
        return frame


class RotaryGenerator(ControlledGenerator):
    """Flattened-codebook generation with a rolling window and live controls.

    Controls (:mod:`engine.live.control_queue`): temperature, top-k, top-p (with their glide),
    ``/seed``, ``/reset`` (back to the start token alone), ``/gain`` (the pipeline applies
    it), and ``/prime/rows`` with codes ``[T, Q]`` (re-prime from an audio prefix). The mix
    setters are refused before they are queued (:data:`REFUSED`).

    Args:
        model: the decoder.
        controls: initial controls (default: one empty slot; slots are not used).
        window: W positions including the start token (default and cap: ``max_seq_len``).
        mode: ``fast`` (sliding KV cache) or ``exact`` (recompute the window each token).
        greedy: argmax instead of sampling.
        seed: sampler seed.
        prefix: codes ``[Q, T]`` to start from (None: the start token alone).
    """

    family = FAMILY
    pattern = "flatten"  # a seam's primed rows are whole frames (engine.live.audio.seam)
    refused = REFUSED
    unsupported = UNSUPPORTED
    hop = None  # (no shadow re-prefill: the window slides token by token)
    weight_format = "none"  # fp32 weights (what /engine/info and session.json say)
    startup_s = 0.0

    def __init__(self, model: RotaryLM, controls: ControlState | None = None, *,
                 window: int | None = None, mode: str = "fast", greedy: bool = False,
                 seed: int = 0, prefix: torch.Tensor | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.mode = model, mode
        self.num_q = model.cfg.codebooks
        self.window = window or model.cfg.max_seq_len
        if not 2 <= self.window <= model.cfg.max_seq_len:
            raise ValueError(f"the rotary window is 2..{model.cfg.max_seq_len} tokens (start "
                             f"token included; the model was trained on {model.cfg.max_seq_len})"
                             f", got {self.window}")
        step_class = SlidingStep if mode == "fast" else RecomputeStep
        self.stepper = step_class(model, self.window)
        self.controls = controls if controls is not None else ControlState(num_slots=1)
        self.queue = ControlQueue()
        self.compute = torch.device("cpu")
        self.greedy, self.seed = greedy, seed
        self.rng = torch.Generator().manual_seed(seed)
        self.t = 0
        self.seam: np.ndarray | None = None  # codes [T, Q] primed at this step
        self.nonfinite_steps = 0
        self._faulted = False  # in a run of non-finite frames (reported once per run)
        self.on_fault: Callable[[str], None] | None = None
        self.logits = self.stepper.start(self._flat(prefix))

    def _flat(self, prefix: torch.Tensor | None) -> torch.Tensor:
        if prefix is None:
            return torch.zeros(0, dtype=torch.long)
        return flatten_codes(prefix[None, : self.num_q].long())[0]

    def frame_assembler(self) -> UnflattenRows:
        return UnflattenRows(self.num_q)

    def take_seam(self) -> np.ndarray | None:
        """The codes ``[T, Q]`` a ``/prime/rows`` control primed the last step with, once
        (the pipeline crossfades into the primed stream); None otherwise."""
        seam, self.seam = self.seam, None
        return seam

    def prime(self, prefix: torch.Tensor) -> None:
        """Restart the window from codes ``[Q, T]`` (generator thread, or before it runs):
        the next step continues them, as a fresh start on that prefix would."""
        self.logits = self.stepper.start(self._flat(prefix))

    def prepare_prime(self, rows: np.ndarray) -> tuple:
        """The ``/prime/rows`` values for codes ``rows`` ``[T, Q]`` (nothing to prepare)."""
        return (rows,)

    def _on_applied(self, entry: AppliedControl) -> None:
        if entry.address == "/seed":
            self.rng.manual_seed(entry.values[0])
        elif entry.address == "/reset":
            self.logits = self.stepper.start(self._flat(None))
        elif entry.address == "/prime/rows":
            rows = entry.values[0]  # [T, Q] codes
            self.prime(torch.from_numpy(np.ascontiguousarray(rows.T)))
            self.seam = rows

    def step(self) -> torch.Tensor:
        """Generate the next frame; returns ``[Q]`` int64 tokens (= codes, codebook order)."""
        self._apply_pending()
        c, row = self.controls, []
        for _ in range(self.num_q):
            if not bool(torch.isfinite(self.logits).all()):
                return self._nonfinite_row()
            token = sample_frame(self.logits[None, None], temperature=c.temperature,
                                 top_k=c.top_k, top_p=c.top_p, greedy=self.greedy,
                                 generator=self.rng)[0, 0]
            row.append(token)
            self.logits = self.stepper.push(int(token))
        self._faulted = False
        self.t += 1
        self.controls.advance()
        return torch.stack(row)

    def _nonfinite_row(self) -> torch.Tensor:
        """Non-finite logits (broken weights or cache): a frame of code 0 and the window
        restarted from the start token; reported once per run of such frames (``on_fault``),
        each counted."""
        self.nonfinite_steps += 1
        if not self._faulted and self.on_fault is not None:
            self.on_fault(f"frame {self.t}: the model's logits are not finite (NaN or Inf); "
                          "the window restarts from the start token")
        self._faulted = True
        self.logits = self.stepper.start(self._flat(None))
        self.t += 1
        return torch.zeros(self.num_q, dtype=torch.long)

    # -- state (engine.live.state) --------------------------------------------------------
    def get_state(self) -> dict:
        """Everything the next steps depend on: ``family``, ``mode``, ``window`` (checked on
        restore), ``t``, ``rng``, ``controls``, the next token's ``logits`` ``[V]``, the
        window's ``step`` state (:meth:`SlidingStep.get_state` or
        :meth:`RecomputeStep.get_state`) and ``compute``."""
        return {"family": FAMILY, "mode": self.mode, "window": self.window, "t": self.t,
                "rng": self.rng.get_state(), "controls": self.controls.get_state(),
                "logits": self.logits.clone(), "step": self.stepper.get_state(),
                "compute": str(self.compute)}

    def set_state(self, state: dict, *, other_device: bool = False) -> None:
        """Continue from :meth:`get_state` of a generator with the same model, mode and
        window (``other_device`` is accepted for the replay's signature: this family runs
        on the CPU only).

        Raises:
            ValueError: missing or unused keys, another family, mode or window.
        """
        with StateReader(state, "rotary generator") as s:
            config = (s.pop("family"), s.pop("mode"), s.pop("window"))
            t, rng, controls = s.pop("t"), s.pop("rng"), s.pop("controls")
            logits, step = s.pop("logits"), s.pop("step")
            s.pop("compute")
        if config != (FAMILY, self.mode, self.window):
            raise ValueError(f"state was saved by a generator with family/mode/window {config}"
                             f", this one has {(FAMILY, self.mode, self.window)}")
        new_controls = ControlState(num_slots=self.controls.num_slots)
        new_controls.set_state(controls)
        self.stepper.set_state(step)  # the last check that can refuse the state
        self.t, self.controls, self.logits = int(t), new_controls, logits.clone()
        self.rng.set_state(rng)

    def close(self) -> None:
        """Nothing runs in the background (no re-prefill in either mode)."""
