"""What every architecture's training run shares: the Lightning trainer (devices, precision,
clipping, accumulation, validation and checkpoint cadence, loggers, progress lines) and the
data side of a task (:class:`ClipTask`: step-indexed crops of the cache's clips)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from engine.train.data.dataset import CropDataset, StepBatches, TokenClips, val_batches
from engine.train.options import TrainOptions
from engine.train.progress import ProgressLines


class ClipTask(L.LightningModule):
    """A task's data: training batches are a function of the step (exact resume, disjoint
    ranks: :class:`StepBatches`), validation is every held-out clip once; crops of
    ``frames`` frames, batched by ``collate``.

    Subclasses set ``self.clips``, ``self.opts``, ``self.frames`` and ``self.collate``.
    """

    clips: TokenClips
    opts: TrainOptions
    frames: int

    def train_dataloader(self) -> DataLoader:
        trainer, accumulate = self.trainer, self.opts.accumulate
        sampler = StepBatches(self.clips, self.clips.train, self.frames, self.opts.batch_size,
                              self.opts.seed, trainer.global_rank, trainer.world_size,
                              start_fn=lambda: trainer.global_step * accumulate)
        return self._loader(sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(val_batches(self.clips, self.opts.val_batch_size))

    def _loader(self, batches) -> DataLoader:
        workers = min(self.opts.workers, os.cpu_count() or 1)  # more: a DataLoader warning
        return DataLoader(CropDataset(self.clips, self.frames), batch_sampler=batches,
                          collate_fn=self.collate, num_workers=workers,
                          persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())


def precision_for(choice: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on GPUs that have it, fp16-mixed on other GPUs, fp32 on CPU."""
    if choice != "auto":
        return choice
    if accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(opts: TrainOptions, run_dir: Path, ckpt_dir: Path, has_val: bool,
                 log) -> L.Trainer:
    """A trainer writing ``ckpt_dir/step*.ckpt`` and ``last.ckpt``, CSV and TensorBoard logs
    under ``run_dir``, and one progress line every ``log_every`` steps to ``log``."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return L.Trainer(
        default_root_dir=run_dir, max_steps=opts.max_steps, accelerator=opts.accelerator,
        devices=opts.devices, num_nodes=opts.num_nodes,
        strategy="ddp" if opts.devices * opts.num_nodes > 1 else "auto",
        precision=precision_for(opts.precision, opts.accelerator),
        gradient_clip_val=opts.grad_clip or None, accumulate_grad_batches=opts.accumulate,
        val_check_interval=opts.val_every * opts.accumulate, check_val_every_n_epoch=None,
        limit_val_batches=None if has_val else 0, num_sanity_val_steps=1 if has_val else 0,
        log_every_n_steps=opts.log_every, use_distributed_sampler=False,
        enable_progress_bar=False, enable_model_summary=False,  # ProgressLines prints
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:07d}",
                                   auto_insert_metric_name=False,
                                   every_n_train_steps=opts.ckpt_every, save_top_k=-1,
                                   save_last=True),
                   LearningRateMonitor(logging_interval="step"),
                   ProgressLines(opts.log_every, opts.max_steps, log)])
