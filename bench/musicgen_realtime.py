"""MusicGen real-time benchmark: the exact rolling generator (and the offline cached render).

    python bench/realtime.py --model musicgen-small-random [--compute cpu|cuda] [--dtype ...]
    python bench/musicgen_realtime.py --model SRC [--frames N] [--window 150] [--slots 1|2]
                                      [--guidance 3] [--compute auto|cpu|cuda] [--threads 1]

``--model``: a MusicGen (short name, hub id, folder), or random weights of a size:
``musicgen-small-random`` (t5-base + a 1024 x 24-layer decoder + the 32 kHz EnCodec, as
facebook/musicgen-small) or ``musicgen-tiny-random``. Measures, with guidance (batch: the null
text + each slot) and the morph moving between the slots:

1. ``step_ms_p50/p99``: the live generator's step (``exact``: the whole window of ``--window``
   rows recomputed) over ``--frames`` steps after warm-up, and its ``rtf_generate`` (audio
   seconds per wall second, 50 frames/s);
2. ``decode_ms_per_frame``: the live path's streaming 32 kHz decoder
   (:class:`~engine.live.decoder.StreamingDecoder`, chunks of 8 frames, carried state)
   decoding those frames, its ``lookahead_ms`` (frames held back: the codec is not causal),
   and ``rtf`` = generate + decode;
3. ``render_rtf``: the offline cached render (one KV-cached column per step).

Ends with one JSON line. Timings depend on the machine's load.
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

from engine.live.controls import ControlEvent, ControlState  # noqa: E402
from engine.live.decoder import FIRST_CHUNK_FRAMES, StreamingDecoder  # noqa: E402
from engine.live.musicgen.generator import DEFAULT_WINDOW, MusicGenGenerator  # noqa: E402
from engine.model.config import SamplingConfig  # noqa: E402
from engine.model.loading.family import load_family  # noqa: E402
from engine.model.musicgen.lm import MusicGenLM  # noqa: E402
from engine.model.musicgen.render import morph_weights, render_rows  # noqa: E402
from engine.model.musicgen.text import TextEncoder  # noqa: E402
from engine.model.musicgen.tiny import random_musicgen, word_tokenizer  # noqa: E402

RANDOM = {"musicgen-small-random": "small", "musicgen-tiny-random": "tiny"}
TEXTS = ("warm analog pad", "broken breakbeat with drums and bass")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(source: str, device: torch.device, dtype: torch.dtype):
    """(decoder, text encoder, transformers model) of ``source``, on ``device``."""
    if source in RANDOM:
        model, tokenizer = random_musicgen(RANDOM[source]), word_tokenizer()
    else:
        files = load_family(source).files
        model, tokenizer = files.model, files.tokenizer
    model.to(device)
    model.decoder.to(dtype)  # the text encoder and codec stay fp32 (run once / per chunk)
    return MusicGenLM(model), TextEncoder(model, tokenizer), model


def percentile(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000.0, q))


def run_generator(lm, text, args) -> tuple[dict, torch.Tensor]:
    slots = list(TEXTS[: args.slots])
    controls = ControlState(num_slots=2, slots=slots + [None] * (2 - len(slots)))
    gen = MusicGenGenerator(lm, text, controls, window=args.window, guidance=args.guidance,
                            seed=0)
    for t in slots:
        text.encode(t)  # a live caller warms the cache in a worker
    if args.slots == 2:  # the morph keeps moving: both slots active at every step
        for i in range(args.warmup + args.frames):
            gen.schedule(i, [ControlEvent("/morph", (0.1 + 0.8 * ((i // 25) % 2),))])
        gen.controls.glide = 0.5
    # a full window is the live cost: prime it with random rows instead of generating them
    gen.prime(torch.randint(1, lm.card + 1, (args.window, lm.num_q), generator=torch.Generator()
                            .manual_seed(0)))
    rows, times = [], []
    for i in range(args.warmup + args.frames):
        start = time.perf_counter()
        rows.append(gen.step())
        sync(lm.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    total = sum(times)
    return ({"step_ms_p50": percentile(times, 50), "step_ms_p99": percentile(times, 99),
             "rtf_generate": len(times) / 50.0 / total}, torch.stack(rows))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_ms(model, frames: int = 48) -> tuple[float, float]:
    """Streaming decode of ``frames`` random frames (the cost does not depend on the codes),
    8 a call: (ms per frame, look-ahead ms)."""
    device = next(model.audio_encoder.parameters()).device
    decoder = StreamingDecoder(model.audio_encoder, device=device)
    cfg = model.audio_encoder.config
    codes = torch.randint(0, cfg.codebook_size, (1, model.decoder.config.num_codebooks,
                                                 FIRST_CHUNK_FRAMES + frames))
    decoder.push(codes[..., :FIRST_CHUNK_FRAMES])  # the stream's start, untimed
    rest = codes[..., FIRST_CHUNK_FRAMES:]
    start = time.perf_counter()
    for i in range(0, rest.shape[-1], 8):
        decoder.push(rest[..., i:i + 8])
    sync(device)
    ms = (time.perf_counter() - start) * 1000.0 / max(1, rest.shape[-1])
    return ms, 1000.0 * decoder.lookahead_frames * decoder.hop / decoder.sample_rate


def render_rtf(lm, text, args) -> float:
    steps = args.render_frames
    start = time.perf_counter()
    render_rows(lm, text, list(TEXTS[: args.slots]), morph_weights(steps, args.slots),
                guidance=args.guidance, sampling=SamplingConfig(seed=0, top_k=250),
                context=lm.max_positions - 1, stride=lm.max_positions // 2)
    sync(lm.device)
    return steps / 50.0 / (time.perf_counter() - start)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=None,
                   help="timed steps (default 200 on a GPU, 4 on the CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    p.add_argument("--slots", type=int, choices=(1, 2), default=2)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="decoder weights (default fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--render-frames", type=int, default=None,
                   help="frames of the cached render (default 500 on a GPU, 10 on the CPU)")


def run(args: argparse.Namespace) -> dict:
    """The benchmark of ``args.model``; prints a summary and returns the JSON fields."""
    compute = args.compute if args.compute not in (None, "auto") else (
        "cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(compute)
    gpu = device.type == "cuda"
    args.frames = args.frames or (200 if gpu else 4)
    args.render_frames = args.render_frames or (500 if gpu else 10)
    dtype = DTYPES[args.dtype or ("fp16" if gpu else "fp32")]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    lm, text, model = load(args.model, device, dtype)
    load_s = time.perf_counter() - start
    gen, rows = run_generator(lm, text, args)
    dec, lookahead = decode_ms(model)
    rtf = 1000.0 / 50.0 / (1000.0 / 50.0 / gen["rtf_generate"] + dec)
    rend = render_rtf(lm, text, args)
    print(f"{args.model} on {device} ({str(dtype).removeprefix('torch.')}), window "
          f"{args.window}, {args.slots} slot(s) + guidance {args.guidance:g}: step p50 "
          f"{gen['step_ms_p50']:.1f} ms p99 {gen['step_ms_p99']:.1f} ms, RTF generate "
          f"{gen['rtf_generate']:.2f}, with decode {rtf:.2f} (streaming decoder {dec:.1f} ms a "
          f"frame, look-ahead {lookahead:.0f} ms); cached render RTF {rend:.2f}",
          flush=True)
    return {"model": args.model, "compute": str(device), "dtype": str(dtype), "family":
            "musicgen", "window": args.window, "slots": args.slots, "guidance": args.guidance,
            "frames": args.frames, **{k: round(v, 3) for k, v in gen.items()},
            "decode_ms_per_frame": round(dec, 3), "lookahead_ms": round(lookahead, 1),
            "rtf": round(rtf, 3),
            "render_rtf": round(rend, 3), "load_s": round(load_s, 1), "threads": args.threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--compute", default="auto")
    p.add_argument("--threads", type=int, default=1)
    add_options(p)
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
