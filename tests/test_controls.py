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


def _glide_reference(start: np.ndarray, target: np.ndarray, tau: float, frames: int):
    """The slot's vector after ``frames`` frames of glide τ: the exponential approach, in
    float64 (the engine steps in float32)."""
    alpha = 1.0 - math.exp(-1.0 / (tau * 75))
    return target + (start - target) * (1.0 - alpha) ** frames


def test_a_new_vector_for_a_filled_slot_glides_and_lands_on_it(state):
    state.apply(ControlEvent("/glide", (0.2,)))
    start = state.slots[1].astype(np.float64)
    new = np.linspace(-1, 1, 6).astype(np.float32)
    state.apply(ControlEvent("/prompt/slot", (1, new)))
    assert np.array_equal(state.slots[1], start)  # nothing moves before the frame's advance
    for frames in range(1, 31):
        state.advance()
        expected = _glide_reference(start, new.astype(np.float64), 0.2, frames)
        assert np.allclose(state.slots[1], expected, atol=1e-5), frames
    for _ in range(400):
        state.advance()
    assert state.slots[1] is new and not state.gliding  # landed: the target itself


def test_without_glide_or_into_an_empty_slot_a_vector_jumps():
    controls = initial_controls([np.ones(6, np.float32)], num_slots=2, glide=1.0)
    new = np.zeros(6, np.float32)
    controls.apply(ControlEvent("/prompt/slot", (1, new)))  # empty before: nothing to glide
    assert controls.slots[1] is new
    controls.apply(ControlEvent("/glide", (0.0,)))
    other = np.full(6, 2.0, np.float32)
    controls.apply(ControlEvent("/prompt/slot", (0, other)))
    assert controls.slots[0] is other


def test_a_state_taken_mid_glide_continues_identically(state):
    state.apply(ControlEvent("/glide", (0.5,)))
    state.apply(ControlEvent("/prompt/slot", (2, np.full(6, 3.0, np.float32))))
    for _ in range(5):
        state.advance()
    again = ControlState(num_slots=4)
    again.set_state(state.get_state())
    for _ in range(50):
        state.advance()
        again.advance()
        assert np.array_equal(state.slots[2], again.slots[2])
        assert np.array_equal(state.prompt(), again.prompt())


def test_a_state_from_before_slot_glide_keeps_slots_jumping(state):
    """Sessions recorded before slot vectors glided replay as they were played."""
    old = state.get_state()
    del old["target_slots"]
    controls = ControlState(num_slots=4)
    controls.set_state(old)
    controls.apply(ControlEvent("/glide", (1.0,)))
    new = np.zeros(6, np.float32)
    controls.apply(ControlEvent("/prompt/slot", (0, new)))
    assert controls.slots[0] is new and "target_slots" not in controls.get_state()
