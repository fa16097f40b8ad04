"""LiveEngine without a sound card: device fallback, transport, /reset and /panic, prompt
folders, OSC allow-list and bundles."""

import gc
import socket
import threading
import time

import pytest
import torch
from live_helpers import null_engine, wait_until
from pythonosc.osc_message_builder import OscMessageBuilder

from engine import HOP_LENGTH, SAMPLE_RATE
from engine.errors import UserError
from engine.live.controls import ControlEvent
from engine.live.engine import EngineListener
from osc.server import OSCServer


def _engine(tmp_path, **kw):
    logs = []
    return null_engine(tmp_path, log=logs.append, **kw), logs


class Tap(EngineListener):
    """Rows by frame, the applied controls, and the audio written after :meth:`mark`."""

    def __init__(self):
        self.rows: dict[int, torch.Tensor] = {}
        self.controls = []
        self.marked = threading.Event()
        self.samples_after_mark = 0

    def on_row(self, frame, row):
        self.rows[frame] = row.clone()

    def on_control(self, entry):
        self.controls.append(entry)

    def on_audio(self, block, start24, rate):
        if self.marked.is_set():
            self.samples_after_mark += len(block)

    def frame_of(self, address: str) -> int:
        return next(e.frame for e in self.controls if e.address == address)


def _greedy_engine(tmp_path, **kw):
    """A started engine sampling greedily from frame 0 (same prompt, same rows)."""
    engine, _ = _engine(tmp_path, **kw)
    tap = Tap()
    engine.add_listener(tap)
    engine.submit([ControlEvent("/temperature", (0.0,))])
    engine.start()
    return engine, tap


def _fresh_sequence_after(tap: Tap, frame: int, n: int = 16) -> bool:
    """Rows ``frame..frame+n-1`` are the first ``n`` rows of the session again: greedy with
    the same prompt, so equal exactly when nothing before ``frame`` is in the window."""
    return all(torch.equal(tap.rows[frame + i], tap.rows[i]) for i in range(n))


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


def test_pause_and_play(tmp_path):
    engine, _ = _engine(tmp_path)
    engine.start()
    try:
        engine.pause()
        time.sleep(0.2)
        frame = engine.generator.t
        time.sleep(0.3)
        assert engine.generator.t == frame and engine.status()["playing"] == 0
        engine.play()
        time.sleep(0.4)
        assert engine.generator.t > frame and engine.status()["playing"] == 1
    finally:
        engine.stop()


def test_a_playing_engine_keeps_its_startup_objects_out_of_the_collectors_sight(tmp_path):
    """A full collection over torch, the model and the codec holds the GIL for ~165 ms (an
    audible stall); while the engine plays they are frozen, and released when it stops."""
    engine, _ = _engine(tmp_path)
    gc.unfreeze()
    engine.start()
    try:
        assert gc.get_freeze_count() > 10_000  # the model and the codec at least
    finally:
        engine.stop()
    assert gc.get_freeze_count() == 0  # a stopped engine's objects can be collected again


def test_osc_reset_starts_a_fresh_sequence_at_its_frame(tmp_path):
    engine, tap = _greedy_engine(tmp_path)
    server = OSCServer(engine, port=0, log=lambda m: None)
    try:
        assert wait_until(lambda: engine.generator.t > 40, timeout=30)
        assert not _fresh_sequence_after(tap, 20)  # the window's history shapes the rows
        server.handle(OscMessageBuilder(address="/reset").build().dgram, ("127.0.0.1", 9))
        assert wait_until(lambda: any(e.address == "/reset" for e in tap.controls))
        reset = tap.frame_of("/reset")
        assert wait_until(lambda: reset + 16 in tap.rows, timeout=30)
        assert _fresh_sequence_after(tap, reset)
    finally:
        server.close()
        engine.stop()


def test_panic_drops_buffered_audio_pauses_and_resets_the_window(tmp_path):
    engine, tap = _greedy_engine(tmp_path, buffer_s=0.5)
    sink = engine.output.sink  # the null sink itself
    try:
        assert wait_until(lambda: sink.buffered_s > 0.35, timeout=30), "the buffer never filled"
        buffered = int(sink.buffered_s * SAMPLE_RATE)
        consumed = sink.consumed
        tap.marked.set()
        engine.panic()
        assert engine.status()["playing"] == 0
        time.sleep(1.0)  # what was buffered would have played by now
        frame = engine.generator.t
        time.sleep(0.3)
        assert engine.generator.t == frame, "paused: nothing generated"
        # Played since the panic: what the decoder still wrote (rows already generated) and
        # at most the rest of one decode chunk and one period; not what was buffered.
        played = sink.consumed - consumed
        in_flight = engine.pipeline.decode_chunk * HOP_LENGTH + 2 * sink.block
        assert played <= tap.samples_after_mark + in_flight < buffered + tap.samples_after_mark
        engine.play()  # the window reset takes effect before anything new is generated
        assert wait_until(lambda: frame + 16 in tap.rows, timeout=30)
        assert tap.frame_of("/reset") == frame and _fresh_sequence_after(tap, frame)
    finally:
        engine.stop()


def test_prompt_paths_must_stay_in_the_prompt_folders(tmp_path):
    engine, _ = _engine(tmp_path)
    try:
        (tmp_path / "ok.npy").write_bytes(b"")
        assert engine.check_prompt_path(str(tmp_path / "ok.npy")) == (tmp_path / "ok.npy")
        for bad in (tmp_path / ".." / "x.npy", "/etc/passwd", tmp_path / "missing.npy"):
            with pytest.raises(UserError):
                engine.check_prompt_path(str(bad))
    finally:
        engine.stop()


def test_allow_list_drops_other_senders(tmp_path):
    engine, _ = _engine(tmp_path)
    server = OSCServer(engine, port=0, allow=["10.1.2.3"], log=lambda m: None)
    msg = OscMessageBuilder(address="/temperature")
    msg.add_arg(0.3, "f")
    try:
        server.handle(msg.build().dgram, ("127.0.0.1", 9))
        engine.generator.step()  # applies whatever was queued
        assert server.received == 0 and engine.generator.controls.temperature == 1.0
        server.handle(msg.build().dgram, ("10.1.2.3", 9))
        engine.generator.step()
        assert server.received == 1
        assert engine.generator.controls.target_temperature == pytest.approx(0.3)
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

    engine, _ = _engine(tmp_path)
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


def test_null_sink_counts_no_underruns_while_paused(tmp_path):
    engine, _ = _engine(tmp_path)
    engine.start()
    try:
        engine.pause()
        time.sleep(0.5)  # the buffered audio drains, then the sink runs dry: paused, not late
        before = engine.status()["underruns"]
        time.sleep(1.0)  # ~47 periods of 512 samples
        assert engine.status()["underruns"] == before
        engine.play()
        assert wait_until(lambda: engine.generator.t > 0)
    finally:
        engine.stop()


def test_an_osc_burst_waits_in_the_socket_instead_of_being_dropped(tmp_path):
    """3 000 messages arrive while the ``osc`` thread is not reading (e.g. busy with a scene
    recall): the grown receive buffer holds them all; the kernel's default one (212 KiB,
    about 300 such datagrams) would drop most of them."""
    engine, _ = _engine(tmp_path)
    server = OSCServer(engine, port=0, log=lambda m: None)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    plain.close()
    assert server.rcvbuf == server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if server.rcvbuf < 4 * default:
        server.close()
        engine.stop()
        pytest.skip(f"the kernel grants only {server.rcvbuf} bytes (net.core.rmem_max)")
    msg = OscMessageBuilder(address="/temperature")
    msg.add_arg(0.5, "f")
    data = msg.build().dgram
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(3000):
            client.sendto(data, server.address)
        server.start()
        # Identical values: all but the last of each batch are skipped before parsing (the
        # osc thread reads batches of 512; the reader process coalesces 4 ms at a time)
        assert wait_until(lambda: server.received + server.coalesced == 3000, timeout=20), \
            (server.received, server.coalesced)
        assert server.received >= (3000 // 512 if server.reader == "thread" else 1)
    finally:
        client.close()
        server.close()
        engine.stop()
