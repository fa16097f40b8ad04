"""Recording, replay, edited automation, crash recovery, a full disk, unsafe names, plot."""

import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
from live_helpers import EngineProcess, free_udp_port, null_engine, run_cli, wait_until
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.errors import UserError
from engine.session.replay import plot, read_session, replay
from osc.server import OSCServer


def _osc(address, *args):
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def _engine(tmp_path, sessions, **kw):
    logs = []
    eng = null_engine(tmp_path, slots=3, hop=8, sessions_dir=sessions, log=logs.append, **kw)
    return eng, logs


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A session recorded from scripted OSC on the paced null sink."""
    tmp = tmp_path_factory.mktemp("rec")
    np.save(tmp / "slot3.npy", np.random.RandomState(9).randn(128).astype(np.float32))
    eng, _ = _engine(tmp, tmp / "sessions")
    server = OSCServer(eng, port=0, log=lambda m: None)
    me = ("127.0.0.1", 9)
    eng.start()
    try:
        server.handle(_osc("/record/start", "take 1"), me)
        assert wait_until(lambda: eng.recorder.active, timeout=20)
        time.sleep(0.4)
        script = [_osc("/morph", 0.8), _osc("/glide", 0.2), _osc("/temperature", 0.7),
                  _osc("/prompt/load", 3, str(tmp / "slot3.npy")), _osc("/topk", 50),
                  _osc("/seed", 5), _osc("/morph/xy", 0.2, 0.9), _osc("/mix", 1.0, 0.0, 0.0, 1.0)]
        for msg in script:
            server.handle(msg, me)
            time.sleep(0.25)
        time.sleep(0.5)
        assert eng.status()["recording"] == 1
        server.handle(_osc("/record/stop"), me)
        assert wait_until(lambda: not eng.recorder.recording, timeout=20)
    finally:
        server.close()
        eng.stop()
    folders = list((tmp / "sessions").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-take_1")
    return folders[0]


def test_session_folder_holds_everything(session):
    info = read_session(session)
    assert info["end_frame"] > info["first_frame"] + 150
    assert info["engine"]["window"] == 32 and info["engine"]["hop"] == 8
    assert info["model"]["random_weights"] and len(info["prompt_slots"]) == 3
    tokens = np.load(session / "tokens.npy")
    assert tokens.shape == (info["end_frame"] - info["first_frame"], 8)
    audio, rate = sf.read(session / "audio.wav", dtype="float32")
    assert rate == 24000 and abs(len(audio) - len(tokens) * 320) <= 16 * 320
    log = [json.loads(line) for line in (session / "controls.jsonl").read_text().splitlines()]
    addresses = [c["address"] for c in log]
    for a in ("/morph", "/glide", "/temperature", "/prompt/slot", "/topk", "/seed", "/mix"):
        assert a in addresses
    assert all(c["sample"] == c["frame"] * 320 for c in log)
    slot_rec = next(c for c in log if c["address"] == "/prompt/slot")
    assert (session / "slots" / f"{slot_rec['values'][1]['sha256']}.npy").is_file()


@pytest.mark.slow
def test_replay_gives_identical_tokens_and_matching_audio(session, tmp_path):
    tokens, audio = replay(session)
    recorded = np.load(session / "tokens.npy").astype(np.int64)
    assert np.array_equal(tokens, recorded)
    played, _ = sf.read(session / "audio.wav", dtype="float32")
    n = min(len(played), len(audio))
    assert n > 100 * 320
    assert np.abs(played[:n] - audio[:n]).max() < 1e-4
    # the same through the command line
    proc = run_cli("replay", session, "--out", tmp_path / "re.wav")
    assert "tokens identical to the recording" in proc.stderr


def test_edited_control_log_changes_the_render_from_the_edit_on(session, tmp_path):
    info = read_session(session)
    edit_frame = info["first_frame"] + 60
    lines = (session / "controls.jsonl").read_text().splitlines()
    lines.append(json.dumps({"frame": edit_frame, "sample": edit_frame * 320, "wall_time": 0,
                             "address": "/seed", "values": [12345]}))
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    original = np.load(session / "tokens.npy").astype(np.int64)
    branch, _ = replay(session, controls=edited)
    assert np.array_equal(branch[:60], original[:60])
    assert not np.array_equal(branch[60:], original[60:])
    assert (branch[60] != original[60]).any()


def test_plot_writes_a_png(session, tmp_path):
    out = plot(session, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_unsafe_session_names_are_refused(tmp_path):
    eng, _ = _engine(tmp_path, tmp_path / "sessions")
    try:
        for bad in ("../evil", "a/b", "..", "x\\y"):
            with pytest.raises(UserError, match="refused"):
                eng.recorder.start(bad)
        assert not (tmp_path / "evil").exists()
    finally:
        eng.stop()


@pytest.mark.slow
def test_kill_9_then_recover_keeps_all_but_the_last_second(tmp_path):
    """What the engine had generated when it was killed is read from its own status line (a
    line every 10 s on a pipe), not from the wall clock: a slow machine generates less."""
    sessions = tmp_path / "sessions"
    proc = EngineProcess("--random-weights", "--preset", "tiny", "--quantize", "int8",
                         "--device", "null", "--osc-port", str(free_udp_port()),
                         "--record", "crash", "--sessions-dir", str(sessions),
                         log=tmp_path / "engine.log")
    try:
        proc.wait_for("recording started")
        # the first status line comes at the start, the next 10 s later
        assert wait_until(lambda: proc.log.count("PLAY") >= 2, 60), proc.log
        status = proc.log.rsplit("PLAY", 1)[1]
        generated_s = float(status.split("s", 1)[0])  # frames generated / 75 at that line
        proc.proc.send_signal(signal.SIGKILL)  # a moment after it: later frames count too
        proc.proc.wait(10)
    finally:
        proc.stop()
    folder = next(sessions.iterdir())
    run_cli("recover", folder, timeout=120)
    info = read_session(folder)
    tokens = np.load(folder / "tokens.npy")
    audio, rate = sf.read(folder / "audio.wav", dtype="float32")
    assert info["recovered"] and tokens.shape[0] == info["end_frame"] - info["first_frame"]
    recorded_s = generated_s - info["first_frame"] / 75  # generated while recording
    assert recorded_s > 3.0, proc.log  # the line came ~10 s after the start
    assert tokens.shape[0] / 75 >= recorded_s - 1.0, (tokens.shape, recorded_s)
    assert len(audio) / rate >= recorded_s - 1.0 - 7 / 75
    replayed, _ = replay(folder)
    assert np.array_equal(replayed, tokens.astype(np.int64))


def test_full_disk_stops_recording_not_playback(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mount.stderr.strip() or 'no permission'})")
    try:
        eng, logs = _engine(tmp_path, mnt)
        errors = []
        eng.error_listeners.append(errors.append)
        eng.start()
        try:
            path = eng.recorder.start("fill")
            assert wait_until(lambda: errors, timeout=30), "the disk never filled"
            assert "stopped" in errors[0] and "fill" in errors[0]
            assert wait_until(lambda: not eng.recorder.recording, timeout=20)
            frame = eng.generator.t
            time.sleep(0.5)
            assert eng.generator.t > frame + 20 and eng.pipeline.error is None
        finally:
            eng.stop()
        audio, _ = sf.read(path / "audio.wav", dtype="float32")
        assert len(audio) > 24000  # what was written stays readable
        assert np.load(path / "tokens.npy").shape[1] == 8
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_edited_control_log_with_an_unknown_address_names_its_line(session, tmp_path):
    lines = (session / "controls.jsonl").read_text().splitlines()
    lines.insert(2, json.dumps({"frame": 3, "sample": 960, "wall_time": 0,
                                "address": "/bogus", "values": [1.0]}))
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"{edited}:3: unknown address /bogus"):
        replay(session, controls=edited)


def test_replay_of_an_unrecovered_session_suggests_recover(session, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(session, cut)
    info = json.loads((cut / "session.json").read_text())
    info["end_frame"] = None  # as a killed engine leaves it
    (cut / "session.json").write_text(json.dumps(info))
    with open(cut / "controls.jsonl", "a") as f:
        f.write('{"frame": 9')  # the half-written last line
    with pytest.raises(UserError, match=r"not a control record .*run `run_engine.py recover "):
        replay(cut)


@pytest.mark.slow
def test_sigterm_while_recording_leaves_a_complete_session(tmp_path):
    """SIGTERM (a service manager, ``kill``): the engine stops as on Ctrl-C and the session
    is finished: headers, session.json's end frame, token-identical replay, no recover."""
    sessions = tmp_path / "sessions"
    proc = EngineProcess("--random-weights", "--preset", "tiny", "--quantize", "int8",
                         "--device", "null", "--osc-port", str(free_udp_port()), "--no-status",
                         "--record", "term", "--sessions-dir", str(sessions),
                         log=tmp_path / "engine.log")
    try:
        proc.wait_for("recording started")
        time.sleep(3.0)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0, proc.log
    finally:
        proc.stop()
    assert "recording stopped" in proc.log
    folder = next(sessions.iterdir())
    info = read_session(folder)
    tokens = np.load(folder / "tokens.npy")  # a complete .npy header: loads as it is
    audio, rate = sf.read(folder / "audio.wav", dtype="float32")
    assert not info.get("recovered") and info["end_frame"] is not None
    assert tokens.shape[0] == info["end_frame"] - info["first_frame"] > 0
    assert abs(len(audio) / rate - (tokens.shape[0] - 7) / 75) < 0.5
    replayed, _ = replay(folder)
    assert np.array_equal(replayed, tokens.astype(np.int64))
