"""Real-time core benchmark: rolling generator + streaming decoder on this CPU or GPU.

    python bench/realtime.py --model musicgen-small-random|SRC [options of
                             bench/musicgen_realtime.py]  (the MusicGen family)
    python bench/realtime.py --model rotary-random|FILE [--mode fast|exact] [--seconds S]
                             [--window W] [--rtf-frames N]  (the rotary family)
    python bench/realtime.py --preset tiny|gpt2|gpt2-medium [--compute auto|cpu|cuda|cuda:N]
                             [--mode exact|fast]
                             [--quantize auto|int4-128|int4|int8-128|int8|none|bf16|fp16]
                             [--seconds S] [--window 200] [--hop H] [--threads 1] [--pin-threads]
                             [--decode-chunk 4]
                             [--step-runner graph|compile|eager]

The defaults follow the device (``engine.cli.compute_flags``): on the CPU fast mode with the
live engine's default weights (int4-128 with onnxruntime, else int8); on
a GPU exact mode, bf16 (fp16 without bf16), the step replayed from a CUDA graph, decode
chunks of 2. Where CUDA runs, the startup (weights to the device, warm-up and graph capture
of the step, decoder warm-up) is reported too.

Random weights (the preset's size), a random codec, a prompt morph that keeps moving
(glide towards alternating targets, so the prompt position is recomputed nearly every step).
It measures, in one run:

1. ``rtf``: audio seconds per wall second generating *and* decoding as fast as possible
   (two threads, re-prefill included) over ``--rtf-frames`` frames;
2. ``step_ms_p50/p99`` over every generator step of that run, and ``stall_ms_max`` (the
   longest step: a re-prefill or switch that blocked): both cores busy all the time, the
   worst case;
3. ``underruns``: a paced run of ``--seconds`` on the null sink shaped like the live
   engine's (``--buffer``, default the engine's 0.2 s, playback starting at half of it;
   blocks of 512 samples), like a sound card, and ``paced_step_ms_p50/p99`` over its steps
   (what the step costs live, the generator waiting on the buffer between bursts);
5. (CPU fast mode) the bytes one step streams (weights + the mean KV cache), this core's
   read bandwidth (``bench/cpu_step.py``'s probe) and the ratio of the step's p50 to that
   floor: how far the step is from the physical limit.
4. (CPU only) the same model through re-implementations of the two reference loops,
   generation only:
   the blog's KV loop (``bench/offline.py``) and the original demo's whole-window recompute
   (every step runs ``[prompt, last W rows]``), as per-frame time ratios
   (``ratio_vs_blog_loop`` = blog ms/frame ÷ ours, generation only; likewise for the window).

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import musicgen_realtime  # noqa: E402
from bench.cpu_step import bandwidth, kv_bytes, weight_bytes  # noqa: E402
from bench.offline import blog_loop  # noqa: E402
from engine import FRAME_RATE, SAMPLE_RATE  # noqa: E402
from engine.cli.compute_flags import (  # noqa: E402
    CPU_DECODE_CHUNK,
    add_compute,
    add_mode_and_runner,
    add_quantize,
    resolve_engine,
)
from engine.live.audio.sinks import NullSink  # noqa: E402
from engine.live.control_input import initial_controls  # noqa: E402
from engine.live.controls import ControlEvent, ControlState  # noqa: E402
from engine.live.decoder import StreamingDecoder  # noqa: E402
from engine.live.engine import LiveConfig  # noqa: E402
from engine.live.generator import RollingGenerator  # noqa: E402
from engine.live.pipeline import Pipeline, pinned_cpus  # noqa: E402
from engine.live.rotary.generator import RotaryGenerator  # noqa: E402
from engine.model.codec import random_codec  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402
from engine.model.loading.family import load_family  # noqa: E402
from engine.model.loading.hub import load_torch_file  # noqa: E402
from engine.model.loading.xtransformers import unwrap_state  # noqa: E402
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig  # noqa: E402


class _Discard:
    underruns = 0

    def write(self, block):
        pass


def _controls(dim: int) -> ControlState:
    rng = np.random.RandomState(0)
    return initial_controls([rng.randn(dim).astype(np.float32) for _ in range(2)], glide=0.5)


def _morph_automation(gen: RollingGenerator, frames: int) -> None:
    """A performer moving the morph fader every second between the two ends (with glide)."""
    for i, f in enumerate(range(0, frames, FRAME_RATE)):
        gen.schedule(f, [ControlEvent("/morph", (float(i % 2 == 0),))])


def _generator(model, args) -> RollingGenerator:
    c = args.choice
    return RollingGenerator(model, _controls(model.prompt_dim), window=args.window,
                            mode=c.mode, hop=args.hop, quantize=c.weights.name, seed=0,
                            compute=c.device, runner=c.runner)


def _decoder(codec, args) -> StreamingDecoder:
    decoder = StreamingDecoder(codec.model, device=args.choice.device)
    if decoder.device.type == "cuda":
        args.startup["decoder_warmup_s"] = decoder.warm_up(range(1, args.decode_chunk + 1),
                                                           8)
    return decoder


def _moving_morph(model, args):
    """EnCodecGPT: the preset's generator with the morph fader moving over ``frames``."""
    def make(frames: int) -> RollingGenerator:
        gen = _generator(model, args)
        _morph_automation(gen, frames)
        return gen
    return make


def _pin(args) -> tuple[int, int] | None:
    return pinned_cpus() if getattr(args, "pin_threads", False) else None


def run_fast(make_gen, codec, args) -> dict:
    start = time.perf_counter()
    gen = make_gen(args.rtf_frames)
    args.startup["generator_s"] = time.perf_counter() - start
    args.startup["capture_s"] = gen.startup_s
    pipe = Pipeline(gen, _decoder(codec, args), _Discard(),
                    decode_chunk=args.decode_chunk, threads=args.threads, pin=_pin(args))
    pipe.stats.all_ms = []
    start = time.perf_counter()
    pipe.run(args.rtf_frames)
    wall = time.perf_counter() - start
    gen.close()
    steps = np.array(pipe.stats.all_ms)
    return {"rtf": args.rtf_frames / FRAME_RATE / wall,
            "steps_per_s": float(1e3 / steps.mean()),
            "step_ms_p50": float(np.percentile(steps, 50)),
            "step_ms_p99": float(np.percentile(steps, 99)),
            "stall_ms_max": float(steps.max()),
            "decoded_s": pipe.stats.samples_out / SAMPLE_RATE}


def run_paced(make_gen, codec, args) -> dict:
    frames = int(args.seconds * FRAME_RATE)
    gen = make_gen(frames + 10 * FRAME_RATE)
    sink = NullSink(buffer_s=args.buffer, block=512, prefill_s=args.buffer / 2)
    pipe = Pipeline(gen, _decoder(codec, args), sink, decode_chunk=args.decode_chunk,
                    threads=args.threads, pin=_pin(args))
    pipe.stats.all_ms = []
    pipe.start()
    time.sleep(args.seconds)
    played = sink.consumed / SAMPLE_RATE
    underruns = sink.underruns
    pipe.stop()
    sink.close()
    gen.close()
    steps = np.array(pipe.stats.all_ms)
    return {"underruns": underruns, "paced_played_s": played,
            "paced_step_ms_p50": float(np.percentile(steps, 50)),
            "paced_step_ms_p99": float(np.percentile(steps, 99)),
            "paced_stall_ms_max": float(steps.max())}


def generation_only_ms(model, args, frames: int) -> float:
    gen = _generator(model, args)
    _morph_automation(gen, frames)
    for _ in range(8):
        gen.step()
    start = time.perf_counter()
    for _ in range(frames):
        gen.step()
    gen.close()
    return (time.perf_counter() - start) * 1e3 / frames


@torch.inference_mode()
def window_loop_ms(model, window: int, steps: int) -> float:
    """The original demo's loop: the whole ``[prompt, last W rows]`` recomputed per step."""
    prompt = torch.randn(1, model.prompt_dim)
    ctx = torch.randint(1, 1025, (1, window, model.num_q))
    gen = torch.Generator().manual_seed(0)
    model(prompt, ctx)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        logits, _ = model(prompt, ctx)
        probs = logits[0, -1].softmax(-1)
        row = torch.multinomial(probs, 1, generator=gen)[:, 0]
        ctx = torch.cat([ctx[:, 1:], row[None, None]], dim=1)
    return (time.perf_counter() - start) * 1e3 / steps


def blog_loop_ms(model, frames: int) -> float:
    prompt = torch.randn(model.d_model)
    blog_loop(model, prompt, 8, torch.Generator().manual_seed(0), [])
    start = time.perf_counter()
    blog_loop(model, prompt, frames, torch.Generator().manual_seed(0), [])
    return (time.perf_counter() - start) * 1e3 / frames


def streaming_floor(model, args, step_p50_ms: float) -> dict | None:
    """CPU fast mode: bytes a step streams, one core's read bandwidth, the step's floor
    (bytes / bandwidth) and the measured p50 over it; printed and returned."""
    if args.choice.device.type != "cpu" or args.choice.mode != "fast":
        return None
    gen = _generator(model, args)
    nbytes = weight_bytes(gen.lean, model) + kv_bytes(model, 0.875 * args.window)
    gen.close()
    read = bandwidth()["read_gb_s"]
    floor_ms = nbytes / read / 1e6
    print(f"a step streams {nbytes / 1e6:.1f} MB (weights + mean KV cache); one core reads "
          f"{read:.1f} GB/s: floor {floor_ms:.2f} ms, step p50 {step_p50_ms / floor_ms:.2f}x "
          f"the floor", flush=True)
    return {"mb_per_step": round(nbytes / 1e6, 1), "read_gb_s": round(read, 2),
            "floor_ms": round(floor_ms, 2), "p50_over_floor": round(step_p50_ms / floor_ms, 2)}


def main() -> None:
    if "--model" in sys.argv:  # another family (its own options)
        return rotary_main() if _is_rotary(_value_of("--model")) else musicgen_main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    add_compute(parser)
    add_mode_and_runner(parser)
    add_quantize(parser)
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="length of the paced null-sink run (underruns)")
    parser.add_argument("--buffer", type=float, default=LiveConfig.buffer_s,
                        help="output buffer of the paced run in seconds (default: the live "
                             "engine's, %(default)s)")
    parser.add_argument("--rtf-frames", type=int, default=1500)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--hop", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pin-threads", action="store_true",
                        help="the generator on one CPU, decoder and worker on another (Linux)")
    parser.add_argument("--decode-chunk", type=int, default=None,
                        help="frames per decode (default 8 on the CPU, 2 on a GPU)")
    parser.add_argument("--reference-frames", type=int, default=300,
                        help="frames for the blog loop (window loop: 20 steps)")
    args = parser.parse_args()
    args.choice = resolve_engine(args.compute, args.quantize, args.mode, args.step_runner)
    args.decode_chunk = args.choice.decode_chunk(args.decode_chunk)
    args.startup = {}
    print(args.choice.describe(), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = EnCodecGPT(gpt2_config(PRESETS[args.preset])).eval()
    codec = random_codec(0)
    weights = args.choice.weights.label

    fast = run_fast(_moving_morph(model, args), codec, args)
    floor = streaming_floor(model, args, fast["step_ms_p50"])
    print(f"{args.preset} {args.choice.mode} {weights}: RTF {fast['rtf']:.2f} (generate + "
          f"decode), {fast['steps_per_s']:.0f} steps/s, step p50 {fast['step_ms_p50']:.2f} ms "
          f"p99 {fast['step_ms_p99']:.2f} ms, longest {fast['stall_ms_max']:.1f} ms",
          flush=True)
    if args.choice.device.type != "cpu":
        print("startup: " + ", ".join(f"{k} {v:.2f} s" for k, v in args.startup.items()),
              flush=True)
    ours_ms = blog_ms = window_ms = None
    if args.choice.device.type == "cpu":  # the reference loops run the CPU model
        ours_ms = generation_only_ms(model, args, args.reference_frames)
        blog_ms = blog_loop_ms(model, args.reference_frames)
        window_ms = window_loop_ms(model, args.window, 20)
        print(f"generation only, ms/frame: ours {ours_ms:.2f}, blog KV loop {blog_ms:.2f}, "
              f"whole-window loop {window_ms:.2f}", flush=True)
    paced = (run_paced(_moving_morph(model, args), codec, args) if args.seconds > 0
             else {"underruns": None, "paced_played_s": 0.0})
    print(f"paced null sink ({args.buffer:.2f} s buffer, the morph moving): "
          f"{paced['paced_played_s']:.1f} s played, {paced['underruns']} underruns"
          + (f", step p50 {paced['paced_step_ms_p50']:.2f} ms p99 "
             f"{paced['paced_step_ms_p99']:.2f} ms, longest {paced['paced_stall_ms_max']:.1f} ms"
             if args.seconds > 0 else ""), flush=True)
    cpu = ours_ms is not None
    print(json.dumps({
        "preset": args.preset, "quantize": args.choice.weights.name,
        "compute": str(args.choice.device), "mode": args.choice.mode,
        "runner": args.choice.runner, "seconds": args.seconds,
        "rtf": round(fast["rtf"], 3), "steps_per_s": round(fast["steps_per_s"], 1),
        "step_ms_p50": round(fast["step_ms_p50"], 3),
        "step_ms_p99": round(fast["step_ms_p99"], 3),
        "stall_ms_max": round(fast["stall_ms_max"], 2), "underruns": paced["underruns"],
        "startup_s": {k: round(v, 3) for k, v in args.startup.items()},
        "ratio_vs_blog_loop": round(blog_ms / ours_ms, 3) if cpu else None,
        "ratio_vs_window_loop": round(window_ms / ours_ms, 3) if cpu else None,
        "ms_per_frame": {"ours": round(ours_ms, 3), "blog": round(blog_ms, 3),
                         "window": round(window_ms, 3)} if cpu else None,
        "window": args.window, "hop": args.hop or args.window // 4, "threads": args.threads,
        "pin_threads": args.pin_threads,
        "decode_chunk": args.decode_chunk, "paced_played_s": round(paced["paced_played_s"], 1),
        **{k: round(v, 3) for k, v in paced.items() if k.startswith("paced_step")},
        "paced_stall_ms_max": round(paced.get("paced_stall_ms_max", 0.0), 2),
        "cpu_count": os.cpu_count(), "buffer_s": args.buffer, "bandwidth": floor,
    }))


def _value_of(flag: str) -> str:
    i = sys.argv.index(flag)
    return sys.argv[i + 1] if i + 1 < len(sys.argv) else ""


def _is_rotary(source: str) -> bool:
    """``rotary-random``, or a file that holds an x-transformers state dict."""
    if source == ROTARY_RANDOM:
        return True
    path = Path(source).expanduser()
    return path.is_file() and path.suffix != ".ckpt" and unwrap_state(
        load_torch_file(path)) is not None


ROTARY_RANDOM = "rotary-random"


def rotary_main() -> None:
    """``--model FILE|rotary-random``: the rotary family (flattened codebooks, fp32 on the
    CPU): RTF generating and decoding as fast as possible, step p50/p99, and underruns of a
    paced null-sink run, with the temperature moving every second (this family has no
    prompt mix to move)."""
    p = argparse.ArgumentParser(description=rotary_main.__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="FILE|rotary-random",
                   help="a rotary model file, or rotary-random (the recipe's size, random)")
    p.add_argument("--mode", choices=("fast", "exact"), default="fast")
    p.add_argument("--window", type=int, default=None, help="tokens (default max_seq_len)")
    p.add_argument("--seconds", type=float, default=60.0, help="paced run (underruns)")
    p.add_argument("--rtf-frames", type=int, default=750)
    p.add_argument("--buffer", type=float, default=LiveConfig.buffer_s)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decode-chunk", type=int, default=CPU_DECODE_CHUNK)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == ROTARY_RANDOM:
        torch.manual_seed(0)
        model, codec = RotaryLM(RotaryLMConfig()).eval(), random_codec(0)
    else:
        loaded = load_family(args.model)
        model, codec = loaded.model, loaded.codec
    args.choice = resolve_engine("cpu", "none", args.mode)
    args.startup = {}

    def make(frames: int) -> RotaryGenerator:
        gen = RotaryGenerator(model, ControlState(num_slots=1), window=args.window,
                              mode=args.mode, seed=0)
        for i, f in enumerate(range(0, frames, FRAME_RATE)):
            gen.schedule(f, [ControlEvent("/temperature", (0.9 if i % 2 else 1.1,))])
        return gen

    fast = run_fast(make, codec, args)
    cfg = model.cfg
    print(f"rotary (dim {cfg.dim}, depth {cfg.depth}, {cfg.codebooks} codebooks flattened) "
          f"{args.mode}: RTF {fast['rtf']:.2f} (generate + decode), frame step p50 "
          f"{fast['step_ms_p50']:.2f} ms p99 {fast['step_ms_p99']:.2f} ms "
          f"({cfg.codebooks} tokens a frame), longest {fast['stall_ms_max']:.1f} ms", flush=True)
    paced = (run_paced(make, codec, args) if args.seconds > 0
             else {"underruns": None, "paced_played_s": 0.0})
    print(f"paced null sink ({args.buffer:.2f} s buffer, the temperature moving): "
          f"{paced['paced_played_s']:.1f} s played, {paced['underruns']} underruns", flush=True)
    print(json.dumps({"family": "rotary", "model": args.model, "mode": args.mode,
                      "window": args.window or cfg.max_seq_len, "seconds": args.seconds,
                      "rtf": round(fast["rtf"], 3), "step_ms_p50": round(fast["step_ms_p50"], 3),
                      "step_ms_p99": round(fast["step_ms_p99"], 3),
                      "stall_ms_max": round(fast["stall_ms_max"], 2),
                      "underruns": paced["underruns"],
                      "paced_played_s": round(paced["paced_played_s"], 1),
                      "threads": args.threads, "decode_chunk": args.decode_chunk,
                      "buffer_s": args.buffer, "cpu_count": os.cpu_count()}))


def musicgen_main() -> None:
    """``--model SRC``: the MusicGen family (:mod:`bench.musicgen_realtime`)."""
    parser = argparse.ArgumentParser(description=musicgen_realtime.__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, metavar="SRC",
                        help="a MusicGen, or musicgen-small-random / musicgen-tiny-random")
    parser.add_argument("--compute", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    musicgen_realtime.add_options(parser)
    print(json.dumps(musicgen_realtime.run(parser.parse_args())))


if __name__ == "__main__":
    main()
