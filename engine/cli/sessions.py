"""``replay``, ``recover`` and ``plot``: commands on recorded session folders."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soxr
import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.cli.compute_flags import add_compute, add_threads
from engine.cli.models import save_npy
from engine.errors import UserError
from engine.live.step.compute import resolve_compute
from engine.model.audio_io import write_audio
from engine.session.replay import plot, read_session, recorded_compute, recover, replay


def add_parsers(sub) -> None:
    rep = sub.add_parser("replay", help="re-render a recorded session offline")
    rep.add_argument("session", metavar="DIR")
    rep.add_argument("--out", required=True, metavar="OUT.wav",
                     help="audio at the session's output rate")
    rep.add_argument("--controls", metavar="EDITED.jsonl",
                     help="use this control log instead of the recorded one (a branch)")
    rep.add_argument("--tokens-out", metavar="TOK.npy")
    rep.add_argument("--checkpoint", metavar="CKPT",
                     help="replay with this checkpoint instead of the recorded one")
    rep.add_argument("--trust-checkpoint", action="store_true")
    add_compute(rep, auto_help="the device type the session was recorded on where this "
                               "machine has it, else the CPU")
    add_threads(rep)
    rec = sub.add_parser("recover", help="fix up a session after a crash or kill")
    rec.add_argument("session", metavar="DIR")
    plo = sub.add_parser("plot", help="PNG: spectrogram above morph weights, temperature, top-k")
    plo.add_argument("session", metavar="DIR")
    plo.add_argument("--out", metavar="PLOT.png", help="default: DIR/plot.png")


def cmd_replay(args: argparse.Namespace) -> int:
    folder = Path(args.session)
    info = read_session(folder)
    compute = _replay_compute(args.compute, recorded_compute(info))
    start = time.perf_counter()
    try:
        tokens, audio = replay(folder, Path(args.controls) if args.controls else None,
                               args.checkpoint, args.trust_checkpoint, compute=compute,
                               notice=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:
        raise UserError(f"{folder}: {e}") from None
    elapsed = time.perf_counter() - start
    rate = int(info.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, SAMPLE_RATE, rate, quality="HQ")
    write_audio(args.out, audio, rate)
    if args.tokens_out:
        save_npy(args.tokens_out, tokens)
    recorded = np.load(folder / "tokens.npy")
    same = np.array_equal(recorded.astype(np.int64), tokens)
    seconds = len(tokens) / FRAME_RATE
    print(f"replayed {len(tokens)} frames ({seconds:.1f} s) in {elapsed:.1f} s "
          f"(x{seconds / max(elapsed, 1e-9):.1f} real time); tokens "
          f"{'identical to' if same else 'differ from'} the recording -> {args.out}",
          file=sys.stderr)
    if not same:
        print(token_difference(recorded.astype(np.int64), tokens), file=sys.stderr)
    return 0


def token_difference(recorded: np.ndarray, replayed: np.ndarray) -> str:
    """One line: where two token arrays ``[T, Q]`` part, and how much of them differs."""
    n = min(len(recorded), len(replayed))
    rows = np.flatnonzero((recorded[:n] != replayed[:n]).any(axis=1))
    parts = []
    if len(recorded) != len(replayed):
        parts.append(f"{len(replayed)} rows replayed, {len(recorded)} recorded")
    if rows.size:
        first = int(rows[0])
        parts.append(f"first differing row {first} ({first / FRAME_RATE:.2f} s into the "
                     f"recording); {rows.size} of {n} rows differ")
    return "tokens: " + "; ".join(parts)


def _replay_compute(flag: str, recorded: torch.device) -> torch.device:
    """``--compute`` for a replay: ``auto`` keeps the recorded device type where there is one
    (token-identical), else falls back to the CPU (replay then says it is not)."""
    if flag.strip().lower() != "auto":
        return resolve_compute(flag)
    if recorded.type == "cpu":
        return recorded
    for name in (str(recorded), recorded.type):  # cuda:1 → cuda:1, else cuda:0
        try:
            return resolve_compute(name)
        except UserError:
            pass
    return torch.device("cpu")


def cmd_recover(args: argparse.Namespace) -> int:
    report = recover(Path(args.session))
    print(f"{args.session}: {report['frames']} frames "
          f"({report['frames'] / FRAME_RATE:.1f} s) of tokens, "
          f"{report.get('audio_samples', 0)} audio samples, {report['controls_kept']} controls "
          f"kept, {report['controls_dropped']} dropped (partial or after the last frame)",
          file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    out = plot(Path(args.session), Path(args.out) if args.out else None)
    print(f"wrote {out}", file=sys.stderr)
    return 0


