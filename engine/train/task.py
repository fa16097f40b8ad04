"""``run_engine.py train``: EnCodecGPT on a token cache, with Lightning (one GPU or many).

The recipe defaults are the original's (mrpep/encodecgpt ``train_lm.gin``): AdamW lr 1e-4,
betas (0.9, 0.95), weight decay 0.05 on every parameter, 4 s clips, batch 48 per device,
fp16 mixed precision on GPUs (bf16 where supported), gradient clipping 1.0, checkpoints and
validation every 10 000 steps, cross-entropy over every delayed position (empty ones
included) with the head's last position dropped. Options: warm-up + cosine, masking the
empty positions, DDP across devices and nodes, gradient accumulation.

Checkpoints are Lightning files whose ``state_dict`` has the original layout (``gpt.*``,
``vocab_embed.weight``, ``classification_head.*``, ``encodec_model.*`` in ``encodec``-package
keys) plus an ``encodecgpt_live`` entry (GPT2 config, prompt size, codec, options), so the
live engine and ``render`` load them as they are.

Exact resume: optimizer, scheduler and step come back through Lightning; the batches are a
function of the step (:mod:`engine.train.data.dataset`) and dropout is reseeded from
``(seed, step, micro-batch, rank)`` each micro-batch, so a resumed run repeats the same curve.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.model.codec import codec_digest, codec_from_spec, encodec_package_state_dict
from engine.model.config import PRESETS
from engine.model.encodecgpt import EnCodecGPT, gpt2_config
from engine.model.loading.hub import load_torch_file
from engine.train.data.dataset import (
    IGNORE,
    TokenClips,
    collate,
)
from engine.train.options import TrainOptions, lr_factor, make_optimizer
from engine.train.progress import quiet_lightning
from engine.train.report import plot_losses
from engine.train.trainer import ClipTask, make_trainer

META_KEY = "encodecgpt_live"


def lm_loss(model: EnCodecGPT, batch: dict[str, torch.Tensor], mask_empty: bool) -> torch.Tensor:
    """The original loss: cross-entropy of ``logits[:, :-1]`` against the delayed tokens.

    Args:
        batch: ``prompts [B, P]``, ``tokens [B, Q, L]``, ``targets [B, Q, L]`` (-100 = pad).
        mask_empty: also ignore the delay pattern's empty positions (token 0).
    """
    targets = batch["targets"]
    if mask_empty:
        targets = targets.masked_fill(batch["tokens"] == 0, IGNORE)
    logits = model.training_logits(batch["prompts"], batch["tokens"])[:, :-1]  # [B, L, Q, V]
    return F.cross_entropy(logits.permute(0, 3, 2, 1).float(), targets, ignore_index=IGNORE)


def build_model(opts: TrainOptions, prompt_dim: int) -> EnCodecGPT:
    """A preset at random, or the original's GPT2 body from the hub (``--init gpt2``)."""
    if opts.preset is not None:
        return EnCodecGPT(gpt2_config(PRESETS[opts.preset]), prompt_dim=prompt_dim)
    from transformers import GPT2Model

    try:
        body = GPT2Model.from_pretrained(opts.init)
    except OSError as e:
        raise UserError(f"--init {opts.init}: cannot load GPT2 weights ({str(e).splitlines()[0]})"
                        ". Run once with network access to fill the Hugging Face cache, give a "
                        "local folder, or train from a size preset with --preset.") from None
    model = EnCodecGPT(body.config, prompt_dim=prompt_dim)
    model.gpt = body
    return model


class EnCodecGPTTask(ClipTask):
    """Training, validation, optimizer, and the checkpoint layout of one run (the data:
    :class:`~engine.train.trainer.ClipTask`, delayed by :func:`collate`)."""

    def __init__(self, net: EnCodecGPT, clips: TokenClips, opts: TrainOptions, meta: dict,
                 codec_state: dict[str, torch.Tensor]):
        super().__init__()
        # GPT2's word table is never used (inputs_embeds only); frozen so DDP does not wait
        # for its gradient. AdamW skipped it anyway (no grad), so the recipe is unchanged.
        net.gpt.wte.weight.requires_grad_(False)
        self.net, self.clips, self.opts, self.meta = net, clips, opts, meta
        self.codec_state = codec_state
        self.frames, self.collate = opts.clip_frames, collate

    # -- steps -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        micro = batch_idx % self.opts.accumulate
        torch.manual_seed(_mix(self.opts.seed, self.global_step, micro, self.global_rank))
        loss = lm_loss(self.net, batch, self.opts.mask_empty)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = lm_loss(self.net, batch, self.opts.mask_empty)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True,
                 batch_size=batch["tokens"].shape[0])

    def configure_optimizers(self):
        o = self.opts
        opt = make_optimizer(self.net.parameters(), o)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoint layout -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
        state.update({f"encodec_model.{k}": v for k, v in self.codec_state.items()})
        checkpoint["state_dict"] = state
        checkpoint[META_KEY] = {**self.meta, "world_size": self.trainer.world_size,
                                "step": self.trainer.global_step}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {f"net.{k}": v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("encodec_model.")}


def _mix(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & (2**63 - 1)
    return h


def run_meta(net: EnCodecGPT, opts: TrainOptions, index: dict, cache: str) -> dict:
    plan = index["plan"]
    return {"gpt2": net.gpt.config.to_diff_dict(), "num_q": net.num_q,
            "prompt_dim": net.prompt_dim, "codec": plan["codec"],
            "encodecmae": plan["encodecmae"], "cache": str(Path(cache).resolve()),
            "options": asdict(opts)}


def train(cache: str, run: str, opts: TrainOptions, resume: str | None = None,
          resume_meta: dict | None = None, log=print) -> Path:
    """Train (or resume) into ``run``; returns the last checkpoint's path.

    ``resume_meta`` is the checkpoint's :func:`read_meta` when the caller has it already.
    """
    quiet_lightning()
    L.seed_everything(opts.seed, workers=True, verbose=False)
    clips = TokenClips(cache, opts.val_fraction, opts.max_val_clips)
    if resume is not None and resume_meta is None:
        resume_meta = read_meta(resume)
    net = _initial_net(opts, clips, resume_meta)
    _check_fits(net, opts)
    codec = codec_from_spec(clips.index["plan"]["codec"]["spec"])
    if codec_digest(codec) != clips.index["plan"]["codec"]["sha256"]:
        raise UserError(f"{cache}: the codec {clips.index['plan']['codec']['spec']!r} now has "
                        "other weights than when the cache was prepared")
    meta = run_meta(net, opts, clips.index, cache)
    run_dir = Path(run)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.json").write_text(json.dumps(meta, indent=1))
    task = EnCodecGPTTask(net, clips, opts, meta, encodec_package_state_dict(codec.model))
    trainer = make_trainer(opts, run_dir, ckpt_dir, len(clips.val) > 0, log)
    log(f"train: {len(clips.train)} train / {len(clips.val)} validation clips, "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters → {run_dir}")
    trainer.fit(task, ckpt_path=resume)
    last = ckpt_dir / "last.ckpt"
    trainer.save_checkpoint(last)  # every rank calls it; rank 0 writes
    if trainer.is_global_zero:
        png = plot_losses(run_dir)
        log(f"done at step {trainer.global_step}: {last}\nloss curve: {png}\n"
            f"play it:   python run_engine.py --checkpoint {last} "
            f"--encodecmae {_mae_source(meta)}\n"
            f"export it: python run_engine.py export {last} --out {run_dir / 'export'}")
    return last


def _mae_source(meta: dict) -> str:
    """The ``--encodecmae`` the cache was embedded with (the engine must embed prompts alike)."""
    mae = meta["encodecmae"]
    return str(mae.get("source") or mae.get("spec") or mae) if isinstance(mae, dict) else str(mae)


def _initial_net(opts: TrainOptions, clips: TokenClips, meta: dict | None) -> EnCodecGPT:
    """A new model, or (resuming) one shaped like the checkpoint's; Lightning fills weights."""
    if meta is None:
        return build_model(opts, clips.prompt_dim)
    from transformers import GPT2Config

    return EnCodecGPT(GPT2Config.from_dict(meta["gpt2"]), num_q=meta["num_q"],
                      prompt_dim=meta["prompt_dim"])


def read_meta(ckpt: str | Path) -> dict:
    """The ``encodecgpt_live`` entry of one of our training checkpoints."""

    blob = load_torch_file(Path(ckpt))
    meta = blob.get(META_KEY) if isinstance(blob, dict) else None
    if not isinstance(meta, dict):
        raise UserError(f"{ckpt}: not a checkpoint written by `run_engine.py train` "
                        "(no encodecgpt_live entry); to fine-tune other weights, use --init")
    return meta


def _check_fits(net: EnCodecGPT, opts: TrainOptions) -> None:
    need = 1 + opts.clip_frames + net.num_q - 1
    if need > net.max_positions:
        raise UserError(f"--clip-seconds {opts.clip_seconds}: {need} positions exceed the "
                        f"model's {net.max_positions}")
