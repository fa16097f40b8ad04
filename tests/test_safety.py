"""The output's last line of defence: non-finite logits and samples, and the safety limiter.

A broken step (NaN logits, a poisoned KV cache) or a decoder that puts out NaN or samples far
above full scale must never reach the device, the recording or the tap, and the engine must
keep playing and say once what happened.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from conftest import tiny_random_model
from live_helpers import null_engine, wait_until

from engine.live.audio.safety import CEILING_DB, SafetyLimiter
from engine.live.control_input import initial_controls
from engine.live.engine import EngineListener
from engine.live.generator import RollingGenerator
from engine.live.rotary.generator import RotaryGenerator
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig

CEILING = 10 ** (CEILING_DB / 20)


def _signal(n: int, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    rng = np.random.RandomState(seed)
    t = np.arange(n) / 24000
    return (amp * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.randn(n)).astype(np.float32)


def test_quiet_audio_passes_bit_identical():
    lim = SafetyLimiter()
    x = _signal(320 * 40)
    y = x.copy()
    lim.process(y)
    assert np.array_equal(x, y) and lim.limited_frames == 0 and lim.nonfinite == 0


def test_loud_and_broken_samples_never_exceed_the_ceiling_then_the_gain_recovers():
    lim = SafetyLimiter()
    x = _signal(320 * 200)
    x[320 * 20:320 * 30] *= 12.0  # a 133 ms blow-up to ~3.6 full scale
    x[320 * 25 + 7] = np.nan
    x[320 * 26 + 3] = np.inf
    x[320 * 27 + 1] = -np.inf
    blocks = np.split(x.copy(), 50)  # decoder-sized blocks of 1280 samples
    for block in blocks:
        lim.process(block)
    out = np.concatenate(blocks)
    assert np.isfinite(out).all()
    assert np.abs(out).max() <= CEILING + 1e-7
    assert lim.nonfinite == 3
    assert lim.limited_frames > 10
    # before the blow-up untouched; long after it the gain is back to 1 and the audio too
    assert np.array_equal(out[:320 * 20], x[:320 * 20])
    assert lim.gain == 1.0
    assert np.array_equal(out[-320 * 20:], x[-320 * 20:])
    # the release is smooth: no gain jump upward bigger than the signal's own step allows
    steps = np.abs(np.diff(out[320 * 30:]))
    assert steps.max() <= 1.5 * np.abs(np.diff(x[320 * 40:])).max()


def _generator(mode: str = "fast") -> RollingGenerator:
    model = tiny_random_model(prompt_dim=16)
    controls = initial_controls([np.random.RandomState(0).randn(16).astype(np.float32)])
    return RollingGenerator(model, controls, window=32, mode=mode, background=False, seed=3)


def test_a_poisoned_kv_cache_is_rebuilt_from_the_window_tokens():
    gen = _generator()
    faults = []
    gen.on_fault = faults.append
    rows = [gen.step() for _ in range(20)]
    gen.cache.k.fill_(float("nan"))  # e.g. a kernel that overflowed once
    bad = gen.step()
    assert torch.equal(bad, rows[-1])  # the last row repeated, nothing sampled from NaN
    after = [gen.step() for _ in range(20)]
    assert gen.nonfinite_steps == 1 and len(faults) == 1 and "not finite" in faults[0]
    assert torch.isfinite(gen.last_logits).all()
    assert all(0 <= int(r.min()) and int(r.max()) <= 1024 for r in after)
    assert len({tuple(r.tolist()) for r in after}) > 1  # it plays on, not stuck


def test_nonfinite_logits_every_step_are_reported_once_and_never_crash():
    gen = _generator(mode="exact")
    faults = []
    gen.on_fault = faults.append
    gen.controls.slots[0] = np.full(16, np.nan, np.float32)  # past the controls' own check
    for _ in range(10):
        row = gen.step()
        assert row.shape == (8,)
    assert gen.nonfinite_steps == 10 and len(faults) == 1


def test_a_rotary_model_with_broken_weights_is_reported_once_per_run_of_frames():
    """Every frame's logits are NaN: each gives a frame of code 0 (counted), one report."""
    torch.manual_seed(0)
    model = RotaryLM(RotaryLMConfig(dim=32, depth=1, heads=2, max_seq_len=16,
                                    codebooks=2)).eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    gen = RotaryGenerator(model, mode="exact")
    faults = []
    gen.on_fault = faults.append
    rows = [gen.step() for _ in range(10)]
    assert all(torch.equal(r, torch.zeros(2, dtype=torch.long)) for r in rows)
    assert gen.nonfinite_steps == 10 and len(faults) == 1 and "not finite" in faults[0]


class _Audio(EngineListener):
    def __init__(self):
        self.blocks: list[np.ndarray] = []
        self.lock = threading.Lock()

    def on_audio(self, block, start24, rate):
        with self.lock:
            self.blocks.append(block.copy())


def test_the_engine_plays_on_with_a_decoder_that_blows_up(tmp_path):
    logs: list[str] = []
    engine = null_engine(tmp_path, log=logs.append)
    decoder = engine.pipeline.decoder
    push = decoder.push
    calls = {"n": 0}

    def broken_push(codes):  # every third block: NaN, Inf and a sample at 8x full scale
        audio = push(codes)
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            audio = audio.clone()
            audio[..., 5] = float("nan")
            audio[..., 9] = float("inf")
            audio[..., 40] = 8.0
        return audio

    decoder.push = broken_push
    tap = _Audio()
    engine.add_listener(tap)
    engine.start()
    try:
        assert wait_until(lambda: engine.status()["frame"] > 150, timeout=60)
    finally:
        engine.stop()
    audio = np.concatenate(tap.blocks)
    status = engine.status()
    assert np.isfinite(audio).all()
    assert np.abs(audio).max() <= CEILING + 1e-7
    assert status["nonfinite_samples"] >= 2 * (calls["n"] // 3) - 2
    assert status["limited_frames"] > 0
    warnings = [m for m in logs if "non-finite samples" in m]
    assert 1 <= len(warnings) <= calls["n"] // 3  # once per broken run, not per sample
