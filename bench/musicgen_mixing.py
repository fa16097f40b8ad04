"""Two ways to morph MusicGen between two texts, measured on the same window.

    python bench/musicgen_mixing.py [--model musicgen-tiny-random|SRC] [--steps 40]

* ``logits``: the engine's rule, ``uncond + g·(Σ wᵢ·condᵢ − uncond)`` (one batch row per active
  slot, plus the null text);
* ``states``: mix the projected T5 states instead, ``(1 − w)·h₀ + w·h₁`` (both padded to the
  longer text, masks united), then plain CFG (two batch rows whatever the number of slots).

For ``w`` from 0 to 1 in ``--steps`` steps over a fixed window of random rows it prints, per
rule: the largest logit change of one step (continuity), whether the corners equal the single
texts, how far the midpoint's distribution is from each corner's (KL, nats, mean over
codebooks: a morph should sit between them) and the batch rows a step runs. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.musicgen_realtime import TEXTS, load  # noqa: E402
from engine.model.musicgen.guidance import condition_batch, guided_logits  # noqa: E402
from engine.model.musicgen.text import TextCondition  # noqa: E402


def state_mix(a: TextCondition, b: TextCondition, w: float) -> TextCondition:
    n = max(a.mask.shape[0], b.mask.shape[0])

    def pad(c: TextCondition) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.zeros(n, c.hidden.shape[1])
        m = torch.zeros(n, dtype=torch.long)
        h[: c.hidden.shape[0]], m[: c.mask.shape[0]] = c.hidden, c.mask
        return h, m

    (ha, ma), (hb, mb) = pad(a), pad(b)
    return TextCondition("mix", (1 - w) * ha + w * hb, torch.maximum(ma, mb))


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="musicgen-tiny-random")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--guidance", type=float, default=3.0)
    args = ap.parse_args()
    lm, text, _ = load(args.model, torch.device("cpu"), torch.float32)
    a, b = text.encode(TEXTS[0]), text.encode(TEXTS[1])
    rows = torch.randint(1, lm.card + 1, (60, lm.num_q), generator=torch.Generator().manual_seed(0))
    columns, g = lm.columns(rows, fresh_start=True), args.guidance
    single = {}
    for name, c in (("a", a), ("b", b)):
        batch = condition_batch([c], [1.0], g, text.width)
        single[name] = guided_logits(lm.logits(columns, batch), batch, g)
    result = {}
    for rule in ("logits", "states"):
        path = []
        for i in range(args.steps + 1):
            w = i / args.steps
            if rule == "logits":
                conds, ws = [c for c, x in ((a, 1 - w), (b, w)) if x > 0], [x for x in (1 - w, w)
                                                                              if x > 0]
            else:
                conds, ws = [state_mix(a, b, w)], [1.0]
            batch = condition_batch(conds, ws, g, text.width)
            path.append(guided_logits(lm.logits(columns, batch), batch, g))
        jumps = [float((y - x).abs().max()) for x, y in zip(path, path[1:], strict=False)]
        mid = path[args.steps // 2]
        result[rule] = {
            "max_step_change": round(max(jumps), 4),
            "corners_equal_single": bool(torch.equal(path[0], single["a"])
                                         and torch.equal(path[-1], single["b"])),
            "kl_mid_to_a": round(kl(mid, single["a"]), 4),
            "kl_mid_to_b": round(kl(mid, single["b"]), 4),
            "kl_a_to_b": round(kl(single["a"], single["b"]), 4),
            "batch_rows_mid": 3 if rule == "logits" else 2,
        }
        print(rule, result[rule], flush=True)
    print(json.dumps({"model": args.model, "guidance": g, "steps": args.steps, **result}))


if __name__ == "__main__":
    main()
