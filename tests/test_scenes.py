"""Scenes: ``/scene/save s`` on one engine, a new engine, ``/scene/recall s``: the same slots,
weights and settings, applied as logged controls."""

import json

import numpy as np
from live_helpers import null_engine, wait_until

from osc.dispatcher import OSCDispatcher
from osc.server import build_message

SAVE_GIG = b"/scene/save\x00,s\x00\x00gig\x00"
RECALL_GIG = b"/scene/recall\x00\x00\x00,s\x00\x00gig\x00"
RECALL_NONE = b"/scene/recall\x00\x00\x00,s\x00\x00nope\x00\x00\x00\x00"
SENDER = ("127.0.0.1", 50000)
# /mix 0.1 0.2 0.3 0.4, /temperature 0.7, /topk 40, /topp 0.9, /glide 0.5, /gain -3 (bundle)
SETTINGS = [("/glide", "f", 0.5), ("/mix", "ffff", 0.1, 0.2, 0.3, 0.4),
            ("/temperature", "f", 0.7), ("/topk", "i", 40), ("/topp", "f", 0.9),
            ("/gain", "f", -3.0)]


def _dispatcher(engine, replies):
    return OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args)),
                         log=lambda m: None)


def _send(dispatcher, address, types, *values):
    assert dispatcher.handle(build_message(address, list(values)), SENDER)


def _targets(c) -> dict:
    return {"weights": np.round(c.target_weights, 6).tolist(),
            "temperature": round(c.target_temperature, 6), "top_k": c.top_k,
            "top_p": round(c.target_top_p, 6), "glide": c.glide, "gain_db": c.gain_db}


def test_scene_saved_then_recalled_on_a_restarted_engine(tmp_path):
    scenes = tmp_path / "scenes"
    first = null_engine(tmp_path, slots=4, scenes_dir=scenes)
    replies: list = []
    d = _dispatcher(first, replies)
    first.start()
    try:
        for address, types, *values in SETTINGS:
            _send(d, address, types, *values)
        assert wait_until(lambda: first.generator.controls.gain_db == -3.0)
        saved = _targets(first.generator.controls)
        slots = [s.copy() for s in first.generator.controls.slots]
        assert d.handle(SAVE_GIG, SENDER)
    finally:
        first.stop()
    assert replies[-1] == ("/scene/saved", [str(scenes / "gig.json")])
    assert json.loads((scenes / "gig.json").read_text())["slots"][3]["source"] == "random 3"

    log = tmp_path / "second.jsonl"
    second = null_engine(tmp_path, slots=1, scenes_dir=scenes, control_log=log)
    replies.clear()
    d = _dispatcher(second, replies)
    second.start()
    try:
        assert not d.handle(RECALL_NONE, SENDER)
        assert "no scene 'nope'" in replies[-1][1][0]
        assert d.handle(RECALL_GIG, SENDER) and replies[-1] == ("/scene/recalled", ["gig"])
        assert wait_until(lambda: second.generator.controls.gain_db == -3.0)
        assert _targets(second.generator.controls) == saved
        for a, b in zip(second.generator.controls.slots, slots, strict=True):
            assert np.array_equal(a, b)
        assert second.slot_sources[3] == "random 3"
    finally:
        second.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    logged = {r["address"]: r["values"] for r in records}
    assert np.allclose(logged["/mix"], [0.1, 0.2, 0.3, 0.4], atol=1e-7)
    assert np.isclose(logged["/temperature"][0], saved["temperature"], atol=1e-6)
    assert logged["/topk"] == [40] and np.isclose(logged["/topp"][0], 0.9, atol=1e-6)
    assert logged["/glide"] == [0.5] and logged["/gain"] == [-3.0]
    assert len({r["frame"] for r in records}) == 1  # one bundle: one frame
    assert sum(r["address"] == "/prompt/slot" for r in records) == 4
