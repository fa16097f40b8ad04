"""The recorder's stop protocol, driven frame by frame without a model or a sound card.

A stand-in engine plays the generator (frame boundaries on demand), the pipeline (the decoder
mark) and the output (audio blocks at 24 kHz); the test reads what the recorder wrote.
"""

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from live_helpers import wait_until

from engine.errors import UserError
from engine.live.controls import AppliedControl
from engine.session import recorder as recorder_module
from engine.session.recorder import Phase, Recorder

HOP = 320


class FakeEngine:
    """Just enough of a LiveEngine for the recorder: boundaries, rows, audio, pause."""

    def __init__(self):
        self._boundary, self._marks = [], []
        controls = SimpleNamespace(slots=[np.ones(4, np.float32)], num_slots=1)
        self.generator = SimpleNamespace(
            t=0, at_boundary=self._boundary.append, get_state=lambda: {"t": self.generator.t},
            controls=controls, window=8, hop=2, mode="fast", greedy=False, num_q=2,
            weight_format="none", compute="cpu")
        self.pipeline = SimpleNamespace(at_frame=lambda f, hook: self._marks.append((f, hook)),
                                        hop=320, rate=24000)
        self.config = SimpleNamespace(identity={}, quantize="none", seed=0, limiter=True)
        self.output = SimpleNamespace(rate=24000)
        self.slot_sources, self.is_device, self.playing = {}, False, True
        self.decoded = 0  # frames decoded (audio sent) so far
        self.notices: list[tuple[str, str]] = []

    def frame(self, rec: Recorder, controls: tuple = ()) -> None:
        """One generator step: boundary hooks, controls, the row."""
        gen = self.generator
        hooks, self._boundary[:] = list(self._boundary), []
        for hook in hooks:
            hook(gen)
        for address in controls:
            rec.on_control(AppliedControl(gen.t, address, (0.5,), 0.0))
        rec.on_row(gen.t, torch.full((2,), gen.t, dtype=torch.int64))
        gen.t += 1

    def decode(self, rec: Recorder, upto: int) -> None:
        """The decoder sends frames up to ``upto`` (exclusive) to the output, one per block."""
        while self.decoded < upto:
            for f, hook in [m for m in self._marks if m[0] == self.decoded]:
                self._marks.remove((f, hook))
                hook({"decoded": f}, f * HOP)
            rec.on_audio(np.full(HOP, self.decoded, np.float32), self.decoded * HOP, 24000)
            self.decoded += 1


@pytest.fixture
def setup(tmp_path):
    eng = FakeEngine()
    rec = Recorder(eng, tmp_path / "sessions", lambda kind, text: eng.notices.append((kind,
                                                                                     text)))
    yield eng, rec
    rec.close()


def _finished(rec: Recorder) -> bool:
    return wait_until(lambda: not rec.recording, timeout=5)


def test_a_stop_waits_for_the_last_frames_audio(setup):
    eng, rec = setup
    for _ in range(3):
        eng.frame(rec)
    path = rec.start("take")
    assert rec.phase is Phase.STARTING
    eng.frame(rec)  # frame 3: the first recorded
    assert rec.phase is Phase.RECORDING and rec.active
    eng.frame(rec, controls=("/morph",))
    for _ in range(4):
        eng.frame(rec)
    rec.stop()
    assert rec.phase is Phase.STOPPING
    eng.frame(rec)  # frame 9: rows end here (not recorded)
    eng.frame(rec)
    eng.decode(rec, 8)
    time.sleep(0.3)
    assert rec.phase is Phase.STOPPING, "finished before frame 8's audio was out"
    eng.decode(rec, 12)
    assert _finished(rec)
    assert np.load(path / "tokens.npy")[:, 0].tolist() == list(range(3, 9))
    audio = np.frombuffer((path / "audio.wav").read_bytes()[44:], "<f4")
    assert np.array_equal(audio, np.repeat(np.arange(3, 9, dtype=np.float32), HOP))
    info = json.loads((path / "session.json").read_text())
    assert (info["first_frame"], info["end_frame"], info["audio_samples"]) == (3, 9, 6 * HOP)
    log = [json.loads(x) for x in (path / "controls.jsonl").read_text().splitlines()]
    assert [(c["frame"], c["address"]) for c in log] == [(4, "/morph")]
    assert [k for k, _ in eng.notices] == ["started", "stopped"]


def test_a_pause_while_stopping_finishes_at_once(setup):
    eng, rec = setup
    path = rec.start()
    for _ in range(5):
        eng.frame(rec)
    eng.decode(rec, 2)
    rec.stop()
    eng.playing = False
    rec.on_pause()  # what LiveEngine.pause tells its listeners
    assert rec.phase is Phase.FINISHING
    eng.frame(rec)  # nothing more is taken, even if a frame slips through
    assert _finished(rec)
    assert np.load(path / "tokens.npy").shape == (5, 2)
    assert len(np.frombuffer((path / "audio.wav").read_bytes()[44:], "<f4")) == 2 * HOP


def test_a_stop_given_while_paused_finishes_at_once(setup):
    eng, rec = setup
    path = rec.start()
    for _ in range(4):
        eng.frame(rec)
    eng.playing = False
    rec.stop()
    assert _finished(rec)
    assert np.load(path / "tokens.npy").shape == (4, 2)
    assert [k for k, _ in eng.notices] == ["started", "stopped"]


def test_a_stop_before_the_first_frame_cancels(setup):
    eng, rec = setup
    path = rec.start()
    rec.stop()
    assert _finished(rec)
    eng.frame(rec)  # the start hook, still queued, does nothing now
    assert not path.exists() and rec.phase is Phase.IDLE
    assert [k for k, _ in eng.notices] == ["stopped"]
    rec.start("again")  # and the recorder is free for the next take
    eng.frame(rec)
    assert rec.phase is Phase.RECORDING


def test_a_write_error_ends_idle_with_an_error_notice(setup, tmp_path):
    eng, rec = setup
    rec.sessions_dir = tmp_path / "a_file"
    rec.sessions_dir.write_text("not a folder")
    rec.start()
    eng.frame(rec)
    assert _finished(rec)
    assert [k for k, _ in eng.notices] == ["error"]
    with pytest.raises(UserError, match="not recording"):
        rec.stop()


def test_a_stop_whose_audio_never_comes_finishes_after_the_wait(setup, monkeypatch):
    monkeypatch.setattr(recorder_module, "AUDIO_WAIT_S", 0.3)
    eng, rec = setup
    path = rec.start()
    for _ in range(3):
        eng.frame(rec)
    rec.stop()
    eng.frame(rec)  # the output went quiet: no audio from here on
    assert rec.phase is Phase.STOPPING
    assert _finished(rec)
    assert np.load(path / "tokens.npy").shape == (3, 2)

