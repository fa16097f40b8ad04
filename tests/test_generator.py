"""The rolling generator against independent references: the offline window generator and
the golden tokens, a slow whole-window recompute of the fast mode's schedule, and itself
after save/restore."""

import threading

import numpy as np
import pytest
import torch
from conftest import tiny_random_model
from fixtures import golden

from engine.live.control_input import initial_controls
from engine.live.control_queue import MAX_PENDING
from engine.live.controls import ControlError, ControlEvent, ControlState
from engine.live.generator import RollingGenerator
from engine.live.step.reprefill import FINAL_ROWS, LAST_JOB, PREFILL_EVERY
from engine.model.reference import generate_window, prompt_schedule
from engine.model.tokens.patterns import start_triangle_mask


def _controls(*prompts, **kw) -> ControlState:
    return initial_controls(prompts, **kw)


def _run(gen: RollingGenerator, steps: int) -> torch.Tensor:
    try:
        return torch.stack([gen.step() for _ in range(steps)])
    finally:
        gen.close()


def _lerp_events(gen: RollingGenerator, steps: int) -> None:
    for i, x in enumerate(np.linspace(0.0, 1.0, steps)):
        gen.schedule(i, [ControlEvent("/morph", (float(x),))])


@pytest.fixture(scope="module")
def model():
    return tiny_random_model()


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.RandomState(0)
    return rng.randn(128).astype(np.float32), rng.randn(128).astype(np.float32)


def test_exact_mode_constant_prompt_golden(loaded):
    g = golden("encodecgpt_A.npz")
    gen = RollingGenerator(loaded.model, _controls(g["prompt_p0"]), window=20, mode="exact",
                           greedy=True)
    assert np.array_equal(_run(gen, 40).numpy(), g["interp_const_buf20_delayed"])


def test_exact_mode_morphing_prompt_golden(loaded):
    g = golden("encodecgpt_A.npz")
    gen = RollingGenerator(loaded.model, _controls(g["prompt_p0"], g["prompt_p1"]), window=20,
                           mode="exact", greedy=True)
    _lerp_events(gen, 40)
    assert np.array_equal(_run(gen, 40).numpy(), g["interp_lerp_buf20_delayed"])
    assert [e.frame for e in gen.control_log] == list(range(40))


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
@pytest.mark.parametrize("morph", [False, True], ids=["constant", "morph"])
def test_fast_hop1_equals_exact(model, prompts, greedy, morph):
    runs = []
    for mode, hop in (("exact", None), ("fast", 1)):
        gen = RollingGenerator(model, _controls(*prompts), window=12, mode=mode, hop=hop,
                               greedy=greedy, seed=7)
        if morph:
            _lerp_events(gen, 50)
        runs.append(_run(gen, 50))
    assert torch.equal(runs[0], runs[1])


def _slow_fast_schedule(model, prompt, window, hop, steps, primed=None) -> torch.Tensor:
    """What fast mode must compute with a constant prompt: step t runs the whole
    ``[prompt, rows b(t)..t-1]`` with b(t) the first of 0, H, 2H, … with t − b ≤ W, and the
    start triangle re-created when b > 0. ``primed`` ``[T, Q]``: the sequence's first rows
    (the steps generate rows T..); returns the generated rows."""
    tri = start_triangle_mask(window, model.num_q)
    rows = [] if primed is None else list(primed)
    first = len(rows)
    for t in range(first, first + steps):
        b = max(0, -(-(t - window) // hop)) * hop
        ctx = torch.stack(rows[b:t]) if t > b else torch.zeros(0, model.num_q, dtype=torch.long)
        if b > 0:
            ctx = ctx.masked_fill(tri[: len(ctx)], 0)
        with torch.inference_mode():
            logits, _ = model(torch.from_numpy(prompt)[None], ctx[None], last_only=True)
        rows.append(logits[0, -1].argmax(-1))
    return torch.stack(rows[first:])


@pytest.mark.parametrize("hop", [2, 3, 5, 12])
def test_fast_mode_follows_its_window_schedule(model, prompts, hop):
    expected = _slow_fast_schedule(model, prompts[0], 12, hop, 70)
    gen = RollingGenerator(model, _controls(prompts[0]), window=12, mode="fast", hop=hop,
                           greedy=True)
    assert torch.equal(_run(gen, 70), expected)


@pytest.mark.parametrize("ahead", [True, False], ids=["prepared-ahead", "in-the-step"])
def test_a_primed_window_continues_as_its_full_prefill(model, prompts, ahead):
    """/prime/rows (rows, prompt) in fast mode: the window cache [prompt, rows[:-1]] computed
    ahead on another thread (prepare_prime, as the live loader does) or in the step (as a
    replay does) continues exactly as the slow schedule of a sequence that starts with the
    primed rows."""
    rows = torch.randint(0, 1025, (7, model.num_q), generator=torch.Generator().manual_seed(3))
    gen = RollingGenerator(model, _controls(prompts[0]), window=12, mode="fast", hop=3,
                           greedy=True)
    for _ in range(5):  # a sequence that the prime replaces
        gen.step()
    if ahead:
        box = []
        worker = threading.Thread(target=lambda: box.append(gen.prepare_prime(rows.numpy())))
        worker.start()
        worker.join()
        values = box[0]
    else:
        values = (rows.numpy(), prompts[0])
    assert np.array_equal(values[1], prompts[0])
    assert gen.apply_now([ControlEvent("/prime/rows", values)])
    out = _run(gen, 30)
    assert (gen.primed.prepared, gen.primed.computed) == ((1, 0) if ahead else (0, 1))
    assert torch.equal(out, _slow_fast_schedule(model, prompts[0], 12, 3, 30, primed=rows))


def test_fast_mode_background_prefill_equals_inline(model, prompts):
    """The worker thread's timing never changes the tokens (jobs are fixed by frame)."""
    runs = []
    for background in (True, False):
        gen = RollingGenerator(model, _controls(*prompts, glide=0.05), window=16, mode="fast",
                               hop=4, seed=3, background=background)
        for f in (5, 30, 47):
            gen.schedule(f, [ControlEvent("/morph", (float(f % 2),))])
        runs.append(_run(gen, 80))
    assert torch.equal(runs[0], runs[1])


def test_a_window_switch_waits_for_no_long_job_and_reuses_the_old_cache(model, prompts):
    """The shadow's jobs before a switch are short and the last one is LAST_JOB steps before
    it (each starts before its step's forward; the switch's step feeds the rows after it
    itself), and the next shadow fills the cache the switch left instead of allocating one."""
    gen = RollingGenerator(model, _controls(prompts[0]), window=40, mode="fast", hop=10,
                           greedy=True)
    jobs = []  # (step, rows) of every job with rows (the prompt position not counted)
    run = gen.reprefill._run
    gen.reprefill._run = lambda groups: (
        jobs.append((gen.t, sum(g.x.shape[0] for g in groups if g.start > 0))), run(groups))[-1]
    forward = gen.lean.forward
    fed = {}  # step -> rows its own forward fed (the prompt position not counted)

    def counting_forward(groups, out):
        if groups[0].cache is gen.cache:  # the step's, not a shadow job's
            fed[gen.t] = sum(g.x.shape[0] for g in groups if g.start > 0)
        return forward(groups, out)

    gen.lean.forward = counting_forward
    switches, left, reused = [], None, []
    for _ in range(120):
        start, live = gen.win_start, gen.cache
        shadow = gen.reprefill.shadow
        gen.step()
        if live is not None and gen.win_start != start:
            switches.append(gen.t - 1)
            left = live
            assert gen.reprefill.shadow is None  # the next starts a step later (not beside it)
        elif shadow is None and gen.reprefill.shadow is not None and left is not None:
            reused.append(gen.reprefill.shadow.cache is left)
    gen.close()
    assert len(switches) >= 5 and len(reused) >= 5 and all(reused)
    for s in switches:
        last = [rows for t, rows in jobs if s - PREFILL_EVERY <= t < s and rows]
        assert last and max(last) <= FINAL_ROWS, (s, last)
        assert [t for t, rows in jobs if t < s and rows][-1] == s - LAST_JOB
        assert fed[s] == LAST_JOB and fed[s - 1] == 1, (s, fed[s])


@pytest.mark.parametrize("mode,hop", [("exact", None), ("fast", 4), ("fast", 1)])
def test_save_restore_gives_identical_tokens(model, prompts, mode, hop):
    def fresh():
        return RollingGenerator(model, _controls(*prompts, glide=0.1), window=16, mode=mode,
                                hop=hop, seed=11)

    gen = fresh()
    gen.apply_now([ControlEvent("/morph", (0.8,)), ControlEvent("/temperature", (0.7,))])
    for _ in range(37):  # mid-glide, mid-hop
        gen.step()
    state = gen.get_state()
    after = [ControlEvent("/topk", (50,)), ControlEvent("/morph", (0.1,))]
    gen.schedule(45, after)
    a = _run(gen, 40)
    other = fresh()
    other.set_state(state)
    other.schedule(45, after)
    b = _run(other, 40)
    assert torch.equal(a, b)


def test_control_takes_effect_at_its_logged_frame(loaded):
    """A prompt switch submitted between frames 24 and 25 changes nothing before 25 and
    matches the offline window generator with that per-step schedule from 25 on."""
    g = golden("encodecgpt_A.npz")
    p0, p1 = g["prompt_p0"], g["prompt_p1"]
    gen = RollingGenerator(loaded.model, _controls(p0, p1), window=20, mode="exact",
                           greedy=True)
    rows, logits = [], []
    for frame in range(40):
        if frame == 25:
            gen.submit([ControlEvent("/morph", (1.0,))])  # arrives between frames 24 and 25
        rows.append(gen.step())
        logits.append(gen.last_logits)
    gen.close()
    assert [(e.frame, e.address, e.values) for e in gen.control_log] == [(25, "/morph", (1.0,))]
    switched = generate_window(loaded.model, torch.from_numpy(np.stack([p0] * 25 + [p1] * 15)),
                               20, return_logits=True)
    const = generate_window(loaded.model, torch.from_numpy(prompt_schedule(p0, None, 40)), 20,
                            return_logits=True)
    assert torch.equal(torch.stack(rows), switched.tokens)
    logits = torch.stack(logits)
    assert torch.equal(logits, switched.step_logits)
    change = (logits - const.step_logits).abs().amax(dim=(1, 2))
    assert (change[:25] == 0).all() and (change[25:] > 1e-4).all()


def test_glide_is_smooth_and_lands_on_target(model, prompts):
    tau = 0.2
    gen = RollingGenerator(model, _controls(*prompts), window=8, mode="fast",
                           greedy=True)
    gen.apply_now([ControlEvent("/glide", (tau,)), ControlEvent("/morph", (1.0,)),
                   ControlEvent("/temperature", (0.2,))])
    alpha = 1.0 - np.exp(-1.0 / (tau * 75))
    weights, temps = [], []
    for _ in range(200):
        gen.step()
        weights.append(gen.controls.weights[1])
        temps.append(gen.controls.temperature)
    gen.close()
    steps = np.diff([0.0, *weights])
    assert (steps >= 0).all() and steps.max() <= alpha + 1e-12  # a jump became a glide
    assert weights[0] < 0.2 and weights[-1] == 1.0 and temps[-1] == 0.2
    landed = weights.index(1.0)
    assert 75 * tau * 5 < landed < 75 * tau * 12  # ~ τ·ln(1/SNAP) frames
    assert np.allclose(gen.controls.prompt(), prompts[1])


def test_refused_bundle_keeps_previous_state(model, prompts):
    gen = RollingGenerator(model, _controls(prompts[0]), window=8, mode="exact")
    errors = []
    gen.on_error = lambda frame, ev, msg: errors.append((frame, ev.address, msg))
    gen.submit([ControlEvent("/temperature", (0.5,)), ControlEvent("/morph", (0.5,))])
    gen.step()  # slot 1 empty: the whole bundle is refused, the temperature too
    assert gen.controls.temperature == 1.0 and gen.control_log == []
    assert errors and errors[0][:2] == (0, "/morph") and "slot 1 is empty" in errors[0][2]
    gen.close()


@pytest.mark.parametrize("window,hop,msg", [(300, None, "window must be 1..299"),
                                            (0, None, "window must be"),
                                            (20, 21, "hop must be in 1..20")])
def test_window_and_hop_are_checked(model, prompts, window, hop, msg):
    with pytest.raises(ValueError, match=msg):
        RollingGenerator(model, _controls(prompts[0]), window=window, hop=hop)


def test_reset_starts_a_fresh_sequence(model, prompts):
    """After /reset at frame 30 the rows equal a brand-new generator's (same RNG state)."""
    gen = RollingGenerator(model, _controls(prompts[0]), window=10, mode="fast", hop=3,
                           greedy=True)
    gen.schedule(30, [ControlEvent("/reset")])
    rows = _run(gen, 50)
    fresh = _run(RollingGenerator(model, _controls(prompts[0]), window=10, mode="fast", hop=3,
                                  greedy=True), 20)
    assert torch.equal(rows[30:], fresh)


def test_a_burst_of_10000_morphs_coalesces_to_the_last_and_keeps_discrete_ones(model, prompts):
    """10 000 fader messages (and a temperature dial now and then) queued between two frames:
    the step applies O(1) of them — the last value of each continuous setting in each run; a
    discrete /seed in the middle is kept, in order, and ends the run — and the tokens are
    those of a generator that only got what took effect."""
    p0, p1 = prompts
    slots = (p0, p1, p0[::-1].copy(), p1[::-1].copy())
    flooded = RollingGenerator(model, _controls(*slots), window=16, mode="fast", seed=3)
    plain = RollingGenerator(model, _controls(*slots), window=16, mode="fast", seed=3)
    rows = [flooded.step() for _ in range(3)]
    assert all(torch.equal(r, plain.step()) for r in rows)
    for i in range(10_000):
        if i == 5_000:
            flooded.submit([ControlEvent("/seed", (9,))])
        if i % 1_000 == 0:
            flooded.submit([ControlEvent("/temperature", (round(0.5 + i / 20_000, 3),))])
        x = i / 9_999
        flooded.submit([ControlEvent("/morph/xy" if i % 2 else "/morph",
                                     (x, 1 - x) if i % 2 else (x,))])
    flooded.step()
    applied = [(e.frame, e.address, e.values) for e in flooded.control_log]
    half = (4999 / 9999, 1 - 4999 / 9999)
    expected = [("/temperature", (0.7,)), ("/morph/xy", half), ("/seed", (9,)),
                ("/temperature", (0.95,)), ("/morph/xy", (1.0, 0.0))]
    assert applied == [(3, *ev) for ev in expected]
    assert flooded.queue.coalesced == 10_011 - 5
    for ev in expected:
        plain.submit([ControlEvent(*ev)])
    plain.step()
    assert np.allclose(flooded.controls.weights, [0, 1, 0, 0])
    tail = [(flooded.step(), plain.step()) for _ in range(20)]
    flooded.close()
    plain.close()
    assert all(torch.equal(a, b) for a, b in tail)


def test_a_full_control_queue_refuses_instead_of_growing(model, prompts):
    gen = RollingGenerator(model, _controls(*prompts), window=16, mode="exact")
    for _ in range(MAX_PENDING):
        gen.submit([ControlEvent("/topk", (5,))])
    with pytest.raises(ControlError, match="waiting"):
        gen.submit([ControlEvent("/topk", (6,))])
    gen.step()  # the generator takes them all; there is room again
    gen.submit([ControlEvent("/topk", (7,))])
    gen.close()
