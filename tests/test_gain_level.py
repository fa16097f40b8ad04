"""``/gain`` (dB, ramped, applied at a frame, recorded after gain) and the level meter."""

import numpy as np
import pytest
import torch
from conftest import tiny_random_model

from engine import HOP_LENGTH, SAMPLE_RATE
from engine.live.audio.gain import GainRamp, db_to_gain
from engine.live.audio.level import LevelMeter
from engine.live.audio.sinks import MemorySink
from engine.live.control_input import initial_controls
from engine.live.controls import ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator
from engine.live.pipeline import Pipeline
from engine.model.codec import random_codec


def _render(gain_at: dict[int, float], frames: int = 90, chunk: int = 5) -> np.ndarray:
    model, codec = tiny_random_model(), random_codec(0)
    rng = np.random.RandomState(1)
    gen = RollingGenerator(model, initial_controls([rng.randn(128).astype(np.float32)]),
                           window=16, mode="fast", hop=4, seed=3)
    for frame, db in gain_at.items():
        gen.schedule(frame, [ControlEvent("/gain", (db,))])
    sink = MemorySink()
    Pipeline(gen, StreamingDecoder(codec.model), sink, decode_chunk=chunk).run(frames)
    gen.close()
    return sink.audio


def test_gain_applies_at_its_frame_with_a_20_ms_ramp_and_is_in_the_output():
    torch.manual_seed(0)
    plain = _render({})
    louder = _render({40: -12.0}, chunk=3)  # another chunking: the same samples
    start = (40 - 7) * HOP_LENGTH  # row 40 completes frame 33: heard with the next frame
    assert np.abs(plain) .max() > 0.01
    np.testing.assert_allclose(louder[:start], plain[:start], atol=1e-6)
    after = start + 480
    np.testing.assert_allclose(louder[after:], plain[after:] * db_to_gain(-12.0),
                               rtol=1e-5, atol=1e-7)
    ratio = louder[start:after] / np.where(plain[start:after] == 0, 1, plain[start:after])
    ramp = 1 + (db_to_gain(-12.0) - 1) * np.arange(1, 481) / 480
    mask = np.abs(plain[start:after]) > 1e-4
    np.testing.assert_allclose(ratio[mask], ramp[mask], rtol=1e-4)


@pytest.mark.parametrize("from_db,to_db", [(-60.0, 6.0), (6.0, -60.0), (-20.0, 0.0)])
def test_gain_change_step_bound(from_db, to_db):
    """The largest sample step at a gain change stays within max gain × the signal's own
    largest step + peak × |Δg| / 480 (what a switch without ramp would exceed)."""
    t = np.arange(SAMPLE_RATE // 5) / SAMPLE_RATE
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = len(x) // HOP_LENGTH
    targets = [from_db] * (frames // 2) + [to_db] * (frames - frames // 2)
    y = x[: frames * HOP_LENGTH].copy()
    GainRamp().process(y, targets)
    g0, g1 = db_to_gain(from_db), db_to_gain(to_db)
    own = np.abs(np.diff(x)).max()
    bound = max(g0, g1) * own + 0.5 * abs(g1 - g0) / 480
    assert np.abs(np.diff(y)).max() <= bound * (1 + 1e-5)
    switched = x[: frames * HOP_LENGTH] * np.repeat([db_to_gain(d) for d in targets],
                                                     HOP_LENGTH)
    # the bound says something: an unramped switch at the same sample breaks it (the sine is
    # near its peak there)
    if abs(g1 - g0) > 0.5:
        assert np.abs(np.diff(switched)).max() > bound


def test_gain_state_is_kept_and_old_states_read_as_0_db():
    c = ControlState(num_slots=2)
    c.apply(ControlEvent("/gain", (9.0,)))  # clamped to the ceiling
    assert c.gain_db == 6.0 and c.copy().gain_db == 6.0
    old = c.get_state()
    del old["master_gain_db"]  # a session recorded before /gain
    d = ControlState(num_slots=2)
    d.set_state(old)
    assert d.gain_db == 0.0


def test_level_meter_matches_the_audio_it_measured():
    rng = np.random.RandomState(0)
    meter, blocks = LevelMeter(window_s=0.1), []
    for n in (2560, 1600, 2560, 2560):
        blocks.append((0.2 * rng.randn(n)).astype(np.float32))
        meter.add(blocks[-1])
    level = meter.read()
    audio = np.concatenate(blocks)
    last = audio[level["end"] - level["count"]:level["end"]]
    assert level["end"] == audio.size and level["count"] >= 2400
    rms_db = 20 * np.log10(np.sqrt(np.mean(last.astype(np.float64) ** 2)))
    assert abs(level["rms_db"] - rms_db) < 0.5
    assert abs(level["peak_db"] - 20 * np.log10(np.abs(last).max())) < 0.01
    assert LevelMeter().read()["rms_db"] == -120.0


def test_pipeline_level_is_that_of_the_audio_it_sent_after_gain():
    model, codec = tiny_random_model(), random_codec(0)
    rng = np.random.RandomState(2)
    gen = RollingGenerator(model, initial_controls([rng.randn(128).astype(np.float32)]),
                           window=16, mode="fast", hop=4, seed=3)
    gen.schedule(10, [ControlEvent("/gain", (-9.0,))])
    sent = []
    pipe = Pipeline(gen, StreamingDecoder(codec.model), MemorySink(), decode_chunk=4,
                    on_audio=lambda block, start: sent.append(block.copy()))
    pipe.run(60)
    gen.close()
    level, audio = pipe.level.read(), np.concatenate(sent)
    last = audio[level["end"] - level["count"]:level["end"]].astype(np.float64)
    assert level["end"] == audio.size
    assert abs(level["rms_db"] - 10 * np.log10(np.mean(last ** 2))) < 0.5

