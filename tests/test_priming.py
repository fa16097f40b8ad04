"""Priming from audio: encode → delay → strip the unfinished last Q−1 columns → feed after the
prompt, then continue. Checked against the golden codes and against the original priming path
written out here (a slow loop that recomputes ``[prompt, rows]`` whole at every step)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_random_model
from fixtures import golden, needs_fixtures, ref

from engine.cli.main import main
from engine.live.control_input import initial_controls
from engine.live.generator import RollingGenerator
from engine.model.config import SamplingConfig
from engine.model.reference import generate_window
from engine.model.sampling import sample_frame
from engine.model.tokens.priming import prime_frames, prime_rows

Q = 8


def original_priming(codes: torch.Tensor) -> torch.Tensor:
    """The original path, independently: codes ``[Q, T]`` → delayed ``[Q, T + Q − 1]``
    (codebook k shifted right by k, +1, 0 = empty) → first T columns → rows ``[T, Q]``."""
    q, t = codes.shape
    delayed = torch.zeros(q, t + q - 1, dtype=torch.long)
    for k in range(q):
        for c in range(t):
            delayed[k, c + k] = codes[k, c] + 1
    return delayed[:, :t].T


def original_continuation(model, prompt: torch.Tensor, primed: torch.Tensor, window: int,
                          steps: int, sampling: SamplingConfig | None = None,
                          seed: int = 0) -> torch.Tensor:
    """The primed rows are the sequence's first rows; each step runs ``[prompt, last W rows]``
    whole, with the start triangle re-created (codebooks > k of row k emptied) once the window
    no longer starts at the sequence start."""
    rng = torch.Generator().manual_seed(seed)
    rows = [r for r in primed]
    for _ in range(steps):
        ctx = torch.stack(rows[-window:]).clone()
        if len(rows) > window:
            for k in range(Q - 1):
                ctx[k, k + 1:] = 0
        with torch.inference_mode():
            logits, _ = model(prompt[None], ctx[None], last_only=True)
        last = logits[0, -1]
        if sampling is None:
            rows.append(last.argmax(-1))
        else:
            rows.append(sample_frame(last[None], temperature=sampling.temperature, top_k=0,
                                     top_p=1.0, greedy=False, generator=rng)[0])
    return torch.stack(rows[len(primed):])


def _signal() -> np.ndarray:
    audio, sr = sf.read(ref("signal_A.wav"), dtype="float32")
    assert sr == 24_000
    return audio


@needs_fixtures
def test_primed_rows_are_the_golden_codes_delayed_and_stripped(loaded):
    g = golden("encodec_A.npz")
    rows = prime_rows(loaded.codec, _signal(), Q, 300)  # the whole 4 s: 300 frames
    assert torch.equal(rows, original_priming(torch.from_numpy(g["codes_6kbps"][0])))
    # ... which is also the original model's own delayed layout, first 300 columns
    delayed = golden("encodecgpt_A.npz")["delayed_codes"][0]  # [Q, 307]
    assert np.array_equal(rows.numpy(), delayed[:, :300].T)


@needs_fixtures
def test_primed_rows_are_the_last_seconds(loaded):
    audio = _signal()
    rows = prime_rows(loaded.codec, audio, Q, 30)
    tail = torch.from_numpy(audio[-30 * 320:])[None, None]
    assert torch.equal(rows, original_priming(loaded.codec.encode(tail, Q)[0]))
    assert rows.shape == (30, Q) and (rows[:Q - 1].triu(1) == 0).all()  # the start triangle


def test_context_is_capped_by_the_window():
    frames, note = prime_frames(3.0, 200)  # NSynth's 3 s = 225 frames > W = 200
    assert frames == 200 and "3 s" in note and "200 frames" in note
    assert prime_frames(3.0, 250) == (225, None)
    frames, note = prime_frames(10.0, 299)
    assert frames == 299 and "10 s" in note
    assert prime_frames(None, 120) == (120, None)


@needs_fixtures
@pytest.mark.parametrize("window", [50, 30])
def test_primed_continuation_greedy_equals_original_path(loaded, window):
    """40 greedy frames after 30 primed ones; W = 50 crosses the window edge at step 20,
    W = 30 starts full."""
    model = loaded.model
    prompt = torch.from_numpy(golden("encodecgpt_A.npz")["prompt_p0"])
    primed = prime_rows(loaded.codec, _signal(), Q, 30)
    expected = original_continuation(model, prompt, primed, window, 40)
    ours = generate_window(model, prompt[None].repeat(40, 1), window, primed=primed).tokens
    assert torch.equal(ours, expected)
    for runner in (None, "eager"):  # the reference model; the static (GPU) step on the CPU
        gen = RollingGenerator(model, initial_controls([prompt.numpy()]), window=window,
                               mode="exact", greedy=True, runner=runner)
        gen.prime(primed)
        assert torch.equal(torch.stack([gen.step() for _ in range(40)]), expected), runner


def test_primed_sampling_same_seed_same_tokens_in_every_path():
    model = tiny_random_model()
    rng = np.random.RandomState(1)
    prompt = torch.from_numpy(rng.randn(128).astype(np.float32))
    primed = original_priming(torch.from_numpy(rng.randint(0, 1024, (Q, 10))))
    sampling = SamplingConfig(temperature=1.0, seed=11)
    expected = original_continuation(model, prompt, primed, 16, 40, sampling, seed=11)
    ref_tokens = generate_window(model, prompt[None].repeat(40, 1), 16, sampling,
                                 generator=torch.Generator().manual_seed(11),
                                 primed=primed).tokens
    assert torch.equal(ref_tokens, expected)
    for mode, hop in (("exact", None), ("fast", 1)):
        gen = RollingGenerator(model, initial_controls([prompt.numpy()], temperature=1.0),
                               window=16, mode=mode, hop=hop, seed=11)
        gen.prime(primed)
        try:
            assert torch.equal(torch.stack([gen.step() for _ in range(40)]), expected), mode
        finally:
            gen.close()


def test_fast_mode_primed_follows_its_window_schedule():
    """Fast mode with H > 1 switches windows at b = seq_start + H, +2H, …; a constant prompt
    gives exactly ``[prompt, rows b(t)..t-1]`` — the primed rows counted as generated."""
    model = tiny_random_model()
    rng = np.random.RandomState(2)
    prompt = torch.from_numpy(rng.randn(128).astype(np.float32))
    primed = original_priming(torch.from_numpy(rng.randint(0, 1024, (Q, 9))))
    window, hop, n0 = 12, 3, 9
    rows = list(primed)
    for _ in range(40):
        t = len(rows)
        b = max(0, -(-(t - window) // hop)) * hop
        ctx = torch.stack(rows[b:t]).clone()
        if b > 0:
            for k in range(Q - 1):
                ctx[k, k + 1:] = 0
        with torch.inference_mode():
            logits, _ = model(prompt[None], ctx[None], last_only=True)
        rows.append(logits[0, -1].argmax(-1))
    expected = torch.stack(rows[n0:])
    gen = RollingGenerator(model, initial_controls([prompt.numpy()]), window=window,
                           mode="fast", hop=hop, greedy=True, background=False)
    for _ in range(5):  # priming mid-run: a new sequence from the primed rows on
        gen.step()
    gen.prime(primed)
    try:
        assert torch.equal(torch.stack([gen.step() for _ in range(40)]), expected)
    finally:
        gen.close()


def test_prime_refuses_more_rows_than_the_window():
    gen = RollingGenerator(tiny_random_model(), initial_controls([np.zeros(128, np.float32)]),
                           window=8, mode="exact")
    with pytest.raises(ValueError, match="1 <= T <= 8"):
        gen.prime(torch.zeros(9, Q, dtype=torch.long))


@needs_fixtures
def test_render_prime_writes_primed_rows_then_the_continuation(ckpt_path, loaded, tmp_path):
    prompt = golden("encodecgpt_A.npz")["prompt_p0"]
    np.save(tmp_path / "p.npy", prompt)
    tok = tmp_path / "tok.npy"
    assert main(["render", "--checkpoint", str(ckpt_path), "--prompt", str(tmp_path / "p.npy"),
                 "--prime", str(ref("signal_A.wav")), "--window", "40", "--frames", "20",
                 "--greedy", "--tokens-out", str(tok), "--out", str(tmp_path / "o.wav")]) == 0
    tokens = torch.from_numpy(np.load(tok))
    primed = prime_rows(loaded.codec, _signal(), Q, 40)  # context unknown: the window
    assert torch.equal(tokens[:40], primed)
    expected = original_continuation(loaded.model, torch.from_numpy(prompt), primed, 40, 20)
    assert torch.equal(tokens[40:], expected)
    audio, sr = sf.read(tmp_path / "o.wav")
    assert sr == 24_000 and audio.shape[0] == (60 - Q + 1) * 320
