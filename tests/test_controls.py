"""Control events: validation keeps the previous state; mix arithmetic; copies."""

import math

import numpy as np
import pytest

from engine.live.control_input import initial_controls
from engine.live.controls import ControlError, ControlEvent, ControlState


@pytest.fixture
def state():
    rng = np.random.RandomState(0)
    return initial_controls([rng.randn(6).astype(np.float32) for _ in range(4)])


@pytest.mark.parametrize("address,values,msg", [
    ("/temperature", (math.nan,), "finite"),
    ("/temperature", (math.inf,), "finite"),
    ("/temperature", (-1.0,), "outside"),
    ("/temperature", ("hot",), "expected a number"),
    ("/temperature", (1.0, 2.0), "expects 1 argument"),
    ("/topk", (2.5,), "expected an integer"),
    ("/topk", (5000,), "outside"),
    ("/topp", (0.0,), "outside"),
    ("/mix", (), "at least one"),
    ("/mix", (0.0, 0.0), "all be zero"),
    ("/mix", (1, 1, 1, 1, 1), "5 weights for 4 slots"),
    ("/glide", (-0.1,), "outside"),
    ("/nope", (1,), "unknown control"),
    ("/prompt/slot", (9, np.zeros(6)), "slot must be"),
    ("/prompt/slot", (0, np.zeros(5)), "differs"),
    ("/prompt/slot", (0, np.full(6, np.nan)), "finite"),
])
def test_bad_events_are_refused_and_change_nothing(state, address, values, msg):
    before = state.get_state()
    with pytest.raises(ControlError, match=msg):
        state.apply(ControlEvent(address, values))
    after = state.get_state()
    for key, value in before.items():
        if key == "slots":
            assert all(np.array_equal(a, b) for a, b in zip(value, after[key], strict=True))
        else:
            assert np.array_equal(value, after[key]), key


def test_fader_overshoot_is_clamped(state):
    assert state.apply(ControlEvent("/morph", (1.0000001,))) == (1.0,)
    assert state.apply(ControlEvent("/morph/xy", (-0.01, 0.5))) == (0.0, 0.5)


def test_xy_corners_are_the_four_slots(state):
    for (x, y), slot in {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}.items():
        state.apply(ControlEvent("/morph/xy", (float(x), float(y))))
        assert np.array_equal(state.prompt(), state.slots[slot])
    state.apply(ControlEvent("/morph/xy", (0.5, 0.5)))
    assert np.allclose(state.prompt(), np.mean(state.slots, axis=0), atol=1e-6)


def test_mix_is_normalised_and_morph_is_a_lerp(state):
    state.apply(ControlEvent("/mix", (1.0, 3.0)))
    assert np.allclose(state.weights, [0.25, 0.75, 0, 0])
    state.apply(ControlEvent("/morph", (0.3,)))
    s0, s1 = (state.slots[i].astype(np.float64) for i in (0, 1))
    expect = ((1.0 - 0.3) * s0 + 0.3 * s1).astype(np.float32)
    assert np.array_equal(state.prompt(), expect)


def test_empty_slot_cannot_be_mixed_in():
    s = ControlState()
    s.apply(ControlEvent("/prompt/slot", (0, np.ones(3))))
    with pytest.raises(ControlError, match="slot 1 is empty"):
        s.apply(ControlEvent("/morph", (0.5,)))
    s.apply(ControlEvent("/morph", (0.0,)))  # all weight on slot 0 is fine
    assert np.array_equal(s.prompt(), np.ones(3, np.float32))


def test_copy_continues_identically(state):
    state.apply(ControlEvent("/glide", (0.5,)))
    state.apply(ControlEvent("/morph", (1.0,)))
    state.advance()
    copy = state.copy()
    for _ in range(10):
        state.advance()
        copy.advance()
    assert np.array_equal(state.weights, copy.weights)
    assert np.array_equal(state.prompt(), copy.prompt())
