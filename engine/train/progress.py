"""What ``run_engine.py train`` prints while it trains: one plain line per logging interval.

Lightning's own progress bar counts batches of an epoch, and our batches are an endless
stream of steps (:class:`~engine.train.data.dataset.StepBatches`), so it showed ``Epoch 0/-2``
and counters like ``50/10``; its info messages (accelerator lines, a tip about a cloud
package) said nothing a user of this command needs. :func:`quiet_lightning` turns those off;
:class:`ProgressLines` prints instead, on rank 0 only::

    step   50/200  loss 5.912  lr 1.0e-03  3.1 steps/s  eta 0:00:48
    step  100/200  val_loss 5.640
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning as L


def quiet_lightning() -> None:
    """Lightning's info chatter (accelerators, tips, model summary) off; warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLines(L.Callback):
    """Print the training loss every ``every`` optimizer steps and each validation loss.

    Args:
        every: optimizer steps between lines (``--log-every``).
        max_steps: the run's last step (for ``step n/N`` and the time left).
        log: where lines go (the CLI's console).
    """

    def __init__(self, every: int, max_steps: int, log: Callable[[str], None] = print):
        self.every, self.max_steps, self.say = max(1, every), max_steps, log
        self._start: tuple[float, int] | None = None  # (time, step) when this run began
        self._printed = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimizer steps done (accumulation counts once)
        if not trainer.is_global_zero or step == self._printed:
            return
        if step % self.every and step != self.max_steps:
            return
        self._printed = step
        loss = trainer.callback_metrics.get("train_loss")
        parts = [f"step {step:>{len(str(self.max_steps))}}/{self.max_steps}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.3f}")
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        if lrs:
            parts.append(f"lr {lrs[0]:.1e}")
        if self._start is not None and step > self._start[1]:
            rate = (step - self._start[1]) / (time.perf_counter() - self._start[0])
            parts += [f"{rate:.1f} steps/s", f"eta {_clock((self.max_steps - step) / rate)}"]
        self.say("  ".join(parts))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            self.say(f"step {trainer.global_step:>{len(str(self.max_steps))}}/"
                     f"{self.max_steps}  val_loss {float(val):.3f}")
