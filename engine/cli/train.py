"""Command lines of the offline training path: ``prepare``, ``train`` and ``export``.

``train`` options default to the original recipe; resuming (``--resume``) takes the
options stored in the checkpoint and lets options given on the command line override them.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

from engine.errors import UserError
from engine.model.config import PRESETS
from engine.model.loading.checkpoint import load_checkpoint, save_pretrained
from engine.train.data.cache import read_index
from engine.train.data.prepare import PrepareOptions, prepare
from engine.train.data.sources import KINDS
from engine.train.options import PATTERNS, ROTARY_RECIPE, TrainOptions


def add_parsers(sub) -> None:
    _add_prepare(sub)
    _add_train(sub)
    exp = sub.add_parser("export", help="a checkpoint -> save_pretrained folder")
    exp.add_argument("checkpoint", metavar="CKPT")
    exp.add_argument("--out", required=True, metavar="DIR")
    exp.add_argument("--trust-checkpoint", action="store_true")


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="audio folder / NSynth / LibriLight -> token cache")
    p.add_argument("src", metavar="SRC",
                   help="folder of wav/flac/ogg/mp3 (recursive), NSynth split folder or its "
                        "examples.json, or a LibriLight-style tree (--kind librilight)")
    p.add_argument("--out", required=True, metavar="CACHE")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help="auto: nsynth if SRC has examples.json, else folder")
    p.add_argument("--family", action="append", default=[], metavar="NAME",
                   help="NSynth instrument family to keep (e.g. guitar); repeatable")
    p.add_argument("--instrument-source", action="append", default=[], metavar="NAME",
                   help="NSynth instrument source to keep (acoustic, electronic, synthetic)")
    p.add_argument("--codec", default="facebook/encodec_24khz", metavar="SRC",
                   help="EnCodec hub id, folder or .th file (random:SEED = untrained, tests only)")
    p.add_argument("--encodecmae", default="base", metavar="SRC",
                   help="EnCodecMAE for the prompt vectors: small|base|large, hub id or folder; "
                        "none: codes only (an unconditional model, train --arch rotary)")
    p.add_argument("--codebooks", type=int, default=8, metavar="N",
                   help="EnCodec codebooks kept: 8 (6 kbps, EnCodecGPT; default), 2 (1.5 kbps, "
                        "the rotary recipe), 4, 16, 32")
    p.add_argument("--clip-seconds", type=float, default=4.0, help="clip length (default 4)")
    p.add_argument("--min-seconds", type=float, default=0.5,
                   help="shortest clip kept from a folder file (default 0.5)")
    p.add_argument("--max-clips", type=int, default=None,
                   help="clips per file (librilight default 10, folder default unlimited)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random crops")
    p.add_argument("--shard-size", type=int, default=256, metavar="FILES")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: CPU cores, at most 8)")
    p.add_argument("--silence-db", type=float, default=-60.0,
                   help="clips quieter than this RMS level are skipped (default -60 dBFS)")
    p.add_argument("--trust-checkpoint", action="store_true")


def _add_train(sub) -> None:
    d = TrainOptions()
    t = sub.add_parser("train", help="train EnCodecGPT (or the rotary recipe) on a token cache "
                       "(Lightning)", description="Defaults are the original recipe (with --arch "
                       "rotary, the NSynth-guitar tutorial's); see README, Training.")
    t.add_argument("--arch", choices=sorted(PATTERNS), default=None,
                   help="encodecgpt (default) or rotary: the x-transformers decoder over "
                        "flattened codebooks (dim 256, depth 6, heads 4, Adam 1e-4, batch 125)")
    t.add_argument("--pattern", choices=sorted(set(PATTERNS.values())), default=None,
                   help="token pattern: delay (encodecgpt) or flatten (rotary); each arch has "
                        "its own, the option states it")
    t.add_argument("cache", metavar="CACHE")
    t.add_argument("--out", required=True, metavar="RUN")
    init = t.add_mutually_exclusive_group()
    init.add_argument("--preset", choices=sorted(PRESETS), default=None,
                      help="random init at this size instead of the gpt2 hub weights")
    init.add_argument("--init", default=None, metavar="ID",
                      help=f"GPT2 body from this hub id or folder (default {d.init})")
    t.add_argument("--resume", metavar="CKPT", help="a checkpoint of this run, or 'last'")
    opt = {  # option: (type, help); defaults come from TrainOptions
        "max_steps": (int, "optimizer steps"), "batch_size": (int, "clips per device"),
        "val_batch_size": (int, None), "accumulate": (int, "gradient accumulation"),
        "lr": (float, "peak learning rate"), "weight_decay": (float, None),
        "grad_clip": (float, "gradient norm clip (0 = off)"),
        "schedule": (str, "constant | cosine"), "warmup_steps": (int, None),
        "min_lr_ratio": (float, "cosine floor as a fraction of --lr"),
        "clip_seconds": (float, "training crop length"),
        "precision": (str, "auto | 32-true | 16-mixed | bf16-mixed"),
        "accelerator": (str, "auto | cpu | gpu"), "devices": (int, "devices per node (DDP)"),
        "num_nodes": (int, "nodes (DDP)"), "ckpt_every": (int, "checkpoint every N steps"),
        "val_every": (int, "validate every N steps"), "val_fraction": (float, None),
        "max_val_clips": (int, None), "log_every": (int, None),
        "workers": (int, "data loader workers"), "seed": (int, None),
        "optimizer": (str, "adamw | adam (rotary default)"),
        "dim": (int, "rotary: model width"), "depth": (int, "rotary: layers"),
        "heads": (int, "rotary: attention heads"),
        "max_seq_len": (int, "rotary: trained length in tokens, start token included"),
        "codebooks": (int, "rotary: the cache's first N codebooks, flattened")}
    for name, (kind, text) in opt.items():
        default = getattr(d, name)
        t.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{text + '; ' if text else ''}default {default}")
    t.add_argument("--betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                   help=f"AdamW betas (default {d.betas[0]} {d.betas[1]})")
    t.add_argument("--mask-empty", action="store_true", default=None,
                   help="leave the delay pattern's empty positions out of the loss")


def cmd_prepare(args: argparse.Namespace) -> int:
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    opts = PrepareOptions(
        src=args.src, out=args.out, kind=args.kind, families=tuple(args.family),
        instrument_sources=tuple(args.instrument_source), codec=args.codec,
        encodecmae=args.encodecmae, num_q=args.codebooks, clip_seconds=args.clip_seconds,
        min_seconds=args.min_seconds, max_clips=args.max_clips, seed=args.seed,
        shard_size=args.shard_size, workers=workers, silence_db=args.silence_db,
        trust=args.trust_checkpoint)
    if opts.codec.startswith("random:"):
        print(f"WARNING: --codec {opts.codec}: an untrained codec; for tests only.",
              file=sys.stderr)
    prepare(opts)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(TrainOptions)
             if getattr(args, f.name, None) is not None}
    _check_arch(given)
    read_index(args.cache)  # a wrong folder is reported before Lightning loads
    resume = args.resume
    if resume == "last":
        resume = str(Path(args.out) / "checkpoints" / "last.ckpt")
    if resume and not Path(resume).is_file():
        raise UserError(f"--resume {resume}: no such checkpoint")
    try:  # imported here: Lightning is the optional `train` extra
        from engine.train.rotary_task import train_rotary
        from engine.train.task import read_meta, train
    except ImportError as e:
        raise UserError(f"training needs Lightning ({e}); install the extra: "
                        "pip install -e '.[train]'") from None
    base = asdict(TrainOptions())
    meta = read_meta(resume) if resume else None
    if meta is not None:
        base.update(meta["options"])
    if given.get("init") is not None:
        base["preset"] = None
    if given.get("arch", base["arch"]) == "rotary" and meta is None:
        base.update(arch="rotary", **ROTARY_RECIPE)
    opts = TrainOptions(**{**base, **given})
    opts.betas = tuple(opts.betas)
    _check(opts)
    if opts.arch == "rotary":
        train_rotary(args.cache, args.out, opts, resume=resume)
    else:
        train(args.cache, args.out, opts, resume=resume, resume_meta=meta)
    return 0


def _check_arch(given: dict) -> None:
    """Options that belong to the other architecture, refused before anything loads."""
    arch = given.get("arch", "encodecgpt")
    pattern = given.get("pattern", PATTERNS[arch])
    if pattern != PATTERNS[arch]:
        raise UserError(f"--arch {arch} --pattern {pattern}: the {arch} model trains on the "
                        f"{PATTERNS[arch]} pattern")
    if arch == "rotary":
        wrong = [n for n in ("preset", "init", "mask_empty") if n in given]
        if wrong:
            raise UserError(f"--arch rotary: --{wrong[0].replace('_', '-')} is EnCodecGPT's "
                            "(the rotary sizes are --dim, --depth, --heads, --max-seq-len)")


def _check(o) -> None:
    positive = ("max_steps", "batch_size", "val_batch_size", "accumulate", "devices",
                "num_nodes", "ckpt_every", "val_every", "log_every")
    for name in positive:
        if getattr(o, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if o.pattern != PATTERNS[o.arch]:  # a resumed run's arch with another --pattern
        raise UserError(f"--arch {o.arch} --pattern {o.pattern}: the {o.arch} model trains on "
                        f"the {PATTERNS[o.arch]} pattern")
    if o.optimizer not in ("adamw", "adam"):
        raise UserError(f"--optimizer {o.optimizer}: expected adamw or adam")
    if o.schedule not in ("constant", "cosine"):
        raise UserError(f"--schedule {o.schedule}: expected constant or cosine")
    if not (o.lr > 0 and 0 <= o.weight_decay and 0 < o.clip_seconds and o.warmup_steps >= 0):
        raise UserError("need --lr > 0, --weight-decay >= 0, --clip-seconds > 0, "
                        "--warmup-steps >= 0")


def cmd_export(args: argparse.Namespace) -> int:
    loaded = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    folder = save_pretrained(loaded.model, loaded.codec, args.out,
                             encodecmae=loaded.encodecmae, context_s=loaded.context_s)
    print(f"exported {args.checkpoint} → {folder} (load with --checkpoint {folder})")
    return 0
