"""The exact-mode static-window step against independent references: the reference
``EnCodecGPT.forward`` on the unpadded window (every fill level, the start triangle
re-created past the sequence start), the golden tokens of the original rolling generator,
itself after a state round trip, and — on CUDA — itself run eagerly (graph replay, compile),
in fp32 against bf16/fp16, and with host syncs made errors."""

import numpy as np
import pytest
import torch
from conftest import tiny_random_model
from device_helpers import CUDA, DEVICES, gpu
from fixtures import golden

from engine.live.step.compute import WeightFormat, apply_precision
from engine.live.step.graph_runner import GraphRunner
from engine.live.step.static_window import StaticWindowStep
from engine.live.step.window_gpt import WindowGPT
from engine.model.tokens.patterns import start_triangle_mask

W = 12
Q = 8


@pytest.fixture(scope="module")
def model():
    return tiny_random_model(prompt_dim=96)  # 96 != D: the prompt projection is exercised


def _fp32(device: str) -> None:
    apply_precision(WeightFormat("none", torch.float32, torch.device(device)))


def _reference_logits(model, prompt: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """``[Q, 1025]`` logits of the last position of ``[prompt, ctx]``, unpadded."""
    with torch.inference_mode():
        logits, _ = model(prompt[None], ctx[None], last_only=True)
    return logits[0, -1]


def _window(seq: torch.Tensor, n: int, window: int) -> torch.Tensor:
    """What exact mode feeds after ``n`` rows of ``seq``: the last ``min(n, W)`` rows, with
    the start triangle re-created once the window no longer starts at row 0."""
    ctx = seq[max(0, n - window): n].clone()
    if n > window:
        ctx.masked_fill_(start_triangle_mask(window, seq.shape[1]), 0)
    return ctx


@pytest.mark.parametrize("device", DEVICES)
def test_padded_window_equals_reference_at_every_fill_level(model, device):
    _fp32(device)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randn(96, generator=g)
    rows = torch.randint(0, 1025, (W, Q), generator=g)
    net = WindowGPT(model, W, device)
    for n in range(W + 1):
        padded = rows.clone()
        padded[n:] = torch.randint(0, 1025, (W - n, Q), generator=g)  # padding is arbitrary
        got = net.logits(prompt.to(device), padded.to(device), torch.tensor(n, device=device))
        want = _reference_logits(model, prompt, rows[:n])
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-5, msg=f"fill level {n}")


@pytest.mark.parametrize("device", DEVICES)
def test_step_feeds_the_window_exact_mode_builds(model, device):
    """Teacher-forced over 3W rows: before the window fills, while it slides, and with the
    start triangle re-created; the logits match the reference on the unpadded window and
    the step's own window advance matches a host-side list."""
    _fp32(device)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randn(96, generator=g).numpy()
    seq = torch.randint(1, 1025, (3 * W + 2, Q), generator=g)
    step = StaticWindowStep(model, window=W, device=device, runner="eager")
    step.set_prompt(prompt)
    step.set_sampling(1.0, 0, 1.0, greedy=True)
    for n in range(len(seq) - 1):
        step.load(seq[max(0, n - W): n], n)
        token = step.step()
        want = _reference_logits(model, torch.from_numpy(prompt), _window(seq, n, W))
        torch.testing.assert_close(step.logits.cpu(), want, rtol=0, atol=1e-5,
                                   msg=f"{n} rows")
        assert torch.equal(token, step.logits.cpu().argmax(-1))
        kept = torch.cat([seq[max(0, n + 1 - W): n], token[None]])  # the last W rows
        assert torch.equal(step.rows[: len(kept)].cpu(), kept)
        assert int(step.count) == n + 1


RUNNERS = [
    pytest.param("cpu", "eager", id="cpu-eager"),
    pytest.param("cpu", "compile", id="cpu-compile-trace", marks=pytest.mark.slow),
    pytest.param(*CUDA.values, "eager", id="cuda-eager", marks=CUDA.marks),
    pytest.param(*CUDA.values, "graph", id="cuda-graph", marks=CUDA.marks),
]


def _runner_step(model, device: str, runner: str, window: int, seed: int = 0):
    # On the CPU, compile is traced with the eager backend: the whole step must be one graph
    # (fullgraph=True), which is what reduce-overhead needs on CUDA.
    options = {"backend": "eager"} if (device, runner) == ("cpu", "compile") else None
    return StaticWindowStep(model, window=window, device=device, runner=runner, seed=seed,
                            compile_options=options)


@pytest.mark.parametrize("device,runner", RUNNERS)
def test_greedy_step_reproduces_the_golden_rolling_window(loaded, device, runner):
    """The original ``generate_interp`` (window 20, argmax), constant prompt then a lerp."""
    _fp32(device)
    g = golden("encodecgpt_A.npz")
    step = _runner_step(loaded.model, device, runner, window=20)
    step.set_sampling(1.0, 0, 1.0, greedy=True)
    step.set_prompt(g["prompt_p0"])
    const = torch.stack([step.step() for _ in range(40)]).numpy()
    step.load(torch.zeros(0, Q, dtype=torch.long), 0)  # /reset
    lerp = []
    for prompt in g["prompt_lerp"]:
        step.set_prompt(prompt)
        lerp.append(step.step())
    assert np.array_equal(const, g["interp_const_buf20_delayed"])
    assert np.array_equal(torch.stack(lerp).numpy(), g["interp_lerp_buf20_delayed"])


def test_settings_written_between_steps_take_effect(model):
    """Temperature 0, the greedy flag and top-k 1 each give the argmax; top-k 3 keeps the draw
    among the 3 best; back at temperature 1 the draws leave the argmax again."""
    step = StaticWindowStep(model, window=W, device="cpu", seed=3)
    step.set_prompt(np.random.RandomState(0).randn(96).astype(np.float32))
    for settings in [(0.0, 0, 1.0, False), (1.0, 0, 1.0, True), (1.0, 1, 1.0, False)]:
        step.set_sampling(*settings)
        for _ in range(5):
            assert torch.equal(step.step(), step.logits.argmax(-1)), settings
    step.set_sampling(1.0, 3, 1.0, False)
    for _ in range(5):
        token = step.step()
        assert (step.logits.topk(3, -1).indices == token[:, None]).any(-1).all()
    step.set_sampling(1.0, 0, 1.0, False)
    assert not all(torch.equal(step.step(), step.logits.argmax(-1)) for _ in range(5))


@pytest.mark.parametrize("device", DEVICES)
def test_state_round_trips_with_its_device_tag(model, device):
    def fresh():
        s = StaticWindowStep(model, window=W, device=device, seed=11)
        s.set_prompt(np.linspace(-1, 1, 96, dtype=np.float32))
        s.set_sampling(0.9, 50, 0.95, False)
        return s

    step = fresh()
    for _ in range(W + 5):  # past the fill: the triangle is in play
        step.step()
    state = step.get_state()
    assert state["device"] == str(torch.device(device)) and state["count"] == W + 5
    a = torch.stack([step.step() for _ in range(20)])
    other = fresh()
    other.set_state(state)
    assert torch.equal(torch.stack([other.step() for _ in range(20)]), a)
    elsewhere = dict(state, device="cuda:0" if device == "cpu" else "cpu")
    with pytest.raises(ValueError, match="cannot continue here"):
        other.set_state(elsewhere)


def test_graphs_need_cuda(model):
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        GraphRunner(lambda: None, torch.device("cpu"), graphs=True)
    with pytest.raises(ValueError, match="runner must be one of"):
        StaticWindowStep(model, window=W, device="cpu", runner="fast")


# -- low precision: the same check on the CPU (bf16) and on CUDA (bf16, fp16) -----------

# Max |logit - fp32 logit| over a teacher-forced W = 200 window of the golden model (logits
# up to ~2.6). Measured on a CPU: bf16 0.016, fp16 0.002; the bounds leave 3-5x for other
# kernels' rounding.
LOW_PRECISION_TOL = {torch.bfloat16: 0.05, torch.float16: 0.01}


@pytest.mark.parametrize("device,dtype", [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16", marks=pytest.mark.slow),
    pytest.param(*CUDA.values, torch.bfloat16, id="cuda-bf16", marks=CUDA.marks),
    pytest.param(*CUDA.values, torch.float16, id="cuda-fp16", marks=CUDA.marks),
])
def test_low_precision_logits_within_tolerance(loaded, device, dtype):
    """Teacher-forced on the golden delayed codes at every 5th fill level of W = 200: the
    logits stay within the stated bound of fp32 (TF32 off), and the argmax agrees wherever
    fp32's top-2 margin exceeds twice the bound (a smaller margin may flip legitimately)."""
    _fp32(device)
    g = golden("encodecgpt_A.npz")
    rows = torch.from_numpy(g["delayed_codes"][0].T.copy()).to(device)  # [307, Q]
    prompt = torch.from_numpy(g["prompt_p0"]).to(device)
    tol = LOW_PRECISION_TOL[dtype]
    exact, low = WindowGPT(loaded.model, 200, device), WindowGPT(loaded.model, 200, device, dtype)
    for n in range(0, 201, 5):
        window = torch.zeros(200, Q, dtype=torch.long, device=device)
        window[:n] = rows[:n]
        last = torch.tensor(n, device=device)
        want, got = exact.logits(prompt, window, last), low.logits(prompt, window, last)
        assert (got - want).abs().max() <= tol, f"fill level {n}"
        top2 = want.topk(2, -1).values
        decided = top2[:, 0] - top2[:, 1] > 2 * tol
        assert torch.equal(got.argmax(-1)[decided], want.argmax(-1)[decided])


# -- CUDA only ----------------------------------------------------------------------------

def _performance(step: StaticWindowStep, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampled run with every control moving: prompt glide, settings, a reset, a reseed."""
    rng = np.random.RandomState(5)
    p0, p1 = rng.randn(2, 96).astype(np.float32)
    tokens, logits = [], []
    for f in range(frames):
        x = min(1.0, f / 40)
        step.set_prompt((1 - x) * p0 + x * p1)
        step.set_sampling(*[(1.0, 0, 1.0, False), (0.7, 40, 1.0, False), (1.2, 0, 0.9, False),
                            (0.8, 100, 0.95, False), (1.0, 0, 1.0, True)][(f // 11) % 5])
        if f == 50:
            step.load(torch.zeros(0, Q, dtype=torch.long), 0)
        if f == 60:
            step.reseed(123)
        tokens.append(step.step())
        logits.append(step.logits.cpu())
    return torch.stack(tokens), torch.stack(logits)


@gpu
def test_graph_replay_equals_the_same_callable_bit_for_bit(model):
    _fp32("cuda")
    eager = _performance(StaticWindowStep(model, window=W, device="cuda", runner="eager"), 90)
    graph = _performance(StaticWindowStep(model, window=W, device="cuda", runner="graph"), 90)
    assert torch.equal(graph[0], eager[0]) and torch.equal(graph[1], eager[1])


# A compiled step fuses kernels, so it is not bit-identical: bound its teacher-forced fp32
# logits against the eager step's.
COMPILE_TOL = 1e-4


@gpu
@pytest.mark.slow
def test_compiled_step_within_tolerance_of_eager(model):
    _fp32("cuda")
    g = torch.Generator().manual_seed(2)
    seq = torch.randint(1, 1025, (2 * W + 3, Q), generator=g)
    prompt = torch.randn(96, generator=g).numpy()
    steps = [StaticWindowStep(model, window=W, device="cuda", runner=r)
             for r in ("eager", "compile")]
    for s in steps:
        s.set_prompt(prompt)
        s.set_sampling(1.0, 0, 1.0, True)
    for n in range(len(seq)):
        for s in steps:
            s.load(seq[max(0, n - W): n].cuda(), n)
            s.step()
        torch.testing.assert_close(steps[1].logits, steps[0].logits, rtol=0, atol=COMPILE_TOL)


@gpu
def test_same_seed_same_tokens_on_cuda(model):
    runs = [_performance(StaticWindowStep(model, window=W, device="cuda", runner="graph",
                                          seed=seed), 40)[0] for seed in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@gpu
@pytest.mark.parametrize("runner", ["graph", "eager"])
def test_a_step_makes_no_host_sync(model, runner):
    """Control uploads and the step itself never sync; the only wait is on the event after
    the [Q] row's copy, which the sync debug mode does not count."""
    step = StaticWindowStep(model, window=W, device="cuda", runner=runner)
    prompts = np.random.RandomState(0).randn(4, 96).astype(np.float32)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for f in range(3 * W):
            step.set_prompt(prompts[f % 4])
            step.set_sampling(1.0 - 0.01 * f, f % 7, 0.9, False)
            step.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
