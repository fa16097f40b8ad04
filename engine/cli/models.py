"""Choosing the model on the command line: a checkpoint, or random weights (loudly)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from engine.errors import UserError
from engine.live.step.kv_step import bf16_is_native
from engine.model.codec import Codec
from engine.model.config import PRESETS
from engine.model.encodecgpt import EnCodecGPT
from engine.model.encodecmae import DEFAULT_ENCODECMAE
from engine.model.loading.checkpoint import LoadedCheckpoint, load_checkpoint
from engine.model.loading.pairing import choose_encodecmae
from engine.model.loading.random_model import random_model


def add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT",
                     help="EnCodecGPT checkpoint: a published name (nsynth, librilight, "
                          "audioset), .ckpt file, hub path owner/repo/file.ckpt, or a "
                          "save_pretrained folder")
    src.add_argument("--random-weights", action="store_true",
                     help="untrained model and codec (smoke tests and benchmarks only)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="model size with --random-weights (tiny: 6x512; gpt2: 12x768)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that hold pickled Python objects (trusted sources only)")


def load_model(args: argparse.Namespace, prompt_dim: int | None) -> tuple[EnCodecGPT, Codec]:
    """The checkpoint's model and codec, or random ones with a loud warning."""
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        return loaded.model, loaded.codec
    print(f"WARNING: --random-weights: untrained '{args.preset}' model and random codec; the "
          "output is noise. For smoke tests and benchmarks only.", file=sys.stderr)
    return random_model({"preset": args.preset, "weights_seed": args.weights_seed,
                         "prompt_dim": prompt_dim})


def load_paired_checkpoint(args: argparse.Namespace) -> LoadedCheckpoint | None:
    """Load ``--checkpoint`` (None with ``--random-weights``) and set ``args.encodecmae`` to
    the EnCodecMAE its prompts need: its own unless ``--encodecmae`` names another and
    ``--force-encodecmae`` is given (refused otherwise); a warning when the pairing is unknown.
    """
    if not args.checkpoint:
        args.encodecmae = args.encodecmae or DEFAULT_ENCODECMAE
        return None
    loaded = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    args.encodecmae, warning = choose_encodecmae(loaded.encodecmae, loaded.pairing,
                                                 args.encodecmae, args.force_encodecmae,
                                                 args.checkpoint)
    if warning:
        print(warning, file=sys.stderr)
    return loaded


def check_bf16() -> None:
    if not bf16_is_native():
        raise UserError("--quantize bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); "
                        "it would run slower than fp32. Use --quantize int8 or none.")


def save_npy(path: str, array: np.ndarray) -> None:
    try:
        np.save(path, array)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
