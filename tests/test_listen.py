"""Play along: a live input as a prompt slot (``--input``, ``/prompt/listen``, ``/unlisten``).

The input here is ``--input file:PATH`` (the same ring and updater as a capture device; a
file fed at real-time pace). The reference for a listening slot's vector is independent of
the updater: the exact input samples it analysed (known from the loop position) written to
a WAV and embedded the way a prompt file is (:meth:`PromptEncoder.prompt`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from live_helpers import TINY_IDENTITY, cli_in_process, free_udp_port, null_engine, wait_until
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.errors import UserError
from engine.live.controls import ControlEvent
from engine.live.engine import EngineListener, LiveConfig
from engine.live.listen.capture import LatestAudio
from engine.model.encodecmae import load_encodecmae
from engine.model.loading.random_model import random_model
from engine.session.live_session import build_live_engine
from engine.session.replay import replay
from osc.dispatcher import OSCDispatcher

SENDER = ("127.0.0.1", 9)


def test_latest_audio_keeps_the_stream_tail_across_the_wrap():
    ring = LatestAudio(rate=1000, seconds=1.0, max_block=64)
    rng = np.random.RandomState(0)
    stream = rng.randn(8000).astype(np.float32)
    pos = 0
    for size in [7, 64, 33, 1, 64] * 40:
        ring.write(stream[pos:pos + size])
        pos += size
        for n in (1, 50, 400):
            got = ring.latest(n)
            if pos < n:
                assert got is None
            else:
                assert np.array_equal(got[0], stream[pos - n:pos]) and got[1] == pos
    stereo = np.stack([stream[:64], -stream[:64] + 1], axis=1)
    ring.write(stereo)
    assert np.allclose(ring.latest(64)[0], 0.5)  # mixed to mono


class _Controls(EngineListener):
    def __init__(self):
        self.entries = []

    def on_control(self, entry):
        self.entries.append(entry)


@pytest.fixture(scope="module")
def encoder(mae_dir, tmp_path_factory):
    return load_encodecmae(str(mae_dir), cache_dir=tmp_path_factory.mktemp("mae-cache"))


def _engine(tmp_path, mae_dir, dim: int, audio: np.ndarray, **config):
    sf.write(tmp_path / "in.wav", audio, 24000, subtype="FLOAT")
    model, codec = random_model(dict(TINY_IDENTITY, prompt_dim=dim))
    rng = np.random.RandomState(1)
    slots = [rng.randn(dim).astype(np.float32) for _ in range(2)]
    fields = dict(window=32, device="null", prompt_dirs=[tmp_path],
                  sessions_dir=tmp_path / "sessions", scenes_dir=tmp_path / "scenes",
                  identity=dict(TINY_IDENTITY, prompt_dim=dim), input=f"file:{tmp_path}/in.wav",
                  listen_interval_s=0.5, **config)
    engine = build_live_engine(model, codec, slots, LiveConfig(**fields), log=lambda m: None,
                               encoder_factory=lambda: load_encodecmae(
                                   str(mae_dir), cache_dir=tmp_path / "cache"))
    controls = _Controls()
    engine.add_listener(controls)
    return engine, controls


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(t)))
            + 0.05 * rng.randn(t.size)).astype(np.float32)


def test_a_listening_slot_gets_the_embedding_of_the_inputs_last_seconds(tmp_path, mae_dir,
                                                                          encoder):
    audio = _tone(5.0)
    engine, controls = _engine(tmp_path, mae_dir, encoder.dim, audio)
    engine.start()
    try:
        assert engine.listen(1, 2.0) == 2.0
        assert wait_until(lambda: engine.listener.updates >= 3, timeout=60)
        engine.unlisten(1)
        end, n = engine.listener.last[1]
        assert wait_until(lambda: sum(e.address == "/prompt/slot" for e in controls.entries)
                          == engine.listener.updates, timeout=10)
        frozen = engine.generator.controls.slots[1].copy()
        updates = engine.listener.updates
        start = engine.generator.t
        assert wait_until(lambda: engine.generator.t > start + 120, timeout=30)  # 1.6 s
    finally:
        engine.stop()
    used = np.take(audio, np.arange(end - n, end), mode="wrap")  # the loop's samples
    sf.write(tmp_path / "used.wav", used, 24000, subtype="FLOAT")
    reference = encoder.prompt(tmp_path / "used.wav")
    assert np.allclose(frozen, reference, atol=1e-5)
    assert engine.listener.updates == updates  # unlisten froze it
    assert np.array_equal(engine.generator.controls.slots[1], frozen)
    logged = [e for e in controls.entries if e.address == "/prompt/slot"]
    assert [e.values[0] for e in logged] == [1] * updates
    assert engine.status()["input_rms_db"] > -30


def test_silence_leaves_the_slot_unchanged(tmp_path, mae_dir, encoder):
    engine, controls = _engine(tmp_path, mae_dir, encoder.dim, np.zeros(48000, np.float32))
    before = engine.generator.controls.slots[1].copy()
    engine.start()
    try:
        engine.listen(1, 1.0)
        assert wait_until(lambda: engine.listener.silent >= 3, timeout=30)
    finally:
        engine.stop()
    assert engine.listener.updates == 0
    assert not [e for e in controls.entries if e.address == "/prompt/slot"]
    assert np.array_equal(engine.generator.controls.slots[1], before)


def test_osc_listen_replies_and_refuses_what_it_cannot_do(tmp_path, mae_dir, encoder):
    engine, _ = _engine(tmp_path, mae_dir, encoder.dim, _tone(2.0))
    replies = []
    dispatcher = OSCDispatcher(engine, reply=lambda a, args, to: replies.append((a, args)),
                               log=lambda m: None)
    def msg(address, *args):
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        return b.build().dgram

    try:
        assert dispatcher.handle(msg("/prompt/listen", 1, 2.5), SENDER)
        assert replies[-1] == ("/prompt/listening", [1, 2.5])
        assert dispatcher.handle(msg("/prompt/listen", 0), SENDER)  # the default length
        assert replies[-1] == ("/prompt/listening", [0, 3.0])
        assert not dispatcher.handle(msg("/prompt/listen", 1, 9.0), SENDER)
        assert "0.5..4" in replies[-1][1][0]
        assert not dispatcher.handle(msg("/prompt/listen", 7), SENDER)  # the engine has 4
        assert dispatcher.handle(msg("/prompt/unlisten", 1), SENDER)
        assert not dispatcher.handle(msg("/prompt/unlisten", 1), SENDER)
        assert "not listening" in replies[-1][1][0]
    finally:
        engine.stop()


def test_listen_without_an_input_is_an_error(tmp_path):
    engine = null_engine(tmp_path)
    with pytest.raises(UserError, match="start the engine with --input"):
        engine.listen(0)
    engine.stop()


@pytest.mark.parametrize("spec", ["999", "file:/nonexistent/take.wav"])
def test_an_input_that_is_not_there_is_one_line_before_the_model_loads(capsys, spec):
    proc = cli_in_process(capsys, "--random-weights", "--preset", "tiny", "--device", "null",
                          "--input", spec, "--osc-port", str(free_udp_port()), "--seconds", "1")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"--input {spec}" in lines[0], proc.stderr
    assert "weights:" not in proc.stderr  # refused before the engine's choice and the model


@pytest.mark.slow
def test_a_recorded_listening_session_replays_without_the_input(tmp_path, mae_dir, encoder):
    played = _tone(4.0, seed=3)
    engine, _ = _engine(tmp_path, mae_dir, encoder.dim, played)
    engine.start()
    try:
        assert wait_until(lambda: engine.generator.t > 10, timeout=60)
        engine.recorder.start("listening")
        assert wait_until(lambda: engine.recorder.recording, timeout=30)
        engine.listen(1, 1.5)
        engine.submit([ControlEvent("/morph", (1.0,))])  # hear the listening slot
        assert wait_until(lambda: engine.listener.updates >= 3, timeout=60)
        start = engine.generator.t  # the last vector was submitted: let a boundary apply it
        assert wait_until(lambda: engine.generator.t > start + 5, timeout=30)
        engine.recorder.stop()
        assert wait_until(lambda: not engine.recorder.recording, timeout=30)
    finally:
        engine.stop()
    (folder,) = (tmp_path / "sessions").iterdir()
    logged = (folder / "controls.jsonl").read_text().count("/prompt/slot")
    assert logged >= 3
    tokens, _ = replay(folder)
    assert np.array_equal(tokens, np.load(folder / "tokens.npy"))
    # input.wav: what came in, sample for sample (the file, looped, from where the take
    # began), at the input's rate, about as long as the take.
    heard, rate = sf.read(folder / "input.wav", dtype="float32")
    info = json.loads((folder / "session.json").read_text())
    assert rate == 24000 and info["input_samples"] == len(heard) > 0
    assert info["input_lost_samples"] == 0
    loop = np.concatenate([played] * (len(heard) // len(played) + 2))
    starts = [k for k in range(len(played)) if np.array_equal(loop[k:k + 64], heard[:64])]
    assert len(starts) == 1, len(starts)
    assert np.array_equal(heard, loop[starts[0]:starts[0] + len(heard)])
    assert abs(len(heard) / rate - len(tokens) / 75) < 1.0, (len(heard), len(tokens))
