"""``replay`` on a session that is not what it was: it says which hashes differ and where the
tokens part, in one line each, instead of a traceback or a silent mismatch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from live_helpers import TINY_IDENTITY, null_engine, run_cli, wait_until

from engine.cli.sessions import token_difference
from engine.errors import UserError
from engine.live.controls import ControlEvent
from engine.model.loading.checkpoint import save_pretrained
from engine.model.loading.random_model import random_model
from engine.session.replay import replay


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A short recorded session with a slot change (an embedding logged by digest)."""
    tmp = tmp_path_factory.mktemp("rec")
    engine = null_engine(tmp, window=32)
    engine.start()
    try:
        assert wait_until(lambda: engine.generator.t > 10, timeout=60)
        engine.recorder.start("take")
        assert wait_until(lambda: engine.recorder.recording, timeout=30)
        vec = np.random.RandomState(5).randn(128).astype(np.float32)
        engine.submit([ControlEvent("/prompt/slot", (1, vec)), ControlEvent("/morph", (0.6,))])
        start = engine.generator.t
        assert wait_until(lambda: engine.generator.t > start + 40, timeout=60)
        engine.recorder.stop()
        assert wait_until(lambda: not engine.recorder.recording, timeout=30)
    finally:
        engine.stop()
    (folder,) = (tmp / "sessions").iterdir()
    return folder


def test_token_difference_names_the_first_differing_row():
    a = np.zeros((100, 8), np.int64)
    b = a.copy()
    b[75:, 3] = 7
    assert token_difference(a, b) == ("tokens: first differing row 75 (1.00 s into the "
                                      "recording); 25 of 100 rows differ")
    assert token_difference(a, b[:90]).startswith("tokens: 90 rows replayed, 100 recorded")


def test_a_changed_slot_file_is_named_with_both_hashes(session, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(session, copy)
    (slot,) = [p for p in (copy / "slots").glob("*.npy")
               if p.stem in (copy / "controls.jsonl").read_text()]
    vec = np.load(slot)
    np.save(slot, vec + 1e-3)
    with pytest.raises(UserError, match=f"was changed .*the log names {slot.stem}"):
        replay(copy)
    tokens, _ = replay(session)  # the original still replays identically
    assert np.array_equal(tokens, np.load(session / "tokens.npy"))


def test_replay_with_another_model_names_the_hashes_and_where_the_tokens_part(session,
                                                                             tmp_path):
    other = tmp_path / "other"
    save_pretrained(*random_model(dict(TINY_IDENTITY, weights_seed=7)), other)
    proc = run_cli("replay", session, "--checkpoint", other, "--out", tmp_path / "r.wav")
    assert "recorded with random weights" in proc.stderr
    assert "differ from the recording" in proc.stderr
    assert "tokens: first differing row 0 (0.00 s into the recording)" in proc.stderr
    # a session that names a checkpoint: another file's content is refused, both hashes named;
    # with --checkpoint it plays, and says which hashes differ
    copy = tmp_path / "copy"
    shutil.copytree(session, copy)
    info = json.loads((copy / "session.json").read_text())
    info["model"] = {"checkpoint": str(other), "sha256": "ab" * 32}
    (copy / "session.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"content differs .*!= abababababab, recorded"):
        replay(copy, frames=4)
    notices = []
    replay(copy, checkpoint=str(other), frames=4, notice=notices.append)
    assert any("is not the recorded checkpoint (sha256 abababababab)" in n for n in notices)
