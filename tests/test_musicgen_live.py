"""MusicGen in the live engine: text slots filled while it plays, morphs across them,
``/guidance``, the refusals of what the family lacks, sessions that replay token-identically,
and ``run_engine.py --model MUSICGEN --prompt-text ...`` driven by real OSC peers.

References: a generator stepped by hand with the engine's applied controls at their frames
(and one without them, which must differ), the recorded tokens, liblo's ``oscsend`` /
``oscdump``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from live_helpers import (
    EngineProcess,
    OscDump,
    free_udp_port,
    need,
    null_engine,
    oscsend,
    wait_until,
)

from engine.cli.main import main
from engine.live.controls import ControlError, ControlEvent, ControlState
from engine.live.engine import LiveConfig
from engine.live.listeners import EngineListener
from engine.live.musicgen.generator import MusicGenGenerator
from engine.model.loading.family import load_family
from engine.model.musicgen.tiny import save_random_musicgen
from engine.session.live_session import build_live_engine
from engine.session.replay import replay, replays_identically

PAD, BREAKS = "warm analog pad", "broken breakbeat"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_random_musicgen(tmp_path_factory.mktemp("musicgen-live") / "tiny",
                                context_frames=200)


class Rows(EngineListener):
    def __init__(self):
        self.rows: dict[int, torch.Tensor] = {}

    def on_row(self, frame: int, row) -> None:
        self.rows[frame] = row.clone()


def musicgen_engine(folder, tmp_path, texts=(PAD,), **config):
    loaded = load_family(str(folder))
    fields = {"device": "null", "window": 40, "prompt_dirs": [tmp_path],
              "sessions_dir": tmp_path / "sessions", "scenes_dir": tmp_path / "scenes",
              "identity": {"model": loaded.source, "sha256": loaded.sha256,
                           "family": "musicgen", "codec": loaded.codec.name}, **config}
    return build_live_engine(loaded.model, loaded.codec, list(texts), LiveConfig(**fields),
                             encoder_factory=lambda: loaded.text, log=lambda m: None)


def rerun(engine, frames: int, log) -> torch.Tensor:
    """The engine's generator from its start, stepped by hand with ``log``'s controls at
    their frames: rows ``[frames, K]``."""
    loaded_gen = engine.generator
    controls = ControlState(num_slots=loaded_gen.controls.num_slots, frame_rate=50.0)
    controls.apply(ControlEvent("/prompt/slot/text", (0, PAD)))
    gen = MusicGenGenerator(loaded_gen.lm, loaded_gen.text, controls, window=40,
                            seed=engine.config.seed)
    for entry in log:
        gen.schedule(entry.frame, [ControlEvent(entry.address, entry.values)])
    return torch.stack([gen.step() for _ in range(frames)])


def test_a_text_slot_arriving_while_playing_changes_the_output_without_an_underrun(
        tiny_folder, tmp_path):
    engine = musicgen_engine(tiny_folder, tmp_path)
    rows = Rows()
    engine.add_listener(rows)
    assert engine.family == "musicgen" and engine.info()["family"] == "musicgen"
    assert engine.output.rate == 32_000 and engine.pipeline.hop == 640
    done, failed = [], []
    engine.start()
    try:
        assert wait_until(lambda: engine.generator.t > 20, timeout=30)
        engine.set_text(1, BREAKS, lambda slot, text: done.append((slot, text)), failed.append)
        assert wait_until(lambda: done or failed, timeout=30) and not failed, failed
        engine.submit([ControlEvent("/morph", (1.0,)), ControlEvent("/guidance", (2.0,))])
        assert wait_until(lambda: engine.generator.t > 80, timeout=60)
        status = engine.status()
    finally:
        engine.stop()
    assert done == [(1, BREAKS)] and engine.texts.texts[1] == BREAKS
    assert status["underruns"] == 0 and status["device"] == "null"
    log = engine.generator.control_log
    assert [e.address for e in log] == ["/prompt/slot/text", "/morph", "/guidance"]
    morph_at = log[1].frame
    assert log[0].frame <= morph_at and engine.generator.guidance == 2.0
    frames = max(rows.rows) + 1
    played = torch.stack([rows.rows[f] for f in range(frames)])
    # the same controls at the same frames, stepped by hand: the same tokens ...
    assert torch.equal(rerun(engine, frames, log), played)
    # ... and without them the rows after the morph are other rows
    unchanged = rerun(engine, frames, [])
    assert torch.equal(unchanged[:morph_at], played[:morph_at])
    assert not torch.equal(unchanged[morph_at:], played[morph_at:])


def test_what_musicgen_lacks_is_refused_naming_the_family(tiny_folder, tmp_path):
    engine = musicgen_engine(tiny_folder, tmp_path)
    with pytest.raises(ControlError, match="MusicGen's slots hold texts"):
        engine.submit([ControlEvent("/prompt/slot", (1, np.zeros(8, np.float32)))])
    with pytest.raises(ControlError, match="slot 1 is empty"):
        engine.submit([ControlEvent("/morph", (0.5,))])  # no text in slot 1 yet
    assert "/prompt/load" in engine.unsupported and "/scene/save" not in engine.unsupported
    failed = []
    engine.set_text(9, PAD, lambda *a: None, failed.append)
    engine.set_text(1, "   ", lambda *a: None, failed.append)
    assert "slot must be in 0..3" in failed[0] and "1..1000 characters" in failed[1]


def test_encodecgpt_refuses_guidance_and_texts(tmp_path):
    engine = null_engine(tmp_path)
    with pytest.raises(ControlError, match="EnCodecGPT has no classifier-free guidance"):
        engine.submit([ControlEvent("/guidance", (2.0,))])
    failed = []
    engine.set_text(0, PAD, lambda *a: None, failed.append)
    assert "no text slots" in failed[0] and "EnCodecMAE" in failed[0]
    assert "/prompt/text" in engine.unsupported


def test_a_recorded_musicgen_session_replays_token_identically(tiny_folder, tmp_path):
    engine = musicgen_engine(tiny_folder, tmp_path)
    engine.start()
    try:
        assert wait_until(lambda: engine.generator.t > 10, timeout=30)
        folder = engine.recorder.start("take")
        done = []
        engine.set_text(1, BREAKS, lambda s, t: done.append(s), done.append)
        assert wait_until(lambda: done, timeout=30) and done == [1], done
        engine.submit([ControlEvent("/glide", (0.2,)), ControlEvent("/morph", (0.7,)),
                       ControlEvent("/guidance", (1.5,)), ControlEvent("/temperature", (0.8,))])
        assert wait_until(lambda: engine.generator.t > 70, timeout=60)
        engine.recorder.stop()
        assert wait_until(lambda: (folder / "session.json").is_file()
                          and "end_frame" in (folder / "session.json").read_text(), 30)
        assert wait_until(lambda: not engine.recorder.recording, 30)
    finally:
        engine.stop()
    info = json.loads((folder / "session.json").read_text())
    assert info["model"]["family"] == "musicgen" and info["source_rate"] == 32_000
    assert info["prompt_slots"][0]["text"] == PAD
    recorded = np.load(folder / "tokens.npy")
    assert recorded.shape[0] > 30 and recorded.shape[1] == 4
    tokens, audio = replay(folder)
    np.testing.assert_array_equal(tokens, recorded)
    # K - 1 = 3 rows complete no frame of their own; the decoder holds 4 frames back
    assert audio.shape[0] == (recorded.shape[0] - 3 - 4) * 640
    played, rate = sf.read(folder / "audio.wav", dtype="float32")
    assert rate == 32_000 and played.shape[0] >= audio.shape[0]
    np.testing.assert_allclose(audio, played[:audio.shape[0]], atol=1e-5, rtol=0)
    assert replays_identically(folder)


def test_the_cli_refuses_what_musicgen_cannot_do_in_one_line(tiny_folder, capsys):
    cases = [([], "MusicGen needs a text"),
             (["--prompt-text", PAD, "--quantize", "int8"], "MusicGen runs fp32 weights"),
             (["--prompt-text", PAD, "--mode", "fast"], "recomputes its window"),
             (["--prompt-text", PAD, "--window", "250"], "window must be 1..199")]
    for extra, message in cases:
        assert main(["--model", str(tiny_folder), "--device", "null", "--osc-port", "0",
                     "--seconds", "1", *extra]) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert len(err) == 1 and message in err[0], (extra, err)


@pytest.fixture(scope="module")
def live(tiny_folder, tmp_path_factory):
    need("oscsend")
    d = tmp_path_factory.mktemp("musicgen-osc")
    port, dump_port = free_udp_port(), free_udp_port()
    dump = OscDump(dump_port, d / "dump.txt")
    proc = EngineProcess("--model", str(tiny_folder), "--prompt-text", PAD, "--device", "null",
                         "--osc-port", str(port), "--feedback", f"127.0.0.1:{dump_port}",
                         "--no-status", "--window", "40", "--tap", str(d / "tap.wav"),
                         "--control-log", str(d / "controls.jsonl"), log=d / "engine.log")
    proc.wait_for("playing")
    yield proc, port, dump, d
    assert proc.stop() == 0, proc.log
    dump.close()


def test_run_engine_plays_musicgen_text_slots_driven_by_oscsend(live):
    proc, port, dump, d = live
    assert "MusicGen" in proc.log and PAD in proc.log, proc.log
    oscsend(port, "/prompt/text", "is", 1, BREAKS)
    assert wait_until(lambda: dump.lines("/prompt/loaded"), timeout=30), dump.out.read_text()
    oscsend(port, "/morph", "f", 0.5)
    oscsend(port, "/guidance", "f", 2.5)
    oscsend(port, "/prompt/load", "is", 0, str(d / "x.wav"))
    oscsend(port, "/status")
    assert wait_until(lambda: dump.lines("/engine/info"), timeout=10)
    assert dump.lines("/engine/info")[-1][4] == "musicgen"
    assert any(BREAKS in r for r in dump.raw("/prompt/loaded")), dump.raw("/prompt/loaded")
    assert wait_until(lambda: dump.raw("/error"), timeout=10)
    errors = dump.raw("/error")
    assert any(e.startswith("/prompt/load: ") and "MusicGen" in e for e in errors), errors
    assert wait_until(lambda: '"/guidance"' in (d / "controls.jsonl").read_text(), 10)
    controls = [json.loads(x) for x in (d / "controls.jsonl").read_text().splitlines()]
    applied = {c["address"]: c for c in controls}
    assert applied["/prompt/slot/text"]["values"] == [1, BREAKS]
    assert applied["/morph"]["values"] == [0.5] and applied["/guidance"]["values"] == [2.5]
    assert applied["/morph"]["sample"] == applied["/morph"]["frame"] * 640


def test_a_musicgen_scene_holds_texts_and_recalls_them(tiny_folder, tmp_path):
    """Saved with two texts and a morph; the slot and the mix changed; the recall brings both
    back at one frame (the texts were cached before, so the step ran no T5)."""
    engine = musicgen_engine(tiny_folder, tmp_path)
    engine.start()
    try:
        done = []
        engine.set_text(1, BREAKS, lambda s, t: done.append(s), done.append)
        assert wait_until(lambda: done, timeout=30) and done == [1], done
        engine.submit([ControlEvent("/morph", (0.3,))])
        assert wait_until(lambda: engine.generator.controls.weights[1] == 0.3, timeout=30)
        path = engine.scenes.save("verse")
        engine.set_text(1, "slow piano", lambda s, t: done.append(s), done.append)
        assert wait_until(lambda: len(done) == 2, timeout=30) and done[1] == 1, done
        engine.submit([ControlEvent("/morph", (1.0,))])
        assert wait_until(lambda: engine.generator.controls.slots[1] == "slow piano", 30)
        engine.scenes.recall("verse")
        assert wait_until(lambda: engine.generator.controls.slots[1] == BREAKS, timeout=30)
        controls = engine.generator.controls
    finally:
        engine.stop()
    scene = json.loads(path.read_text())
    assert [s and s.get("text") for s in scene["slots"]] == [PAD, BREAKS, None, None]
    assert controls.slots[:2] == [PAD, BREAKS] and controls.target_weights[1] == 0.3
    assert engine.texts.texts[1] == BREAKS
    recalled = [e for e in engine.generator.control_log if e.address == "/prompt/slot/text"]
    assert [e.values for e in recalled[-2:]] == [(0, PAD), (1, BREAKS)]


def test_a_text_scene_is_refused_by_encodecgpt_and_a_vector_scene_by_musicgen(tiny_folder,
                                                                              tmp_path):
    gpt = null_engine(tmp_path)
    path = gpt.scenes.save("vectors")
    (tmp_path / "scenes" / "texts.json").write_text(json.dumps(
        {**json.loads(path.read_text()), "slots": [{"source": "", "text": PAD}, None]}))
    with pytest.raises(ControlError, match="not texts"):
        gpt.scenes.recall("texts")
    mg = musicgen_engine(tiny_folder, tmp_path)
    with pytest.raises(ControlError, match="MusicGen's slots hold texts"):
        mg.scenes.recall("vectors")
