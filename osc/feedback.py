"""``/engine/status``, ``/engine/mix`` and ``/engine/level`` at ~10 Hz to the last sender and
``--feedback``; ``/engine/info`` (what runs where) once to each target before its first status.

The argument order is the table's (``osc.addresses.REPLIES``); control surfaces read them by
position.

Threading: :class:`FeedbackSender` has its own ``osc-feedback`` thread, which reads the
engine's status and sends through the server's socket (UDP ``sendto`` is safe to share with
the OSC thread); ``start`` / ``close`` on the owner's thread.
"""

from __future__ import annotations

import threading


def status_messages(status: dict) -> list[tuple[str, list]]:
    """The engine's status dict → the OSC messages that report it."""
    s = status
    return [
        ("/engine/status", [float(s["rtf"]), float(s["step_ms_p50"]), float(s["step_ms_p99"]),
                            float(s["buffer_ms"]), float(s["morph"]), int(s["underruns"]),
                            float(s["temperature"]), float(s["topp"]), int(s["topk"]),
                            int(s["recording"]), int(s["playing"])]),
        ("/engine/mix", [float(w) for w in s["mix"]]),
        ("/engine/level", [float(s["peak_db"]), float(s["rms_db"])]),
    ]


def info_message(info: dict) -> tuple[str, list]:
    """The engine's :meth:`info` dict → ``/engine/info`` (compute, weights, family, window,
    mode)."""
    return ("/engine/info", [str(info["compute"]), str(info["weights"]), str(info["family"]),
                             int(info["window"]), str(info["mode"])])


class FeedbackSender:
    """Send the status every ``period`` seconds through ``server`` while it has a target."""

    def __init__(self, server, engine, period: float = 0.1):
        self.server, self.engine, self.period = server, engine, period
        self._told: set = set()  # targets that got /engine/info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc-feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            targets = self.server.targets()
            if not targets:
                continue
            for t in targets:
                if t not in self._told:
                    self.server.send(t, *info_message(self.engine.info()))
                    self._told.add(t)
            for address, args in status_messages(self.engine.status()):
                for t in targets:
                    self.server.send(t, address, args)
