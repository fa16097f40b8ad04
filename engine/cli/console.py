"""The live terminal status: RTF, buffer, underruns, mix, recording (rich when a TTY).

``underruns`` counts periods our ring could not fill (the generator was late); ``xruns``
counts the device's own output underflows reported by PortAudio (its callback ran late).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def status_line(s: dict) -> str:
    mix = " ".join(f"{w:.2f}" for w in s["mix"])
    return (f"{'PLAY' if s['playing'] else 'PAUSE'} {s['frame'] / 75:7.1f}s  RTF {s['rtf']:4.2f}  "
            f"step {s['step_ms_p50']:5.1f}/{s['step_ms_p99']:5.1f} ms  buffer "
            f"{s['buffer_ms']:4.0f} ms  underruns {s['underruns']}  "
            f"xruns {s['device_underflows']}  mix [{mix}]  "
            f"T {s['temperature']:.2f} k {s['topk']} p {s['topp']:.2f}"
            f"  gain {s.get('gain_db', 0.0):+.1f} dB  level {s.get('peak_db', -120):.0f}/"
            f"{s.get('rms_db', -120):.0f} dBFS"
            f"{_faults(s)}{_listening(s)}"
            f"{'  REC' if s['recording'] else ''}  ({s['weights']}, {s['device']})")


def _listening(s: dict) -> str:
    """With ``--input``: its level, and which slots follow it."""
    if "input_rms_db" not in s:
        return ""
    slots = ",".join(str(i) for i in sorted(s["listening"])) or "none"
    return (f"  in {s['input_peak_db']:.0f}/{s['input_rms_db']:.0f} dBFS listening {slots}"
            f" every {s['listen_interval_s']:g} s")


def _faults(s: dict) -> str:
    """Only when something went wrong: non-finite steps/samples, frames limited."""
    parts = [f"{s[k]} {name}" for k, name in (("nonfinite_steps", "NaN steps"),
                                               ("nonfinite_samples", "NaN samples"),
                                               ("limited_frames", "limited"))
             if s.get(k)]
    return ("  " + ", ".join(parts)) if parts else ""


def slots_line(sources: dict[int, str], num_slots: int) -> str:
    """Which sound sits in which slot: file names (``random`` for random vectors)."""
    names = [Path(sources[i]).name if i in sources else "empty" for i in range(num_slots)]
    return "slots: " + "  ".join(f"{i} {name}" for i, name in enumerate(names))


class StatusConsole:
    """Context manager; :meth:`update` redraws (TTY) or logs a line every 10 s (pipes)."""

    def __init__(self, engine, enabled: bool = True):
        self.engine, self.enabled = engine, enabled
        self.live = None
        self._last = 0.0

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live("", console=Console(stderr=True), refresh_per_second=4)
            self.live.__enter__()
        return self

    def update(self) -> None:
        if not self.enabled:
            return
        line = status_line(self.engine.status())
        sources = getattr(self.engine, "slot_sources", None)
        if sources is not None:
            line += "\n" + slots_line(sources, self.engine.num_slots)
        if self.live is not None:
            self.live.update(line)
        elif time.monotonic() - self._last > 10.0:
            self._last = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
        return False
