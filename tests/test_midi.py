"""MIDI → engine: a CC stream mapped to /morph moves the morph, MIDI-learn binds a CC, notes
pick slots; fed in-process as ``mido`` messages through the real OSC dispatcher and engine."""

import json

import pytest
from live_helpers import null_engine, wait_until

from osc.dispatcher import OSCDispatcher
from osc.midi import CCBinding, MidiMapper, open_midi_input, read_mapping

mido = pytest.importorskip("mido", reason="mido not installed (pip install .[midi])")

LEARN_TEMPERATURE = b"/midi/learn\x00,s\x00\x00/temperature\x00\x00\x00\x00"
SENDER = ("127.0.0.1", 50000)


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_cc_stream_moves_the_morph_and_learn_binds_a_cc(tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"cc": [{"cc": 1, "address": "/morph"}],
                                   "notes": [{"note": 36, "slot": 1}]}))
    log = tmp_path / "controls.jsonl"
    engine = null_engine(tmp_path, slots=4, control_log=log)
    replies: list = []
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args)),
                               log=lambda m: None)
    mapper = MidiMapper(dispatcher.handle, *read_mapping(mapping), save_to=mapping,
                        log=lambda m: None)
    dispatcher.midi = mapper
    engine.start()
    try:
        for value in (32, 64, 127, 0):  # a fader moved on channel 1, one value a frame
            # (values arriving within one frame coalesce to the last: the log holds what
            # was applied, so let each be applied before the next)
            mapper.handle(mido.Message("control_change", channel=0, control=1, value=value))
            assert wait_until(lambda v=value: abs(engine.generator.controls.weights[1]
                                                  - v / 127) < 1e-6)
        assert dispatcher.handle(LEARN_TEMPERATURE, SENDER) and mapper.learning
        mapper.handle(mido.Message("control_change", channel=2, control=74, value=127))
        assert wait_until(lambda: engine.generator.controls.target_temperature == 2.0)
        mapper.handle(mido.Message("control_change", channel=2, control=74, value=0))
        mapper.handle(mido.Message("note_on", note=36, velocity=100))
        assert wait_until(lambda: engine.generator.controls.temperature == 0.0)
    finally:
        engine.stop()
    assert not [r for r in replies if r[0] == "/error"], replies
    morphs = [r["values"][0] for r in _log(log) if r["address"] == "/morph"]
    assert morphs == pytest.approx([32 / 127, 64 / 127, 1.0, 0.0], abs=1e-6)
    temps = [r["values"][0] for r in _log(log) if r["address"] == "/temperature"]
    assert temps == pytest.approx([2.0, 0.0])  # the surfaces' temperature range, 0..2
    mixes = [r["values"] for r in _log(log) if r["address"] == "/mix"]
    assert mixes == [[0.0, 1.0]]  # note 36 -> all weight on slot 1
    saved = json.loads(mapping.read_text())["cc"]
    assert {"cc": 74, "address": "/temperature", "low": 0.0, "high": 2.0,
            "channel": 3} in saved


def test_learn_refuses_an_address_without_one_number(tmp_path):
    replies: list = []
    engine = null_engine(tmp_path)
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args)),
                               log=lambda m: None)
    assert not dispatcher.handle(LEARN_TEMPERATURE, SENDER)  # no --midi
    assert "start with --midi" in replies[-1][1][0]
    dispatcher.midi = MidiMapper(dispatcher.handle, log=lambda m: None)
    learn_xy = b"/midi/learn\x00,s\x00\x00/morph/xy\x00\x00\x00"
    assert not dispatcher.handle(learn_xy, SENDER)
    assert "take one number" in replies[-1][1][0] and dispatcher.midi.learning is None


def test_a_real_virtual_midi_port_reaches_the_mapper():
    got = []
    try:
        out = mido.open_output("egl-test", virtual=True)
    except Exception as e:  # no ALSA sequencer (/dev/snd/seq) in this machine
        pytest.skip(f"no MIDI system to open a virtual port: {e}")
    mapper = MidiMapper(lambda data, sender: got.append(data) or True,
                        [CCBinding(7, "/gain", -60.0, 6.0)],
                        log=lambda m: None)
    port = open_midi_input("egl-test", mapper)
    try:
        out.send(mido.Message("control_change", control=7, value=127))
        assert wait_until(lambda: got)
        assert got[0].startswith(b"/gain\x00")
    finally:
        port.close()
        out.close()
