"""``replay``, ``recover`` and ``plot``: commands on recorded session folders."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soxr

from engine import FRAME_RATE, SAMPLE_RATE
from engine.cli.models import save_npy
from engine.model.audio_io import write_audio
from engine.session.replay import plot, read_session, recover, replay


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
    rec = sub.add_parser("recover", help="fix up a session after a crash or kill")
    rec.add_argument("session", metavar="DIR")
    plo = sub.add_parser("plot", help="PNG: spectrogram above morph weights, temperature, top-k")
    plo.add_argument("session", metavar="DIR")
    plo.add_argument("--out", metavar="PLOT.png", help="default: DIR/plot.png")


def cmd_replay(args: argparse.Namespace) -> int:
    folder = Path(args.session)
    info = read_session(folder)
    start = time.perf_counter()
    tokens, audio = replay(folder, Path(args.controls) if args.controls else None,
                           args.checkpoint, args.trust_checkpoint)
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
    return 0


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


