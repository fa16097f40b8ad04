"""A live engine that records: the recorder, the control log and the tap, attached to the
engine as listeners (the live path itself knows nothing of files)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from engine.live.engine import LiveConfig, LiveEngine
from engine.live.listeners import EngineListener
from engine.session.recorder import Recorder, control_record
from engine.session.scenes import SceneStore
from engine.session.writers import AudioFileWriter, JsonLinesWriter


class _ControlLog(EngineListener):
    """``--control-log``: one JSON line per applied control, written by its own thread."""

    def __init__(self, writer: JsonLinesWriter, hop: int):
        self.writer, self.hop = writer, hop  # samples a frame at the decoder's rate

    def on_control(self, entry) -> None:
        self.writer.put(control_record(entry, hop=self.hop))

    def close(self) -> None:
        self.writer.close()


class _Tap(EngineListener):
    """``--tap``: everything sent to the output, at the output rate."""

    def __init__(self, writer: AudioFileWriter):
        self.writer = writer

    def on_audio(self, block: np.ndarray, start24: int, rate: int) -> None:
        self.writer.put(block)

    def close(self) -> None:
        self.writer.close()


def build_live_engine(model, codec, slots: list[np.ndarray], config: LiveConfig,
                      encoder_factory: Callable[[], object] | None = None,
                      log: Callable[[str], None] = lambda m: print(m, file=sys.stderr,
                                                                   flush=True)) -> LiveEngine:
    """A :class:`LiveEngine` with a :class:`Recorder` (``engine.recorder``, sessions under
    ``config.sessions_dir``), a :class:`SceneStore` (``engine.scenes``) and, if configured,
    the control log and the tap."""
    engine = LiveEngine(model, codec, slots, config, encoder_factory=encoder_factory, log=log)
    engine.recorder = Recorder(engine, config.sessions_dir, engine.notify)
    engine.add_listener(engine.recorder)
    engine.scenes = SceneStore(engine, config.scenes_dir, log)
    if config.control_log is not None:
        engine.add_listener(_ControlLog(JsonLinesWriter(config.control_log, on_error=log),
                                        engine.pipeline.hop))
    if config.tap is not None:
        engine.add_listener(_Tap(AudioFileWriter(config.tap, engine.output.rate,
                                                 on_error=log)))
    return engine
