"""The state protocol (engine/live/state.py) for generator, controls, KV cache and decoder:
a state taken mid-run, saved and read back with ``weights_only=True``, continues on a fresh
object exactly like the uninterrupted run; a state with a missing or an extra key is refused
with a ValueError naming the key, and changes nothing."""

import io

import numpy as np
import pytest
import torch
from conftest import tiny_random_model

from engine.live.controls import ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator
from engine.live.step.kv_step import LeanGPT, RowGroup
from engine.model.codec import random_codec


def _through_file(state: dict) -> dict:
    """torch.save, then torch.load as a reader of untrusted files would."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture(scope="module")
def model():
    return tiny_random_model()


@pytest.fixture(scope="module")
def codec():
    return random_codec(4)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.RandomState(2)
    return [rng.randn(128).astype(np.float32) for _ in range(3)]


def _controls(prompts) -> ControlState:
    c = ControlState(glide=0.1)
    for i, p in enumerate(prompts):
        c.apply(ControlEvent("/prompt/slot", (i, p)))
    return c


# -- generator ---------------------------------------------------------------------------

GEN_CONFIGS = {"exact": dict(mode="exact"), "fast": dict(mode="fast", hop=4),
               "fast-hop1": dict(mode="fast", hop=1)}


def _generator(model, prompts, config: str) -> RollingGenerator:
    return RollingGenerator(model, _controls(prompts), window=16, seed=5, **GEN_CONFIGS[config])


def _steps(gen: RollingGenerator, n: int) -> torch.Tensor:
    return torch.stack([gen.step() for _ in range(n)])


@pytest.mark.parametrize("config", list(GEN_CONFIGS))
def test_generator_state_continues_identically(model, prompts, config):
    """Mid-glide, mid-hop, after a /reset and a /seed: the restored generator produces the
    same rows as the original, live controls included; fast mode with its shadow cache
    being filled by the worker."""
    gen = _generator(model, prompts, config)
    gen.schedule(3, [ControlEvent("/morph", (1.0,)), ControlEvent("/temperature", (0.6,))])
    gen.schedule(9, [ControlEvent("/reset")])
    gen.schedule(20, [ControlEvent("/seed", (77,)), ControlEvent("/mix", (0.2, 0.3, 0.5))])
    _steps(gen, 30)
    if config == "fast":
        shadow = gen.reprefill.shadow
        assert shadow is not None and shadow.jobs  # jobs submitted to the worker, not awaited
    state = _through_file(gen.get_state())
    later = [ControlEvent("/topk", (30,)), ControlEvent("/mix", (0.1, 0.0, 0.9))]
    gen.schedule(40, later)
    expected = _steps(gen, 40)
    gen.close()
    assert not gen.errors and len(gen.control_log) == 7

    restored = _generator(model, [prompts[0]], config)  # other slots: the state brings them
    restored.set_state(state)
    restored.schedule(40, later)
    try:
        assert torch.equal(_steps(restored, 40), expected)
    finally:
        restored.close()


def test_generator_state_keeps_float64_mix_weights(model, prompts):
    gen = _generator(model, prompts, "exact")
    gen.apply_now([ControlEvent("/mix", (1.0, 1.0, 1.0))])
    state = gen.get_state()
    gen.close()
    assert state["controls"]["weights"].dtype == torch.float64
    assert np.array_equal(state["controls"]["weights"].numpy(), gen.controls.weights)


def test_generator_state_of_another_window_is_refused(model, prompts):
    gen = _generator(model, prompts, "fast")
    other = RollingGenerator(model, _controls(prompts), window=12, mode="fast", hop=4)
    try:
        with pytest.raises(ValueError, match="mode/window/hop"):
            other.set_state(gen.get_state())
    finally:
        gen.close()
        other.close()


# -- controls ----------------------------------------------------------------------------

def test_controls_state_continues_identically(prompts):
    c = _controls(prompts)
    c.apply(ControlEvent("/mix", (0.2, 0.5, 0.3)))
    c.apply(ControlEvent("/temperature", (0.4,)))
    c.advance()
    restored = ControlState(num_slots=4)
    restored.set_state(_through_file(c.get_state()))
    for _ in range(30):
        c.advance()
        restored.advance()
        assert np.array_equal(c.weights, restored.weights)
        assert restored.weights.dtype == np.float64
        assert c.temperature == restored.temperature
        assert np.array_equal(c.prompt(), restored.prompt())
    assert restored.slots[3] is None


def test_controls_copy_is_independent(prompts):
    c = _controls(prompts)
    copy = c.copy()
    copy.apply(ControlEvent("/morph", (1.0,)))
    copy.slots[0][:] = 0.0
    assert c.target_weights[1] == 0.0 and np.array_equal(c.slots[0], prompts[0])


# -- KV cache ----------------------------------------------------------------------------

def test_kv_cache_state_continues_identically(model):
    lean = LeanGPT(model)
    rows = torch.randint(0, 1025, (9, model.num_q))
    prompt = lean.embed_prompt(torch.randn(model.prompt_dim))
    cache = lean.new_cache(12)
    lean.forward([RowGroup(cache, 0, torch.cat([prompt, lean.embed_tokens(rows[:8])]))], [])
    restored = lean.new_cache(12)
    restored.set_state(_through_file(cache.get_state()))
    assert restored.length == 9
    step = lean.embed_tokens(rows[8:])
    expected = lean.forward([RowGroup(cache, 9, step)], [0])
    assert torch.equal(lean.forward([RowGroup(restored, 9, step)], [0]), expected)


def test_kv_cache_state_of_another_size_is_refused(model):
    lean = LeanGPT(model)
    with pytest.raises(ValueError, match="does not fit"):
        lean.new_cache(10).set_state(lean.new_cache(12).get_state())


# -- decoder -----------------------------------------------------------------------------

@pytest.mark.parametrize("split", [4, 23], ids=["pending", "started"])
def test_decoder_state_continues_identically(codec, split):
    """Taken while codes are held back at stream start (4 < 7 frames) or mid-stream."""
    codes = torch.from_numpy(np.random.default_rng(split).integers(0, 1024, (1, 8, 40)))
    decoder = StreamingDecoder(codec.model)
    decoder.push(codes[..., :split])
    state = _through_file(decoder.get_state())
    expected = decoder.push(codes[..., split:])
    restored = StreamingDecoder(codec.model)
    restored.set_state(state)
    audio = restored.push(codes[..., split:])
    assert audio.shape[-1] > 0 and torch.equal(audio, expected)


# -- key checks --------------------------------------------------------------------------

def _generator_case(model, prompts, codec):
    gen = _generator(model, prompts, "fast")
    _steps(gen, 31)  # cache, shadow and history all present
    state = gen.get_state()
    gen.close()
    return lambda: _generator(model, prompts, "fast"), state


def _controls_case(model, prompts, codec):
    return lambda: ControlState(num_slots=4), _controls(prompts).get_state()


def _kv_cache_case(model, prompts, codec):
    lean = LeanGPT(model)
    return lambda: lean.new_cache(8), lean.new_cache(8).get_state()


def _decoder_case(model, prompts, codec):
    decoder = StreamingDecoder(codec.model)
    decoder.push(torch.randint(0, 1024, (1, 8, 10)))
    return lambda: StreamingDecoder(codec.model), decoder.get_state()


CASES = {"generator": _generator_case, "controls": _controls_case,
         "kv cache": _kv_cache_case, "decoder": _decoder_case}


@pytest.mark.parametrize("kind,defect", [(k, d) for k in CASES for d in ("missing", "extra")]
                         + [("generator", "nested")])
def test_state_with_a_missing_or_extra_key_is_refused(model, prompts, codec, kind, defect):
    fresh, state = CASES[kind](model, prompts, codec)
    state = dict(state)
    if defect == "missing":
        key = sorted(state)[0]
        del state[key]
        pattern = f"missing state key '{key}'"
    elif defect == "extra":
        state["volume"] = 1.0
        pattern = "unused state keys: 'volume'"
    else:  # in a nested state
        state["shadow"] = dict(state["shadow"], spare=0)
        pattern = "shadow state: unused state keys: 'spare'"
    obj = fresh()
    before = obj.get_state()
    try:
        with pytest.raises(ValueError, match=pattern):
            obj.set_state(state)
        assert _flat(obj.get_state()) == _flat(before)  # a refused state changed nothing
    finally:
        if isinstance(obj, RollingGenerator):
            obj.close()


def _flat(value):
    """A comparable form of a state: tensors as (dtype, shape, bytes)."""
    if isinstance(value, torch.Tensor):
        return (value.dtype, tuple(value.shape), value.numpy().tobytes())
    if isinstance(value, dict):
        return {k: _flat(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_flat(v) for v in value]
    return value
