"""``encode``, ``embed`` and ``render``: the offline commands."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.cli.compute_flags import add_compute, add_threads, resolve_engine
from engine.cli.models import (
    add_encodecmae,
    add_model_source,
    load_model,
    load_paired_checkpoint,
    save_npy,
)
from engine.cli.musicgen.render import (
    add_musicgen_options,
    check_not_musicgen_options,
    render_musicgen,
)
from engine.cli.render_rotary import render_rotary
from engine.errors import UserError
from engine.live.audio.sinks import FileSink, MemorySink
from engine.live.control_input import initial_controls
from engine.live.controls import ControlEvent
from engine.live.decoder import StreamingDecoder
from engine.live.generator import DEFAULT_WINDOW, RollingGenerator
from engine.live.pipeline import Pipeline
from engine.live.step.compute import WEIGHT_FORMATS, describe, resolve_compute
from engine.model.audio_io import write_audio
from engine.model.codec import codebooks_for_bandwidth, load_codec
from engine.model.config import SamplingConfig
from engine.model.encodecmae import load_encodecmae
from engine.model.loading.checkpoint import load_checkpoint
from engine.model.prompt_files import PromptReader
from engine.model.reference import generate_kv, generate_window, prompt_schedule, tokens_to_audio
from engine.model.tokens.priming import prime_frames, read_prime


def add_parsers(sub) -> None:
    enc = sub.add_parser("encode", help="audio file -> EnCodec codes [Q, T] int64 (.npy)")
    enc.add_argument("input", metavar="IN")
    src = enc.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT", help="use the codec inside this checkpoint")
    src.add_argument("--codec", metavar="SRC",
                     help="hub id (facebook/encodec_24khz), local folder, or encodec .th file")
    enc.add_argument("--bandwidth", type=float, default=6.0,
                     help="kbps: 1.5, 3, 6 (8 codebooks, default), 12, 24 (32 codebooks)")
    enc.add_argument("--out", required=True, metavar="CODES.npy")
    enc.add_argument("--trust-checkpoint", action="store_true")

    emb = sub.add_parser("embed", help="audio file -> EnCodecMAE prompt vector [D] float32")
    emb.add_argument("input", metavar="IN")
    emb.add_argument("--encodecmae", default="base", metavar="SRC",
                     help="small|base|large|base-st|large-st, a hub id, or a local folder")
    emb.add_argument("--out", required=True, metavar="PROMPT.npy")
    emb.add_argument("--frames", action="store_true", help="save all frames [T, D] instead")
    emb.add_argument("--trust-checkpoint", action="store_true")

    ren = sub.add_parser("render", help="generate tokens (and audio) offline")
    add_model_source(ren)
    ren.add_argument("--prompt", metavar="P0",
                     help="prompt: a .npy vector or an audio file (embedded with --encodecmae); "
                          "required for EnCodecGPT. Rotary family: an audio prefix to continue")
    ren.add_argument("--prompt-to", metavar="P1", help="morph linearly from P0 to P1")
    add_encodecmae(ren)
    ren.add_argument("--prime", metavar="FILE",
                     help="continue this recording: its last seconds (the model's context, at "
                          "most the window) are encoded and generation goes on from them; "
                          "rolling window (exact unless --mode); TOK.npy and OUT.wav start "
                          "with the primed rows")
    length = ren.add_mutually_exclusive_group(required=True)
    length.add_argument("--frames", type=int, metavar="N",
                        help="frames to generate (75/s; MusicGen 50/s)")
    length.add_argument("--seconds", type=float, metavar="S", help="seconds to generate")
    ren.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    ren.add_argument("--temperature", type=float, default=1.0)
    ren.add_argument("--top-k", type=int, default=None,
                     help="0 = off (default 0; MusicGen: the model's own, 250)")
    ren.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    ren.add_argument("--seed", type=int, default=None, help="sampling seed (printed if omitted)")
    ren.add_argument("--window", type=int, metavar="W",
                     help="rolling window of W < 300 frames (default mode: exact, the whole "
                          "window recomputed each step); without --window/--mode: KV cache (1)")
    ren.add_argument("--mode", choices=("exact", "fast"), default=None,
                     help="rolling-window mode (default window 200): exact, or fast (KV cache, "
                          "re-prefill every --hop frames)")
    ren.add_argument("--hop", type=int, metavar="H", help="fast mode hop (default W/4)")
    ren.add_argument("--quantize", choices=("auto", *WEIGHT_FORMATS), default="auto",
                     help="weights of the rolling modes (auto: fp32 = none on the CPU, the "
                          "reference; bf16 on a GPU that has it, else fp16)")
    add_compute(ren, auto_help="the CPU reference loops without --window/--mode, else CUDA "
                               "when present; an explicit GPU renders in exact mode")
    ren.add_argument("--tokens-out", metavar="TOK.npy",
                     help="[N, Q] int64 delayed tokens (+1, 0 = empty)")
    ren.add_argument("--out", metavar="OUT.wav", help="decoded audio, 24 kHz")
    add_threads(ren)
    add_musicgen_options(ren)



def cmd_encode(args: argparse.Namespace) -> int:
    num_q = codebooks_for_bandwidth(args.bandwidth)
    if args.checkpoint:
        codec = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint).codec
    else:
        codec = load_codec(args.codec)
    codes = codec.encode_file(args.input, num_q).numpy().astype(np.int64)  # [Q, T]
    save_npy(args.out, codes)
    print(f"{args.input}: {codes.shape[1]} frames x {num_q} codebooks -> {args.out}",
          file=sys.stderr)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    encoder = load_encodecmae(args.encodecmae, trust=args.trust_checkpoint)
    vec = encoder.frames(args.input) if args.frames else encoder.prompt(args.input)
    save_npy(args.out, vec.astype(np.float32))
    print(f"{args.input}: prompt {list(vec.shape)} -> {args.out}", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    if not args.tokens_out and not args.out:
        raise UserError("render writes --out OUT.wav and/or --tokens-out TOK.npy; give one")
    steps = args.frames if args.frames is not None else round(args.seconds * FRAME_RATE)
    if steps < 1:
        raise UserError(f"--frames/--seconds must give at least 1 frame (got {steps})")
    loaded = load_paired_checkpoint(args)  # before the prompts: it picks their EnCodecMAE
    if loaded is not None and loaded.facts.name == "musicgen":
        return render_musicgen(args, loaded, _sampling(args))
    check_not_musicgen_options(args)
    args.top_k = 0 if args.top_k is None else args.top_k  # MusicGen alone has its own default
    if loaded is not None and loaded.facts.name == "rotary":
        return render_rotary(args, loaded, steps)
    if not args.prompt:
        raise UserError("render: --prompt is required for EnCodecGPT models")
    prompts = PromptReader(lambda: load_encodecmae(args.encodecmae, trust=args.trust_checkpoint))
    p0 = prompts.read(args.prompt)
    p1 = prompts.read(args.prompt_to) if args.prompt_to else None
    if p1 is not None and p1.shape != p0.shape:
        raise UserError(f"--prompt-to {args.prompt_to}: size {p1.shape[0]} differs from "
                        f"--prompt {args.prompt} ({p0.shape[0]})")
    if loaded is not None:
        model, codec = loaded.model, loaded.codec
    else:
        model, codec = load_model(args, prompt_dim=p0.shape[0])
    if p0.shape[0] != model.prompt_dim:
        raise UserError(f"{args.prompt}: prompt has {p0.shape[0]} values, the model expects "
                        f"{model.prompt_dim} (use the EnCodecMAE the model was trained with)")
    sampling = _sampling(args)
    gen = torch.Generator().manual_seed(sampling.seed)
    schedule = torch.from_numpy(prompt_schedule(p0, p1, steps))
    gpu = args.compute.strip().lower() not in ("auto", "cpu")
    if args.window is not None or args.mode is not None or gpu or args.prime:
        primed = _primed_rows(args, codec, model.num_q, loaded.checkpoint if loaded else None)
        return _render_rolling(args, model, codec, sampling, p0, p1, steps, primed)
    if args.quantize not in ("auto", "none"):
        raise UserError(f"--quantize {args.quantize} applies to the rolling modes (--window or "
                        "--mode); the reference loops run the fp32 model")
    start = time.perf_counter()
    try:
        if args.window is not None:
            result = generate_window(model, schedule, args.window, sampling, generator=gen)
        else:
            result = generate_kv(model, schedule, sampling, generator=gen)
    except ValueError as e:
        raise UserError(str(e)) from None
    elapsed = time.perf_counter() - start
    tokens = result.tokens.cpu().numpy().astype(np.int64)
    if args.tokens_out:
        save_npy(args.tokens_out, tokens)
    if args.out:
        if steps < model.num_q:
            raise UserError(f"--out needs at least {model.num_q} frames, got {steps}")
        write_audio(args.out, tokens_to_audio(codec, result.tokens), SAMPLE_RATE)
    seconds = steps / FRAME_RATE
    print(f"rendered {steps} frames ({seconds:.2f} s) in {elapsed:.2f} s "
          f"(x{seconds / max(elapsed, 1e-9):.2f} real time), seed {sampling.seed}", file=sys.stderr)
    return 0


def _primed_rows(args, codec, num_q: int, loaded) -> torch.Tensor | None:
    """``--prime FILE``: its last seconds as ``[T, Q]`` rows (see engine.model.tokens.priming)."""
    if not args.prime:
        return None
    frames, note = prime_frames(loaded.context_s if loaded else None,
                                args.window or DEFAULT_WINDOW)
    if note:
        print(note, file=sys.stderr)
    rows = read_prime(codec, args.prime, num_q, frames)
    print(f"primed with {args.prime}: {rows.shape[0]} frames "
          f"({rows.shape[0] / FRAME_RATE:.2f} s)", file=sys.stderr)
    return rows


def _render_rolling(args, model, codec, sampling: SamplingConfig, p0: np.ndarray,
                    p1: np.ndarray | None, steps: int, primed: torch.Tensor | None = None) -> int:
    """``render`` through the live engine's rolling generator, decoder and a file sink; with
    ``primed`` rows, the generator starts from them and the audio is decoded at the end."""
    quantize = args.quantize
    if quantize == "auto" and resolve_compute(args.compute).type == "cpu":
        quantize = "none"  # offline on the CPU the fp32 reference, unless a format is named
    choice = resolve_engine(args.compute, quantize, args.mode or "exact")
    print(choice.describe(), file=sys.stderr, flush=True)
    controls = initial_controls([p0] if p1 is None else [p0, p1],
                                temperature=max(sampling.temperature, 0.0),
                                top_k=sampling.top_k, top_p=sampling.top_p)
    try:
        generator = RollingGenerator(
            model, controls, window=args.window or DEFAULT_WINDOW, mode=choice.mode,
            hop=args.hop, quantize=choice.weights.name, greedy=sampling.greedy,
            seed=sampling.seed, compute=choice.device, runner=choice.runner)
    except ValueError as e:
        raise UserError(str(e)) from None
    if primed is not None:
        generator.prime(primed)
    if p1 is not None:  # step i uses (1 - i/(N-1)) P0 + i/(N-1) P1, as generator (1)/(2)
        for i, x in enumerate(np.linspace(0.0, 1.0, steps)):
            generator.schedule(i, [ControlEvent("/morph", (float(x),))])
    rows: list[torch.Tensor] = [] if primed is None else list(primed)
    sink = FileSink(args.out) if args.out and primed is None else MemorySink()
    decoder = StreamingDecoder(codec.model, device=choice.device)
    pipe = Pipeline(generator, decoder, sink, decode_chunk=16,
                    threads=torch.get_num_threads(),
                    on_row=lambda _, row: rows.append(row))
    start = time.perf_counter()
    try:
        pipe.run(steps)
    finally:
        generator.close()
        sink.close()
    elapsed = time.perf_counter() - start
    tokens = torch.stack(rows)  # [T + N, Q] with T primed rows first
    if args.tokens_out:
        save_npy(args.tokens_out, tokens.numpy().astype(np.int64))
    if args.out and primed is not None:  # the primed rows were never streamed: decode it all
        write_audio(args.out, tokens_to_audio(codec, tokens), SAMPLE_RATE)
    seconds = steps / FRAME_RATE
    print(f"rendered {steps} frames ({seconds:.2f} s, {generator.mode} window "
          f"{generator.window}{f' hop {generator.hop}' if generator.mode == 'fast' else ''}, "
          f"{describe(choice.weights)}) "
          f"in {elapsed:.2f} s (x{seconds / max(elapsed, 1e-9):.2f} real time), "
          f"seed {sampling.seed}", file=sys.stderr)
    return 0


def _sampling(args: argparse.Namespace) -> SamplingConfig:
    if not args.greedy:
        if not np.isfinite(args.temperature) or args.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {args.temperature}")
        if not 0.0 < args.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.top_k is not None and args.top_k < 0:
            raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    top_k = 0 if args.top_k is None else args.top_k
    return SamplingConfig(temperature=args.temperature, top_k=top_k, top_p=args.top_p,
                          greedy=args.greedy, seed=seed)


