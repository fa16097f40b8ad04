"""``replay``, ``recover`` and ``plot`` for recorded sessions (see :mod:`engine.session.recorder`).

Replay restores the generator state saved at the first recorded frame, applies every logged
control at its frame (all controls of one frame as one bundle), and runs the live engine's
:class:`~engine.live.pipeline.Pipeline` (generator thread → undelay → chunked streaming
decode, from the saved decoder state) into a memory sink for as many frames as were
recorded — offline, as fast as the machine allows. With the same model, device type and
dtype the tokens are identical; a session replayed on another device type (recorded on a
GPU, replayed on the CPU, or the reverse) continues the same rows and controls with that
device's sampler and float rounding, and says that its tokens are not bit-identical.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine import FRAME_RATE
from engine.atomic_write import write_json_atomic, write_text_atomic
from engine.errors import UserError
from engine.live.audio.sinks import MemorySink
from engine.live.controls import SPECS, ControlEvent, ControlState
from engine.live.decoder import StreamingDecoder
from engine.live.generator import RollingGenerator
from engine.live.musicgen.generator import MusicGenGenerator
from engine.live.pipeline import Pipeline
from engine.live.rotary.generator import RotaryGenerator
from engine.live.step.compute import resolve_weights
from engine.model.loading.checkpoint import load_checkpoint
from engine.model.loading.family import load_family
from engine.model.loading.random_model import random_model
from engine.model.musicgen.lm import MusicGenLM
from engine.model.rotary_lm import RotaryLM
from engine.session.files import repair_npy, repair_wav
from engine.session.format import (
    load_decoder_state,
    load_generator_state,
    read_session,
)
from engine.session.recorder import embedding_digest

REPLAY_DECODE_CHUNK = 16  # frames per decoder call; a live decode in other chunks gives the
# same audio but for float rounding


def read_controls(path: Path, slots_dir: Path,
                  hint: str = "") -> dict[int, list[ControlEvent]]:
    """``controls.jsonl`` → events per frame (embeddings loaded from ``slots/``).

    Args:
        hint: added to the message about a line that is not a control record (e.g. that an
            unrecovered session needs ``recover``).

    Raises:
        UserError: ``FILE:LINE:`` a line that is not a control record, or names an address
            the generator does not apply (an edit's typo would otherwise be dropped silently).
    """
    by_frame: dict[int, list[ControlEvent]] = {}
    if not path.is_file():
        raise UserError(f"{path}: no such control log")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            frame, address, values = int(rec["frame"]), str(rec["address"]), rec["values"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{n}: not a control record ({e}){hint}") from None
        if address not in SPECS:
            raise UserError(f"{path}:{n}: unknown address {address} (a control log holds "
                            f"{', '.join(sorted(SPECS))})")
        vals = []
        for v in values:
            if isinstance(v, dict) and "sha256" in v:
                vec_path = slots_dir / f"{v['sha256']}.npy"
                if not vec_path.is_file():
                    raise UserError(f"{path}:{n}: embedding {vec_path} is missing")
                vec = np.load(vec_path)
                if embedding_digest(vec) != v["sha256"]:
                    raise UserError(f"{path}:{n}: {vec_path} was changed (its content hashes "
                                    f"to sha256 {embedding_digest(vec)}, the log names "
                                    f"{v['sha256']})")
                vals.append(vec)
            else:
                vals.append(v)
        by_frame.setdefault(frame, []).append(ControlEvent(address, tuple(vals)))
    return by_frame


def load_session_model(info: dict, checkpoint: str | None, trust: bool,
                       notice: Callable[[str], None] = lambda m: None):
    """The model and codec the session was recorded with (or ``checkpoint`` instead; then
    ``notice`` says which hashes differ, if they do)."""
    ident = info.get("model", {})
    if checkpoint is None and ident.get("random_weights"):
        return random_model(ident)
    source = checkpoint or ident.get("checkpoint") or ident.get("model")
    if not source:
        raise UserError("the session names no checkpoint; pass --checkpoint")
    loaded = (load_family(source, trust=trust) if ident.get("family") in ("rotary", "musicgen")
              else load_checkpoint(source, trust=trust))
    recorded = ident.get("sha256")
    if recorded and loaded.sha256 and loaded.sha256 != recorded:
        if checkpoint is None:
            raise UserError(f"{source}: content differs from the recorded checkpoint "
                            f"(sha256 {loaded.sha256[:12]} != {recorded[:12]}, recorded); "
                            "pass --checkpoint to replay with another model anyway")
        notice(f"notice: {source} (sha256 {loaded.sha256[:12]}) is not the recorded "
               f"checkpoint (sha256 {recorded[:12]}): the tokens will differ")
    elif checkpoint is not None and ident.get("random_weights"):
        notice(f"notice: the session was recorded with random weights ({ident.get('preset')}, "
               f"seed {ident.get('seed')}), replayed with {source}: the tokens will differ")
    return loaded.model, loaded.codec


def recorded_compute(info: dict) -> torch.device:
    """The device a session was recorded on (sessions before format version 3: the CPU)."""
    return torch.device(info["engine"].get("compute", "cpu"))


def replay(folder: Path, controls: Path | None = None, checkpoint: str | None = None,
           trust: bool = False, frames: int | None = None,
           compute: torch.device | None = None,
           notice: Callable[[str], None] = lambda m: None,
           audio: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Re-render a session: returns ``(tokens [N, Q] int64, audio [n] float32 at 24 kHz)``.

    Args:
        audio: False generates the tokens only (no decoder; the audio returned is empty):
            the check that a session replays token-identically, at about twice the speed.
        compute: the device to replay on (default: the one it was recorded on).
        notice: told, in one line, when the replay cannot be bit-identical (another device
            type than the recording's).
    """
    folder = Path(folder)
    info = read_session(folder)
    eng = info["engine"]
    recorded = recorded_compute(info)
    compute = recorded if compute is None else torch.device(compute)
    quantize = eng["quantize"]
    if compute.type != recorded.type:
        quantize = resolve_weights(None, compute, eng["mode"]).name
        notice(f"notice: this session was recorded on {recorded} and replays on {compute}: "
               "not bit-identical (another sampler and float rounding; same rows, controls "
               "and window)")
    model, codec = load_session_model(info, checkpoint, trust, notice)
    state, greedy = ControlState(num_slots=eng["num_slots"]), bool(eng.get("greedy", False))
    try:  # e.g. int4 weights recorded, onnxruntime not installed here
        if isinstance(model, RotaryLM):
            gen = RotaryGenerator(model, state, window=eng["window"], mode=eng["mode"],
                                  greedy=greedy, seed=eng["seed"])
        elif isinstance(model, MusicGenLM):  # texts, guidance: restored with the state
            state.frame_rate = codec.frame_rate
            gen = MusicGenGenerator(model, model.text, state, window=eng["window"],
                                    greedy=greedy, seed=eng["seed"])
        else:
            gen = RollingGenerator(model, state, window=eng["window"], mode=eng["mode"],
                                   hop=eng["hop"], quantize=quantize, greedy=greedy,
                                   seed=eng["seed"], compute=compute)
    except ValueError as e:
        raise UserError(f"{folder}: cannot replay this session here: {e}") from None
    gen.set_state(load_generator_state(folder, info), other_device=compute.type != recorded.type)
    first = info["first_frame"]
    unrecovered = info.get("end_frame") is None and controls is None
    hint = (f"; the session was not finished (a crash or kill?): run `run_engine.py recover "
            f"{folder}` first" if unrecovered else "")
    log = read_controls(controls or folder / "controls.jsonl", folder / "slots", hint)
    for frame, events in sorted(log.items()):
        if frame >= first:
            gen.schedule(frame, events)
    if frames is None:
        frames = _recorded_rows(folder)
    if not audio:
        try:
            rows = []
            for _ in range(frames):
                rows.append(gen.step())
                gen.take_seam()  # (the decoder's crossfade marker: no decoder here)
        finally:
            gen.close()
        return _stack(rows, gen.num_q), np.zeros(0, np.float32)
    decoder = StreamingDecoder(codec.model, device=compute)
    dec_state = load_decoder_state(folder, info)
    if dec_state is not None:
        decoder.set_state(dec_state)
    rows, sink = [], MemorySink()
    # threads=None: replay leaves torch's thread settings as the caller has them (setting
    # them, even to the same count, changes MKL's and so the audio's last bits).
    pipeline = Pipeline(gen, decoder, sink, decode_chunk=REPLAY_DECODE_CHUNK, threads=None,
                        on_row=lambda frame, row: rows.append(row))
    if not eng.get("limiter", True):  # recorded with --no-limiter
        pipeline.safety = None
    try:
        pipeline.run(frames)
    finally:
        gen.close()
    audio = sink.audio
    if dec_state is not None and decoder.lookahead_frames:
        # a non-causal codec's decoder (MusicGen's) was saved L frames behind the take's
        # first frame: its first L frames of audio precede the take
        audio = audio[decoder.lookahead_frames * decoder.hop:]
    return _stack(rows, gen.num_q), audio


def replays_identically(folder: Path, threads: int = 1) -> bool:
    """Whether a finished session's tokens come back bit-identical (tokens only, no
    decoder), on ``threads`` torch threads; a session that cannot replay is False (its
    reason printed). A plain module function, so that a process pool can run it."""
    torch.set_num_threads(threads)
    folder = Path(folder)
    try:
        tokens, _ = replay(folder, audio=False)
    except Exception as e:  # noqa: BLE001 - a session that does not replay is the answer
        print(f"{folder}: replay failed ({e})", file=sys.stderr)
        return False
    recorded = np.load(folder / "tokens.npy").astype(np.int64)
    return bool(np.array_equal(np.asarray(tokens), recorded))


def _stack(rows: list[torch.Tensor], num_q: int) -> np.ndarray:
    """``rows`` of ``[Q]`` → ``[N, Q]`` int64."""
    return torch.stack(rows).numpy().astype(np.int64) if rows else np.zeros((0, num_q), np.int64)


def _recorded_rows(folder: Path) -> int:
    path = folder / "tokens.npy"
    if not path.is_file():
        raise UserError(f"{folder}: no tokens.npy (run_engine.py recover {folder} first?)")
    return int(np.load(path, mmap_mode="r").shape[0])


def recover(folder: Path) -> dict:
    """Make a session valid after a crash: headers from the data on disk, a partial last
    control line dropped, controls after the last token dropped, session.json completed."""
    folder = Path(folder)
    info = read_session(folder)
    report = {}
    rows = repair_npy(folder / "tokens.npy") if (folder / "tokens.npy").is_file() else 0
    report["frames"] = rows
    if (folder / "audio.wav").is_file():
        report["audio_samples"] = repair_wav(folder / "audio.wav")
    if (folder / "input.wav").is_file():
        report["input_samples"] = repair_wav(folder / "input.wav")
    last = info["first_frame"] + rows - 1
    log = folder / "controls.jsonl"
    kept = dropped = 0
    if log.is_file():
        good = []
        for line in log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                ok = int(rec["frame"]) <= last
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                good.append(line)
            else:
                dropped += 1
        kept = len(good)
        write_text_atomic(log, "".join(g + "\n" for g in good))
    report.update(controls_kept=kept, controls_dropped=dropped)
    info["end_frame"] = info["first_frame"] + rows
    info["audio_samples"] = report.get("audio_samples", 0)
    if "input_samples" in report:
        info["input_samples"] = report["input_samples"]
    info["recovered"] = True
    write_json_atomic(folder / "session.json", info)
    return report


def control_curves(folder: Path) -> dict[str, np.ndarray]:
    """Per recorded frame: mix weights ``[N, slots]``, temperature, top-k (glide applied),
    by replaying the control log on the saved control state (no model needed)."""
    folder = Path(folder)
    info = read_session(folder)
    saved = load_generator_state(folder, info)["controls"]
    controls = ControlState(num_slots=saved["num_slots"])
    controls.set_state(saved)
    log = read_controls(folder / "controls.jsonl", folder / "slots")
    n = _recorded_rows(folder)
    weights, temps, topks = [], [], []
    for frame in range(info["first_frame"], info["first_frame"] + n):
        for ev in log.get(frame, []):
            if ev.address not in ("/seed", "/reset"):
                try:
                    controls.apply(ev)
                except UserError:
                    pass
        weights.append(controls.weights.copy())
        temps.append(controls.temperature)
        topks.append(controls.top_k)
        controls.advance()
    return {"weights": np.array(weights), "temperature": np.array(temps),
            "top_k": np.array(topks)}


def plot(folder: Path, out: Path | None = None) -> Path:
    """Spectrogram of the recording above the morph weights, temperature and top-k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    folder = Path(folder)
    out = Path(out) if out else folder / "plot.png"
    audio_path = folder / "audio.wav"
    if not audio_path.is_file():
        raise UserError(f"{folder}: no audio.wav to plot")
    audio, rate = sf.read(audio_path, dtype="float32", always_2d=False)
    curves = control_curves(folder)
    t = np.arange(len(curves["temperature"])) / FRAME_RATE
    fig, axes = plt.subplots(4, 1, figsize=(11, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.4, 1, 1]})
    if len(audio) >= 1024:
        axes[0].specgram(audio, NFFT=1024, Fs=rate, noverlap=768, cmap="magma")
    axes[0].set_ylabel("Hz")
    axes[0].set_title(f"{folder.name}")
    for i in range(curves["weights"].shape[1]):
        if curves["weights"][:, i].any():
            axes[1].plot(t, curves["weights"][:, i], label=f"slot {i}")
    axes[1].set_ylabel("mix weight")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].plot(t, curves["temperature"], color="tab:red")
    axes[2].set_ylabel("temperature")
    axes[3].step(t, curves["top_k"], where="post", color="tab:green")
    axes[3].set_ylabel("top-k")
    axes[3].set_xlabel("seconds from the start of the recording")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

