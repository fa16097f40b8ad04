"""Controls on their way to a frame boundary, and the frame log of those applied.

Events are queued from any thread with :meth:`ControlQueue.submit` (live) or placed at a
frame with :meth:`ControlQueue.schedule` (replay, automation); the rolling generator takes
them at the start of each frame (:meth:`ControlQueue.due`) and tries each bundle on a copy of
its control state (:meth:`ControlQueue.try_bundle`): all events of a bundle take effect at the
same frame, or none does. Each applied event is appended to :attr:`ControlQueue.log` with its
frame index, so a run can be replayed by scheduling the log's events at the same frames.

Floods (a fader at 200 messages/s, a burst as fast as a socket takes) cost a frame boundary
O(1) applications: the live bundles waiting for a frame are taken at once, and in a run of
consecutive bundles of continuous controls only (:data:`~engine.live.controls.CONTINUOUS`:
the mix setters ``/morph``, ``/morph/xy``, ``/mix``, and ``/glide``, ``/temperature``,
``/topk``, ``/topp``, ``/gain``) a bundle whose every setting is set again by a later bundle
of the run is skipped — it could not take effect anyway (a glide starts at the frame, from
the last target) — and counted in :attr:`ControlQueue.coalesced`. Bundles stay atomic;
discrete controls are never dropped and end a run.
At most :data:`MAX_PENDING` bundles wait (the generator paused, or not keeping up): one more
is refused with a :class:`ControlError` (an ``/error`` reply), nothing is dropped silently.
The frame log keeps the last :data:`LOG_KEEP` entries in memory (a show's hour of faders
would otherwise grow it without end); recordings and ``--control-log`` get every entry.

Every family's live generator gets its control side from :class:`ControlledGenerator`
(submit, schedule, apply at a boundary, the log); what an applied event does beyond the
control state (reseed, reset or prime the window) is the family's ``_on_applied``.

Threading: :meth:`submit` and :meth:`at_boundary` may be called from any thread (lock-free
``SimpleQueue``); everything else runs on the generator thread (or before it starts).
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from engine.live.controls import (
    CONTINUOUS,
    AppliedControl,
    ControlError,
    ControlEvent,
    ControlState,
)

MAX_PENDING = 16_384  # live bundles waiting for a frame boundary (a few MB at most)
LOG_KEEP = 10_000  # frame-log entries kept in memory (the last ones)


class ControlQueue:
    """Pending, scheduled and boundary work of one generator, and its frame log.

    Attributes:
        log: the last :data:`LOG_KEEP` applied events, in order (:class:`AppliedControl`).
        errors: ``(frame, message)`` of the last :data:`LOG_KEEP` refused bundles.
        coalesced: events that never took effect because a later mix setter replaced them
            at the same frame boundary.
        on_control: called with each :class:`AppliedControl` (generator thread).
        on_error: called with ``(frame, event, message)`` for a refused bundle.
    """

    def __init__(self):
        self._pending: queue.SimpleQueue = queue.SimpleQueue()  # (events, wall time)
        self._scheduled: dict[int, list[list[ControlEvent]]] = {}
        self._boundary: queue.SimpleQueue = queue.SimpleQueue()
        self.log: deque[AppliedControl] = deque(maxlen=LOG_KEEP)
        self.errors: deque[tuple[int, str]] = deque(maxlen=LOG_KEEP)
        self.coalesced = 0
        self.on_control: Callable[[AppliedControl], None] | None = None
        self.on_error: Callable[[int, ControlEvent, str], None] | None = None

    # -- any thread ----------------------------------------------------------------------
    def submit(self, events: Sequence[ControlEvent]) -> None:
        """Queue a bundle for the next frame boundary.

        Raises:
            ControlError: :data:`MAX_PENDING` bundles are already waiting.
        """
        if self._pending.qsize() >= MAX_PENDING:
            raise ControlError(f"{MAX_PENDING} controls are waiting for the generator (paused "
                               "or not keeping up); this one was refused")
        self._pending.put((list(events), time.time()))

    def at_boundary(self, fn: Callable) -> None:
        """Queue ``fn`` to run at the next frame boundary, before that frame's controls."""
        self._boundary.put(fn)

    # -- generator thread ----------------------------------------------------------------
    def schedule(self, frame: int, events: Sequence[ControlEvent]) -> None:
        """Apply a bundle at the start of ``frame``, before the live bundles queued then."""
        self._scheduled.setdefault(frame, []).append(list(events))

    def boundary_jobs(self) -> Iterator[Callable]:
        """The functions queued with :meth:`at_boundary`, oldest first (taken off the queue)."""
        while not self._boundary.empty():
            yield self._boundary.get()

    def due(self, frame: int) -> Iterator[tuple[list[ControlEvent], float | None]]:
        """``(events, wall time)`` of the bundles for ``frame``: scheduled ones (wall time
        None), then the live ones waiting now, runs of mix setters coalesced to their last."""
        for events in self._scheduled.pop(frame, ()):
            yield events, None
        live = []
        for _ in range(self._pending.qsize()):
            try:
                live.append(self._pending.get_nowait())
            except queue.Empty:
                break
        skip = _superseded([events for events, _ in live])
        for i, (events, wall) in enumerate(live):
            if skip[i]:
                self.coalesced += len(events)
                continue
            yield events, wall

    def try_bundle(self, frame: int, controls: ControlState, events: Sequence[ControlEvent],
                   wall: float | None = None) -> tuple[ControlState, list[AppliedControl]] | None:
        """Apply ``events`` to a copy of ``controls``, all or nothing.

        Returns:
            ``(new controls, frame-log entries)``, or None if an event was refused (the
            error is recorded and reported; ``controls`` is unchanged either way).
        """
        wall = time.time() if wall is None else wall
        trial = controls.copy()
        applied = []
        for ev in events:
            try:
                applied.append(AppliedControl(frame, ev.address, trial.apply(ev), wall))
            except ControlError as e:
                self.errors.append((frame, str(e)))
                if self.on_error is not None:
                    self.on_error(frame, ev, str(e))
                return None
        return trial, applied

    def record(self, entry: AppliedControl) -> None:
        """Append an applied event to the frame log and tell the listener."""
        self.log.append(entry)
        if self.on_control is not None:
            self.on_control(entry)


def _settings(events: Sequence[ControlEvent]) -> set[str] | None:
    """The settings a bundle of continuous controls moves; None if it holds a discrete one."""
    out = set()
    for ev in events:
        target = CONTINUOUS.get(ev.address)
        if target is None:
            return None
        out.add(target)
    return out or None


def _superseded(bundles: list[list[ControlEvent]]) -> list[bool]:
    """For each bundle: True if it moves only continuous settings that a later bundle of the
    same run (no discrete control in between) moves again."""
    skip = [False] * len(bundles)
    later: set[str] = set()
    for i in range(len(bundles) - 1, -1, -1):
        settings = _settings(bundles[i])
        if settings is None:
            later = set()  # a discrete control ends the run: it may depend on what came before
            continue
        skip[i] = settings <= later
        later |= settings
    return skip


class ControlledGenerator:
    """Controls queued, scheduled and applied at frame boundaries (see the module doc)."""

    controls: ControlState
    queue: ControlQueue
    t: int

    def submit(self, events: Sequence[ControlEvent]) -> None:
        """Queue events (from any thread); they are applied together at the next frame."""
        self.queue.submit(events)

    def schedule(self, frame: int, events: Sequence[ControlEvent]) -> None:
        """Apply ``events`` together at the start of ``frame`` (before queued live events);
        used to replay a frame log or render automation. Not thread-safe: call before the
        generator runs or from its thread."""
        self.queue.schedule(frame, events)

    def at_boundary(self, fn: Callable[[ControlledGenerator], None]) -> None:
        """Run ``fn(generator)`` on the generator thread at the next frame boundary, before
        that frame's controls (e.g. to take the state a recording starts from)."""
        self.queue.at_boundary(fn)

    def apply_now(self, events: Sequence[ControlEvent], wall: float | None = None) -> bool:
        """Apply a bundle at the current frame boundary, all or nothing (generator thread
        only; :meth:`submit` is the thread-safe form). Returns False if it was refused."""
        result = self.queue.try_bundle(self.t, self.controls, events, wall)
        if result is None:
            return False
        self.controls, applied = result
        for entry in applied:
            self._on_applied(entry)
            self.queue.record(entry)
        return True

    def _on_applied(self, entry: AppliedControl) -> None:
        """What an applied event does to the family's own state (sampler, window)."""

    def _apply_pending(self) -> None:
        for fn in self.queue.boundary_jobs():
            fn(self)
        for events, wall in self.queue.due(self.t):
            self.apply_now(events, wall)

    @property
    def control_log(self) -> list[AppliedControl]:
        """The applied events with their frames (the frame log; the last
        :data:`~engine.live.control_queue.LOG_KEEP` of them)."""
        return list(self.queue.log)

    @property
    def errors(self) -> list[tuple[int, str]]:
        """``(frame, message)`` of the refused bundles (the last ``LOG_KEEP``)."""
        return list(self.queue.errors)

    @property
    def on_control(self) -> Callable[[AppliedControl], None] | None:
        """Called with each applied event (generator thread)."""
        return self.queue.on_control

    @on_control.setter
    def on_control(self, fn: Callable[[AppliedControl], None] | None) -> None:
        self.queue.on_control = fn

    @property
    def on_error(self) -> Callable[[int, ControlEvent, str], None] | None:
        """Called with ``(frame, event, message)`` for a refused bundle."""
        return self.queue.on_error

    @on_error.setter
    def on_error(self, fn: Callable[[int, ControlEvent, str], None] | None) -> None:
        self.queue.on_error = fn
