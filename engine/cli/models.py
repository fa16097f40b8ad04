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
from engine.model.loading.family import LoadedFamilyModel, load_family
from engine.model.loading.pairing import choose_encodecmae
from engine.model.loading.random_model import random_model


def add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT",
                     help="EnCodecGPT checkpoint: a published name (nsynth, librilight, "
                          "audioset), .ckpt file, hub path owner/repo/file.ckpt, or a "
                          "save_pretrained folder")
    src.add_argument("--model", metavar="SRC",
                     help="any model family, recognised from what SRC holds: whatever "
                          "--checkpoint accepts, an x-transformers rotary state dict file "
                          "(the NSynth-guitar tutorial model; sizes from a JSON beside it), or "
                          "a MusicGen: musicgen-small|medium|large, a hub id "
                          "(facebook/musicgen-small) or a folder laid out like the hub")
    src.add_argument("--random-weights", action="store_true",
                     help="untrained model and codec (smoke tests and benchmarks only)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="model size with --random-weights (tiny: 6x512; gpt2: 12x768)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that hold pickled Python objects (trusted sources only)")
    add_rotary_options(p)


def add_rotary_options(p: argparse.ArgumentParser) -> None:
    """Sizes of a rotary (x-transformers) model the weights cannot tell, and its codec."""
    r = p.add_argument_group("rotary family (--model with an x-transformers state dict)")
    r.add_argument("--heads", type=int, help="attention heads (default: JSON beside, else 4)")
    r.add_argument("--codebooks", type=int, help="flattened codebooks (default: JSON, else 2)")
    r.add_argument("--max-seq-len", type=int, help="trained length W (default: JSON, else 250)")
    r.add_argument("--codec", metavar="SRC", default=None,
                   help="EnCodec 24 kHz for the rotary family (default facebook/encodec_24khz; "
                        "random:SEED for tests)")


def rotary_given(args: argparse.Namespace) -> dict:
    """The rotary sizes given on the command line (they override the JSON beside the file)."""
    names = {"heads": "heads", "codebooks": "codebooks", "max_seq_len": "max_seq_len"}
    return {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}


def model_source(args: argparse.Namespace) -> str | None:
    """``--model`` or its alias ``--checkpoint``."""
    return getattr(args, "model", None) or getattr(args, "checkpoint", None)


def load_any(args: argparse.Namespace) -> LoadedFamilyModel:
    """Whatever family ``--model``/``--checkpoint`` holds."""
    return load_family(model_source(args), trust=args.trust_checkpoint,
                       codec=getattr(args, "codec", None), given=rotary_given(args))


def load_model(args: argparse.Namespace, prompt_dim: int | None) -> tuple[EnCodecGPT, Codec]:
    """The checkpoint's model and codec, or random ones with a loud warning."""
    if model_source(args):
        loaded = load_any(args)
        if loaded.facts.name != "encodecgpt":
            raise UserError(f"{model_source(args)}: a {loaded.facts.name} model; this command "
                            "runs EnCodecGPT models only")
        return loaded.model, loaded.codec
    print(f"WARNING: --random-weights: untrained '{args.preset}' model and random codec; the "
          "output is noise. For smoke tests and benchmarks only.", file=sys.stderr)
    return random_model({"preset": args.preset, "weights_seed": args.weights_seed,
                         "prompt_dim": prompt_dim})


def add_encodecmae(p: argparse._ActionsContainer) -> None:
    """``--encodecmae`` and ``--force-encodecmae``: the prompts' encoder and its pairing check
    (:func:`load_paired_checkpoint`)."""
    p.add_argument("--encodecmae", default=None, metavar="SRC",
                   help="EnCodecMAE for audio prompts: small|base|large|..., hub id or folder "
                        "(default: the one the checkpoint was trained with, else base)")
    p.add_argument("--force-encodecmae", action="store_true",
                   help="use --encodecmae even where the checkpoint was trained with another")


def load_paired_checkpoint(args: argparse.Namespace) -> LoadedFamilyModel | None:
    """Load ``--model``/``--checkpoint`` (None with ``--random-weights``). For EnCodecGPT, set
    ``args.encodecmae`` to the EnCodecMAE its prompts need: its own unless ``--encodecmae``
    names another and ``--force-encodecmae`` is given (refused otherwise); a warning when the
    pairing is unknown.
    """
    source = model_source(args)
    if not source:
        args.encodecmae = args.encodecmae or DEFAULT_ENCODECMAE
        return None
    loaded = load_any(args)
    ckpt = loaded.checkpoint
    if ckpt is not None:
        args.encodecmae, warning = choose_encodecmae(ckpt.encodecmae, ckpt.pairing,
                                                     args.encodecmae, args.force_encodecmae,
                                                     source)
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
