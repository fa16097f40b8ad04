"""The OSC address table: the single source of truth for dispatch, ``/schema``, the README
table and the control-surface layouts.

Generator controls (mix, glide, sampling, reset) come from :mod:`engine.live.controls` with
their ranges; engine commands (transport, prompt loading, queries) are added here. Type
letters are OSC's: ``f`` float32, ``i`` int32, ``s`` string; ``f…`` = one or more floats;
``[s]`` = an optional string. An int is accepted where a float is expected (Max and Pd send
ints from integer number boxes), a float with no fractional part where an int is. An address
that takes no arguments also takes a button's one number: non-zero (pressed) acts, 0
(released) is ignored (TouchOSC buttons, Max toggles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from engine.live import generator as encodecgpt
from engine.live.controls import GENERATOR_CONTROLS, MAX_SLOTS
from engine.live.musicgen import generator as musicgen
from engine.live.rotary import generator as rotary

FAMILIES = ("encodecgpt", "rotary", "musicgen")  # the families the live engine plays
_LACKS = {  # what each family refuses (controls) or answers with /error (commands)
    "encodecgpt": set(encodecgpt.REFUSED) | set(encodecgpt.UNSUPPORTED),
    "rotary": set(rotary.REFUSED) | set(rotary.UNSUPPORTED_COMMANDS) | set(rotary.UNSUPPORTED),
    "musicgen": set(musicgen.REFUSED) | set(musicgen.UNSUPPORTED),
}


@dataclass(frozen=True)
class Address:
    address: str
    types: str  # as in ControlSpec (f, i, s, f…, [s] optional string, i[f] optional float)
    help: str
    low: float | None = None
    high: float | None = None
    default: tuple = ()
    clamp: bool = False
    kind: str = "control"  # control (applied at a frame) | command (engine) | reply (sent)
    widget: str = ""  # what a control surface shows for it (fader, xy, dial, button, ...)
    flow: str = "discrete"  # continuous: a later value supersedes (coalesced in a flood);
    # discrete: every message acts, none is dropped; "" for what the engine sends
    families: tuple[str, ...] = FAMILIES  # the model families that have it (the others
    # answer /error naming their family)


_WIDGETS = {"/morph": "fader", "/morph/xy": "xy", "/mix": "multislider", "/glide": "dial",
            "/temperature": "dial", "/topk": "dial", "/topp": "dial", "/seed": "number",
            "/reset": "button", "/gain": "fader", "/guidance": "dial"}

# made by the engine itself, never sent over OSC
_INTERNAL = ("/prompt/slot", "/prompt/slot/text", "/prime/rows")

CONTROLS = tuple(
    Address(s.address, s.types, s.help, s.low, s.high, s.default, s.clamp, "control",
            _WIDGETS.get(s.address, ""), "continuous" if s.continuous else "discrete")
    for s in GENERATOR_CONTROLS if s.address not in _INTERNAL
)

COMMANDS = (
    Address("/prompt/load", "is", "embed an audio file (EnCodecMAE) into a prompt slot; replies "
            "/prompt/loaded i s or /error", 0, MAX_SLOTS - 1, kind="command", widget="dropfile"),
    Address("/prompt/text", "is", "put a text into a MusicGen slot (T5 runs in a worker; the "
            "slot changes at a frame boundary once it is encoded); replies /prompt/loaded i s "
            "or /error", 0, MAX_SLOTS - 1, kind="command", widget="text"),
    Address("/prime", "i", "continue slot i's audio: its last seconds (the model's context, "
            "at most the window) become the window's tokens; replies /primed s i or /error",
            0, MAX_SLOTS - 1, kind="command", widget="slotbutton"),
    Address("/prime/file", "s", "continue an audio file (inside the prompt folders) as "
            "/prime does; replies /primed s i or /error", kind="command"),
    Address("/play", "", "start or resume playing (fades in)", kind="command", widget="button"),
    Address("/pause", "", "stop generating; the output fades to silence", kind="command",
            widget="button"),
    Address("/panic", "", "silence now: fade out, drop buffered audio, reset the window, pause",
            kind="command", widget="button"),
    Address("/record/start", "[s]", "record a session (optional name) under --sessions-dir; "
            "replies /record/started s:folder", kind="command", widget="toggle"),
    Address("/record/stop", "", "finish the recording; replies /record/stopped s:folder",
            kind="command", widget="toggle"),
    Address("/status", "", "reply once with /engine/status and /engine/info", kind="command"),
    Address("/midi/learn", "s", "bind the next MIDI control change moved to this address "
            "(needs --midi)", kind="command"),
    Address("/scene/save", "s", "save slots, mix, sampling, glide and gain as a scene under "
            "--scenes-dir; replies /scene/saved s:file", kind="command"),
    Address("/scene/recall", "s", "recall a saved scene (glides with its glide time); "
            "replies /scene/recalled s:name", kind="command"),
    Address("/schema", "", "reply /schema s: this table as JSON", kind="command"),
    Address("/prompt/listen", "i[f]", "bind slot i to the live input (--input): every update "
            "interval its last f seconds (0.5..4, default 3) are embedded into the slot "
            "(silence leaves it); replies /prompt/listening i f or /error", 0, MAX_SLOTS - 1,
            kind="command", widget="slotbutton"),
    Address("/prompt/unlisten", "i", "freeze slot i at its last vector from the input", 0,
            MAX_SLOTS - 1, kind="command", widget="slotbutton"),
    Address("/device/reopen", "", "close the output device and open it again at the same "
            "rate (after a loss, once it is back); replies /device/opened s i or /error",
            kind="command", widget="button"),
)

REPLIES = tuple(replace(a, flow="") for a in (  # sent: no flow
    Address("/engine/status", "fffffiffiii",
            "~10 Hz: rtf, step_ms_p50, step_ms_p99, buffer_ms, morph (weight of slot 1), "
            "underruns, temperature, topp, topk, recording (0/1), playing (0/1)", kind="reply",
            widget="label"),
    Address("/engine/info", "sssis",
            "on /status and to each new feedback target: compute (cpu, cuda:0, mps), weights "
            "(fp32, bf16, fp16, int8, int4, int4-128, int8-128), model family (encodecgpt, "
            "rotary, musicgen), window (frames; rotary: tokens), mode (exact, fast)",
            kind="reply", widget="label"),
    Address("/engine/mix", "f…", "~10 Hz: the current weight of every slot", kind="reply",
            widget="label"),
    Address("/engine/level", "ff", "~10 Hz: peak and RMS in dBFS of the last 0.1 s sent to "
            "the output, after /gain (-120 = silence)", kind="reply", widget="meter"),
    Address("/prompt/loaded", "is", "a /prompt/load or /prompt/text finished: slot, file or "
            "text", kind="reply", widget="label"),
    Address("/primed", "si", "a /prime or /prime/file took effect: file, primed frames",
            kind="reply", widget="label"),
    Address("/record/started", "s", "a recording began: its folder", kind="reply",
            widget="label"),
    Address("/record/stopped", "s", "a recording was finished: its folder", kind="reply",
            widget="label"),
    Address("/scene/saved", "s", "a scene was saved: its file", kind="reply", widget="label"),
    Address("/scene/recalled", "s", "a scene was recalled: its name", kind="reply",
            widget="label"),
    Address("/prompt/listening", "if", "a /prompt/listen took effect: slot, analysis seconds",
            kind="reply", widget="label"),
    Address("/device/opened", "si", "a /device/reopen took effect: device name, rate",
            kind="reply", widget="label"),
    Address("/error", "s", "what was wrong with the last message (state unchanged)",
            kind="reply", widget="label"),
    Address("/schema", "s", "reply to /schema", kind="reply"),
))

CONTROLS, COMMANDS = (tuple(
    replace(a, families=tuple(f for f in FAMILIES if a.address not in _LACKS[f]))
    for a in group) for group in (CONTROLS, COMMANDS))

TABLE: dict[str, Address] = {a.address: a for a in CONTROLS + COMMANDS}
"""Addresses the engine accepts."""


def table_for(num_slots: int = MAX_SLOTS) -> dict[str, Address]:
    """The accepted addresses of an engine with ``num_slots`` prompt slots (``--slots``):
    ``/prompt/load`` takes slots ``0 .. num_slots - 1``, so ``/schema`` and the engine agree."""
    table = dict(TABLE)
    for address in ("/prompt/load", "/prompt/text", "/prompt/listen", "/prompt/unlisten"):
        table[address] = replace(TABLE[address], high=num_slots - 1)
    return table


def schema_json(num_slots: int = MAX_SLOTS) -> str:
    """The accepted and sent addresses as JSON (the ``/schema`` reply) of an engine with
    ``num_slots`` prompt slots."""
    def row(a: Address) -> dict:
        return {"address": a.address, "types": a.types, "low": a.low, "high": a.high,
                "default": list(a.default), "clamp": a.clamp, "kind": a.kind, "flow": a.flow,
                "families": list(a.families), "help": a.help}

    accepts = table_for(num_slots)
    return json.dumps({"num_slots": num_slots,
                       "accepts": [row(accepts[a.address]) for a in CONTROLS + COMMANDS],
                       "sends": [row(a) for a in REPLIES]})


def markdown_table() -> str:
    """The README's OSC table (``python -m osc.addresses`` prints it)."""
    lines = ["| address | args | flow | families | range | default | what it does |",
             "|---|---|---|---|---|---|---|"]
    for a in CONTROLS + COMMANDS + REPLIES:
        rng = "" if a.low is None and a.high is None else (
            f"{_fmt(a.low)}..{_fmt(a.high)}" + (" (clamped)" if a.clamp else ""))
        args = a.types or "-"
        direction = " (sent by the engine)" if a.kind == "reply" else ""
        default = " ".join(_fmt(v) for v in a.default)
        families = "all" if a.families == FAMILIES else ", ".join(a.families)
        lines.append(f"| `{a.address}` | `{args}` | {a.flow} | {families} | {rng} | "
                     f"{default} | {a.help}{direction} |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e6 else f"{v:g}"
    return str(v)


if __name__ == "__main__":
    print(markdown_table())
