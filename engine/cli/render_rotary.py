"""``render --model X`` for the rotary family: unconditional generation, optionally continuing
an audio prefix (``--prompt FILE``), in the chosen window mode.

Writes ``--tokens-out`` as codes ``[T, Q]`` int64 (frames in order, no delay, no offset) and,
with ``--out``, the decoded 24 kHz audio.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.errors import UserError
from engine.live.controls import ControlEvent
from engine.live.rotary.generator import RotaryGenerator
from engine.model.audio_io import write_audio
from engine.model.loading.family import LoadedFamilyModel

PREFIX_SECONDS = 3.0  # audio a prefix contributes at most (then cut to the window anyway)


def render_rotary(args: argparse.Namespace, loaded: LoadedFamilyModel, steps: int) -> int:
    """Render ``steps`` frames; returns the exit status."""
    cfg = loaded.model.cfg
    window = args.window or cfg.max_seq_len
    if not 2 <= window <= cfg.max_seq_len:
        raise UserError(f"--window {window}: the rotary model was trained on {cfg.max_seq_len} "
                        f"positions; give 2..{cfg.max_seq_len} tokens (start token included)")
    prefix = None
    if args.prompt:
        codes = loaded.codec.encode_file(args.prompt, num_q=cfg.codebooks)  # [Q, T]
        prefix = codes[:, : int(PREFIX_SECONDS * FRAME_RATE)]
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    gen = RotaryGenerator(loaded.model, window=window, mode=args.mode or "fast",
                          greedy=args.greedy, seed=seed, prefix=prefix)
    sampling = [ControlEvent("/temperature", (args.temperature,)),
                ControlEvent("/topk", (args.top_k,)), ControlEvent("/topp", (args.top_p,))]
    if not gen.apply_now(sampling):
        raise UserError(f"render: {gen.errors[-1][1]}")
    start = time.perf_counter()
    frames = torch.stack([gen.step() for _ in range(steps)])  # [T, Q]
    elapsed = time.perf_counter() - start
    try:
        np.save(args.tokens_out, frames.numpy().astype(np.int64))
    except OSError as e:
        raise UserError(f"{args.tokens_out}: cannot write ({e.strerror or e})") from None
    if args.out:
        audio = loaded.codec.decode(frames.T[None])[0, 0].numpy()
        write_audio(args.out, audio, SAMPLE_RATE)
    seconds = steps / FRAME_RATE
    print(f"rendered {steps} frames ({seconds:.2f} s, rotary, {gen.mode} mode) in "
          f"{elapsed:.2f} s (x{seconds / max(elapsed, 1e-9):.2f} real time), seed {seed}",
          file=sys.stderr)
    return 0
