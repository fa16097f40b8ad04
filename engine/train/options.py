"""Training options (the original recipe as defaults) and the learning-rate schedule.

Kept apart from :mod:`engine.train.task` so the command line can show them without Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine import FRAME_RATE


@dataclass
class TrainOptions:
    """Everything a run depends on; stored in every checkpoint and in ``RUN/train.json``."""

    preset: str | None = None  # a size preset, randomly initialised
    init: str = "gpt2"  # else: GPT2 body from this hub id or folder (the original)
    max_steps: int = 500_000
    batch_size: int = 48
    val_batch_size: int = 16
    accumulate: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    schedule: str = "constant"  # or "cosine" (after warm-up, down to min_lr_ratio · lr)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    clip_seconds: float = 4.0
    mask_empty: bool = False
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    ckpt_every: int = 10_000
    val_every: int = 10_000
    val_fraction: float = 0.02
    max_val_clips: int = 1000
    log_every: int = 50
    workers: int = 4
    seed: int = 0
    arch: str = "encodecgpt"  # or "rotary" (the NSynth-guitar tutorial's decoder)
    pattern: str = "delay"  # the token pattern: delay (encodecgpt) | flatten (rotary)
    optimizer: str = "adamw"  # adamw (the original's) | adam (the rotary recipe's)
    dim: int = 256  # rotary sizes (the recipe's); encodecgpt takes --preset / --init
    depth: int = 6
    heads: int = 4
    max_seq_len: int = 250
    codebooks: int = 2  # rotary: the cache's first N codebooks, flattened

    @property
    def clip_frames(self) -> int:
        return int(round(self.clip_seconds * FRAME_RATE))


# What --arch rotary changes when the option is not given: the tutorial's recipe
ROTARY_RECIPE = {"pattern": "flatten", "optimizer": "adam", "batch_size": 125, "lr": 1e-4,
                 "betas": (0.9, 0.999), "weight_decay": 0.0, "grad_clip": 0.0}
PATTERNS = {"encodecgpt": "delay", "rotary": "flatten"}


def make_optimizer(params, o: TrainOptions) -> torch.optim.Optimizer:
    """``--optimizer`` over ``params``: AdamW (the original's: decay on every parameter,
    biases and norms too) or Adam (the rotary recipe's; its L2 ``--weight-decay``, 0 there)."""
    kind = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def lr_factor(o: TrainOptions):
    """LR multiplier per optimizer step: linear warm-up, then constant or cosine."""
    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        span = max(1, o.max_steps - o.warmup_steps)
        progress = min(1.0, (step - o.warmup_steps) / span)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor
