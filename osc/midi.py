"""MIDI controllers → the engine's OSC addresses (``--midi PORT``, ``--midi-map FILE``,
``/midi/learn s``).

A MIDI message becomes the OSC message a surface would have sent and goes through the same
:class:`~osc.dispatcher.OSCDispatcher` (so it is checked, logged and answered like any other):

* a **control change** bound to an address sends ``low + value / 127 · (high − low)`` to it
  (an ``i`` address gets the rounded int); the range defaults to the surfaces' knob range
  (:data:`osc.surfaces.KNOBS`), else the table's;
* a **note on** (velocity > 0) bound to a ``slot`` sends ``/mix`` with all the weight on that
  slot (it glides with ``/glide``), to a ``scene`` sends ``/scene/recall``, to an
  ``address`` presses that button (``/play``, ``/panic`` ...);
* **MIDI learn**: after ``/midi/learn s:ADDRESS``, the next control change moved is bound to
  ``ADDRESS`` (and saved to the mapping file when there is one).

Mapping file (JSON)::

    {"cc": [{"cc": 1, "address": "/morph"},
            {"cc": 74, "channel": 1, "address": "/temperature", "low": 0.2, "high": 1.5}],
     "notes": [{"note": 36, "slot": 0}, {"note": 37, "scene": "verse"},
               {"note": 48, "address": "/panic"}]}

Channels are 1–16 as on the controller's display; no ``channel``: any channel.

Threading: :meth:`MidiMapper.handle` runs on the MIDI input's thread (python-rtmidi's), the
dispatcher's entry points are thread-safe; :meth:`~MidiMapper.learn` on the OSC thread (one
attribute write). ``mido`` and ``python-rtmidi`` (the ``midi`` extra) are imported only when a
port is opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import UserError
from osc.addresses import TABLE
from osc.server import build_message
from osc.surfaces import KNOBS

Handle = Callable[[bytes, object], bool]
"""``handle(datagram, sender)``: the dispatcher's entry point."""


@dataclass
class CCBinding:
    """Control change ``cc`` (on ``channel`` 1–16, or any) → ``address`` over low..high."""

    cc: int
    address: str
    low: float
    high: float
    channel: int | None = None


def default_range(address: str) -> tuple[float, float]:
    """The knob range of ``address`` on the surfaces, else its table range.

    Raises:
        UserError: an address that does not take one number.
    """
    spec = TABLE.get(address)
    if spec is None or spec.types not in ("f", "i"):
        raise UserError(f"{address}: MIDI controls addresses that take one number (e.g. "
                        "/morph, /temperature, /gain)")
    knob = next((k for k in KNOBS if k.address == address), None)
    if knob is not None:
        return float(knob.low), float(knob.high)
    return float(spec.low if spec.low is not None else 0.0), float(
        spec.high if spec.high is not None else 1.0)


def read_mapping(path: Path) -> tuple[list[CCBinding], list[dict]]:
    """The CC bindings and note bindings of a mapping file.

    Raises:
        UserError: naming the file and the entry that is wrong.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable MIDI mapping ({e})") from None
    ccs = []
    for n, entry in enumerate(data.get("cc", [])):
        try:
            low, high = default_range(entry["address"])
            ccs.append(CCBinding(int(entry["cc"]), entry["address"],
                                 float(entry.get("low", low)), float(entry.get("high", high)),
                                 entry.get("channel")))
        except (KeyError, TypeError, ValueError, UserError) as e:
            raise UserError(f"{path}: cc entry {n}: {e}") from None
    notes = list(data.get("notes", []))
    for n, entry in enumerate(notes):
        if "note" not in entry or not {"slot", "scene", "address"} & set(entry):
            raise UserError(f"{path}: notes entry {n} needs 'note' and one of 'slot', "
                            "'scene', 'address'")
    return ccs, notes


class MidiMapper:
    """Turn MIDI messages (``mido.Message`` or anything with its attributes) into OSC
    messages for ``handle``.

    Args:
        handle: the dispatcher's entry point (``OSCDispatcher.handle``).
        ccs, notes: the bindings (see :func:`read_mapping`).
        save_to: where learned bindings are written (the mapping file), or None.
        log: console messages.
    """

    def __init__(self, handle: Handle, ccs: list[CCBinding] | None = None,
                 notes: list[dict] | None = None, save_to: Path | None = None,
                 log: Callable[[str], None] = print):
        self._handle, self.log, self.save_to = handle, log, save_to
        self.ccs, self.notes = list(ccs or []), list(notes or [])
        self.learning: str | None = None  # the address the next CC is bound to

    def learn(self, address: str) -> None:
        """Bind the next control change moved to ``address`` (raises UserError if it does
        not take one number)."""
        default_range(address)
        self.learning = address
        self.log(f"midi: move a control to bind it to {address}")

    def handle(self, msg) -> None:
        """Act on one MIDI message."""
        channel = getattr(msg, "channel", 0) + 1
        if msg.type == "control_change":
            if self.learning is not None:
                self._bind(msg.control, channel)
            for b in self.ccs:
                if b.cc == msg.control and b.channel in (None, channel):
                    self._send(b.address, b.low + msg.value / 127.0 * (b.high - b.low))
        elif msg.type == "note_on" and msg.velocity > 0:
            for entry in self.notes:
                if entry["note"] == msg.note and entry.get("channel") in (None, channel):
                    self._note(entry)

    def _bind(self, cc: int, channel: int) -> None:
        address, self.learning = self.learning, None
        low, high = default_range(address)
        self.ccs = [b for b in self.ccs if not (b.cc == cc and b.channel in (None, channel))]
        self.ccs.append(CCBinding(cc, address, low, high, channel))
        self.log(f"midi: CC {cc} (channel {channel}) -> {address} {low:g}..{high:g}")
        if self.save_to is not None:
            self.save(self.save_to)

    def _note(self, entry: dict) -> None:
        if "slot" in entry:
            slot = int(entry["slot"])
            self._send("/mix", *([0.0] * slot + [1.0]))
        elif "scene" in entry:
            self._send("/scene/recall", str(entry["scene"]))
        else:
            self._send(entry["address"])

    def _send(self, address: str, *values) -> None:
        spec = TABLE.get(address)
        if spec is not None and spec.types == "i":
            values = tuple(int(round(v)) for v in values)
        self._handle(build_message(address, list(values)), None)

    def save(self, path: Path) -> None:
        """Write the bindings as a mapping file."""
        data = {"cc": [{k: v for k, v in asdict(b).items() if v is not None} for b in self.ccs],
                "notes": self.notes}
        Path(path).write_text(json.dumps(data, indent=1) + "\n")


def open_midi_input(port: str, mapper: MidiMapper):
    """Open the MIDI input whose name contains ``port`` and feed it to ``mapper``.

    Raises:
        UserError: mido/python-rtmidi missing, or no such port (listing the inputs).
    """
    try:  # optional: only a performer with a controller needs them (pip install .[midi])
        import mido
        names = mido.get_input_names()
    except ImportError as e:
        raise UserError(f"--midi needs mido and python-rtmidi ({e}); pip install "
                        "'encodecgpt-live[midi]'") from None
    except Exception as e:  # rtmidi without a MIDI system (no ALSA sequencer)
        raise UserError(f"--midi: no MIDI system available ({e})") from None
    matches = [n for n in names if port.lower() in n.lower()]
    if not matches:
        raise UserError(f"no MIDI input matches '{port}'; inputs: {', '.join(names) or 'none'}")
    return mido.open_input(matches[0], callback=mapper.handle)
