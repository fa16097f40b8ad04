"""The CLI contract, run as a user runs it (``python run_engine.py ...`` in a subprocess), and
how a command line is routed to an offline command or to playing live."""

import json

import numpy as np
import pytest
import soundfile as sf
from fixtures import golden, ref
from live_helpers import cli_in_process
from live_helpers import run_cli as run

from engine.cli.live import build_live_parser
from engine.cli.main import SUBCOMMANDS, command_of, main


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    g = golden("encodecgpt_A.npz")
    np.save(d / "p0.npy", g["prompt_p0"])
    np.save(d / "p1.npy", g["prompt_p1"])
    return d


@pytest.mark.slow
def test_encode_8_and_32_codebooks(tmp_path, ckpt_path):
    g = golden("encodec_A.npz")
    run("encode", ref("signal_A.wav"), "--checkpoint", ckpt_path, "--out", tmp_path / "c.npy")
    codes = np.load(tmp_path / "c.npy")
    assert codes.dtype == np.int64 and np.array_equal(codes, g["codes_6kbps"][0])
    run("encode", ref("signal_A.wav"), "--checkpoint", ckpt_path, "--bandwidth", "24",
        "--out", tmp_path / "c32.npy")
    assert np.array_equal(np.load(tmp_path / "c32.npy"), g["codes_32"][0])


@pytest.mark.slow
def test_embed_prompt_and_frames(tmp_path, mae_dir):
    g = golden("encodecmae_A.npz")
    run("embed", ref("signal_A.wav"), "--encodecmae", mae_dir, "--out", tmp_path / "p.npy")
    vec = np.load(tmp_path / "p.npy")
    assert vec.dtype == np.float32 and np.abs(vec - g["prompt_mean"]).max() < 1e-4
    run("embed", ref("signal_A.wav"), "--encodecmae", mae_dir, "--frames",
        "--out", tmp_path / "f.npy")
    assert np.abs(np.load(tmp_path / "f.npy") - g["features"]).max() < 1e-4


def test_render_window_morph_greedy_golden(tmp_path, ckpt_path, prompts):
    g = golden("encodecgpt_A.npz")
    run("render", "--checkpoint", ckpt_path, "--prompt", prompts / "p0.npy",
        "--prompt-to", prompts / "p1.npy", "--frames", 40, "--greedy", "--window", 20,
        "--tokens-out", tmp_path / "tok.npy", "--out", tmp_path / "out.wav")
    tokens = np.load(tmp_path / "tok.npy")
    assert tokens.shape == (40, 8) and tokens.dtype == np.int64
    assert np.array_equal(tokens, g["interp_lerp_buf20_delayed"])
    audio, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 24000 and audio.shape == (33 * 320,)
    assert np.abs(audio[: 32 * 320 - 640] - g["interp_lerp_buf20_audio"][0, :-640]).max() < 1e-4


@pytest.mark.slow
def test_render_kv_from_audio_prompt_golden(tmp_path, ckpt_path, mae_dir):
    """End to end: the audio file is embedded by EnCodecMAE, then generator (1) runs."""
    run("render", "--checkpoint", ckpt_path, "--prompt", ref("signal_A.wav"),
        "--encodecmae", mae_dir, "--frames", 40, "--greedy", "--tokens-out", tmp_path / "t.npy")
    assert np.array_equal(np.load(tmp_path / "t.npy"),
                          golden("encodecgpt_A.npz")["greedy_kv_maeprompt_delayed"])


@pytest.mark.slow
def test_render_random_weights_says_so_and_seed_repeats(tmp_path, prompts):
    args = ["render", "--random-weights", "--preset", "tiny", "--prompt", prompts / "p0.npy",
            "--seconds", "0.2", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95",
            "--seed", "11", "--window", "8"]
    first = run(*args, "--tokens-out", tmp_path / "a.npy")
    assert "random-weights" in first.stderr and "noise" in first.stderr
    run(*args, "--tokens-out", tmp_path / "b.npy")
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (15, 8) and np.array_equal(a, np.load(tmp_path / "b.npy"))


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert str(needle) in lines[0]


@pytest.mark.slow
def test_bad_inputs_exit_2_with_one_line(tmp_path, ckpt_path, mae_dir):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(ref("signal_A.wav").read_bytes()[:100_000])
    out = tmp_path / "x.npy"
    for bad, needle in [(tmp_path / "missing.wav", "no such file"), (empty, "empty"),
                        (text, "not a readable audio file"), (trunc, "truncated")]:
        _one_line_error(run("encode", bad, "--checkpoint", ckpt_path, "--out", out, ok=False),
                        bad, needle)
    _one_line_error(run("embed", trunc, "--encodecmae", mae_dir, "--out", out, ok=False), trunc)
    wrong = mae_dir / "model.pt"
    _one_line_error(run("render", "--checkpoint", wrong, "--prompt", ref("signal_A.wav"),
                        "--encodecmae", mae_dir, "--frames", 4, "--tokens-out", out, ok=False),
                    wrong, "not an EnCodecGPT checkpoint")
    _one_line_error(run("encode", ref("signal_A.wav"), "--codec", wrong, "--out", out, ok=False),
                    wrong, "expected an EnCodec state dict")
    _one_line_error(run("render", "--checkpoint", "lpepino/encodecgpt/nsynth-base/x.ckpt",
                        "--prompt", ref("signal_A.wav"), "--encodecmae", mae_dir, "--frames", 4,
                        "--tokens-out", out, ok=False), "lpepino/encodecgpt", "Hugging Face")


@pytest.mark.slow
def test_render_a_minute_of_fast_morph_between_audio_prompts(tmp_path, ckpt_path, mae_dir,
                                                              loaded):
    """The issue's command: 60 s of continuous morph, one WAV, no seams (the streamed audio
    equals an offline decode of the same tokens)."""
    import torch

    from engine.model.reference import tokens_to_audio

    t = np.arange(48000) / 24000
    sf.write(tmp_path / "b.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)), 24000)
    proc = run("render", "--checkpoint", ckpt_path, "--encodecmae", mae_dir,
               "--prompt", ref("signal_A.wav"), "--prompt-to", tmp_path / "b.wav",
               "--window", 200, "--mode", "fast", "--seconds", 60, "--seed", 1,
               "--tokens-out", tmp_path / "tok.npy", "--out", tmp_path / "out.wav")
    assert "fast window 200 hop 50" in proc.stderr
    tokens = np.load(tmp_path / "tok.npy")
    assert tokens.shape == (4500, 8)
    audio, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 24000 and audio.shape == ((4500 - 7) * 320,)
    offline = tokens_to_audio(loaded.codec, torch.from_numpy(tokens))
    assert np.abs(audio - offline).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("extra,msg", [
    (["--window", "300"], "window must be 1..299"),
    (["--mode", "fast", "--hop", "0"], "hop must be in 1..200"),
])
def test_render_rejects_bad_window_and_hop(tmp_path, ckpt_path, prompts, extra, msg):
    proc = run("render", "--checkpoint", ckpt_path, "--prompt", prompts / "p0.npy",
               "--frames", 10, "--tokens-out", tmp_path / "t.npy", *extra, ok=False)
    assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr


def test_live_engine_offline_without_options_says_what_it_needs(tmp_path):
    proc = run("--device", "null", "--seconds", "1", ok=False, timeout=120,
               env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2, proc.stderr
    for text in ("nsynth-390ksteps-base.ckpt", "lpepino/encodecmae-base", "--checkpoint"):
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv,command", [
    (["--record", "train"], None),
    (["--prompt-dir", "plot", "--seconds", "1"], None),
    (["--random-weights", "--record", "render", "--sessions-dir", "export"], None),
    (["--threads", "2", "render", "--frames", "4"], "render"),
    (["--threads=2", "train", "cache"], "train"),
    (["replay", "sessions/x"], "replay"),
    ([], None),
])
def test_a_command_is_the_first_word_after_the_global_options(argv, command):
    assert command_of(argv) == command


def test_live_with_record_train_plays_and_records_a_session_named_train(tmp_path):
    """``--record train``: a session name, not the train command."""
    sessions = tmp_path / "sessions"
    proc = run("--random-weights", "--device", "null", "--seconds", "1", "--no-status",
               "--osc-port", "0", "--record", "train", "--sessions-dir", sessions, timeout=180)
    assert "playing; OSC on" in proc.stderr and "stopped after" in proc.stderr
    (folder,) = sessions.iterdir()
    assert folder.name.endswith("-train")
    info = json.loads((folder / "session.json").read_text())
    tokens = np.load(folder / "tokens.npy")
    assert tokens.shape[1] == 8 and tokens.shape[0] > 0
    assert info["end_frame"] - info["first_frame"] == tokens.shape[0]


def test_help_lists_every_command_and_the_defaults():
    text = " ".join(build_live_parser().format_help().split())
    assert all(command in text for command in SUBCOMMANDS) and len(SUBCOMMANDS) == 9
    for default in ("(default: 9000)", "(default: 200)", "(default: 0.2)", "(default: 4)"):
        assert default in text, default


def test_render_writes_a_wav_without_tokens_out(tmp_path):
    prompt = tmp_path / "p.npy"
    np.save(prompt, np.random.RandomState(0).randn(64).astype(np.float32))
    wav = tmp_path / "out.wav"
    assert main(["render", "--random-weights", "--preset", "tiny", "--prompt", str(prompt),
                 "--frames", "24", "--window", "16", "--out", str(wav)]) == 0
    audio, rate = sf.read(wav)
    assert rate == 24000 and len(audio) == (24 - 7) * 320 and not list(tmp_path.glob("*.npy"))[1:]
    assert main(["render", "--random-weights", "--prompt", str(prompt), "--frames", "4"]) == 2


@pytest.mark.slow
def test_a_text_file_or_a_wav_as_checkpoint_is_one_line_exit_2(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.zeros(2400, np.float32), 24000)
    for bad, what in [(text, "a text file"), (wav, "a WAV audio file")]:
        for argv in (["--checkpoint", bad, "--device", "null", "--seconds", "1"],
                     ["encode", wav, "--checkpoint", bad, "--out", tmp_path / "c.npy"],
                     ["export", bad, "--out", tmp_path / "exported"]):
            _one_line_error(run(*argv, ok=False), bad, "not a PyTorch checkpoint", what)


def test_a_lan_osc_host_without_allow_or_an_unknown_feedback_host_refuse_to_start(capsys):
    proc = cli_in_process(capsys, "--random-weights", "--device", "null", "--seconds", "1",
                          "--osc-host", "0.0.0.0")
    _one_line_error(proc, "--osc-host 0.0.0.0", "--allow any")
    assert "playing" not in proc.stderr
    proc = cli_in_process(capsys, "--random-weights", "--device", "null", "--seconds", "1",
                          "--feedback", "nosuchhost.invalid:9001")
    _one_line_error(proc, "nosuchhost.invalid", "does not resolve")
