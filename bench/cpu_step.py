"""The live step on one CPU core, per weight format, against this machine's memory bandwidth.

    python bench/cpu_step.py [--preset gpt2] [--formats none,int8,int4] [--steps 300]
                             [--context 200 250] [--positions 250] [--checkpoint CKPT]

A one-row KV-cached step streams every weight and the whole KV cache once, so its floor is
``bytes per step / read bandwidth``. For the preset's random model (or ``--checkpoint``) this
prints, with one thread per op:

1. the machine: CPU, read bandwidth (``torch.sum`` over 256 MB) and copy bandwidth
   (``numpy.copyto``, read + write) of one core, medians of repeated probes;
2. per format: bytes streamed per step (weights + fp32 KV cache at the mean context),
   one-row step p50/p99 over ``--steps`` steps at ``--context`` cached positions (formats
   interleaved step by step, so a busy machine slows them alike), and the ratio to the floor;
3. per format: teacher-forced quality against fp32, one row per forward like the live step,
   over ``--positions`` positions: mean KL (nats, per position and codebook), top-1
   agreement, and top-1 where fp32's top-2 gap exceeds ``CLEAR_GAP`` (near-ties flip under
   any perturbation of a near-flat random model, so only clear decisions say much);
4. per format: the two-core budget of the live engine for one 13.3 ms frame. Core 1: the
   step (p50 and p99). Core 2: decoding (chunks of ``--decode-chunk``) plus the re-prefill
   rows: every hop H the next window's W − H rows, (W − H) / H rows a frame (``--window``,
   ``--hop``; at the cost per row of a ``PREFILL_EVERY``-row job), and the real-time
   factor the slower core allows.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import FRAME_RATE  # noqa: E402
from engine.live.decoder import StreamingDecoder  # noqa: E402
from engine.live.step.kv_step import RowGroup  # noqa: E402
from engine.live.step.reprefill import PREFILL_EVERY  # noqa: E402
from engine.live.step.weight_formats import (  # noqa: E402
    CLEAR_GAP,
    build_kv_step,
    onnxruntime_version,
    resolve,
)
from engine.model.codec import random_codec  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402

FRAME_MS = 1000.0 / FRAME_RATE  # 13.3 ms
TARGET_RTF = 1.5  # issue 16: generate + decode at 1.5x real time on 2 cores


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bandwidth(mb: int = 256, repeats: int = 9) -> dict:
    """One core's read (``torch.sum``) and copy (``numpy.copyto``, read + write) GB/s over
    ``mb`` MB, beyond any cache."""
    a = torch.ones(mb * 2**20 // 4)
    read = a.numel() * 4 / _median_time(a.sum, repeats) / 1e9
    src, dst = a.numpy(), np.empty(a.numel(), np.float32)
    copy = 2 * src.nbytes / _median_time(lambda: np.copyto(dst, src), repeats) / 1e9
    return {"read_gb_s": read, "copy_gb_s": copy}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def weight_bytes(step, model: EnCodecGPT) -> int:
    """Bytes of weights one row streams: linears at the format's size, norms/biases aside."""
    if hasattr(step, "weight_bytes"):  # OrtKVStep counts its own packed tensors
        return step.weight_bytes
    cfg = model.gpt.config
    n = cfg.n_layer * 12 * cfg.n_embd**2 + cfg.n_embd * model.num_q * 1025
    return n * {"none": 4, "bf16": 2, "int8": 1}[step.quantize]


def kv_bytes(model: EnCodecGPT, context: float) -> float:
    cfg = model.gpt.config
    return 2 * cfg.n_layer * context * cfg.n_embd * 4  # keys + values, fp32


def step_times(steps: dict, d: int, n: int, context: tuple[int, int]) -> dict:
    """One row per step at positions cycling through ``context``; formats interleaved."""
    lo, hi = context
    caches = {f: s.new_cache(hi + 1) for f, s in steps.items()}
    x0 = torch.randn(lo, d) * 0.5
    for f, s in steps.items():
        s.forward([RowGroup(caches[f], 0, x0)], [])
    times = {f: [] for f in steps}
    pos = lo
    for i in range(n + 10):
        x = torch.randn(1, d)
        for f, s in steps.items():
            start = time.perf_counter()
            s.forward([RowGroup(caches[f], pos, x)], [0])
            if i >= 10:  # warm-up
                times[f].append((time.perf_counter() - start) * 1e3)
        pos = lo if pos + 1 > hi else pos + 1
    return {f: np.array(t) for f, t in times.items()}


def rows_ms(step, d: int, rows: int, at: int, repeats: int = 5) -> float:
    """One forward of ``rows`` rows (a re-prefill job) without logits."""
    cache = step.new_cache(at + rows + 1)
    x = torch.randn(rows, d)
    return 1e3 * _median_time(lambda: step.forward([RowGroup(cache, at, x)], []), repeats)


def decode_ms_per_frame(chunk: int, frames: int = 96) -> float:
    dec = StreamingDecoder(random_codec(0).model)
    codes = torch.randint(0, 1024, (1, 8, frames))
    dec.push(codes[..., :chunk])  # stream start
    start = time.perf_counter()
    for i in range(chunk, frames, chunk):
        dec.push(codes[..., i:i + chunk])
    return (time.perf_counter() - start) * 1e3 / (frames - chunk)


@torch.inference_mode()
def quality(model: EnCodecGPT, steps: dict, positions: int, seed: int = 1) -> dict:
    """Teacher-forced logits of each format vs fp32 (the reference step), row by row."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 1025, (positions - 1, model.num_q), generator=gen)
    prompt = torch.randn(model.prompt_dim, generator=gen)
    x = torch.cat([model.embed_prompt(prompt[None])[0], model.embed_tokens(tokens[None])[0]])

    def logits(step):
        cache = step.new_cache(positions)
        return torch.cat([step.forward([RowGroup(cache, i, x[i:i + 1])], [0])
                          for i in range(positions)]).double()

    ref = logits(steps["none"]) if "none" in steps else logits(build_kv_step(model, "none"))
    lp = ref.log_softmax(-1)
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > CLEAR_GAP
    out = {}
    for f, s in steps.items():
        lq = lp if f == "none" else logits(s).log_softmax(-1)
        agree = lp.argmax(-1) == lq.argmax(-1)
        out[f] = {"kl": float((lp.exp() * (lp - lq)).sum(-1).mean()),
                  "top1": float(agree.float().mean()),
                  "top1_clear": float(agree[clear].float().mean()),
                  "clear_fraction": float(clear.float().mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    p.add_argument("--checkpoint", help="a real checkpoint instead of random weights")
    p.add_argument("--formats", default="none,int8,int4",
                   help="comma-separated weight formats (auto allowed; int4 needs the cpu "
                        "extra; bf16 is slow without native bf16)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--context", type=int, nargs=2, default=(200, 250), metavar=("LO", "HI"))
    p.add_argument("--positions", type=int, default=250, help="quality: positions (0: skip)")
    p.add_argument("--decode-chunk", type=int, default=8)
    p.add_argument("--window", type=int, default=200, help="W of the live fast mode")
    p.add_argument("--hop", type=int, default=None, help="H (default W/4, the live default)")
    args = p.parse_args()
    hop = args.hop or max(1, args.window // 4)
    rows_per_frame = (args.window - hop) / hop
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.checkpoint:
        from engine.model.loading.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint).model
    else:
        model = EnCodecGPT(gpt2_config(PRESETS[args.preset])).eval()
    formats = list(dict.fromkeys(resolve(f) for f in args.formats.split(",")))
    print(f"{cpu_name()}; torch {torch.__version__}, onnxruntime {onnxruntime_version()}; "
          f"one thread per op", flush=True)
    bw = bandwidth()
    print(f"one core: read {bw['read_gb_s']:.1f} GB/s, copy (r+w) {bw['copy_gb_s']:.1f} GB/s",
          flush=True)
    steps = {f: build_kv_step(model, f) for f in formats}
    d = model.gpt.config.n_embd
    times = step_times(steps, d, args.steps, tuple(args.context))
    mean_ctx = (args.context[0] + args.context[1]) / 2
    q = quality(model, steps, args.positions) if args.positions > 0 else {}
    decode = decode_ms_per_frame(args.decode_chunk)
    result = {"cpu": cpu_name(), "bandwidth": bw, "decode_ms_per_frame": decode,
              "window": args.window, "hop": hop, "prefill_rows_per_frame": rows_per_frame,
              "formats": {}}
    print(f"decoding (chunks of {args.decode_chunk}): {decode:.2f} ms/frame (core 2); "
          f"re-prefill W {args.window} H {hop}: {rows_per_frame:.2f} rows a frame (core 2); "
          f"budget per core at RTF {TARGET_RTF}: {FRAME_MS / TARGET_RTF:.1f} ms a frame")
    print(f"{'format':7s} {'MB/step':>8s} {'floor':>6s} {'p50':>6s} {'p99':>6s} {'x floor':>7s}"
          f" {'KL':>8s} {'top1':>6s} {'clear':>6s} | core2 {'':>5s} RTF(p50)")
    for f, s in steps.items():
        nbytes = weight_bytes(s, model) + kv_bytes(model, mean_ctx)
        floor = nbytes / (bw["read_gb_s"] * 1e9) * 1e3
        p50, p99 = float(np.percentile(times[f], 50)), float(np.percentile(times[f], 99))
        prefill = rows_per_frame * rows_ms(s, d, PREFILL_EVERY, args.context[0]) / PREFILL_EVERY
        core2 = decode + prefill
        rtf = FRAME_MS / max(p50, core2)
        qf = q.get(f, {})
        print(f"{f:7s} {nbytes / 1e6:8.1f} {floor:6.2f} {p50:6.2f} {p99:6.2f} {p50 / floor:7.2f}"
              f" {qf.get('kl', float('nan')):8.1e} {qf.get('top1', float('nan')):6.3f}"
              f" {qf.get('top1_clear', float('nan')):6.3f} | {core2:5.2f} ms  {rtf:5.2f}"
              f"{'' if p99 <= FRAME_MS else '  (p99 over the 13.3 ms frame)'}", flush=True)
        result["formats"][f] = {"mb_per_step": nbytes / 1e6, "floor_ms": floor,
                                "step_ms_p50": p50, "step_ms_p99": p99,
                                "x_floor": p50 / floor, "prefill_ms_per_frame": prefill,
                                "core2_ms": core2, "rtf": rtf, **qf}
    if q:
        print(f"(quality: {args.positions} positions, fp32 top-2 gap > {CLEAR_GAP} at "
              f"{next(iter(q.values()))['clear_fraction']:.0%} of them)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
