"""TouchOSC layouts (``.tosc``: zlib-compressed ``lexml`` XML), built from the surface table.

One layout, two frames: a portrait phone and a landscape tablet. Controls send to the
engine over the TouchOSC connection 1 (UDP: the computer's address, port ``ENGINE_PORT``;
receive port ``FEEDBACK_PORT``). Feedback labels read ``/engine/status``, ``/engine/level``
and ``/error`` in a Lua ``onReceiveOSC``. No file drop on a phone: slots are loaded from the
computer; but a slot can follow the live input from the phone: a "listen" toggle per XY
corner sends ``/prompt/listen i`` when pressed and ``/prompt/unlisten i`` when released.
"""

from __future__ import annotations

import uuid
import zlib

from osc.surfaces import BUTTONS, KNOBS

# (x, y, w, h) in a 12 × 20 grid (portrait) and a 20 × 12 grid (landscape).
_PHONE = {"title": (0, 0, 12, 1), "xy": (0, 1, 12, 7), "listen": (0, 8, 12, 1),
          "morph": (0, 9, 12, 1.5),
          "knobs": (0, 10.5, 12, 4.5), "buttons": (0, 15, 12, 1.5), "record": (0, 16.5, 12, 1.5),
          "status": (0, 18, 12, 1), "error": (0, 19, 12, 1)}
_TABLET = {"title": (0, 0, 20, 1), "xy": (0, 1, 9, 8), "listen": (0, 9, 9, 1),
           "morph": (9.5, 1, 10.5, 1.5),
           "knobs": (9.5, 2.5, 10.5, 5), "buttons": (9.5, 7.5, 10.5, 1.5),
           "record": (9.5, 9, 10.5, 1), "status": (0, 10, 20, 1), "error": (0, 11, 20, 1)}
LISTEN_SLOTS = 4  # one toggle per corner of the XY pad
_FRAMES = {"phone": (360, 740, 12, 20, _PHONE), "tablet": (1180, 820, 20, 12, _TABLET)}

STATUS_SCRIPT = """local level = ''
function onReceiveOSC(message, connections)
  local path, args = message[1], message[2]
  if path == '/engine/level' then
    level = string.format('   level %.0f/%.0f dBFS', args[1].value, args[2].value)
  elseif path == '/engine/status' then
    self.values.text = string.format('RTF %.2f   buffer %d ms   underruns %d   %s',
      args[1].value, args[4].value, args[6].value,
      args[11].value == 1 and 'playing' or 'paused') .. level
  end
end"""
ERROR_SCRIPT = """function onReceiveOSC(message, connections)
  local path, args = message[1], message[2]
  if path == '/error' then self.values.text = 'error: ' .. args[1].value end
  if path == '/prompt/loaded' then self.values.text = 'loaded slot ' .. args[1].value end
end"""


def _cdata(text: str) -> str:
    return f"<![CDATA[{text}]]>"


def _prop(kind: str, key: str, value) -> str:
    if kind == "r":
        x, y, w, h = (int(round(v)) for v in value)
        inner = f"<x>{x}</x><y>{y}</y><w>{w}</w><h>{h}</h>"
    elif kind == "c":
        inner = "".join(f"<{c}>{v}</{c}>" for c, v in zip("rgba", value, strict=True))
    else:
        inner = _cdata(str(value))
    return f"<property type='{kind}'><key>{_cdata(key)}</key><value>{inner}</value></property>"


def _value(key: str, default) -> str:
    return (f"<value><key>{_cdata(key)}</key><locked>0</locked><lockedDefaultCurrent>0"
            f"</lockedDefaultCurrent><default>{_cdata(str(default))}</default><defaultPull>0"
            "</defaultPull></value>")


def _partial(kind: str, conversion: str, value: str, low: float = 0, high: float = 1) -> str:
    return (f"<partial><type>{kind}</type><conversion>{conversion}</conversion>"
            f"<value>{_cdata(value)}</value><scaleMin>{low:g}</scaleMin>"
            f"<scaleMax>{high:g}</scaleMax></partial>")


def osc_message(address: str, args: list[str], trigger: str = "x", condition: str = "ANY",
                send: bool = True, receive: bool = False) -> str:
    """One ``<osc>`` entry: constant path, ``args`` as ``<partial>`` strings."""
    return (f"<osc><enabled>1</enabled><send>{int(send)}</send><receive>{int(receive)}"
            "</receive><feedback>0</feedback><connections>00001</connections><triggers>"
            f"<trigger><var>{_cdata(trigger)}</var><condition>{condition}</condition></trigger>"
            f"</triggers><path>{_partial('CONSTANT', 'STRING', address)}</path>"
            f"<arguments>{''.join(args)}</arguments></osc>")


def _node(kind: str, name: str, frame, props=(), values=(), messages=(), children=()) -> str:
    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"encodecgpt-live/{name}")
    props = [_prop("s", "name", name), _prop("r", "frame", frame), *props]
    return (f"<node ID='{ident}' type='{kind}'><properties>{''.join(props)}</properties>"
            f"<values>{''.join(values)}</values><messages>{''.join(messages)}</messages>"
            f"<children>{''.join(children)}</children></node>")


def _label(name: str, frame, text: str, script: str | None = None) -> str:
    props = [_prop("i", "textSize", 14), _prop("c", "textColor", (1, 1, 1, 1))]
    if script:
        props.append(_prop("s", "script", script))
    return _node("LABEL", name, frame, props, [_value("text", text)])


def layout(kind: str) -> bytes:
    """The compressed ``.tosc`` bytes for ``kind`` ('phone' or 'tablet')."""
    width, height, cols, rows, cells = _FRAMES[kind]
    unit = (width / cols, height / rows)

    def box(cell, dx=0.0, dw=None, dy=0.0, dh=None):
        x, y, w, h = cells[cell]
        w = w if dw is None else dw
        h = h - dy if dh is None else dh
        return ((x + dx) * unit[0] + 4, (y + dy) * unit[1] + 4, w * unit[0] - 8,
                h * unit[1] - 8)

    children = [_label("title", box("title"), "encodecgpt-live")]
    children.append(_node("XY", "xy", box("xy"), values=[_value("x", 0), _value("y", 0)],
                          messages=[osc_message("/morph/xy", [_partial("VALUE", "FLOAT", "x"),
                                                              _partial("VALUE", "FLOAT", "y")])]))
    morph, *dials = KNOBS
    children.append(_fader(morph, box("morph"), horizontal=True))
    w = cells["knobs"][2]
    for i, k in enumerate(dials):
        column = {"dx": i * w / len(dials), "dw": w / len(dials)}
        children.append(_label(f"{k.label} label", box("knobs", dh=1, **column), k.label))
        children.append(_fader(k, box("knobs", dy=1, **column)))
    for i, address in enumerate(BUTTONS):
        children.append(_node("BUTTON", address.strip("/"),
                              box("buttons", dx=i * w / len(BUTTONS), dw=w / len(BUTTONS)),
                              values=[_value("x", 0)],
                              messages=[osc_message(address, [], condition="RISE")]))
    lw = cells["listen"][2] / LISTEN_SLOTS
    for k in range(LISTEN_SLOTS):  # the XY pad's corners: follow the live input (--input)
        slot = [_partial("CONSTANT", "INTEGER", str(k))]
        children.append(_node("BUTTON", f"listen {k}", box("listen", dx=k * lw, dw=lw),
                              props=[_prop("i", "buttonType", 1)], values=[_value("x", 0)],
                              messages=[osc_message("/prompt/listen", slot, condition="RISE"),
                                        osc_message("/prompt/unlisten", slot,
                                                    condition="FALL")]))
    children.append(_node("BUTTON", "record", box("record"),
                          props=[_prop("i", "buttonType", 1)], values=[_value("x", 0)],
                          messages=[osc_message("/record/start", [], condition="RISE"),
                                    osc_message("/record/stop", [], condition="FALL")]))
    children.append(_label("status", box("status"), "start the engine with --feedback",
                           STATUS_SCRIPT))
    children.append(_label("error", box("error"), "", ERROR_SCRIPT))
    root = _node("GROUP", f"encodecgpt-live-{kind}", (0, 0, width, height),
                 [_prop("c", "color", (0.12, 0.12, 0.14, 1))], children=children)
    xml = f"<?xml version='1.0' encoding='UTF-8'?><lexml version='3'>{root}</lexml>"
    return zlib.compress(xml.encode("utf-8"), 9)


def _fader(k, frame, horizontal: bool = False) -> str:
    conversion = "INTEGER" if k.integer else "FLOAT"
    props = [_prop("i", "orientation", 1 if horizontal else 0)]
    return _node("FADER", k.label, frame, props, [_value("x", 0)],
                 [osc_message(k.address, [_partial("VALUE", conversion, "x", k.low, k.high)])])
