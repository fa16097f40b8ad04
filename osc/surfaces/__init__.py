"""Control surfaces generated from the OSC address table: Max, Pure Data, TouchOSC.

``python -m osc.surfaces`` rewrites ``max_patches/`` (a test checks the committed files
equal what this writes, so they cannot drift from :mod:`osc.addresses`):

* ``encodecgpt_live.maxpat`` + ``encodecgpt_live.maxhelp`` (Max/MSP)
* ``encodecgpt_live.pd`` (Pure Data vanilla)
* ``encodecgpt_live_phone.tosc`` (portrait) and ``encodecgpt_live_tablet.tosc`` (landscape)

Every surface sends to the engine on ``ENGINE_PORT`` and listens for ``--feedback`` on
``FEEDBACK_PORT``. What each knob spans is set here, once, inside the table's ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from osc.addresses import TABLE

ENGINE_PORT = 9000
FEEDBACK_PORT = 9001
SLOTS = 4  # prompt slots with a drop zone / file button: the first 4 of --slots
FOLDER = Path(__file__).resolve().parents[2] / "max_patches"


@dataclass(frozen=True)
class Knob:
    """A continuous control: ``address`` gets one value in ``[low, high]``."""

    address: str
    label: str
    low: float
    high: float
    integer: bool = False


# Performer ranges: the useful part of each table range (temperature goes to 10 in the
# table; above 2 is noise).
KNOBS = (
    Knob("/morph", "morph", 0.0, 1.0),
    Knob("/temperature", "temperature", 0.0, 2.0),
    Knob("/topk", "top-k", 0, 250, integer=True),
    Knob("/topp", "top-p", 0.01, 1.0),
    Knob("/glide", "glide (s)", 0.0, 10.0),
    Knob("/guidance", "guidance (MusicGen)", 1.0, 6.0),
    Knob("/gain", "gain (dB)", -60.0, 6.0),
)
BUTTONS = ("/play", "/pause", "/reset", "/panic", "/device/reopen")

# Widgets a phone cannot offer: dropping files, the all-slots mix, typing a seed; the
# per-slot buttons sit beside the slots' files, which only the computer can choose.
DESKTOP_ONLY = {"dropfile", "multislider", "number", "slotbutton"}


# Typing a text (MusicGen's /prompt/text): Max has a text field; Pd vanilla has no way to
# type several words into one symbol, and a phone's keyboard over the surface is no help on
# stage: there, send it from another OSC program (oscsend, Max).
TEXT_ENTRY = {"max"}


def needed(surface: str) -> set[str]:
    """Addresses a performer needs on ``surface`` ('max', 'pd' or 'touchosc')."""
    return {a.address for a in TABLE.values()
            if a.widget and a.widget != "label"
            and (surface != "touchosc" or a.widget not in DESKTOP_ONLY)
            and (surface in TEXT_ENTRY or a.widget != "text")}
