"""LiveEngine without a sound card: device fallback, transport, prompt folders, OSC allow-list."""

import time

import numpy as np
import pytest
from conftest import tiny_random_model
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.errors import UserError
from engine.live.engine import LiveConfig
from engine.model.codec import random_codec
from engine.session.live_session import build_live_engine
from osc.server import OSCServer


def _engine(tmp_path, **kw):
    logs = []
    rng = np.random.RandomState(0)
    slots = [rng.randn(128).astype(np.float32) for _ in range(2)]
    config = LiveConfig(window=24, prompt_dirs=[tmp_path], sessions_dir=tmp_path / "s", **kw)
    return build_live_engine(tiny_random_model(), random_codec(0), slots, config,
                      log=logs.append), logs


def test_missing_device_falls_back_to_the_null_sink_and_says_so(tmp_path):
    engine, logs = _engine(tmp_path, device="no-such-device-xyz")
    try:
        assert not engine.is_device
        text = "\n".join(logs)
        assert "no-such-device-xyz" in text and "null sink" in text
        engine.start()
        time.sleep(0.5)
        assert engine.generator.t > 10 and engine.pipeline.error is None
    finally:
        engine.stop()


def test_pause_play_and_panic(tmp_path):
    engine, _ = _engine(tmp_path, device="null")
    engine.start()
    try:
        engine.pause()
        time.sleep(0.2)
        frame = engine.generator.t
        time.sleep(0.3)
        assert engine.generator.t == frame and engine.status()["playing"] == 0
        engine.play()
        time.sleep(0.4)
        assert engine.generator.t > frame
        engine.panic()
        time.sleep(0.3)
        assert engine.status()["playing"] == 0
        engine.play()  # the window reset takes effect before anything new is generated
        time.sleep(0.3)
        assert any(e.address == "/reset" for e in engine.generator.control_log)
    finally:
        engine.stop()


def test_prompt_paths_must_stay_in_the_prompt_folders(tmp_path):
    engine, _ = _engine(tmp_path, device="null")
    try:
        (tmp_path / "ok.npy").write_bytes(b"")
        assert engine.check_prompt_path(str(tmp_path / "ok.npy")) == (tmp_path / "ok.npy")
        for bad in (tmp_path / ".." / "x.npy", "/etc/passwd", tmp_path / "missing.npy"):
            with pytest.raises(UserError):
                engine.check_prompt_path(str(bad))
    finally:
        engine.stop()


def test_allow_list_drops_other_senders(tmp_path):
    engine, _ = _engine(tmp_path, device="null")
    server = OSCServer(engine, port=0, allow=["10.1.2.3"], log=lambda m: None)
    msg = OscMessageBuilder(address="/temperature")
    msg.add_arg(0.3, "f")
    try:
        server.handle(msg.build().dgram, ("127.0.0.1", 9))
        assert server.received == 0 and engine.generator._pending.empty()
        server.handle(msg.build().dgram, ("10.1.2.3", 9))
        assert server.received == 1 and not engine.generator._pending.empty()
    finally:
        server.close()
        engine.stop()


def test_an_osc_bundle_applies_at_one_frame_or_not_at_all(tmp_path):
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

    def bundle(*msgs):
        b = OscBundleBuilder(IMMEDIATELY)
        for address, value in msgs:
            m = OscMessageBuilder(address=address)
            m.add_arg(value, "f")
            b.add_content(m.build())
        return b.build().dgram

    engine, _ = _engine(tmp_path, device="null")
    server = OSCServer(engine, port=0, log=lambda m: None)
    engine.start()
    try:
        server.handle(bundle(("/temperature", 0.3), ("/morph", 0.5), ("/topp", 0.9)),
                      ("127.0.0.1", 9))
        server.handle(bundle(("/temperature", 0.6), ("/morph", 0.2), ("/topp", 0.0)),
                      ("127.0.0.1", 9))  # /topp 0 is out of range: the whole bundle is refused
        time.sleep(0.5)
        log = engine.generator.control_log
        assert [e.address for e in log] == ["/temperature", "/morph", "/topp"]
        assert len({e.frame for e in log}) == 1
        assert engine.generator.controls.temperature == pytest.approx(0.3)
        assert server.errors == 1
    finally:
        server.close()
        engine.stop()
