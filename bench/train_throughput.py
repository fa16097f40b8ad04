"""Training throughput on this machine: frames (and tokens) per second per optimizer step.

    python bench/train_throughput.py [--presets tiny gpt2] [--batch 4] [--seconds 4]
                                     [--steps 5] [--threads 2] [--precision 32-true]
                                     [--compute auto|cpu|cuda|cuda:N]

Per preset (random init, on ``--compute``: CUDA when present, else the CPU) it runs the
training step the trainer runs (:func:`engine.train.task.lm_loss`, backward, gradient clipping
1.0, AdamW with the recipe's settings) on random delayed tokens shaped like 4 s clips, and
prints the median step time, frames/s (75 frames = 1 s of audio) and the hours of audio
one day of training would see. The first step is a warm-up and is not counted.
Ends with one JSON line per preset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import FRAME_RATE  # noqa: E402
from engine.cli.compute_flags import add_compute  # noqa: E402
from engine.live.step.compute import resolve_compute  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402
from engine.train.data.dataset import collate  # noqa: E402
from engine.train.options import TrainOptions, make_optimizer  # noqa: E402
from engine.train.task import lm_loss  # noqa: E402


def bench(preset: str, batch: int, seconds: float, steps: int, device: torch.device,
          autocast: torch.dtype | None) -> dict:
    torch.manual_seed(0)
    model = EnCodecGPT(gpt2_config(PRESETS[preset]), prompt_dim=768).to(device).train()
    model.gpt.wte.weight.requires_grad_(False)
    o = TrainOptions(clip_seconds=seconds)
    opt = make_optimizer(model.parameters(), o)
    frames = o.clip_frames
    items = [(torch.randint(0, 1024, (8, frames)), torch.randn(768)) for _ in range(batch)]
    data = {k: v.to(device) for k, v in collate(items).items()}
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = lm_loss(model, data, mask_empty=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    fps = batch * frames / step_s
    return {"preset": preset, "compute": str(device), "batch": batch, "clip_s": seconds,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "step_s": round(step_s, 3), "frames_per_s": round(fps, 1),
            "tokens_per_s": round(fps * 8, 1),
            "audio_hours_per_day": round(fps / FRAME_RATE * 86400 / 3600, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "gpt2"], choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    add_compute(p, auto_help="CUDA when present, else the CPU")
    p.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed",
                                                              "16-mixed"))
    args = p.parse_args()
    device = resolve_compute(args.compute)
    torch.set_num_threads(args.threads)
    autocast = {"32-true": None, "bf16-mixed": torch.bfloat16,
                "16-mixed": torch.float16}[args.precision]
    rows = [bench(pr, args.batch, args.seconds, args.steps, device, autocast)
            for pr in args.presets]
    print(f"{'preset':8} {'params':>8} {'step':>8} {'frames/s':>10} {'audio h/day':>12}")
    for r in rows:
        print(f"{r['preset']:8} {r['params_M']:>7}M {r['step_s']:>7.2f}s {r['frames_per_s']:>10}"
              f" {r['audio_hours_per_day']:>12}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
