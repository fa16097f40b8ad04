"""The Max/MSP patch (``encodecgpt_live.maxpat``) and its help patch, built from the table.

Data path: widget → (``scale`` to the knob's range) → ``prepend /address`` → one
``udpsend 127.0.0.1 ENGINE_PORT``. Feedback: ``udpreceive FEEDBACK_PORT`` → ``route`` →
``unpack`` of ``/engine/status`` into number boxes (RTF, buffer, underruns) and message
boxes showing the last ``/error``, ``/prompt/loaded`` and record replies.
"""

from __future__ import annotations

import json

from osc.addresses import TABLE
from osc.surfaces import BUTTONS, ENGINE_PORT, FEEDBACK_PORT, KNOBS, SLOTS

# Inlets and outlets of the objects used (Max recomputes them on load; the tests check lines
# against them).
_IO = {"udpsend": (1, 0), "udpreceive": (1, 1), "prepend": (1, 1), "scale": (6, 1),
       "pak": (2, 1), "conformpath": (1, 2), "sel": (1, 3), "route": (1, None),
       "unpack": (1, None), "tosymbol": (1, 1)}
_UI_IO = {"slider": (1, 1), "dial": (1, 1), "pictslider": (2, 2), "multislider": (1, 2),
          "number": (1, 2), "flonum": (1, 2), "toggle": (1, 1), "button": (1, 1),
          "message": (2, 1), "comment": (1, 0), "dropfile": (1, 2), "textedit": (1, 4)}


class MaxPatch:
    """Boxes and patch lines of a Max patcher; methods return box ids."""

    def __init__(self, rect=(60, 60, 1200, 760)):
        self.rect = list(rect)
        self.boxes: list[dict] = []
        self.lines: list[dict] = []

    def _box(self, maxclass: str, x: float, y: float, w: float, h: float, **extra) -> str:
        box_id = f"obj-{len(self.boxes) + 1}"
        if maxclass == "newobj":
            name = extra["text"].split()[0]
            inlets, outlets = _IO[name]
            if outlets is None:  # route/unpack: one outlet per argument (+1 for route)
                outlets = len(extra["text"].split()) - (0 if name == "route" else 1)
        else:
            inlets, outlets = _UI_IO[maxclass]
        box = {"id": box_id, "maxclass": maxclass, "numinlets": inlets,
               "numoutlets": outlets, "patching_rect": [x, y, w, h], **extra}
        if outlets:
            box.setdefault("outlettype", [""] * outlets)
        self.boxes.append({"box": box})
        return box_id

    def obj(self, x, y, text, w=None) -> str:
        return self._box("newobj", x, y, w or max(50, 7 * len(text) + 10), 22, text=text)

    def ui(self, maxclass, x, y, w=40, h=22, **extra) -> str:
        return self._box(maxclass, x, y, w, h, **extra)

    def message(self, x, y, text, w=None) -> str:
        return self._box("message", x, y, w or max(40, 7 * len(text) + 12), 22, text=text)

    def comment(self, x, y, text, w=None) -> str:
        return self._box("comment", x, y, w or 7 * len(text) + 12, 20, text=text)

    def connect(self, src: str, outlet: int, dst: str, inlet: int = 0) -> None:
        self.lines.append({"patchline": {"source": [src, outlet], "destination": [dst, inlet]}})

    def chain(self, *ids: str) -> None:
        for a, b in zip(ids, ids[1:], strict=False):
            self.connect(a, 0, b, 0)

    def json_text(self) -> str:
        patcher = {"fileversion": 1, "appversion": {"major": 8, "minor": 5, "revision": 0,
                                                     "architecture": "x64", "modernui": 1},
                   "classnamespace": "box", "rect": self.rect, "bglocked": 0,
                   "openinpresentation": 0, "default_fontsize": 12.0, "gridsize": [15.0, 15.0],
                   "boxes": self.boxes, "lines": self.lines}
        return json.dumps({"patcher": patcher}, indent=1) + "\n"


def main_patch() -> str:
    p = MaxPatch()
    p.comment(15, 10, f"encodecgpt-live: start the engine with --feedback 127.0.0.1:"
                      f"{FEEDBACK_PORT}, then play. Open the help patch for more.", w=700)
    send = p.obj(420, 700, f"udpsend 127.0.0.1 {ENGINE_PORT}")
    _knobs(p, send)
    _xy_and_mix(p, send)
    _transport_and_record(p, send)
    _guidance(p, send)
    _slots(p, send)
    _feedback(p)
    return p.json_text()


def _send(p: MaxPatch, x, y, source: str, address: str, send: str, outlet: int = 0) -> None:
    prefix = p.obj(x, y, f"prepend {address}", w=7 * len(address) + 60)
    p.connect(source, outlet, prefix)
    p.connect(prefix, 0, send)


def _scale(k) -> str:
    if k.integer:
        return f"scale 0 127 {int(k.low)} {int(k.high)}"
    return f"scale 0 127 {float(k.low)!r} {float(k.high)!r}"


def _knobs(p: MaxPatch, send: str) -> None:
    morph, *dials = [k for k in KNOBS if k.address not in ("/gain", "/guidance")]
    slider = p.ui("slider", 15, 50, 200, 24, floatoutput=1, size=1.0)
    p.comment(220, 50, "morph: slot 0 <-> slot 1")
    _send(p, 15, 80, slider, morph.address, send)
    for col, k in enumerate(dials):
        x = 15 + col * 160
        p.comment(x, 120, k.label)
        dial = p.ui("dial", x, 140, 45, 45)
        scaled = p.obj(x, 190, _scale(k), w=85)
        p.connect(dial, 0, scaled)
        shown = p.ui("flonum" if not k.integer else "number", x, 215, 55)
        p.connect(scaled, 0, shown)
        _send(p, x, 240, scaled, k.address, send)


def _xy_and_mix(p: MaxPatch, send: str) -> None:
    p.comment(680, 50, "XY: bilinear over slots 0-3")
    pad = p.ui("pictslider", 680, 70, 140, 140)
    sx = p.obj(680, 215, "scale 0 127 0. 1.", w=110)
    sy = p.obj(800, 215, "scale 0 127 1. 0.", w=110)  # up = slots 2 and 3
    pak = p.obj(680, 240, "pak 0. 0.")
    p.connect(pad, 0, sx)
    p.connect(pad, 1, sy)
    p.connect(sx, 0, pak, 0)
    p.connect(sy, 0, pak, 1)
    _send(p, 680, 265, pak, "/morph/xy", send)
    p.comment(930, 50, "mix: slot weights 0-3")
    mix = p.ui("multislider", 930, 70, 120, 100, size=SLOTS, setminmax=[0.0, 1.0], settype=1)
    _send(p, 930, 180, mix, "/mix", send)
    p.comment(1100, 50, "seed")
    seed = p.ui("number", 1100, 70, 80, minimum=0)
    _send(p, 1100, 95, seed, "/seed", send)
    _gain(p, send)


def _gain(p: MaxPatch, send: str) -> None:
    """The master gain: a vertical slider in dB (the engine ramps every change)."""
    gain = next(k for k in KNOBS if k.address == "/gain")
    p.comment(1060, 125, gain.label, w=80)
    slider = p.ui("slider", 1060, 150, 24, 110)
    scaled = p.obj(1090, 150, _scale(gain), w=100)
    p.connect(slider, 0, scaled)
    shown = p.ui("flonum", 1090, 175, 55)
    p.connect(scaled, 0, shown)
    _send(p, 1090, 205, scaled, gain.address, send)


def _guidance(p: MaxPatch, send: str) -> None:
    """MusicGen's guidance scale, below the transport (the dial row is full)."""
    k = next(k for k in KNOBS if k.address == "/guidance")
    p.comment(15, 340, k.label)
    dial = p.ui("dial", 15, 362, 45, 45)
    scaled = p.obj(70, 362, _scale(k), w=110)
    p.connect(dial, 0, scaled)
    shown = p.ui("flonum", 70, 387, 55)
    p.connect(scaled, 0, shown)
    _send(p, 190, 387, scaled, k.address, send)


def _transport_and_record(p: MaxPatch, send: str) -> None:
    for col, address in enumerate(BUTTONS):
        box = p.message(15 + col * 70, 300, address)
        p.connect(box, 0, send)
    p.comment(420, 300, "record, name:")
    toggle = p.ui("toggle", 420, 325, 24, 24)
    name_field = p.ui("textedit", 450, 325, 110, 24, text="take")
    text = p.obj(570, 325, "route text")
    symbol = p.obj(650, 325, "tosymbol")
    holder = p.obj(650, 350, "prepend set")
    name = p.message(650, 375, "take", w=110)
    p.connect(name_field, 0, text)
    p.chain(text, symbol, holder, name)
    which = p.obj(420, 360, "sel 1 0")
    p.connect(toggle, 0, which)
    p.connect(which, 0, name)  # the name box outputs its name when banged
    _send(p, 420, 410, name, "/record/start", send)
    stop = p.message(500, 385, "/record/stop")
    p.connect(which, 1, stop)
    p.connect(stop, 0, send)


def _slots(p: MaxPatch, send: str) -> None:
    for k in range(SLOTS):
        x = 15 + k * 175
        p.comment(x, 440, f"slot {k}: drop a sound")
        drop = p.ui("dropfile", x, 460, 90, 50)
        path = p.obj(x, 515, "conformpath native absolute", w=90)
        p.connect(drop, 0, path)
        _send(p, x, 540, path, f"/prompt/load {k}", send)
        cont = p.message(x + 95, 460, f"/prime {k}", w=70)  # continue the slot's sound
        p.connect(cont, 0, send)
        for row, address in enumerate(("/prompt/listen", "/prompt/unlisten")):  # --input
            follow = p.message(x + 95, 485 + 25 * row, f"{address} {k}", w=75)
            p.connect(follow, 0, send)
        # MusicGen: type a text, press return: /prompt/text k "the words as one string"
        p.comment(x, 567, "or a text (MusicGen):")
        field = p.ui("textedit", x, 590, 160, 24, text="")
        words = p.obj(x, 620, "route text", w=70)
        one = p.obj(x + 75, 620, "tosymbol", w=70)
        p.connect(field, 0, words)
        p.connect(words, 0, one)
        _send(p, x, 645, one, f"/prompt/text {k}", send)


def _feedback(p: MaxPatch) -> None:
    receive = p.obj(740, 420, f"udpreceive {FEEDBACK_PORT}")
    route = p.obj(740, 445, "route /engine/status /error /prompt/loaded /record/started "
                            "/record/stopped /engine/level", w=420)
    p.connect(receive, 0, route)
    fields = p.obj(740, 470, "unpack f f f f f i f f i i i", w=200)
    p.connect(route, 0, fields)
    for col, (index, label, kind) in enumerate(((0, "RTF", "flonum"), (3, "buffer ms", "flonum"),
                                                (5, "underruns", "number"))):
        shown = p.ui(kind, 740 + col * 90, 495, 60)
        p.connect(fields, index, shown)
        p.comment(740 + col * 90, 520, label)
    levels = p.obj(1010, 470, "unpack f f", w=80)
    p.connect(route, 5, levels)
    for col, label in enumerate(("peak dBFS", "RMS dBFS")):
        shown = p.ui("flonum", 1010 + col * 85, 495, 60)
        p.connect(levels, col, shown)
        p.comment(1010 + col * 85, 520, label)
    for row, (outlet, label) in enumerate(((1, "error"), (2, "loaded"), (3, "recording"),
                                           (4, "recorded"))):
        y = 545 + row * 24
        p.comment(740, y, label, w=70)
        setter = p.obj(815, y, "prepend set", w=85)
        shown = p.message(905, y, "", w=280)
        p.connect(route, outlet, setter)
        p.connect(setter, 0, shown)


def help_patch() -> str:
    """How to start the engine, the ports, and one box per address of the table."""
    rows = len(TABLE)
    bottom = 174 + rows * 24  # below the last address box
    p = MaxPatch(rect=(100, 100, 760, bottom + 50))
    lines = [
        "encodecgpt_live: play EnCodecGPT from Max.",
        "1. In a terminal: python run_engine.py --feedback 127.0.0.1:"
        f"{FEEDBACK_PORT}",
        f"2. Open encodecgpt_live.maxpat: it sends to 127.0.0.1:{ENGINE_PORT} and listens on "
        f"{FEEDBACK_PORT}.",
        "3. Drop sounds on the four slots, move morph / XY, turn the dials.",
        "Sound into Max: start the engine with --hostapi JACK --jack-name egl (or --device "
        "BlackHole), pick that device",
        "as Max's input (Options > Audio Status), then [adc~ 1 2] -> [sfrecord~ 2] records it, "
        "or -> [dac~ 1 2] to hear it.",
        "Every message the engine accepts (click one to send it):",
    ]
    for row, text in enumerate(lines):
        p.comment(15, 10 + row * 22, text, w=720)
    top = 130 + 2 * 22  # the two adc~ lines
    send = p.obj(15, bottom + 10, f"udpsend 127.0.0.1 {ENGINE_PORT}")
    examples = {"/morph": "0.5", "/morph/xy": "0.5 0.5", "/mix": "0.25 0.25 0.25 0.25",
                "/glide": "0.5", "/temperature": "0.9", "/topk": "50", "/topp": "0.9",
                "/seed": "7", "/prompt/load": "0 /path/to/sound.wav", "/record/start": "take",
                "/gain": "-6.", "/scene/save": "verse", "/scene/recall": "verse",
                "/midi/learn": "/morph", "/prime": "0", "/prime/file": "/path/to/take.wav",
                "/prompt/listen": "1 2.", "/prompt/unlisten": "1", "/guidance": "3.",
                "/prompt/text": "1 breakbeat"}
    for row, a in enumerate(sorted(TABLE.values(), key=lambda a: a.address)):
        y = top + row * 24
        box = p.message(15, y, f"{a.address} {examples.get(a.address, '')}".strip(), w=240)
        p.comment(265, y, a.help[:80], w=480)
        p.connect(box, 0, send)
    return p.json_text()
