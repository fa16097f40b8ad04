"""``render --model X --text "..."`` for MusicGen: text-to-music offline.

The window is the model's whole context (30 s for the published models; ``--window`` frames
for less); longer renders continue audiocraft-style every ``--stride`` seconds
(:mod:`engine.model.musicgen.render`). ``--text-to`` morphs linearly from ``--text`` to it over
the render (the CFG mixing rule of :mod:`engine.model.musicgen.guidance`). The audio is decoded
with the model's own EnCodec 32 kHz and written at 32 kHz; ``--tokens-out`` gets the delayed
rows ``[N, 4]`` (code + 1, 0 = empty; ``N`` = frames + 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from engine.errors import UserError
from engine.model.audio_io import write_audio
from engine.model.config import SamplingConfig
from engine.model.loading.family import LoadedFamilyModel
from engine.model.musicgen.render import DEFAULT_STRIDE_S, morph_weights, render_rows
from engine.model.tokens.patterns import undelay

DEFAULT_GUIDANCE = 3.0


def add_musicgen_options(p: argparse.ArgumentParser) -> None:
    """The render options only MusicGen reads."""
    m = p.add_argument_group("MusicGen (--model musicgen-small|medium|large, a hub id or folder)")
    m.add_argument("--text", metavar="TEXT", help="the text to render (required for MusicGen)")
    m.add_argument("--text-to", metavar="TEXT",
                   help="morph linearly from --text to this text over the render")
    m.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="classifier-free guidance scale (1 = none)")
    m.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="beyond the model's context (30 s), keep the last context - stride "
                        f"seconds and generate stride seconds more, audiocraft-style (default "
                        f"{DEFAULT_STRIDE_S:g} s, or 60%% of a shorter context)")


def _check(args: argparse.Namespace, loaded: LoadedFamilyModel) -> tuple[int, int]:
    """The context and stride in rows, after refusing what MusicGen cannot do."""
    if not args.text:
        raise UserError("render: --text is required for MusicGen models")
    if args.prompt or args.prompt_to or args.prime:
        raise UserError("--prompt/--prompt-to/--prime are for EnCodecGPT and rotary models; "
                        "MusicGen renders from --text (and --text-to)")
    if args.mode not in (None, "exact") or args.hop is not None:
        raise UserError("MusicGen renders over its context with a KV cache; --mode fast and "
                        "--hop do not apply")
    if not np.isfinite(args.guidance) or not 0.0 <= args.guidance <= 20.0:
        raise UserError(f"--guidance must be in 0..20, got {args.guidance}")
    rate, longest = loaded.facts.frame_rate, loaded.facts.max_positions
    context = args.window if args.window is not None else longest
    if not 1 <= context <= longest:
        raise UserError(f"--window {context}: this MusicGen holds 1..{longest} frames "
                        f"({longest / rate:g} s) of context")
    if args.stride is None:  # audiocraft's 18 s of 30 s
        stride = min(round(DEFAULT_STRIDE_S * rate), max(1, round(0.6 * context)))
    else:
        stride = round(args.stride * rate)
    if not 1 <= stride <= context:
        raise UserError(f"--stride {args.stride:g}: must be 1/{rate} .. {context / rate:g} s "
                        "(the context)")
    return context, stride


def render_musicgen(args: argparse.Namespace, loaded: LoadedFamilyModel,
                    sampling: SamplingConfig) -> int:
    """Render ``--seconds``/``--frames`` of MusicGen; returns the exit status."""
    context, stride = _check(args, loaded)
    rate, num_q = loaded.facts.frame_rate, loaded.facts.codebooks
    frames = args.frames if args.frames is not None else round(args.seconds * rate)
    if frames < 1:
        raise UserError(f"--frames/--seconds must give at least 1 frame (got {frames})")
    if args.top_k is None:  # the model's own default (250 for the published ones)
        top_k = int(loaded.files.model.generation_config.top_k or 0)
        sampling = dataclasses.replace(sampling, top_k=top_k)
    texts = [args.text] + ([args.text_to] if args.text_to else [])
    steps = frames + num_q - 1  # the last frame is complete once its row K - 1 is known
    start = time.perf_counter()
    rows = render_rows(loaded.model, loaded.text, texts, morph_weights(steps, len(texts)),
                       guidance=args.guidance, sampling=sampling, context=context,
                       stride=stride)
    elapsed = time.perf_counter() - start
    if args.tokens_out:
        try:
            np.save(args.tokens_out, rows.numpy().astype(np.int64))
        except OSError as e:
            raise UserError(f"{args.tokens_out}: cannot write ({e.strerror or e})") from None
    if args.out:
        codes = undelay(rows.T[None]) - 1  # [1, K, frames]
        audio = loaded.codec.decode(codes)[0, 0].numpy()  # [640 * frames]
        write_audio(args.out, audio, loaded.codec.sample_rate)
    seconds = frames / rate
    print(f"rendered {frames} frames ({seconds:.2f} s, musicgen, guidance {args.guidance:g}, "
          f"context {context / rate:g} s, stride {stride / rate:g} s"
          f"{', morph' if args.text_to else ''}) in {elapsed:.2f} s "
          f"(x{seconds / max(elapsed, 1e-9):.2f} real time), seed {sampling.seed}",
          file=sys.stderr)
    return 0


def check_not_musicgen_options(args: argparse.Namespace) -> None:
    """``--text``/``--text-to`` given to a model that is not a MusicGen: refused."""
    if getattr(args, "text", None) or getattr(args, "text_to", None):
        raise UserError("--text/--text-to are for MusicGen models (--model musicgen-small, a "
                        "MusicGen hub id or folder)")

