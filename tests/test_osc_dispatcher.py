"""The OSC dispatcher fed the exact bytes that Max/MSP, Pure Data and TouchOSC send; no sockets.

Every datagram below is written out by hand from the OSC 1.0 encoding (address and type tags
NUL-terminated and padded to 4 bytes, big-endian int32/float32), as each program puts it on
the wire, so these tests do not share an encoder with the code under test.
"""

import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.cli.console import slots_line
from engine.errors import UserError
from engine.live.controls import ControlEvent, ControlState
from engine.live.prompt_loading import PromptLoader
from engine.model.prompt_files import PromptReader
from osc.addresses import REPLIES, TABLE, Address
from osc.dispatcher import HandlerTableError, OSCDispatcher, check_handlers
from osc.server import build_message

SENDER = ("192.168.1.23", 50123)
REPLIES_BY_ADDRESS = {a.address: a for a in REPLIES}

# -- Max/MSP: [prepend /morph] -> [udpsend localhost 9000] ---------------------------------
MAX_MORPH_FLOAT = b"/morph\x00\x00,f\x00\x00\x3f\x00\x00\x00"  # a flonum: 0.5
MAX_TOPK_INT = b"/topk\x00\x00\x00,i\x00\x00\x00\x00\x00\x28"  # an int number box: 40
MAX_MORPH_INT = b"/morph\x00\x00,i\x00\x00\x00\x00\x00\x01"  # an int where a float goes: 1
MAX_PROMPT_LOAD = (b"/prompt/load\x00\x00\x00\x00,is\x00\x00\x00\x00\x02"
                   b"kick.wav\x00\x00\x00\x00")  # [prepend /prompt/load] after "2 kick.wav"
MAX_TEMPERATURE_SYMBOL = b"/temperature\x00\x00\x00\x00,s\x00\x00hot\x00"  # a symbol: wrong

# -- Pure Data vanilla: [oscformat ...] -> [netsend -u -b] ---------------------------------
PD_MORPH = b"/morph\x00\x00,f\x00\x00\x3e\x99\x99\x9a"  # [oscformat morph] <- 0.3
PD_TOPK_FLOAT = b"/topk\x00\x00\x00,f\x00\x00\x42\x20\x00\x00"  # Pd floats only: 40.0
PD_TOPK_FRACTION = b"/topk\x00\x00\x00,f\x00\x00\x42\x22\x00\x00"  # 40.5: not an integer
PD_PROMPT_LOAD = (b"/prompt/load\x00\x00\x00\x00,is\x00\x00\x00\x00\x01"
                  b"pad.wav\x00")  # [oscformat -f is prompt load] <- "1 pad.wav"
PD_PLAY_BANG = b"/play\x00\x00\x00,\x00\x00\x00"  # [oscformat play] <- bang: no arguments

# -- TouchOSC -------------------------------------------------------------------------------
TOSC_FADER = b"/morph\x00\x00,f\x00\x00\x3e\xd7\x0a\x3d"  # 0.42
TOSC_XY = b"/morph/xy\x00\x00\x00,ff\x00\x3f\x82\x8f\x5c\x3f\x40\x00\x00"  # 1.02 (overshoot) 0.75
TOSC_PLAY_PRESS = b"/play\x00\x00\x00,f\x00\x00\x3f\x80\x00\x00"  # a button pressed: 1.0
TOSC_PLAY_RELEASE = b"/play\x00\x00\x00,f\x00\x00\x00\x00\x00\x00"  # released: 0.0
TOSC_RESET_PRESS = b"/reset\x00\x00,f\x00\x00\x3f\x80\x00\x00"

# -- bundles: "#bundle", time tag 1 (immediately), then (int32 size, message) per element --
BUNDLE_HEAD = b"#bundle\x00\x00\x00\x00\x00\x00\x00\x00\x01"
TEMPERATURE_07 = b"/temperature\x00\x00\x00\x00,f\x00\x00\x3f\x33\x33\x33"  # 24 bytes
TEMPERATURE_06 = b"/temperature\x00\x00\x00\x00,f\x00\x00\x3f\x19\x99\x9a"  # 24 bytes
TOPP_0 = b"/topp\x00\x00\x00,f\x00\x00\x00\x00\x00\x00"  # 16 bytes; 0 is below 0.001
PAUSE = b"/pause\x00\x00,\x00\x00\x00"  # 12 bytes
GOOD_BUNDLE = (BUNDLE_HEAD + b"\x00\x00\x00\x10" + MAX_MORPH_FLOAT
               + b"\x00\x00\x00\x18" + TEMPERATURE_07 + b"\x00\x00\x00\x10" + MAX_TOPK_INT)
BAD_BUNDLE = (BUNDLE_HEAD + b"\x00\x00\x00\x0c" + PAUSE + b"\x00\x00\x00\x18" + TEMPERATURE_06
              + b"\x00\x00\x00\x10" + TOPP_0)

# -- wrong -------------------------------------------------------------------------------
TRUNCATED_INT = b"/topk\x00\x00\x00,i\x00\x00\x00\x28"  # the int32 cut after two bytes
UNTERMINATED = b"/prompt/load\x00\x00\x00\x00,is\x00\x00\x00\x00\x02kick"  # no NUL, no pad
UNKNOWN = b"/nowhere\x00\x00\x00\x00,i\x00\x00\x00\x00\x00\x01"
STATUS = b"/status\x00,\x00\x00\x00"
SCHEMA = b"/schema\x00,\x00\x00\x00"


class FakeRecorder:
    def __init__(self, calls: list):
        self.calls, self.recording = calls, False

    def start(self, name=None):
        if self.recording:
            raise UserError("already recording")
        self.recording = True
        self.calls.append(("record/start", name))

    def stop(self):
        self.calls.append(("record/stop",))


class FakeEngine:
    """Records what reaches the engine. ``submit`` checks a bundle with the real
    :class:`ControlState` as the live engine does (all or nothing)."""

    def __init__(self, num_slots: int = 5, filled: int = 4):
        self.controls = ControlState(num_slots=num_slots)
        rng = np.random.RandomState(0)
        for slot in range(filled):
            self.controls.apply(ControlEvent("/prompt/slot", (slot, rng.randn(8))))
        self.bundles: list[list[tuple]] = []
        self.calls: list[tuple] = []
        self.recorder = FakeRecorder(self.calls)

    def submit(self, events):
        trial = copy.deepcopy(self.controls)
        for ev in events:
            trial.apply(ev)  # raises ControlError: nothing below happens
        self.controls = trial
        self.bundles.append([(ev.address, ev.values) for ev in events])

    def play(self):
        self.calls.append(("play",))

    def pause(self):
        self.calls.append(("pause",))

    def panic(self):
        self.calls.append(("panic",))

    def load_prompt(self, slot, path, done, failed):
        self.calls.append(("load", slot, path))
        if path.startswith("/etc/"):
            failed(f"{path}: outside the prompt folders")
        else:
            done(slot, path)

    def status(self):
        return {"rtf": 1.5, "step_ms_p50": 4.0, "step_ms_p99": 9.0, "buffer_ms": 180.0,
                "underruns": 2, "mix": [0.25, 0.75, 0.0, 0.0, 0.0], "morph": 0.75,
                "temperature": 0.9, "topk": 40, "topp": 0.95, "recording": 1, "playing": 1,
                "frame": 750, "device": "null", "peak_db": -6.0, "rms_db": -18.0}

    def info(self):
        return {"compute": "cpu", "weights": "int4", "family": "encodecgpt", "window": 200,
                "mode": "fast"}


@pytest.fixture
def osc():
    """(dispatcher, engine, replies): ``replies`` collects ``(address, args, to)``."""
    engine, replies = FakeEngine(), []
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args, to)),
                               log=lambda m: None)
    return dispatcher, engine, replies


def _errors(replies) -> list[str]:
    return [args[0] for address, args, _ in replies if address == "/error"]


# -- Max/MSP ---------------------------------------------------------------------------------

def test_max_flonum_morph(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(MAX_MORPH_FLOAT, SENDER)
    assert engine.bundles == [[("/morph", (0.5,))]] and replies == []
    assert engine.controls.weights[:2].tolist() == [0.5, 0.5]


def test_max_int_number_box_topk_and_int_morph(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(MAX_TOPK_INT, SENDER)
    assert dispatcher.handle(MAX_MORPH_INT, SENDER)
    assert engine.bundles == [[("/topk", (40,))], [("/morph", (1.0,))]]
    assert type(engine.bundles[0][0][1][0]) is int and type(engine.bundles[1][0][1][0]) is float
    assert engine.controls.top_k == 40 and replies == []


def test_max_prompt_load_int_and_symbol(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(MAX_PROMPT_LOAD, SENDER)
    assert engine.calls == [("load", 2, "kick.wav")]
    assert replies == [("/prompt/loaded", [2, "kick.wav"], SENDER)]


def test_max_symbol_where_a_number_goes_is_an_error(osc):
    dispatcher, engine, replies = osc
    assert not dispatcher.handle(MAX_TEMPERATURE_SYMBOL, SENDER)
    assert replies == [("/error", ["/temperature: expected a number, got str"], SENDER)]
    assert engine.bundles == [] and engine.controls.temperature == 1.0


# -- Pure Data -------------------------------------------------------------------------------

def test_pd_oscformat_float(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(PD_MORPH, SENDER)
    ((address, (value,)),) = engine.bundles[0]
    assert address == "/morph" and value == pytest.approx(0.3, abs=1e-7) and replies == []


def test_pd_sends_whole_floats_to_int_addresses(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(PD_TOPK_FLOAT, SENDER)
    assert engine.bundles == [[("/topk", (40,))]] and type(engine.bundles[0][0][1][0]) is int
    assert not dispatcher.handle(PD_TOPK_FRACTION, SENDER)
    assert _errors(replies) == ["/topk: expected an integer, got 40.5"]
    assert engine.controls.top_k == 40


def test_pd_oscformat_with_f_is_type_tags(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(PD_PROMPT_LOAD, SENDER)
    assert engine.calls == [("load", 1, "pad.wav")]
    assert replies == [("/prompt/loaded", [1, "pad.wav"], SENDER)]


def test_pd_bang_plays(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(PD_PLAY_BANG, SENDER)
    assert engine.calls == [("play",)] and engine.bundles == [] and replies == []


# -- TouchOSC --------------------------------------------------------------------------------

def test_touchosc_fader_and_xy_pad(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(TOSC_FADER, SENDER)
    assert dispatcher.handle(TOSC_XY, SENDER)
    assert engine.bundles[0][0][0] == "/morph"
    assert engine.bundles[0][0][1] == (pytest.approx(0.42, abs=1e-7),)
    assert engine.bundles[1] == [("/morph/xy", (1.0, 0.75))]  # the overshoot is clamped
    assert engine.controls.weights.tolist() == [0.0, 0.25, 0.0, 0.75, 0.0]
    assert replies == []


def test_touchosc_button_acts_on_press_and_ignores_release(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(TOSC_PLAY_PRESS, SENDER)
    assert dispatcher.handle(TOSC_PLAY_RELEASE, SENDER)
    assert dispatcher.handle(TOSC_RESET_PRESS, SENDER)
    assert engine.calls == [("play",)]  # once: the release did nothing
    assert engine.bundles == [[("/reset", ())]] and replies == []
    two_numbers = b"/play\x00\x00\x00,ff\x00\x3f\x80\x00\x00\x3f\x80\x00\x00"
    assert not dispatcher.handle(two_numbers, SENDER)  # not a button: refused as before
    assert _errors(replies) == ["/play expects 0 argument(s) (none), got 2"]


# -- errors ----------------------------------------------------------------------------------

def test_malformed_datagram(osc):
    dispatcher, engine, replies = osc
    no_slash = b"morph\x00\x00\x00,f\x00\x00\x3f\x00\x00\x00"
    for data in (TRUNCATED_INT, UNTERMINATED, b"", b"\xff\xfe", no_slash):
        assert not dispatcher.handle(data, SENDER)
    errors = _errors(replies)
    assert len(errors) == len(replies) == 5 == dispatcher.errors
    assert all(e.startswith("malformed OSC datagram") for e in errors), errors
    assert engine.bundles == [] and engine.calls == []


def test_unknown_address(osc):
    dispatcher, engine, replies = osc
    assert not dispatcher.handle(UNKNOWN, SENDER)
    assert _errors(replies) == ["unknown address /nowhere; send /schema for the list"]
    assert engine.bundles == [] and engine.calls == []


def test_a_control_the_engine_state_refuses(osc):
    dispatcher, engine, replies = osc
    mix_to_empty_slot = (b"/mix\x00\x00\x00\x00,fffff\x00\x00" + b"\x00\x00\x00\x00" * 4
                         + b"\x3f\x80\x00\x00")  # slot 4 was never loaded
    before = engine.controls.weights.copy()
    assert not dispatcher.handle(mix_to_empty_slot, SENDER)
    assert _errors(replies) == ["slot 4 is empty; load a prompt into it first"]
    assert engine.bundles == [] and np.array_equal(engine.controls.weights, before)


# -- bundles ---------------------------------------------------------------------------------

def test_a_bundle_is_one_submit(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(GOOD_BUNDLE, SENDER)
    assert len(engine.bundles) == 1
    assert [a for a, _ in engine.bundles[0]] == ["/morph", "/temperature", "/topk"]
    assert engine.controls.top_k == 40 and replies == []


def test_a_bundle_with_one_bad_message_changes_nothing(osc):
    dispatcher, engine, replies = osc
    assert not dispatcher.handle(BAD_BUNDLE, SENDER)
    assert _errors(replies) == ["/topp: 0.0 is outside [0.001, 1.0]"]
    assert engine.bundles == [] and engine.calls == []  # not even the /pause before it
    assert engine.controls.temperature == 1.0


# -- queries ---------------------------------------------------------------------------------

def test_status_replies_with_the_eleven_fields_in_table_order(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(STATUS, SENDER)
    assert [(a, to) for a, _, to in replies] == [("/engine/status", SENDER),
                                                   ("/engine/mix", SENDER),
                                                   ("/engine/level", SENDER),
                                                   ("/engine/info", SENDER)]
    status = replies[0][1]
    assert status == [1.5, 4.0, 9.0, 180.0, 0.75, 2, 0.9, 0.95, 40, 1, 1]
    # the type tags on the wire are the table's
    wire = build_message("/engine/status", status)
    assert wire[16:28] == b"," + REPLIES_BY_ADDRESS["/engine/status"].types.encode()
    assert replies[1][1] == [0.25, 0.75, 0.0, 0.0, 0.0]
    assert replies[2][1] == [-6.0, -18.0]  # peak, RMS dBFS
    assert replies[3][1] == ["cpu", "int4", "encodecgpt", 200, "fast"]



def test_schema_reply_is_the_table(osc):
    dispatcher, engine, replies = osc
    assert dispatcher.handle(SCHEMA, SENDER)
    ((address, (text,), to),) = replies
    assert address == "/schema" and to == SENDER
    assert {a["address"] for a in json.loads(text)["accepts"]} == set(TABLE)


# -- the handler table -----------------------------------------------------------------------

def test_every_table_entry_has_a_handler_and_every_handler_an_entry(osc):
    dispatcher, _, _ = osc
    check_handlers(TABLE, dispatcher.commands)  # what the constructor checks
    extra_entry = {**TABLE, "/freeze": Address("/freeze", "", "new", kind="command")}
    with pytest.raises(HandlerTableError, match="/freeze"):
        check_handlers(extra_entry, dispatcher.commands)
    extra_control = {**TABLE, "/warp": Address("/warp", "f", "new")}
    with pytest.raises(HandlerTableError, match="/warp"):
        check_handlers(extra_control, dispatcher.commands)
    with pytest.raises(HandlerTableError, match="/rewind"):
        check_handlers(TABLE, {**dispatcher.commands, "/rewind": lambda args, to: True})



# -- buttons: every command takes a press value and ignores a release ------------------------
# (address padded to 4 bytes, then the type tag: ",f" + 1.0/0.0, ",i" + 1/0, ",T", ",F")
def _button_forms(address: bytes) -> dict[str, tuple[bytes, bool]]:
    """The bytes TouchOSC (f), Max toggle → prepend (i) and an OSC boolean (T/F) send for
    ``address``, each with whether it is a press."""
    name = address + b"\x00" * (4 - len(address) % 4)
    return {"f 1": (name + b",f\x00\x00\x3f\x80\x00\x00", True),
            "f 0": (name + b",f\x00\x00\x00\x00\x00\x00", False),
            "i 1": (name + b",i\x00\x00\x00\x00\x00\x01", True),
            "i 0": (name + b",i\x00\x00\x00\x00\x00\x00", False),
            "T": (name + b",T\x00\x00", True),
            "F": (name + b",F\x00\x00", False)}


@pytest.mark.parametrize("address,effect", [
    (b"/play", ("play",)), (b"/pause", ("pause",)), (b"/panic", ("panic",)),
    (b"/record/stop", ("record/stop",)), (b"/reset", "bundle"), (b"/status", "reply"),
    (b"/schema", "reply")])
def test_every_command_acts_on_press_and_ignores_release(osc, address, effect):
    dispatcher, engine, replies = osc
    for form, (data, pressed) in _button_forms(address).items():
        engine.calls.clear(), engine.bundles.clear(), replies.clear()
        assert dispatcher.handle(data, SENDER), (form, replies)
        assert not _errors(replies), form
        acted = {"bundle": engine.bundles == [[("/reset", ())]], "reply": bool(replies)}.get(
            effect, engine.calls == [effect])
        nothing = engine.calls == [] and engine.bundles == [] and replies == []
        assert (acted if pressed else nothing), (address, form, engine.calls, replies)


def test_schema_and_prompt_load_agree_on_the_slot_count(osc):
    dispatcher, engine, replies = osc
    engine.num_slots = 4
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args, to)),
                               log=lambda m: None)
    assert dispatcher.handle(SCHEMA, SENDER)
    schema = json.loads(replies[-1][1][0])
    load = next(a for a in schema["accepts"] if a["address"] == "/prompt/load")
    assert (schema["num_slots"], load["low"], load["high"]) == (4, 0, 3)
    slot_4 = (b"/prompt/load\x00\x00\x00\x00,is\x00\x00\x00\x00\x04"
              b"kick.wav\x00\x00\x00\x00")
    assert not dispatcher.handle(slot_4, SENDER)  # refused by the checked range, like /schema
    assert _errors(replies)[-1] == "/prompt/load: 4 is outside [0, 3]"
    assert not any(c[0] == "load" for c in engine.calls)


def test_a_finished_load_is_confirmed_on_the_console_and_the_status_shows_each_slot():
    engine, replies, logs = FakeEngine(), [], []
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args)),
                               log=logs.append)
    assert dispatcher.handle(MAX_PROMPT_LOAD, SENDER)
    assert logs == ["prompt: loaded kick.wav into slot 2"]
    sources = {0: "sounds/pads/pad.wav", 1: "random", 2: "kick.wav"}
    assert slots_line(sources, 4) == "slots: 0 pad.wav  1 random  2 kick.wav  3 empty"


def test_a_second_load_to_a_slot_supersedes_one_still_waiting(tmp_path):
    """Loads run one at a time; of two waiting for slot 1 only the later reaches the slot,
    the earlier is answered as superseded (nothing is lost silently)."""
    for name, value in [("hold", 0.0), ("a", 1.0), ("b", 2.0)]:
        np.save(tmp_path / f"{name}.npy", np.full(8, value, np.float32))
    release, submitted, done, failed = threading.Event(), [], [], []

    class HoldingReader(PromptReader):
        def read(self, path):
            if Path(path).name == "hold.npy":
                release.wait(10)  # the first load holds the loader while two more queue up
            return super().read(path)

    def submit(events):
        slot, vec = events[0].values
        submitted.append((slot, float(vec[0])))

    # (held in the read, not in submit: the loader queues under its lock, and a submit
    # that blocked there would hold the next load's registration back)
    loader = PromptLoader(HoldingReader(None, expected_dim=8), [tmp_path], 4, submit)
    for slot, name in [(0, "hold"), (1, "a"), (1, "b")]:
        loader.load(slot, str(tmp_path / f"{name}.npy"), lambda s, p: done.append(p),
                    failed.append)
    release.set()
    loader._worker.shutdown(wait=True)
    assert submitted == [(0, 0.0), (1, 2.0)]
    assert [p.rsplit("/", 1)[1] for p in done] == ["hold.npy", "b.npy"]
    assert len(failed) == 1 and "a.npy: superseded by a later /prompt/load to slot 1" in failed[0]
