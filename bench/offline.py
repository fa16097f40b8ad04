"""Offline generation speed: our KV generator vs the blog's loop structure, same model.

    python bench/offline.py [--presets tiny gpt2] [--frames 150] [--threads 2]
                            [--compute auto|cpu|cuda|cuda:N]

Per preset (random weights, fp32, on ``--compute``; decoding on the CPU) it prints per-step
ms (p50, p90) and the real-time factor (audio seconds per wall second; 75 frames = 1 s) of:

* ``ours``: :func:`engine.model.reference.generate_kv` (vectorised sampling over codebooks, head on
  the last position only);
* ``blog``: the blog post's ``generate()`` loop structure re-typed here: KV cache, head on
  the new position, per-codebook softmax + multinomial in a Python loop, the next input
  re-looked-up one codebook embedding at a time and summed.

Both sample at temperature 1 with the same seed. Decoding (EnCodec) is timed separately.
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
from engine.model.codec import random_codec  # noqa: E402
from engine.model.config import PRESETS, SamplingConfig  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402
from engine.model.reference import generate_kv, tokens_to_audio  # noqa: E402
from engine.model.sampling import sample_frame  # noqa: E402


@torch.inference_mode()
def blog_loop(model: EnCodecGPT, prompt: torch.Tensor, steps: int, gen: torch.Generator,
              stamps: list[float]) -> torch.Tensor:
    """The blog's generate(): one position per step through GPT2's own KV cache."""
    out = model.gpt(inputs_embeds=prompt[None, None], use_cache=True)
    past, rows = out.past_key_values, []
    for _ in range(steps):
        preds = model.classification_head(out.last_hidden_state[:, -1, :])
        preds = preds.view(1, model.num_q, model.num_codes + 1)
        sampled = torch.cat([torch.multinomial(torch.softmax(preds[0, q], dim=-1), 1, generator=gen)
                             for q in range(model.num_q)])
        rows.append(sampled)
        nxt = sum(model.vocab_embed(q * (model.num_codes + 1) + sampled[q])
                  for q in range(model.num_q))
        out = model.gpt(inputs_embeds=nxt[None, None], past_key_values=past, use_cache=True)
        past = out.past_key_values
        stamps.append(time.perf_counter())
    return torch.stack(rows)


@torch.inference_mode()
def ours_loop(model: EnCodecGPT, prompt: torch.Tensor, steps: int, gen: torch.Generator,
              stamps: list[float]) -> torch.Tensor:
    """generate_kv, with a per-step timestamp taken through the sampler."""
    def timed_sample(*a, **k):
        stamps.append(time.perf_counter())
        return sample_frame(*a, **k)

    import engine.model.reference as g
    original = g.sample_frame
    g.sample_frame = timed_sample
    try:
        return generate_kv(model, prompt[None].repeat(steps, 1), SamplingConfig(),
                           generator=gen).tokens
    finally:
        g.sample_frame = original


def measure(name, loop, model, prompt, steps) -> dict:
    device = prompt.device
    loop(model, prompt, 8, torch.Generator(device).manual_seed(0), [])  # warm-up
    stamps = [time.perf_counter()]
    start = stamps[0]
    loop(model, prompt, steps, torch.Generator(device).manual_seed(0), stamps)
    wall = time.perf_counter() - start
    step_ms = np.diff(stamps) * 1e3
    return {"name": name, "wall_s": wall, "step_ms_p50": float(np.percentile(step_ms, 50)),
            "step_ms_p90": float(np.percentile(step_ms, 90)),
            "rtf": steps / FRAME_RATE / wall}


def bench_preset(preset: str, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = EnCodecGPT(gpt2_config(PRESETS[preset])).eval().to(device)
    prompt = torch.randn(model.d_model).to(device)
    ours = measure("ours", ours_loop, model, prompt, steps)
    blog = measure("blog", blog_loop, model, prompt, steps)
    codec = random_codec(0)
    tokens = torch.randint(1, 1025, (steps, model.num_q))
    start = time.perf_counter()
    tokens_to_audio(codec, tokens)
    decode_s = time.perf_counter() - start
    for r in (ours, blog):
        print(f"{preset:5s} {r['name']:5s} step p50 {r['step_ms_p50']:7.2f} ms  "
              f"p90 {r['step_ms_p90']:7.2f} ms  RTF {r['rtf']:6.2f}")
    rtf_with_decode = steps / FRAME_RATE / (ours["wall_s"] + decode_s)
    print(f"{preset:5s} decode {steps} frames in {decode_s * 1e3:.0f} ms; "
          f"ours incl. decode RTF {rtf_with_decode:.2f}; speed-up vs blog loop "
          f"x{blog['wall_s'] / ours['wall_s']:.2f}")
    return {"preset": preset, "frames": steps, "threads": torch.get_num_threads(),
            "compute": str(device),
            "ours_step_ms_p50": ours["step_ms_p50"], "ours_step_ms_p90": ours["step_ms_p90"],
            "ours_rtf": ours["rtf"], "ours_rtf_with_decode": rtf_with_decode,
            "blog_step_ms_p50": blog["step_ms_p50"], "blog_rtf": blog["rtf"],
            "ratio_vs_blog_loop": blog["wall_s"] / ours["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "gpt2"], choices=sorted(PRESETS))
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--threads", type=int, default=None)
    add_compute(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_compute(args.compute)
    results = [bench_preset(p, args.frames, device) for p in args.presets]
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
