"""Performance controls of the rolling generator: what they mean, their ranges, and glide.

Every control is an *event* ``(address, values)`` named like its OSC address, so the same
names appear in the OSC table, the frame log and recorded sessions. Events are applied only
at frame boundaries by :class:`engine.live.generator.RollingGenerator`; this module validates them
and keeps the resulting state:

* prompt **slots** hold embeddings ``[P]``; the prompt is ``Σ_i w_i · slot_i`` (float64 sum,
  then float32) over the **mix weights** ``w`` (non-negative, normalised to sum 1);
* ``/morph x`` → ``w = (1 − x, x)`` over slots 0–1; ``/morph/xy x y`` → bilinear over slots
  0–3 with corners (0,0) → slot 0, (1,0) → slot 1, (0,1) → slot 2, (1,1) → slot 3;
  ``/mix w0 w1 …`` sets the weights of the first N slots directly;
* **glide** τ (seconds): every continuous control (mix weights, temperature, top-p) moves
  towards its target by ``1 − exp(−1 / (τ · 75))`` of the remaining distance per frame, and
  snaps onto it once within :data:`SNAP`; τ = 0 jumps. Top-k and seed are discrete and jump.
  A slot that already holds a vector glides to a new one the same way (a dropped file, a
  ``/prompt/listen`` update: no jump in the prompt), element by element in float32.
  Sessions recorded before slot vectors glided (their controls state has no
  ``target_slots``) replay with jumping slots, as they were played.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import numpy as np

from engine import FRAME_RATE
from engine.errors import UserError
from engine.live.state import StateReader, array_from_state, array_to_state

SNAP = 1e-4  # a glide closer than this to its target lands on it
MAX_SLOTS = 16


class ControlError(UserError):
    """A control event that was refused; the previous state is kept."""


@dataclass(frozen=True)
class ControlSpec:
    """One control address: argument types (``f`` float, ``i`` int, ``s`` string, ``b`` blob,
    ``f…`` = one or more floats), range, default and what it does. ``clamp``: out-of-range
    values are clamped instead of refused (faders that overshoot by rounding)."""

    address: str
    types: str
    help: str
    low: float | None = None
    high: float | None = None
    default: tuple = ()
    clamp: bool = False
    target: str = ""  # continuous: the one setting it moves (a later value supersedes)

    @property
    def continuous(self) -> bool:
        """A fader-like control: of several values for one frame only the last matters.
        Discrete controls (``/seed``, ``/reset``, the internal ones) are events: each acts."""
        return bool(self.target)


GENERATOR_CONTROLS: tuple[ControlSpec, ...] = (
    ControlSpec("/morph", "f", "2-slot morph: 0 = slot 0, 1 = slot 1", 0.0, 1.0, (0.0,), True,
                "mix"),
    ControlSpec("/morph/xy", "ff", "XY pad, bilinear over slots 0-3: (0,0) slot 0, (1,0) "
                "slot 1, (0,1) slot 2, (1,1) slot 3", 0.0, 1.0, (0.0, 0.0), True, "mix"),
    ControlSpec("/mix", "f…", "weights of slots 0..N-1 (>= 0, normalised to sum 1)", 0.0, None,
                target="mix"),
    ControlSpec("/glide", "f", "glide time constant in seconds for mix, temperature, top-p "
                "and slot vectors",
                0.0, 60.0, (0.0,), target="glide"),
    ControlSpec("/temperature", "f", "sampling temperature (0 = greedy)", 0.0, 10.0, (1.0,),
                target="temperature"),
    ControlSpec("/topk", "i", "keep the k most likely tokens per codebook (0 = off)",
                0, 1025, (0,), target="topk"),
    ControlSpec("/topp", "f", "nucleus mass per codebook (1 = off)", 0.001, 1.0, (1.0,),
                target="topp"),
    ControlSpec("/seed", "i", "reseed the sampler at this frame", 0, 2**31 - 1),
    ControlSpec("/reset", "", "forget the token window and start a fresh sequence"),
    ControlSpec("/gain", "f", "output gain in dB (ceiling +6; a change ramps over 20 ms)",
                -60.0, 6.0, (0.0,), True, "gain"),
    ControlSpec("/guidance", "f", "classifier-free guidance scale (MusicGen; 1 = none, "
                "published 3)", 0.0, 10.0, (3.0,), True, "guidance"),
    ControlSpec("/prompt/slot", "ib", "(internal) put an embedding into a slot", 0,
                MAX_SLOTS - 1),
    ControlSpec("/prompt/slot/text", "is", "(internal) put a text into a slot (MusicGen; its "
                "T5 encoding is cached first)", 0, MAX_SLOTS - 1),
    ControlSpec("/prime/rows", "b", "(internal) start a new sequence from primed token rows "
                "[T, Q] (engine.model.tokens.priming)"),
)
SPECS = {s.address: s for s in GENERATOR_CONTROLS}
CONTINUOUS = {s.address: s.target for s in GENERATOR_CONTROLS if s.continuous}
"""Continuous controls and the setting each moves (``/morph``, ``/morph/xy`` and ``/mix`` all
move the mix): of several queued for one frame boundary only the last value of each setting
can take effect, so the earlier ones are coalesced away (see :mod:`engine.live.control_queue`).
Every other control is discrete and always applied. The OSC table shows this as its ``flow``
column (:mod:`osc.addresses`)."""


@dataclass(slots=True)
class ControlEvent:
    """One control change; ``values`` as received (validated when applied)."""

    address: str
    values: tuple = ()


@dataclass(slots=True)
class AppliedControl:
    """A frame-log entry: ``event`` took effect at the start of frame ``frame``."""

    frame: int
    address: str
    values: tuple
    wall_time: float


def _glide_step(current: float | np.ndarray, target, alpha: float):
    new = current + alpha * (np.asarray(target) - current)
    if np.max(np.abs(np.asarray(target) - new)) < SNAP:
        return np.copy(target) if isinstance(target, np.ndarray) else float(target)
    return new if isinstance(new, np.ndarray) else float(new)


@dataclass
class ControlState:
    """Slots, mix and sampling controls: targets and the current (glided) values."""

    num_slots: int = 4
    slots: list = field(default_factory=list)  # np.ndarray [P] float32, str (text) or None
    weights: np.ndarray = None  # type: ignore[assignment]  [num_slots] float64, current
    target_weights: np.ndarray = None  # type: ignore[assignment]
    temperature: float = 1.0
    target_temperature: float = 1.0
    top_p: float = 1.0
    target_top_p: float = 1.0
    top_k: int = 0
    glide: float = 0.0
    gain_db: float = 0.0  # master gain; ramped in the audio (engine.live.audio.gain)
    target_slots: list = field(default_factory=list)  # where each slot's vector glides to
    slot_glide: bool = True  # False: a new vector replaces a slot at once (older sessions)
    frame_rate: float = FRAME_RATE  # glide steps per second (the family's: MusicGen 50 Hz)

    def __post_init__(self):
        if not 1 <= self.num_slots <= MAX_SLOTS:
            raise ValueError(f"num_slots must be in 1..{MAX_SLOTS}")
        self.slots = list(self.slots) + [None] * (self.num_slots - len(self.slots))
        if not self.target_slots:
            self.target_slots = list(self.slots)  # the same objects: nothing glides
        if self.weights is None:
            self.weights = np.eye(self.num_slots)[0]
        if self.target_weights is None:
            self.target_weights = self.weights.copy()
        self.target_temperature = self.temperature
        self.target_top_p = self.top_p

    # -- reading -------------------------------------------------------------------------
    def prompt(self) -> np.ndarray:
        """The current mixed prompt ``[P]`` float32."""
        used = [i for i in range(self.num_slots) if self.weights[i] > 0.0]
        if not used or any(self.slots[i] is None for i in used):
            raise ControlError("no prompt: the mix uses an empty slot")
        acc = sum(self.weights[i] * self.slots[i].astype(np.float64) for i in used)
        return np.asarray(acc, dtype=np.float32)

    @property
    def gliding(self) -> bool:
        return (not np.array_equal(self.weights, self.target_weights)
                or self.temperature != self.target_temperature or self.top_p != self.target_top_p
                or any(self._slot_gliding(i) for i in range(self.num_slots)))

    def _slot_gliding(self, i: int) -> bool:
        """Slot ``i`` is on its way to a new vector (a landed glide leaves the target object
        itself in the slot, so this is an identity test, not a comparison)."""
        cur, target = self.slots[i], self.target_slots[i]
        return cur is not target and isinstance(cur, np.ndarray) and isinstance(target,
                                                                                  np.ndarray)

    def advance(self) -> None:
        """Move the glided controls one frame towards their targets."""
        if not self.gliding:
            return
        alpha = 1.0 if self.glide <= 0 else 1.0 - math.exp(-1.0 / (self.glide * self.frame_rate))
        self.weights = _glide_step(self.weights, self.target_weights, alpha)
        self.temperature = _glide_step(self.temperature, self.target_temperature, alpha)
        self.top_p = _glide_step(self.top_p, self.target_top_p, alpha)
        for i in range(self.num_slots):
            if self._slot_gliding(i):
                cur, target = self.slots[i], self.target_slots[i]
                new = (cur + np.float32(alpha) * (target - cur)).astype(np.float32)
                self.slots[i] = target if np.max(np.abs(target - new)) < SNAP else new

    # -- changing ------------------------------------------------------------------------
    def apply(self, event: ControlEvent) -> tuple:
        """Validate and apply one event; returns the values as applied (after clamping).

        Raises:
            ControlError: unknown address, wrong count/type, NaN/inf, out of range, or a mix
                that would use an empty slot. Nothing is changed then.
        """
        spec = SPECS.get(event.address)
        if spec is None:
            raise ControlError(f"unknown control {event.address}")
        values = tuple(event.values)
        if spec.address == "/prompt/slot":
            return self._set_slot(values)
        if spec.address == "/prompt/slot/text":
            return self._set_text(values)
        if spec.address == "/prime/rows":
            return _check_rows(values)
        nums = check_args(spec, values)
        handler = getattr(self, "_on_" + spec.address.strip("/").replace("/", "_"), None)
        if handler is not None:
            handler(*nums) if spec.types != "f…" else handler(nums)
        return nums

    def _set_slot(self, values: tuple) -> tuple:
        if len(values) != 2:
            raise ControlError("/prompt/slot expects (slot, embedding)")
        slot, vec = values
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.num_slots:
            raise ControlError(f"slot must be an integer in 0..{self.num_slots - 1}, got {slot!r}")
        vec = np.asarray(vec, dtype=np.float32)
        filled = [s for s in self.slots if isinstance(s, np.ndarray)]
        if vec.ndim != 1 or not np.isfinite(vec).all():
            raise ControlError("a prompt embedding must be a finite vector [P]")
        if filled and filled[0].shape != vec.shape:
            raise ControlError(f"embedding size {vec.shape[0]} differs from the other slots "
                               f"({filled[0].shape[0]})")
        i = int(slot)
        self.target_slots[i] = vec
        current = self.slots[i]
        if not (self.slot_glide and self.glide > 0 and isinstance(current, np.ndarray)
                and current.shape == vec.shape):
            self.slots[i] = vec  # a jump (no glide, an empty slot, an older session)
        return (i, vec)

    def _set_text(self, values: tuple) -> tuple:
        """A text slot (MusicGen): no glide between texts (the mix weights glide)."""
        if len(values) != 2 or not isinstance(values[1], str):
            raise ControlError("/prompt/slot/text expects (slot, text)")
        slot, text = values
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.num_slots:
            raise ControlError(f"slot must be an integer in 0..{self.num_slots - 1}, got {slot!r}")
        if not text.strip():
            raise ControlError("a text slot needs a text (it was empty)")
        i = int(slot)
        self.slots[i] = self.target_slots[i] = text
        return (i, text)

    def _set_weights(self, weights: np.ndarray) -> None:
        total = float(weights.sum())
        if total <= 0.0:
            raise ControlError("mix weights must not all be zero")
        full = np.zeros(self.num_slots)
        # (1 - x) + x can miss 1.0 by an ulp; dividing then would perturb a plain lerp.
        full[: len(weights)] = weights if abs(total - 1.0) < 1e-9 else weights / total
        empty = [i for i in range(self.num_slots) if full[i] > 0 and self.slots[i] is None]
        if empty:
            raise ControlError(f"slot {empty[0]} is empty; load a prompt into it first")
        self.target_weights = full
        if self.glide <= 0:
            self.weights = full.copy()

    def _on_morph(self, x: float) -> None:
        if self.num_slots < 2:
            raise ControlError("/morph needs 2 slots")
        self._set_weights(np.array([1.0 - x, x]))

    def _on_morph_xy(self, x: float, y: float) -> None:
        if self.num_slots < 4:
            raise ControlError("/morph/xy needs 4 slots")
        self._set_weights(np.array([(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y]))

    def _on_mix(self, weights: tuple) -> None:
        if len(weights) > self.num_slots:
            raise ControlError(f"/mix got {len(weights)} weights for {self.num_slots} slots")
        self._set_weights(np.asarray(weights, dtype=np.float64))

    def _on_gain(self, db: float) -> None:
        self.gain_db = db

    def _on_glide(self, seconds: float) -> None:
        self.glide = seconds

    def _on_temperature(self, t: float) -> None:
        self.target_temperature = t
        if self.glide <= 0:
            self.temperature = t

    def _on_topk(self, k: int) -> None:
        self.top_k = k

    def _on_topp(self, p: float) -> None:
        self.target_top_p = p
        if self.glide <= 0:
            self.top_p = p

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict:
        """A copy (see :mod:`engine.live.state`): slots ``[P]`` float32 tensors or ``None``,
        mix weights ``[num_slots]`` float64 tensors, the sampling values and the glide."""
        return {
            "num_slots": self.num_slots,
            "slots": [_slot_to_state(s) for s in self.slots],
            "weights": array_to_state(self.weights),
            "target_weights": array_to_state(self.target_weights),
            "temperature": float(self.temperature),
            "target_temperature": float(self.target_temperature),
            "top_p": float(self.top_p), "target_top_p": float(self.target_top_p),
            "top_k": int(self.top_k), "glide": float(self.glide),
            "master_gain_db": float(self.gain_db),
            **({"target_slots": [_slot_to_state(s) for s in self.target_slots]}
               if self.slot_glide else {}),
        }

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state` of a control state with as many slots.

        Raises:
            ValueError: a missing or unused key, or another slot count.
        """
        with StateReader(state, "controls") as s:
            num_slots, slots = s.pop("num_slots"), s.pop("slots")
            values = {key: s.pop(key) for key in _SCALARS}
            # sessions recorded before /gain existed have no gain: 0 dB
            values["gain_db"] = s.pop("master_gain_db") if "master_gain_db" in state else 0.0
            weights, target = s.pop("weights"), s.pop("target_weights")
            # sessions recorded before slot vectors glided have no targets: they jump
            targets = s.pop("target_slots") if "target_slots" in state else None
        if num_slots != self.num_slots or len(slots) != self.num_slots:
            raise ValueError(f"controls state has {num_slots} slots, this one {self.num_slots}")
        self.slots = [_slot_from_state(v) for v in slots]
        self.slot_glide = targets is not None
        self.target_slots = list(self.slots)
        for i, t in enumerate(targets or []):
            t = _slot_from_state(t)
            if not (isinstance(t, np.ndarray) and isinstance(self.slots[i], np.ndarray)
                    and np.array_equal(t, self.slots[i])):
                self.target_slots[i] = t  # still gliding when the state was taken
        self.weights, self.target_weights = array_from_state(weights), array_from_state(target)
        for key, value in values.items():
            setattr(self, key, value)

    def copy(self) -> ControlState:
        """An independent copy (what a bundle is tried on before it is applied, once per OSC
        message: it must be cheap). The arrays (slots, weights) are shared: every change
        replaces an array, none is written in place."""
        new = copy.copy(self)
        new.slots, new.target_slots = list(self.slots), list(self.target_slots)
        return new


def _slot_to_state(slot):
    """A slot in a state: a text as it is, a vector as a tensor copy."""
    return slot if isinstance(slot, str) else array_to_state(slot)


def _slot_from_state(value):
    return value if isinstance(value, str) else array_from_state(value)


def _check_rows(values: tuple) -> tuple:
    """``/prime/rows``: an int64 array ``[T, Q]`` of delayed tokens in 0..1024 (the window
    and Q are checked where the rows are made, against the generator), and optionally the
    prompt ``[P]`` its window cache was computed with (:mod:`engine.live.step.primed`)."""
    rows = values[0] if len(values) in (1, 2) else None
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[0] < 1:
        raise ControlError("/prime/rows expects one token array [T, Q] (and a prompt [P])")
    if rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() > 1024:
        raise ControlError("/prime/rows: tokens must be integers in 0..1024")
    if len(values) == 1:
        return (rows.astype(np.int64),)
    prompt = values[1]
    if not isinstance(prompt, np.ndarray) or prompt.ndim != 1 or not np.isfinite(prompt).all():
        raise ControlError("/prime/rows: the prompt must be a finite vector [P]")
    return (rows.astype(np.int64), prompt.astype(np.float32))


_SCALARS = ("temperature", "target_temperature", "top_p", "target_top_p", "top_k", "glide")


def check_args(spec, values) -> tuple:
    """Check ``values`` against a spec's types (``f``, ``i``, ``s``, ``f…``, ``[s]``, ``i[f]``):
    count,
    type, finiteness and range; clamp where allowed. Ints are taken as floats and whole floats
    as ints. ``spec`` is a :class:`ControlSpec` or anything with the same fields (the OSC
    table's entries).

    Raises:
        ControlError: saying what is wrong.
    """
    values = tuple(values)
    if spec.types == "f…":
        if not values:
            raise ControlError(f"{spec.address} expects at least one float")
        kinds = "f" * len(values)
    elif spec.types == "i[f]":
        if len(values) not in (1, 2):
            raise ControlError(f"{spec.address} expects an integer and an optional float, "
                               f"got {len(values)} argument(s)")
        slot = _check_one(spec, "i", values[0])  # the range is the slot's
        if len(values) == 1:
            return (slot,)
        return slot, _check_one(replace(spec, low=None, high=None, clamp=False), "f", values[1])
    elif spec.types == "[s]":
        if len(values) > 1:
            raise ControlError(f"{spec.address} expects at most one string")
        kinds = "s" * len(values)
    else:
        kinds = spec.types
        if len(values) != len(kinds):
            raise ControlError(f"{spec.address} expects {len(kinds)} argument(s) "
                               f"({kinds or 'none'}), got {len(values)}")
    return tuple(_check_one(spec, kind, v) for kind, v in zip(kinds, values, strict=True))


def _check_one(spec, kind: str, v):
    if kind == "s":
        if not isinstance(v, str):
            raise ControlError(f"{spec.address}: expected a string, got {_type_name(v)}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ControlError(f"{spec.address}: expected a number, got {_type_name(v)}")
    if kind == "i":
        if isinstance(v, (float, np.floating)) and not float(v).is_integer():
            raise ControlError(f"{spec.address}: expected an integer, got {v}")
        v = int(v)
    else:
        v = float(v)
        if not math.isfinite(v):
            raise ControlError(f"{spec.address}: value must be finite, got {v}")
    return _in_range(spec, v)


def _type_name(v) -> str:
    return "a blob" if isinstance(v, bytes) else type(v).__name__


def _in_range(spec, v):
    lo, hi = spec.low, spec.high
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if not spec.clamp:
            if hi is None:
                raise ControlError(f"{spec.address}: {v} is below {lo} (must be >= {lo})")
            raise ControlError(f"{spec.address}: {v} is outside [{lo}, {hi}]")
        v = min(max(v, lo), hi) if hi is not None else max(v, lo)
    return v
