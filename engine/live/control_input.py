"""How controls reach the rolling generator: the state it starts from, and validated bundles.

* :func:`initial_controls` — a :class:`ControlState` with the initial prompts in its slots
  (the engine, ``render``, benchmarks and tests all start this way).
* :class:`ControlInbox` — a bundle of events from the OSC thread (or a prompt loader) is
  validated as a whole against the state as it will be once everything already queued has
  applied, then queued for the generator's next frame boundary: it takes effect at one
  frame or not at all.

Threading: :meth:`ControlInbox.submit` may be called from any thread (one lock); the
generator applies what was queued on its own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from engine.live.controls import ControlError, ControlEvent, ControlState
from engine.live.generator import RollingGenerator

DEFAULT_SLOTS = 4


def initial_controls(slots: Sequence[np.ndarray], num_slots: int | None = None,
                     **kw) -> ControlState:
    """Controls with ``slots[i]`` (a prompt embedding ``[P]``) in slot ``i``.

    Args:
        slots: the initial prompt embeddings, in slot order.
        num_slots: slots in all (at least ``len(slots)``; default 4, or more if more are given).
        **kw: other :class:`ControlState` fields (``glide``, ``temperature``, ...).

    Raises:
        ControlError: a vector that is not finite, or sizes that differ.
    """
    controls = ControlState(num_slots=max(num_slots or DEFAULT_SLOTS, len(slots)), **kw)
    for i, vec in enumerate(slots):
        controls.apply(ControlEvent("/prompt/slot", (i, vec)))
    return controls


class ControlInbox:
    """Validate bundles against the state they will meet, then queue them on ``generator``.

    Args:
        generator: where accepted bundles go (:meth:`RollingGenerator.submit`); a bundle
            with an address in its ``refused`` (``{address: reason}``; a family without a
            prompt mix) is refused with the reason.
        controls: the generator's controls before anything is submitted (copied).
    """

    def __init__(self, generator: RollingGenerator, controls: ControlState):
        self.generator = generator
        self._future = controls.copy()  # the state once everything queued applies
        self.num_slots = controls.num_slots
        self._lock = threading.Lock()

    def submit(self, events: list[ControlEvent]) -> None:
        """Queue ``events`` for the next frame if all of them apply.

        Raises:
            ControlError: the bundle is refused as a whole; nothing was queued.
        """
        refused = getattr(self.generator, "refused", {})
        for ev in events:
            if ev.address in refused:
                raise ControlError(f"{ev.address}: {refused[ev.address]}")
        with self._lock:
            trial = self._future.copy()
            for ev in events:
                trial.apply(ev)
            self.generator.submit(events)  # may refuse (queue full): the future stays
            self._future = trial
