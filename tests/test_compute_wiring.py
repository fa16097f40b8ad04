"""``--compute`` wired through the engine: the rolling generator's static-window path (run
eagerly on the CPU here, a CUDA graph on a GPU) against exact mode, states and sessions with
their device tag, replay across device types, ``/engine/info``, the CLI's one-line refusals,
and — on CUDA — the streaming decoder and the whole engine on the device."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_random_model
from device_helpers import HAS_CUDA, gpu
from fixtures import golden, run_cli
from live_helpers import cli_in_process, wait_until

from engine.live.controls import ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.engine import LiveConfig
from engine.live.generator import RollingGenerator
from engine.live.step.compute import WeightFormat, apply_precision
from engine.model.codec import random_codec
from engine.model.loading.random_model import random_model
from engine.session.live_session import build_live_engine
from engine.session.replay import replay
from osc.feedback import FeedbackSender
from osc.server import OSCServer, build_message


@pytest.fixture(scope="module")
def model():
    return tiny_random_model()


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.RandomState(0)
    return rng.randn(128).astype(np.float32), rng.randn(128).astype(np.float32)


def _controls(*prompts) -> ControlState:
    c = ControlState()
    for i, p in enumerate(prompts):
        c.apply(ControlEvent("/prompt/slot", (i, np.asarray(p, dtype=np.float32))))
    return c


def _run(gen: RollingGenerator, steps: int) -> torch.Tensor:
    try:
        return torch.stack([gen.step() for _ in range(steps)])
    finally:
        gen.close()


def _static(model, controls, device="cpu", **kw) -> RollingGenerator:
    """The generator's static-window path; on the CPU it needs ``runner`` to be chosen."""
    runner = "eager" if torch.device(device).type == "cpu" else None
    return RollingGenerator(model, controls, mode="exact", compute=device, runner=runner, **kw)


def _automation(gen: RollingGenerator) -> None:
    """A morph that glides, a reset and a reseed: every control the static path handles."""
    for f, x in ((3, 0.4), (17, 1.0), (41, 0.0)):
        gen.schedule(f, [ControlEvent("/glide", (0.05,)), ControlEvent("/morph", (x,))])
    gen.schedule(30, [ControlEvent("/reset")])
    gen.schedule(35, [ControlEvent("/seed", (9,))])


def test_static_path_equals_exact_mode_on_the_goldens(loaded):
    """Through the generator and its controls (morph events), graphs disabled."""
    g = golden("encodecgpt_A.npz")
    const = _static(loaded.model, _controls(g["prompt_p0"]), window=20, greedy=True)
    assert np.array_equal(_run(const, 40).numpy(), g["interp_const_buf20_delayed"])
    lerp = _static(loaded.model, _controls(g["prompt_p0"], g["prompt_p1"]), window=20,
                   greedy=True)
    for i, x in enumerate(np.linspace(0.0, 1.0, 40)):
        lerp.schedule(i, [ControlEvent("/morph", (float(x),))])
    assert np.array_equal(_run(lerp, 40).numpy(), g["interp_lerp_buf20_delayed"])


def test_static_path_equals_exact_mode_through_controls(model, prompts):
    """Greedy, 60 frames of window 12 with a glide, a /reset and a /seed: the same rows as
    the CPU reference path (the window advance, the triangle and the reset on the device)."""
    runs = []
    for make in (lambda c: RollingGenerator(model, c, mode="exact", window=12, greedy=True),
                 lambda c: _static(model, c, window=12, greedy=True)):
        gen = make(_controls(*prompts))
        _automation(gen)
        runs.append(_run(gen, 60))
    assert torch.equal(runs[0], runs[1])


def test_state_carries_its_device_and_refuses_another(model, prompts):
    def fresh():
        return _static(model, _controls(*prompts), window=12, seed=4)

    gen = fresh()
    _automation(gen)
    for _ in range(20):
        gen.step()
    state = gen.get_state()
    assert state["compute"] == "cpu"
    after = _run(gen, 30)
    other = fresh()
    other.set_state(state)
    _automation(other)
    assert torch.equal(_run(other, 30), after)  # sampled: the device RNG came along
    moved = dict(state, compute="cuda:0")
    with pytest.raises(ValueError, match="made on cuda:0.*cannot continue here"):
        fresh().set_state(moved)


def test_a_state_from_another_device_continues_its_rows(model, prompts):
    """Greedy needs no random stream: a state tagged with another device, accepted with
    ``other_device``, continues with exactly the rows the original generates."""
    gen = RollingGenerator(model, _controls(*prompts), mode="exact", window=12, greedy=True)
    for _ in range(25):
        gen.step()
    state = dict(gen.get_state(), compute="cuda:0", rng=torch.zeros(16, dtype=torch.uint8))
    expected = _run(gen, 20)
    other = _static(model, _controls(*prompts), window=12, greedy=True)
    other.set_state(state, other_device=True)
    assert torch.equal(_run(other, 20), expected)


def test_cpu_generator_refuses_what_only_a_gpu_runs(model, prompts):
    with pytest.raises(ValueError, match="fast mode runs on the CPU only"):
        RollingGenerator(model, _controls(*prompts), mode="fast", compute="cpu",
                         runner="eager")
    with pytest.raises(ValueError, match="runs fp32, bf16 or fp16 weights, not 'int8'"):
        _static(model, _controls(*prompts), quantize="int8")


# -- the live engine: /engine/info, session.json, replay across devices ---------------------

@pytest.fixture(scope="module")
def null_engine_factory(tmp_path_factory):
    identity = {"random_weights": True, "weights_seed": 0, "prompt_dim": 128,
                "size": {"n_layer": 2, "n_head": 2, "n_embd": 128, "n_positions": 256,
                         "vocab_size": 1}}  # small, and a replay rebuilds it from session.json

    def build(**config):
        model, codec = random_model(identity)
        rng = np.random.RandomState(1)
        slots = [rng.randn(128).astype(np.float32) for _ in range(2)]
        cfg = LiveConfig(device="null", sessions_dir=tmp_path_factory.mktemp("sessions"),
                         identity=identity, **config)
        return build_live_engine(model, codec, slots, cfg, log=lambda m: None)

    return build


class _Wire:
    """A stand-in for the OSC server's socket side: what would be sent, to whom."""

    def __init__(self, targets):
        self._targets, self.sent = targets, []

    def targets(self):
        return list(self._targets)

    def send(self, target, address, args):
        self.sent.append((target, address, list(args)))


def test_engine_info_on_status_and_before_a_targets_first_status(null_engine_factory):
    engine = null_engine_factory(window=24, mode="exact")
    info = ["cpu", "fp32", "encodecgpt", 24, "exact"]
    assert list(engine.info().values()) == info
    wire = _Wire([("127.0.0.1", 9)])
    sender = FeedbackSender(wire, engine, period=0.01)
    sender.start()
    assert wait_until(lambda: len(wire.sent) >= 7)  # info, then (status, mix) per tick
    wire._targets.append(("127.0.0.1", 10))
    assert wait_until(lambda: sum(t == ("127.0.0.1", 10) for t, _, _ in wire.sent) >= 5)
    sender.close()
    for target in wire.targets():
        mine = [(a, v) for t, a, v in wire.sent if t == target]
        assert mine[0] == ("/engine/info", info)  # first, and once
        assert [a for a, _ in mine].count("/engine/info") == 1
        assert mine[1][0] == "/engine/status" and len(mine[1][1]) == 11
    server = OSCServer(engine, port=0, log=lambda m: None)
    replies = []
    server.send = lambda target, address, args: replies.append((address, list(args)))
    try:
        server.handle(build_message("/status", []), ("127.0.0.1", 11))
    finally:
        server.close()
    assert ("/engine/info", info) in replies
    assert [a for a, _ in replies][:2] == ["/engine/status", "/engine/mix"]


@pytest.mark.slow
def test_a_gpu_session_replays_on_the_cpu_with_a_notice(null_engine_factory, tmp_path):
    """A session says where it was recorded (session.json and the state); one recorded on a
    GPU replays on the CPU, continuing its rows, and says it is not bit-identical. Without
    a GPU here, the recorded device is rewritten in the files of a CPU recording."""
    engine = null_engine_factory(window=16, mode="exact")
    engine.start()
    try:
        folder = engine.recorder.start("gpu")
        assert wait_until(lambda: engine.recorder.active, timeout=20)
        started = engine.generator.t
        assert wait_until(lambda: engine.generator.t > started + 30, timeout=60)
        engine.recorder.stop()
        assert wait_until(lambda: not engine.recorder.recording, timeout=20)
    finally:
        engine.stop()
    info = json.loads((folder / "session.json").read_text())
    assert info["engine"]["compute"] == "cpu" and info["format_version"] == 3
    assert torch.load(folder / "state.pt", weights_only=True)["compute"] == "cpu"
    notices = []
    tokens, _ = replay(folder, notice=notices.append)
    assert notices == []
    assert np.array_equal(tokens, np.load(folder / "tokens.npy").astype(np.int64))

    info["engine"]["compute"] = "cuda:0"
    (folder / "session.json").write_text(json.dumps(info))
    state = torch.load(folder / "state.pt", weights_only=True)
    torch.save(dict(state, compute="cuda:0", rng=torch.zeros(16, dtype=torch.uint8)),
               folder / "state.pt")
    tokens, audio = replay(folder, compute=torch.device("cpu"), notice=notices.append)
    assert len(notices) == 1 and "recorded on cuda:0 and replays on cpu: not bit-identical" \
        in notices[0]
    assert tokens.shape == np.load(folder / "tokens.npy").shape and np.isfinite(audio).all()
    proc = run_cli("replay", folder, "--out", tmp_path / "out.wav", "--compute", "cpu")
    assert "not bit-identical" in proc.stderr


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusals of a machine without CUDA")
@pytest.mark.parametrize("argv,says", [
    (["--compute", "cuda"], "error: --compute cuda: "),
    (["--compute", "cuda:1"], "error: --compute cuda:1: "),
    (["--compute", "tpu"], "error: --compute expects auto|cpu|cuda|cuda:N|mps, got 'tpu'"),
    (["--quantize", "fp16"], "error: --quantize fp16 runs on CUDA only"),
    (["--mode", "exact", "--quantize", "int8"], "error: --quantize int8: exact mode on the "
                                                "CPU runs the reference model in fp32"),
    (["--step-runner", "graph"], "error: --step-runner applies to exact mode on a GPU"),
])
def test_cli_refuses_in_one_line(argv, says, capsys):
    proc = cli_in_process(capsys, "--random-weights", "--device", "null", "--seconds", "1",
                          *argv)
    assert proc.returncode == 2 and says in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


# -- CUDA only ------------------------------------------------------------------------------

@gpu
def test_streaming_decode_on_cuda_equals_offline():
    """Chunked on the GPU (state carried on the device, one copy out per chunk) against the
    offline CPU decode, within 1e-4; the state comes back to the CPU and continues there."""
    codec = random_codec(0)
    codes = torch.from_numpy(np.random.default_rng(0).integers(0, 1024, (1, 8, 90)))
    offline = codec.decode(codes)
    decoder = StreamingDecoder(codec.model, device="cuda")
    decoder.warm_up(range(1, 5), 8)
    out = [decoder.push(codes[..., i: i + 3]) for i in range(0, 45, 3)]
    state = decoder.get_state()
    assert all(v is None or v.device.type == "cpu" for v in _flat(state["layers"]))
    cpu = StreamingDecoder(codec.model)
    cpu.set_state(state)
    out += [decoder.push(codes[..., i: i + 1]) for i in range(45, 90)]
    tail = cpu.push(codes[..., 45:])
    streamed = torch.cat(out, dim=-1)
    assert streamed.device.type == "cpu"
    assert (streamed - offline).abs().max().item() <= 1e-4
    assert (tail - offline[..., streamed.shape[-1] - tail.shape[-1]:]).abs().max() <= 1e-4


def _flat(values):
    for v in values:
        yield from (v if isinstance(v, list) else [v])


@gpu
def test_generator_on_cuda_fp32_reproduces_the_goldens(loaded):
    apply_precision(WeightFormat("none", torch.float32, torch.device("cuda")))
    g = golden("encodecgpt_A.npz")
    gen = RollingGenerator(loaded.model, _controls(g["prompt_p0"], g["prompt_p1"]), window=20,
                           mode="exact", greedy=True, compute="cuda")
    for i, x in enumerate(np.linspace(0.0, 1.0, 40)):
        gen.schedule(i, [ControlEvent("/morph", (float(x),))])
    assert np.array_equal(_run(gen, 40).numpy(), g["interp_lerp_buf20_delayed"])


@gpu
@pytest.mark.slow
def test_a_cuda_session_replays_token_identically_on_cuda(null_engine_factory):
    engine = null_engine_factory(window=32, mode="exact", compute="cuda", quantize="bf16",
                                 decode_chunk=2)
    assert engine.info()["compute"].startswith("cuda") and engine.startup["capture_s"] > 0
    engine.start()
    try:
        folder = engine.recorder.start("cuda")
        assert wait_until(lambda: engine.recorder.active, timeout=20)
        started = engine.generator.t
        engine.submit([ControlEvent("/morph", (0.7,)), ControlEvent("/topk", (40,))])
        assert wait_until(lambda: engine.generator.t > started + 60, timeout=60)
        engine.recorder.stop()
        assert wait_until(lambda: not engine.recorder.recording, timeout=20)
    finally:
        engine.stop()
    assert json.loads((folder / "session.json").read_text())["engine"]["compute"] == "cuda:0"
    notices = []
    tokens, _ = replay(folder, notice=notices.append)
    assert notices == []
    assert np.array_equal(tokens, np.load(folder / "tokens.npy").astype(np.int64))
