"""MusicGen: loading a hub-like folder, text conditioning, and the exact rolling generator
against ``MusicgenForConditionalGeneration.generate`` (greedy), with and without guidance;
slot mixing at the corners and mid-morph."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from live_helpers import REPO

from engine.cli.main import main
from engine.errors import UserError
from engine.live.controls import ControlEvent, ControlState
from engine.live.musicgen.generator import MusicGenGenerator
from engine.model.config import SamplingConfig
from engine.model.loading import hub
from engine.model.loading.family import load_family
from engine.model.musicgen.files import is_musicgen
from engine.model.musicgen.guidance import condition_batch, guided_logits
from engine.model.musicgen.render import morph_weights, render_rows, segment_starts
from engine.model.musicgen.tiny import save_random_musicgen
from engine.model.tokens.patterns import undelay

JAZZ, PIANO = "an uplifting jazz song", "slow piano ambient drone"
K = 4


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random tiny MusicGen saved like the hub folder (config, safetensors, tokenizer)."""
    return save_random_musicgen(tmp_path_factory.mktemp("musicgen") / "tiny-musicgen",
                                context_frames=200)


@pytest.fixture(scope="module")
def loaded(tiny_folder):
    return load_family(str(tiny_folder))


def reference_codes(loaded, text: str, guidance: float, frames: int) -> torch.Tensor:
    """Codes ``[K, T]`` that transformers' own greedy generate decodes (captured at its audio
    decoder), for at least ``frames`` frames."""
    model, tokenizer = loaded.files.model, loaded.files.tokenizer
    captured = {}
    decode = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured["codes"] = codes.clone()
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    try:
        # 2K extra steps: generate pads the last K - 1 columns (its end of sequence); those
        # pads must not reach the frames compared
        model.generate(**tokenizer(text, return_tensors="pt"), do_sample=False,
                       guidance_scale=guidance, max_new_tokens=frames + 3 * K)
    finally:
        del model.audio_encoder.decode
    return captured["codes"][0, 0, :, :frames]


def generator(loaded, slots, *, guidance=3.0, window=100, greedy=True):
    controls = ControlState(num_slots=max(2, len(slots)), slots=list(slots))
    return MusicGenGenerator(loaded.model, loaded.text, controls, window=window,
                             guidance=guidance, greedy=greedy)


def rows_to_codes(rows: torch.Tensor) -> torch.Tensor:
    """Generator rows ``[T, K]`` → complete frames' codes ``[K, T - K + 1]``."""
    return undelay(rows.T[None])[0] - 1


def test_a_hub_like_folder_is_recognised_as_musicgen(tiny_folder, loaded):
    f = loaded.facts
    assert (f.name, f.sample_rate, f.frame_rate, f.codebooks, f.card) == (
        "musicgen", 32_000, 50, 4, 2048)
    assert f.special_tokens == {"pad": 2048, "bos": 2048}
    assert (f.pattern, f.conditioning, f.max_positions) == ("delay", "text", 199)
    assert "guidance" in f.controls and "morph" in f.controls
    assert loaded.codec.sample_rate == 32_000 and loaded.sha256
    assert is_musicgen(str(tiny_folder)) and is_musicgen("musicgen-small")
    assert not is_musicgen("nsynth") and not is_musicgen(str(tiny_folder / "config.json"))


def test_offline_a_published_musicgen_names_the_files_it_needs(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    hub.hub_offline.cache_clear()
    try:
        with pytest.raises(UserError) as err:
            load_family("musicgen-small")
    finally:
        hub.hub_offline.cache_clear()
    msg = str(err.value)
    assert "facebook/musicgen-small" in msg and "model.safetensors" in msg
    assert "spiece.model" in msg and "CC-BY-NC 4.0" in msg


def test_text_encodings_are_cached_by_text(loaded):
    a, b = loaded.text.encode(JAZZ), loaded.text.encode(PIANO)
    assert loaded.text.encode(JAZZ) is a
    assert a.hidden.shape == (a.mask.shape[0], loaded.model.causal.config.hidden_size)
    assert not torch.equal(a.hidden[:1], b.hidden[:1])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_exact_generator_equals_transformers_generate_greedy(loaded, guidance):
    frames = 20
    gen = generator(loaded, [JAZZ], guidance=guidance, window=frames + K)
    rows = torch.stack([gen.step() for _ in range(frames + K - 1)])  # [T + K - 1, K]
    ours = rows_to_codes(rows)
    assert torch.equal(ours, reference_codes(loaded, JAZZ, guidance, frames))
    assert (rows[:K - 1] == 0).sum() == K * (K - 1) // 2  # the start triangle is empty


def test_guidance_and_the_text_change_the_tokens(loaded):
    def codes(text, g):
        gen = generator(loaded, [text], guidance=g)
        return torch.stack([gen.step() for _ in range(16)])

    assert not torch.equal(codes(JAZZ, 3.0), codes(JAZZ, 1.0))
    assert not torch.equal(codes(JAZZ, 3.0), codes(PIANO, 3.0))


@pytest.mark.parametrize("corner", [0, 1])
def test_morph_corners_equal_the_single_prompt(loaded, corner):
    text = (JAZZ, PIANO)[corner]
    single = generator(loaded, [text])
    morph = generator(loaded, [JAZZ, PIANO])
    morph.schedule(0, [ControlEvent("/morph", (float(corner),))])
    for _ in range(12):
        a, b = single.step(), morph.step()
        assert torch.equal(single.last_logits, morph.last_logits)
        assert torch.equal(a, b)


def logits_at(gen: MusicGenGenerator, x: float) -> torch.Tensor:
    """The guided logits of the generator's next row with the weights (1 − x, x)."""
    gen.controls.weights = np.array([1.0 - x, x])
    gen.controls.target_weights = gen.controls.weights.copy()
    return gen.step_logits()


def test_a_mid_morph_render_is_continuous_in_the_weights(loaded):
    """Along a morph render, the logits at each step differ from those the same window gives
    with the previous step's weights by at most g·|Δw|·max|cond₁ − cond₀| (the rule is linear
    in the weights), and halfway they are the mean of the two corners."""
    g, steps = 3.0, 24
    gen = generator(loaded, [JAZZ, PIANO], guidance=g, greedy=False)
    for i in range(steps):
        gen.schedule(i, [ControlEvent("/morph", (i / (steps - 1),))])
    rows, previous_w = [], 0.0
    for _ in range(steps):
        gen._apply_pending()
        w = float(gen.controls.weights[1])
        at = {x: logits_at(gen, x) for x in (0.0, previous_w, 1.0, w)}  # w last: it stays
        spread = (at[1.0] - at[0.0]).abs().max().item()  # g·max|cond₁ − cond₀|
        assert (at[w] - at[previous_w]).abs().max().item() <= abs(w - previous_w) * spread + 1e-4
        assert torch.allclose(at[w], (1 - w) * at[0.0] + w * at[1.0], atol=1e-4)
        rows.append(gen.step())
        previous_w = w
    assert len(rows) == steps and spread > 0


# -- offline render ------------------------------------------------------------------------


def test_cached_render_equals_transformers_generate_greedy(loaded):
    frames = 20
    rows = render_rows(loaded.model, loaded.text, [JAZZ], morph_weights(frames + K - 1, 1),
                       guidance=3.0, sampling=SamplingConfig(greedy=True, seed=0), context=199,
                       stride=100)
    assert torch.equal(rows_to_codes(rows), reference_codes(loaded, JAZZ, 3.0, frames))


def test_continued_render_follows_the_segment_schedule(loaded):
    """Beyond the context the cached segments give the rows that a plain forward over each
    step's window (start from :func:`segment_starts`, triangle re-created) gives."""
    steps, context, stride, g = 40, 16, 6, 3.0
    starts = segment_starts(steps, context, stride)
    assert starts[:17] == [0] * 16 + [6] and (starts[22], starts[-1]) == (12, 24)
    rows = render_rows(loaded.model, loaded.text, [JAZZ, PIANO], morph_weights(steps, 2),
                       guidance=g, sampling=SamplingConfig(greedy=True, seed=0), context=context,
                       stride=stride)
    weights = morph_weights(steps, 2)
    batch = condition_batch([loaded.text.encode(JAZZ), loaded.text.encode(PIANO)], [1, 1], g,
                            loaded.text.width)
    lm = loaded.model
    for t in range(steps):
        columns = lm.columns(rows[starts[t]:t], fresh_start=starts[t] > 0)
        step_batch = dataclasses.replace(batch, weights=torch.from_numpy(weights[t]))
        expected = guided_logits(lm.logits(columns, batch), step_batch, g).argmax(-1) + 1
        expected[t + 1:] = 0
        assert torch.equal(rows[t], expected), t


def render_cli(folder, out, *extra) -> list[str]:
    return ["render", "--model", str(folder), "--text", JAZZ, "--seconds", "2", "--seed", "3",
            "--out", str(out), "--tokens-out", str(out.with_suffix(".npy")), *extra]


def test_render_writes_32k_audio_of_the_asked_length_and_text_to_morphs(tiny_folder, tmp_path):
    plain, morph = tmp_path / "plain.wav", tmp_path / "morph.wav"
    assert main(render_cli(tiny_folder, plain)) == 0
    assert main(render_cli(tiny_folder, morph, "--text-to", PIANO)) == 0
    for wav in (plain, morph):
        info = sf.info(str(wav))
        assert (info.samplerate, info.frames) == (32_000, 64_000)
    a, b = np.load(plain.with_suffix(".npy")), np.load(morph.with_suffix(".npy"))
    assert a.shape == b.shape == (100 + K - 1, K)
    assert (a[-20:] != b[-20:]).mean() > 0.5  # the end of the morph is the other text
    audio, _ = sf.read(str(plain))
    assert np.abs(audio).max() > 0


def test_render_refuses_what_musicgen_cannot_do(tiny_folder, tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert main(["render", "--model", str(tiny_folder), "--seconds", "1", "--out",
                 str(out)]) == 2
    assert "--text is required" in capsys.readouterr().err
    assert main(render_cli(tiny_folder, out, "--stride", "9")) == 2
    assert "--stride 9" in capsys.readouterr().err
    assert main(render_cli(tiny_folder, out, "--window", "500")) == 2
    assert "1..199 frames" in capsys.readouterr().err
    assert not out.exists()


def test_text_is_refused_for_an_encodecgpt_model(tmp_path, capsys):
    assert main(["render", "--random-weights", "--prompt", "x.npy", "--text", JAZZ,
                 "--frames", "8", "--out", str(tmp_path / "x.wav")]) == 2
    assert "--text/--text-to are for MusicGen" in capsys.readouterr().err


@pytest.mark.slow
def test_realtime_bench_runs_the_musicgen_family():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "realtime.py"), "--model",
                           "musicgen-tiny-random", "--compute", "cpu", "--frames", "3",
                           "--render-frames", "3", "--window", "20"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["family"] == "musicgen" and result["frames"] == 3
    assert result["rtf"] > 0 and result["render_rtf"] > 0
    assert 0 < result["step_ms_p50"] <= result["step_ms_p99"]
