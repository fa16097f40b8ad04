"""Session folders of every format version: release 0's folder (format version 1, kept in
tests/data/session_v1) replays token-identically; a session written now is version 2 with
state files that torch reads with ``weights_only=True``; a newer version is refused; and a
version 1 state.pt cannot make the reader run code."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from live_helpers import wait_until

from engine.errors import UserError
from engine.live.engine import LiveConfig
from engine.model.loading.random_model import random_model
from engine.session.format import FORMAT_VERSION, load_generator_state, read_session
from engine.session.live_session import build_live_engine
from engine.session.replay import replay

V1 = Path(__file__).parent / "data" / "session_v1"


def test_release_0_session_replays_token_identically():
    info = read_session(V1)
    assert info["version"] == 1 and "format_version" not in info  # really the old format
    tokens, audio = replay(V1)
    assert np.array_equal(tokens, np.load(V1 / "tokens.npy").astype(np.int64))
    played, _ = sf.read(V1 / "audio.wav", dtype="float32")
    n = min(len(played), len(audio))
    assert n > 150 * 320 and np.abs(played[:n] - audio[:n]).max() < 1e-4


@pytest.fixture(scope="module")
def new_session(tmp_path_factory) -> Path:
    """A short session recorded now (null sink, tiny random model)."""
    tmp = tmp_path_factory.mktemp("now")
    info = json.loads((V1 / "session.json").read_text())
    model, codec = random_model(info["model"])
    rng = np.random.RandomState(0)
    cfg = LiveConfig(window=32, hop=8, device="null", sessions_dir=tmp / "sessions",
                     identity=info["model"])
    eng = build_live_engine(model, codec, [rng.randn(128).astype(np.float32)] * 2, cfg,
                            log=lambda m: None)
    eng.start()
    try:
        path = eng.recorder.start("now")
        assert wait_until(lambda: eng.recorder.active, timeout=20)
        started = eng.generator.t
        assert wait_until(lambda: eng.generator.t > started + 40, timeout=30)
        eng.recorder.stop()
        assert wait_until(lambda: not eng.recorder.recording, timeout=20)
    finally:
        eng.stop()
    return path


def test_new_session_is_version_3_with_weights_only_state_files(new_session):
    info = read_session(new_session)
    assert info["format"] == "encodecgpt-live-session"
    assert info["format_version"] == FORMAT_VERSION == 3 and "version" not in info
    for name in ("state.pt", "decoder_state.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(new_session / name) == []
        assert isinstance(torch.load(new_session / name, weights_only=True), dict)
    tokens, _ = replay(new_session)
    assert np.array_equal(tokens, np.load(new_session / "tokens.npy").astype(np.int64))


def test_newer_format_version_is_refused(tmp_path):
    folder = tmp_path / "future"
    shutil.copytree(V1, folder)
    info = json.loads((folder / "session.json").read_text())
    info["format_version"] = FORMAT_VERSION + 1
    (folder / "session.json").write_text(json.dumps(info))
    message = f"format_version {FORMAT_VERSION + 1} is newer than this release reads"
    with pytest.raises(UserError, match=message):
        read_session(folder)
    with pytest.raises(UserError, match=message):
        replay(folder)


class _Payload:
    """Pickles as a call of ``Path.touch`` — what a hostile state.pt could hold."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_version_1_state_cannot_run_code(tmp_path):
    folder = tmp_path / "hostile"
    shutil.copytree(V1, folder)
    target = tmp_path / "ran"
    torch.save({"t": _Payload(target)}, folder / "state.pt")
    with pytest.raises(UserError, match="unreadable"):
        load_generator_state(folder, read_session(folder))
    assert not target.exists()

