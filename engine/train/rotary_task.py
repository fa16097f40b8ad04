"""``run_engine.py train --arch rotary --pattern flatten``: the NSynth-guitar tutorial's recipe.

An x-transformers-shaped decoder (:class:`~engine.model.rotary_lm.RotaryLM`; recipe sizes dim
256, depth 6, heads 4, ``max_seq_len`` 250) over the first ``codebooks`` (2) EnCodec
codebooks of a token cache, flattened frame by frame after a start token 0; next-token
cross-entropy over every position; Adam, lr 1e-4, batch 125. A clip is cut to the frames
that fit the trained length: ``(max_seq_len − 1) // codebooks`` (124 frames = 1.65 s).

Outputs in ``RUN``: Lightning checkpoints (``checkpoints/*.ckpt``, to resume), and the
playable model: ``rotary.pt``, a ``TransformerWrapper`` state dict under x-transformers'
names (the current, 1.36+ layout), with ``rotary.json`` beside it (sizes, norm layout, and the
cache's codec) — what ``--model`` loads, and what x-transformers itself can load.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.model.codec import codec_digest, codec_from_spec
from engine.model.loading.xtransformers import config_json, to_xtransformers_state
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig
from engine.train.data.dataset import (
    IGNORE,
    TokenClips,
    collate_flat,
)
from engine.train.options import TrainOptions, lr_factor, make_optimizer
from engine.train.progress import quiet_lightning
from engine.train.report import plot_losses
from engine.train.trainer import ClipTask, make_trainer

MODEL_FILE = "rotary.pt"


def flat_loss(model: RotaryLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy: logits of positions ``0..N-2`` against tokens ``1..N-1``.

    Args:
        batch: ``tokens [B, N]`` (start token first), ``targets [B, N]`` (-100 = padding).
    """
    logits = model(batch["tokens"][:, :-1])  # [B, N-1, V]
    return F.cross_entropy(logits.transpose(1, 2).float(), batch["targets"][:, 1:],
                           ignore_index=IGNORE)


def recipe_config(opts: TrainOptions) -> RotaryLMConfig:
    return RotaryLMConfig(dim=opts.dim, depth=opts.depth, heads=opts.heads,
                          max_seq_len=opts.max_seq_len, codebooks=opts.codebooks)


def clip_frames(cfg: RotaryLMConfig) -> int:
    """Frames per training sequence: the start token plus whole frames within the length."""
    return (cfg.max_seq_len - 1) // cfg.codebooks


class RotaryTask(ClipTask):
    """Training, validation and optimizer of the rotary recipe (the data:
    :class:`~engine.train.trainer.ClipTask`, flattened by :func:`collate_flat`)."""

    def __init__(self, net: RotaryLM, clips: TokenClips, opts: TrainOptions, meta: dict):
        super().__init__()
        self.net, self.clips, self.opts, self.meta = net, clips, opts, meta
        self.frames = clip_frames(net.cfg)
        self.collate = partial(collate_flat, num_q=net.cfg.codebooks,
                               start_token=net.cfg.start_token)

    def training_step(self, batch, batch_idx):
        loss = flat_loss(self.net, batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = flat_loss(self.net, batch)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True,
                 batch_size=batch["tokens"].shape[0])

    def configure_optimizers(self):
        o = self.opts
        opt = make_optimizer(self.net.parameters(), o)  # the recipe: Adam, lr 1e-4
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["encodecgpt_live"] = {**self.meta, "step": self.trainer.global_step}


def _net(opts: TrainOptions, clips: TokenClips) -> RotaryLM:
    cfg = recipe_config(opts)
    if cfg.codebooks > clips.num_q:
        raise UserError(f"--codebooks {cfg.codebooks}: the cache holds {clips.num_q} "
                        f"(prepare it with --codebooks {cfg.codebooks} or more)")
    if clip_frames(cfg) < 1:
        raise UserError(f"--max-seq-len {cfg.max_seq_len}: no whole frame of "
                        f"{cfg.codebooks} tokens fits after the start token")
    return RotaryLM(cfg)


def write_model(net: RotaryLM, folder: Path, codec_spec: str) -> Path:
    """``folder/rotary.pt`` (x-transformers names) and ``rotary.json`` beside it."""
    path = folder / MODEL_FILE
    torch.save(to_xtransformers_state(net), path)
    path.with_suffix(".json").write_text(json.dumps(
        {**config_json(net.cfg), "codec": codec_spec}, indent=1))
    return path


def train_rotary(cache: str, run: str, opts: TrainOptions, resume: str | None = None,
                 log=print) -> Path:
    """Train (or resume) the recipe into ``run``; returns the playable ``rotary.pt``."""
    quiet_lightning()
    L.seed_everything(opts.seed, workers=True, verbose=False)
    clips = TokenClips(cache, opts.val_fraction, opts.max_val_clips)
    net = _net(opts, clips)
    plan = clips.index["plan"]
    if codec_digest(codec_from_spec(plan["codec"]["spec"])) != plan["codec"]["sha256"]:
        raise UserError(f"{cache}: the codec {plan['codec']['spec']!r} now has other weights "
                        "than when the cache was prepared")
    meta = {"arch": "rotary", "config": asdict(net.cfg), "codec": plan["codec"],
            "cache": str(Path(cache).resolve()), "options": asdict(opts)}
    run_dir = Path(run)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.json").write_text(json.dumps(meta, indent=1))
    trainer = make_trainer(opts, run_dir, ckpt_dir, len(clips.val) > 0, log)
    log(f"train (rotary, flatten, {net.cfg.codebooks} codebooks, {clip_frames(net.cfg)} "
        f"frames a sequence): {len(clips.train)} train / {len(clips.val)} validation clips, "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters → {run_dir}")
    trainer.fit(RotaryTask(net, clips, opts, meta), ckpt_path=resume)
    trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    if not trainer.is_global_zero:
        return run_dir / MODEL_FILE
    model = write_model(net.eval(), run_dir, plan["codec"]["spec"])
    png = plot_losses(run_dir)
    log(f"done at step {trainer.global_step}: {model}\nloss curve: {png}\n"
        f"play it:   python run_engine.py render --model {model} --seconds 10 --out tone.wav")
    return model
