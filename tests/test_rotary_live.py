"""The rotary family live: ``run_engine.py --model tiny.pt`` played by real OSC peers, its
controls and refusals, audio-prefix slots re-primed with a crossfade at the seam.

References: liblo's ``oscsend``/``oscdump`` (the peers), the engine's control log, and for the
seam, decoders run separately on the old and on the primed stream.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from live_helpers import (
    REPO,
    EngineProcess,
    OscDump,
    free_udp_port,
    need,
    oscsend,
    run_cli,
    wait_until,
)

from engine.errors import UserError
from engine.live.audio.seam import CROSSFADE_FRAMES, WARM_FRAMES, Crossfade
from engine.live.controls import ControlError, ControlEvent
from engine.live.decoder import StreamingDecoder
from engine.live.engine import LiveConfig
from engine.live.rotary.generator import UnflattenRows
from engine.model.codec import random_codec
from engine.model.loading.hub import file_sha256
from engine.model.loading.xtransformers import config_json, to_xtransformers_state
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig
from engine.session.live_session import build_live_engine
from engine.session.replay import replay, replays_identically

TINY = RotaryLMConfig(dim=64, depth=2, heads=2, max_seq_len=64, codebooks=2)


def tiny_model(seed: int = 0) -> RotaryLM:
    torch.manual_seed(seed)
    return RotaryLM(TINY).eval()


def write_tiny(folder) -> str:
    """A rotary model file as our training writes it (x-transformers names + JSON beside)."""
    path = folder / "tiny.pt"
    torch.save(to_xtransformers_state(tiny_model()), path)
    path.with_suffix(".json").write_text(json.dumps({**config_json(TINY), "codec": "random:0"}))
    return str(path)


def write_tone(path, seconds: float = 1.0, hz: float = 220.0) -> None:
    t = np.arange(int(seconds * 24000)) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 24000)


def rotary_engine(tmp_path, prefixes=(), **config):
    fields = {"device": "null", "prompt_dirs": [tmp_path], "sessions_dir": tmp_path / "s",
              "scenes_dir": tmp_path / "scenes", **config}
    return build_live_engine(tiny_model(), random_codec(0), list(prefixes),
                             LiveConfig(**fields), log=lambda m: None)


def test_a_flat_seam_starts_on_the_old_stream_and_ends_on_the_primed_one():
    codec, g = random_codec(0), torch.Generator().manual_seed(0)
    old = torch.randint(0, 1024, (1, 2, 30), generator=g)  # what was playing
    primed = torch.randint(0, 1024, (20, 2), generator=g)  # codes [T, Q] of the prefix
    after = torch.randint(0, 1024, (1, 2, 12), generator=g)  # the frames that follow
    playing = StreamingDecoder(codec.model)
    playing.push(old)
    old_path = StreamingDecoder(codec.model)  # reference 1: the old stream goes on
    old_path.push(old)
    expected_old = old_path.push(after)[0, 0]
    fresh = StreamingDecoder(codec.model)  # reference 2: a stream of the prefix, then on
    fresh.push(primed[-WARM_FRAMES:].T[None])
    expected_new = fresh.push(after)[0, 0]
    fade = Crossfade(playing, primed.numpy(), assembler=UnflattenRows(2))
    frames = [f for r in after[0].T if (f := fade.undelay.push(r)) is not None]
    out = fade.push(torch.stack(frames, dim=1)[None])[0, 0]
    n = CROSSFADE_FRAMES * 320
    ramp = torch.clamp((torch.arange(out.shape[0]) + 1) / n, max=1.0)
    torch.testing.assert_close(out, expected_old * (1 - ramp) + expected_new * ramp,
                               atol=1e-5, rtol=0)
    assert fade.done
    assert (out[:1] - expected_old[:1]).abs().max() < 0.01 * expected_old.abs().max()
    torch.testing.assert_close(out[n:], expected_new[n:], atol=1e-5, rtol=0)


def test_the_engine_plays_refuses_the_mix_and_reprimes_from_a_loaded_prefix(tmp_path):
    write_tone(tmp_path / "a.wav", hz=220)
    write_tone(tmp_path / "b.wav", hz=330)
    engine = rotary_engine(tmp_path)
    assert engine.family == "rotary" and engine.info()["family"] == "rotary"
    with pytest.raises(ControlError, match="rotary"):
        engine.submit([ControlEvent("/morph", (0.5,))])
    with pytest.raises(ControlError, match="unconditional"):
        engine.submit([ControlEvent("/mix", (0.5, 0.5))])
    loaded, primed, failed = [], [], []
    engine.start()
    try:
        engine.submit([ControlEvent("/temperature", (0.7,))])
        engine.load_prompt(1, str(tmp_path / "b.wav"), lambda s, p: loaded.append(s),
                           failed.append)
        assert wait_until(lambda: loaded or failed, timeout=30) and not failed, failed
        engine.prime(1, lambda f, n: primed.append(n), failed.append)
        assert primed and not failed, failed
        assert wait_until(lambda: engine.generator.t > 60, timeout=60)
        status = engine.status()
    finally:
        engine.stop()
    log = engine.generator.control_log
    assert [e.values for e in log if e.address == "/temperature"] == [(0.7,)]
    rows = [e for e in log if e.address == "/prime/rows"]
    assert len(rows) == 1 and rows[0].values[0].shape == (primed[0], 2)
    # the prefix is b.wav's first frames as the codec encodes them (at most the window's room)
    codes = random_codec(0).encode_file(tmp_path / "b.wav", num_q=2)[:, : (64 - 1) // 2].T
    np.testing.assert_array_equal(rows[0].values[0], codes.numpy())
    assert status["frame"] > 60 and engine.generator.controls.temperature == pytest.approx(0.7)


def test_scenes_and_listening_are_refused_naming_the_family(tmp_path):
    engine = rotary_engine(tmp_path)
    for action in (lambda: engine.scenes.save("x"), lambda: engine.listen(0)):
        with pytest.raises(UserError, match="rotary"):
            action()


def test_a_recorded_rotary_session_replays_token_identically(tmp_path):
    """Recorded live with a temperature change and a re-prime inside the take; the replay
    (a new generator from the saved window state, the logged controls at their frames)
    gives the same codes."""
    write_tone(tmp_path / "b.wav", hz=330)
    model_file = write_tiny(tmp_path)
    identity = {"model": model_file, "family": "rotary", "sha256": file_sha256(model_file)}
    engine = rotary_engine(tmp_path, identity=identity)
    engine.start()
    try:
        assert wait_until(lambda: engine.generator.t > 10, timeout=30)
        folder = engine.recorder.start("take")
        engine.submit([ControlEvent("/temperature", (0.6,))])
        done = []
        engine.load_prompt(1, str(tmp_path / "b.wav"), lambda s, p: done.append(s), done.append)
        assert wait_until(lambda: done, timeout=30) and done == [1], done
        engine.prime(1, lambda f, n: done.append(n), done.append)
        assert wait_until(lambda: engine.generator.t > 60, timeout=60)
        engine.recorder.stop()
        assert wait_until(lambda: (folder / "session.json").is_file()
                          and "end_frame" in (folder / "session.json").read_text(), 30)
    finally:
        engine.stop()
    info = json.loads((folder / "session.json").read_text())
    assert info["model"]["family"] == "rotary" and info["engine"]["window"] == 64
    recorded = np.load(folder / "tokens.npy")
    assert recorded.shape[0] > 30 and recorded.shape[1] == 2
    tokens, audio = replay(folder)
    np.testing.assert_array_equal(tokens, recorded)
    assert audio.shape[0] == recorded.shape[0] * 320
    assert replays_identically(folder)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    need("oscsend")
    d = tmp_path_factory.mktemp("rotary-live")
    write_tone(d / "a.wav", hz=220)
    write_tone(d / "b.wav", hz=330)
    port, dump_port = free_udp_port(), free_udp_port()
    dump = OscDump(dump_port, d / "dump.txt")
    proc = EngineProcess("--model", write_tiny(d), "--device", "null", "--osc-port", str(port),
                         "--feedback", f"127.0.0.1:{dump_port}", "--no-status",
                         "--control-log", str(d / "controls.jsonl"), "--prompt-dir", str(d),
                         "--prompt", str(d / "a.wav"), log=d / "engine.log")
    proc.wait_for("playing")
    yield proc, port, dump, d
    assert proc.stop() == 0, proc.log
    dump.close()


def test_run_engine_plays_a_rotary_model_driven_by_oscsend(live):
    proc, port, dump, d = live
    assert "rotary" in proc.log and "a.wav (31 frames)" in proc.log, proc.log
    oscsend(port, "/morph", "f", 0.5)
    oscsend(port, "/scene/save", "s", "take")
    oscsend(port, "/temperature", "f", 0.8)
    oscsend(port, "/prompt/load", "is", 1, str(d / "b.wav"))
    assert wait_until(lambda: dump.lines("/prompt/loaded"), timeout=30), dump.out.read_text()
    oscsend(port, "/prime", "i", 1)
    assert wait_until(lambda: dump.lines("/primed"), timeout=30), dump.out.read_text()
    oscsend(port, "/status")
    assert wait_until(lambda: dump.lines("/engine/info"), timeout=10)
    errors = dump.raw("/error")
    assert any(e.startswith("/morph: ") and "rotary" in e for e in errors), errors
    assert any("/scene/save" in e and "rotary" in e for e in errors), errors
    assert dump.lines("/engine/info")[-1][4] == "rotary"
    assert wait_until(lambda: '"/prime/rows"' in (d / "controls.jsonl").read_text(), 10)
    controls = [json.loads(x) for x in (d / "controls.jsonl").read_text().splitlines()]
    temperatures = [c["values"] for c in controls if c["address"] == "/temperature"]
    assert temperatures == [[pytest.approx(0.8)]]  # (an OSC float32)


def test_rotary_live_options_that_do_not_apply_are_refused_in_one_line(tmp_path):
    model = write_tiny(tmp_path)
    for args, words in ((("--quantize", "int8"), "fp32"), (("--input", "file:p.npy"), "--input"),
                        (("--window", "65"), "2..64"), (("--prompt", "p.npy"), "audio prefix")):
        (tmp_path / "p.npy").write_bytes(b"")
        proc = run_cli("--model", model, "--device", "null", *args, ok=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert words in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_realtime_bench_measures_a_rotary_model_file(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "realtime.py"), "--model",
                          write_tiny(tmp_path), "--seconds", "2", "--rtf-frames", "40"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["family"] == "rotary" and result["window"] == 64
    assert result["rtf"] > 0 and result["step_ms_p99"] >= result["step_ms_p50"] > 0
    assert isinstance(result["underruns"], int) and result["paced_played_s"] > 1.0
