"""Loss curves of a training run: read the CSV logs, draw ``RUN/loss.png``."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def loss_curves(run: str | Path) -> dict[str, dict[int, float]]:
    """``{'train_loss': {step: loss}, 'val_loss': {...}}`` over every logged version.

    A resumed run logs into a new ``logs/version_N``; later versions win where steps overlap.
    """
    curves: dict[str, dict[int, float]] = {"train_loss": {}, "val_loss": {}}
    versions = sorted((Path(run) / "logs").glob("version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.split("_")[1]))
    for metrics in versions:
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                for name, curve in curves.items():
                    if row.get(name):
                        curve[int(row["step"])] = float(row[name])
    return curves


def plot_losses(run: str | Path, out: str | Path | None = None) -> Path:
    """Train loss (raw and smoothed) and validation loss against the step → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = loss_curves(run)
    out = Path(out) if out else Path(run) / "loss.png"
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    train = sorted(curves["train_loss"].items())
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train (per step)")
        ax.plot(steps, smooth_losses(steps, losses), color="tab:blue", lw=1.6,
                label="train (smoothed)")
    val = sorted(curves["val_loss"].items())
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="tab:orange", lw=1.6, label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"EnCodecGPT training: {Path(run).name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def smooth_losses(steps, losses, fraction: float = 1 / 30) -> list[float]:
    """An exponential moving average over *steps*, not over logged points: its time constant
    is ``fraction`` of the run's span in steps, and each logged point weighs by the steps
    since the previous one. So sparse logs (every 50 steps of a 300-step run) are followed
    closely instead of lagging by many intervals, and dense ones are smoothed over ~3 % of
    the run.

    Args:
        steps: increasing optimizer steps ``[n]``.
        losses: the loss logged at each ``[n]``.
    """
    tau = max(1.0, (steps[-1] - steps[0]) * fraction)
    out, acc, prev = [], float(losses[0]), steps[0]
    for step, loss in zip(steps, losses, strict=True):
        alpha = 1.0 - math.exp(-(step - prev) / tau)
        acc = alpha * float(loss) + (1.0 - alpha) * acc
        out.append(acc)
        prev = step
    return out
