"""The Pure Data vanilla patch (``encodecgpt_live.pd``), built from the surface table.

Data path: each widget → ``[oscformat ...]`` → ``[s egl-osc]``; one ``[r egl-osc]`` →
``[list prepend send]`` → ``[list trim]`` → ``[netsend -u -b]`` to the engine.
Feedback: ``[netreceive -u -b]`` (port ``FEEDBACK_PORT``) → ``[oscparse]`` → ``[route]`` →
number boxes (RTF, buffer, underruns; peak and RMS level) and message boxes (last error,
loaded slot, record).

Every widget also has a receive name (``egl-morph``, ``egl-load-0``, ``egl-connect HOST
PORT``, ``egl-listen PORT`` ...) so other patches, and the tests, can play it.
"""

from __future__ import annotations

from osc.surfaces import BUTTONS, ENGINE_PORT, FEEDBACK_PORT, KNOBS, SLOTS

_COLORS = "-262144 -1 -1"


class PdPatch:
    """Lines of a Pd file; every object-creating method returns its index."""

    def __init__(self, width: int = 900, height: int = 620):
        self.lines = [f"#N canvas 40 40 {width} {height} 12;"]
        self.count = 0

    def _add(self, line: str) -> int:
        self.lines.append(line + ";")
        self.count += 1
        return self.count - 1

    def obj(self, x: int, y: int, text: str) -> int:
        return self._add(f"#X obj {x} {y} {text}")

    def msg(self, x: int, y: int, text: str) -> int:
        return self._add(f"#X msg {x} {y} {text}")

    def text(self, x: int, y: int, text: str) -> int:
        escaped = text.replace(",", " \\,").replace(";", " \\;")
        return self._add(f"#X text {x} {y} {escaped}")

    def floatatom(self, x: int, y: int, receive: str = "-", width: int = 6) -> int:
        return self._add(f"#X floatatom {x} {y} {width} 0 0 0 - {receive} - 0")

    def symbolatom(self, x: int, y: int, receive: str = "-", width: int = 14) -> int:
        return self._add(f"#X symbolatom {x} {y} {width} 0 0 0 - {receive} - 0")

    def hsl(self, x: int, y: int, low: float, high: float, receive: str, label: str) -> int:
        label = label.replace(" ", "_")  # iemgui labels are one atom
        return self.obj(x, y, f"hsl 160 18 {low:g} {high:g} 0 0 empty {receive} {label} -2 -10 "
                              f"0 12 {_COLORS} 0 1")

    def vsl(self, x: int, y: int, receive: str, label: str) -> int:
        return self.obj(x, y, f"vsl 18 100 0 1 0 0 empty {receive} {label} 0 -10 0 12 "
                              f"{_COLORS} 0 1")

    def bng(self, x: int, y: int, receive: str, label: str) -> int:
        return self.obj(x, y, f"bng 30 250 50 0 empty {receive} {label} 0 -10 0 12 {_COLORS}")

    def tgl(self, x: int, y: int, receive: str, label: str) -> int:
        return self.obj(x, y, f"tgl 30 0 empty {receive} {label} 0 -10 0 12 {_COLORS} 0 1")

    def connect(self, src: int, outlet: int, dst: int, inlet: int) -> None:
        self.lines.append(f"#X connect {src} {outlet} {dst} {inlet};")

    def chain(self, *nodes: int) -> None:
        for a, b in zip(nodes, nodes[1:], strict=False):
            self.connect(a, 0, b, 0)

    def text_file(self) -> str:
        return "\n".join(self.lines) + "\n"


def _oscformat(address: str, types: str = "") -> str:
    flag = f"-f {types} " if types else ""
    return f"oscformat {flag}{' '.join(address.strip('/').split('/'))}"


def patch() -> str:
    p = PdPatch()
    p.text(20, 10, f"encodecgpt-live: start the engine with --feedback 127.0.0.1:{FEEDBACK_PORT}"
                   f", then play. Sends to localhost:{ENGINE_PORT}.")
    _network(p)
    _knobs(p)
    _xy_and_mix(p)
    _transport_and_record(p)
    _slots(p)
    _feedback(p)
    return p.text_file()


def _network(p: PdPatch) -> None:
    """loadbang → connect; egl-connect HOST PORT reconnects; egl-osc → netsend."""
    load = p.obj(20, 560, "loadbang")
    first = p.msg(20, 590, f"connect localhost {ENGINE_PORT}")
    netsend = p.obj(240, 590, "netsend -u -b")
    p.chain(load, first, netsend)
    again = p.obj(120, 500, "r egl-connect")
    order = p.obj(120, 530, "t a b")
    disconnect = p.msg(200, 560, "disconnect")
    connect = p.obj(120, 560, "list prepend connect")
    trim = p.obj(120, 590, "list trim")
    p.chain(again, order, connect)
    p.connect(order, 1, disconnect, 0)
    p.connect(disconnect, 0, netsend, 0)
    p.chain(connect, trim, netsend)
    osc = p.obj(380, 530, "r egl-osc")
    prepend = p.obj(380, 560, "list prepend send")
    trim2 = p.obj(380, 590, "list trim")
    p.chain(osc, prepend, trim2, netsend)
    status = p.floatatom(240, 620, width=2)
    p.connect(netsend, 0, status, 0)
    p.text(270, 620, "connected")


def _to_osc(p: PdPatch, x: int, y: int, source: int, address: str, types: str = "") -> None:
    fmt = p.obj(x, y, _oscformat(address, types))
    out = p.obj(x, y + 25, "s egl-osc")
    p.chain(source, fmt, out)


def _knobs(p: PdPatch) -> None:
    for row, k in enumerate(KNOBS):
        y = 60 + row * 70
        name = "egl-" + k.address.strip("/").replace("/", "-")
        slider = p.hsl(20, y, k.low, k.high, name, k.label)
        if k.integer:
            whole = p.obj(200, y, "i")
            p.connect(slider, 0, whole, 0)
            _to_osc(p, 240, y, whole, k.address, "i")
        else:
            _to_osc(p, 200, y, slider, k.address)


def _xy_and_mix(p: PdPatch) -> None:
    x = p.hsl(420, 60, 0, 1, "egl-xy-x", "xy:_x_(slots_0>1)")
    y = p.hsl(420, 110, 0, 1, "egl-xy-y", "xy:_y_(slots_0>2)")
    pack = p.obj(620, 110, "pack f f")
    hold = p.obj(620, 80, "t b f")
    p.connect(x, 0, pack, 0)
    p.connect(y, 0, hold, 0)
    p.connect(hold, 1, pack, 1)
    p.connect(hold, 0, pack, 0)
    _to_osc(p, 620, 140, pack, "/morph/xy")
    p.text(420, 200, "mix: weights of slots 0-3")
    mix = p.obj(420, 350, "pack f f f f")
    for k in range(SLOTS):
        slider = p.vsl(420 + k * 40, 230, f"egl-mix-{k}", str(k))
        if k == 0:
            p.connect(slider, 0, mix, 0)
        else:
            hold = p.obj(420 + k * 40, 340 - 10 * k, "t b f")
            p.connect(slider, 0, hold, 0)
            p.connect(hold, 1, mix, k)
            p.connect(hold, 0, mix, 0)
    _to_osc(p, 420, 380, mix, "/mix")
    seed = p.floatatom(560, 200, "egl-seed", width=8)
    p.text(630, 200, "seed")
    whole = p.obj(560, 230, "i")
    p.connect(seed, 0, whole, 0)
    _to_osc(p, 560, 260, whole, "/seed", "i")


def _transport_and_record(p: PdPatch) -> None:
    for col, address in enumerate(BUTTONS):
        name = address.strip("/").replace("/", "-")
        button = p.bng(20 + col * 60, 420, f"egl-{name}", name)
        _to_osc(p, 20 + col * 60, 460, button, address)
    toggle = p.tgl(340, 420, "egl-record", "record")
    p.text(380, 420, "name:")
    name = p.symbolatom(420, 420, "egl-record-name")
    held = p.obj(420, 450, "symbol take")
    p.connect(name, 0, held, 1)
    which = p.obj(340, 480, "sel 0")
    p.connect(toggle, 0, which, 0)
    _to_osc(p, 310, 510, which, "/record/stop")
    start = p.obj(390, 480, "t b")
    p.connect(which, 1, start, 0)
    p.connect(start, 0, held, 0)
    _to_osc(p, 420, 480, held, "/record/start", "s")


def _slots(p: PdPatch) -> None:
    p.text(700, 40, "prompt slots: click to choose a sound")
    for k in range(SLOTS):
        y = 70 + k * 60
        button = p.bng(700, y, f"egl-open-{k}", f"slot_{k}")
        panel = p.obj(740, y, "openpanel")
        p.connect(button, 0, panel, 0)
        path = p.obj(740, y + 25, f"r egl-load-{k}")
        slot = p.obj(820, y, f"list prepend {k}")
        p.connect(panel, 0, slot, 0)
        p.connect(path, 0, slot, 0)
        _to_osc(p, 820, y + 25, slot, "/prompt/load", "is")
    y = 70 + SLOTS * 60
    p.text(700, y, "continue slot (prime):")
    fmt = p.obj(700, y + 55, _oscformat("/prime", "i"))
    p.connect(fmt, 0, p.obj(700, y + 80, "s egl-osc"), 0)
    for k in range(SLOTS):  # click a number: /prime k
        p.connect(p.msg(700 + k * 40, y + 25, str(k)), 0, fmt, 0)
    for row, (address, label) in enumerate((("/prompt/listen", "slot follows --input:"),
                                            ("/prompt/unlisten", "freeze slot:"))):
        y0 = y + 110 + row * 110
        p.text(700, y0, label)
        fmt = p.obj(700, y0 + 55, _oscformat(address, "i"))
        p.connect(fmt, 0, p.obj(700, y0 + 80, "s egl-osc"), 0)
        for k in range(SLOTS):  # click a number: listen / unlisten slot k
            p.connect(p.msg(700 + k * 40, y0 + 25, str(k)), 0, fmt, 0)


def _feedback(p: PdPatch) -> None:
    load = p.obj(560, 430, "loadbang")
    port = p.msg(560, 455, f"listen {FEEDBACK_PORT}")
    again = p.obj(650, 430, "r egl-listen")
    listen = p.obj(650, 455, "list prepend listen")
    trim = p.obj(650, 480, "list trim")
    receive = p.obj(560, 505, "netreceive -u -b")
    p.chain(load, port, receive)
    p.chain(again, listen, trim, receive)
    parse = p.obj(560, 530, "oscparse")
    strip = p.obj(560, 555, "list trim")
    route = p.obj(560, 580, "route engine error prompt record")
    p.chain(receive, parse, strip, route)
    engine = p.obj(700, 610, "route status level")
    p.connect(route, 0, engine, 0)
    levels = p.obj(1010, 635, "unpack f f")  # /engine/level: peak, RMS dBFS
    p.connect(engine, 1, levels, 0)
    for col, label in enumerate(("peak_db", "rms_db")):
        atom = p.floatatom(1010 + col * 60, 665)
        p.connect(levels, col, atom, 0)
        p.text(1010 + col * 60, 690, label)
    fields = p.obj(700, 635, "unpack f f f f f f f f f f f")
    p.connect(engine, 0, fields, 0)
    for col, (index, label) in enumerate(((0, "RTF"), (3, "buffer_ms"), (5, "underruns"),
                                          (4, "morph"), (6, "temp"))):
        atom = p.floatatom(700 + col * 60, 665)
        p.connect(fields, index, atom, 0)
        p.text(700 + col * 60, 690, label)
    for col, (outlet, label) in enumerate(((1, "error"), (2, "prompt"), (3, "record"))):
        x, y = 560, 720 + col * 30
        shown = p.obj(x, y, "list prepend set")
        trim = p.obj(x + 130, y, "list trim")
        box = p.msg(x + 220, y, "-")
        printer = p.obj(x + 130, y + 15, f"print egl-{label}")
        p.connect(route, outlet, shown, 0)
        p.connect(route, outlet, printer, 0)
        p.chain(shown, trim, box)
