"""Command line: ``python run_engine.py [live options]`` or ``encode|embed|render ...``.

Every user mistake (missing or unreadable file, wrong kind of checkpoint, bad option) ends
with one line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine import FRAME_RATE, SAMPLE_RATE
from engine.config import PRESETS, SamplingConfig
from engine.errors import UserError


def _add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT",
                     help="EnCodecGPT checkpoint: .ckpt file, hub path owner/repo/file.ckpt, "
                          "or a save_pretrained folder")
    src.add_argument("--random-weights", action="store_true",
                     help="untrained model and codec (smoke tests and benchmarks only)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="model size with --random-weights (tiny: 6x512; gpt2: 12x768)")
    p.add_argument("--weights-seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that hold pickled Python objects (trusted sources only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_engine.py",
        description="encodecgpt-live: EnCodec tokens, EnCodecMAE prompts, EnCodecGPT generation.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    _add_model_source(ren)
    ren.add_argument("--prompt", required=True, metavar="P0",
                     help="prompt: a .npy vector or an audio file (embedded with --encodecmae)")
    ren.add_argument("--prompt-to", metavar="P1", help="morph linearly from P0 to P1")
    ren.add_argument("--encodecmae", default="base", metavar="SRC",
                     help="EnCodecMAE used for audio prompts (default: base from the hub)")
    length = ren.add_mutually_exclusive_group(required=True)
    length.add_argument("--frames", type=int, metavar="N", help="frames to generate (75/s)")
    length.add_argument("--seconds", type=float, metavar="S", help="seconds to generate")
    ren.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    ren.add_argument("--temperature", type=float, default=1.0)
    ren.add_argument("--top-k", type=int, default=0, help="0 = off")
    ren.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    ren.add_argument("--seed", type=int, default=None, help="sampling seed (printed if omitted)")
    ren.add_argument("--window", type=int, metavar="W",
                     help="rolling window of W < 300 frames (default mode: exact, the whole "
                          "window recomputed each step); without --window/--mode: KV cache (1)")
    ren.add_argument("--mode", choices=("exact", "fast"), default=None,
                     help="rolling-window mode (default window 200): exact, or fast (KV cache, "
                          "re-prefill every --hop frames)")
    ren.add_argument("--hop", type=int, metavar="H", help="fast mode hop (default W/4)")
    ren.add_argument("--quantize", choices=("none", "int8", "bf16"), default="none",
                     help="fast mode weights (fp32 = none is the reference)")
    ren.add_argument("--tokens-out", required=True, metavar="TOK.npy",
                     help="[N, Q] int64 delayed tokens (+1, 0 = empty)")
    ren.add_argument("--out", metavar="OUT.wav", help="decoded audio, 24 kHz")

    rep = sub.add_parser("replay", help="re-render a recorded session offline")
    rep.add_argument("session", metavar="DIR")
    rep.add_argument("--out", required=True, metavar="OUT.wav",
                     help="audio at the session's output rate")
    rep.add_argument("--controls", metavar="EDITED.jsonl",
                     help="use this control log instead of the recorded one (a branch)")
    rep.add_argument("--tokens-out", metavar="TOK.npy")
    rep.add_argument("--checkpoint", metavar="CKPT",
                     help="replay with this checkpoint instead of the recorded one")
    rep.add_argument("--trust-checkpoint", action="store_true")
    rec = sub.add_parser("recover", help="fix up a session after a crash or kill")
    rec.add_argument("session", metavar="DIR")
    plo = sub.add_parser("plot", help="PNG: spectrogram above morph weights, temperature, top-k")
    plo.add_argument("session", metavar="DIR")
    plo.add_argument("--out", metavar="PLOT.png", help="default: DIR/plot.png")
    from engine.train_cli import add_parsers

    add_parsers(sub)
    return parser


SUBCOMMANDS = ("encode", "embed", "render", "replay", "recover", "plot", "prepare", "train",
               "export")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a in SUBCOMMANDS for a in argv[:3]):  # no command: play live
        return _guard(lambda: _live(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _guard(lambda: _offline(args))


def _live(argv: list[str]) -> int:
    from engine.live_cli import cmd_live

    return cmd_live(argv)


def _guard(run) -> int:
    try:
        return run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _offline(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    from engine import train_cli

    return {"encode": cmd_encode, "embed": cmd_embed, "render": cmd_render,
            "replay": cmd_replay, "recover": cmd_recover, "plot": cmd_plot,
            "prepare": train_cli.cmd_prepare, "train": train_cli.cmd_train,
            "export": train_cli.cmd_export}[args.command](args)


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.audio_io import write_audio
    from engine.replay import read_session, replay

    folder = Path(args.session)
    info = read_session(folder)
    start = time.perf_counter()
    tokens, audio = replay(folder, Path(args.controls) if args.controls else None,
                           args.checkpoint, args.trust_checkpoint)
    elapsed = time.perf_counter() - start
    rate = int(info.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, SAMPLE_RATE, rate, quality="HQ")
    write_audio(args.out, audio, rate)
    if args.tokens_out:
        _save_npy(args.tokens_out, tokens)
    recorded = np.load(folder / "tokens.npy")
    same = np.array_equal(recorded.astype(np.int64), tokens)
    seconds = len(tokens) / FRAME_RATE
    print(f"replayed {len(tokens)} frames ({seconds:.1f} s) in {elapsed:.1f} s "
          f"(x{seconds / max(elapsed, 1e-9):.1f} real time); tokens "
          f"{'identical to' if same else 'differ from'} the recording -> {args.out}",
          file=sys.stderr)
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from engine.replay import recover

    report = recover(Path(args.session))
    print(f"{args.session}: {report['frames']} frames "
          f"({report['frames'] / FRAME_RATE:.1f} s) of tokens, "
          f"{report.get('audio_samples', 0)} audio samples, {report['controls_kept']} controls "
          f"kept, {report['controls_dropped']} dropped (partial or after the last frame)",
          file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from engine.replay import plot

    out = plot(Path(args.session), Path(args.out) if args.out else None)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from engine.checkpoint import load_checkpoint
    from engine.codec import codebooks_for_bandwidth, load_codec

    num_q = codebooks_for_bandwidth(args.bandwidth)
    if args.checkpoint:
        codec = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint).codec
    else:
        codec = load_codec(args.codec)
    codes = codec.encode_file(args.input, num_q).numpy().astype(np.int64)  # [Q, T]
    _save_npy(args.out, codes)
    print(f"{args.input}: {codes.shape[1]} frames x {num_q} codebooks -> {args.out}",
          file=sys.stderr)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from engine.prompt import load_encodecmae

    encoder = load_encodecmae(args.encodecmae, trust=args.trust_checkpoint)
    vec = encoder.frames(args.input) if args.frames else encoder.prompt(args.input)
    _save_npy(args.out, vec.astype(np.float32))
    print(f"{args.input}: prompt {list(vec.shape)} -> {args.out}", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from engine.generate import generate_kv, generate_window, prompt_schedule, tokens_to_audio

    steps = args.frames if args.frames is not None else round(args.seconds * FRAME_RATE)
    if steps < 1:
        raise UserError(f"--frames/--seconds must give at least 1 frame (got {steps})")
    prompts = _PromptLoader(args.encodecmae, args.trust_checkpoint)
    p0 = prompts.load(args.prompt)
    p1 = prompts.load(args.prompt_to) if args.prompt_to else None
    if p1 is not None and p1.shape != p0.shape:
        raise UserError(f"--prompt-to {args.prompt_to}: size {p1.shape[0]} differs from "
                        f"--prompt {args.prompt} ({p0.shape[0]})")
    model, codec = _load_model(args, prompt_dim=p0.shape[0])
    if p0.shape[0] != model.prompt_dim:
        raise UserError(f"{args.prompt}: prompt has {p0.shape[0]} values, the model expects "
                        f"{model.prompt_dim} (use the EnCodecMAE the model was trained with)")
    sampling = _sampling(args)
    gen = torch.Generator().manual_seed(sampling.seed)
    schedule = torch.from_numpy(prompt_schedule(p0, p1, steps))
    if args.window is not None or args.mode is not None:
        return _render_rolling(args, model, codec, sampling, p0, p1, steps)
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
    _save_npy(args.tokens_out, tokens)
    if args.out:
        if steps < model.num_q:
            raise UserError(f"--out needs at least {model.num_q} frames, got {steps}")
        from engine.audio_io import write_audio
        write_audio(args.out, tokens_to_audio(codec, result.tokens), SAMPLE_RATE)
    seconds = steps / FRAME_RATE
    print(f"rendered {steps} frames ({seconds:.2f} s) in {elapsed:.2f} s "
          f"(x{seconds / max(elapsed, 1e-9):.2f} real time), seed {sampling.seed}", file=sys.stderr)
    return 0


def _render_rolling(args, model, codec, sampling: SamplingConfig, p0: np.ndarray,
                    p1: np.ndarray | None, steps: int) -> int:
    """``render`` through the live engine's rolling generator, decoder and a file sink."""
    from engine.controls import ControlEvent, ControlState
    from engine.decoder import StreamingDecoder
    from engine.generator import DEFAULT_WINDOW, RollingGenerator
    from engine.pipeline import Pipeline
    from engine.sinks import FileSink, MemorySink

    if args.quantize == "bf16":
        _check_bf16()
    controls = ControlState(temperature=max(sampling.temperature, 0.0), top_k=sampling.top_k,
                            top_p=sampling.top_p)
    controls.apply(ControlEvent("/prompt/slot", (0, p0)))
    if p1 is not None:
        controls.apply(ControlEvent("/prompt/slot", (1, p1)))
    try:
        generator = RollingGenerator(
            model, controls, window=args.window or DEFAULT_WINDOW, mode=args.mode or "exact",
            hop=args.hop, quantize=args.quantize, sampling=sampling, seed=sampling.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    if p1 is not None:  # step i uses (1 - i/(N-1)) P0 + i/(N-1) P1, as generator (1)/(2)
        for i, x in enumerate(np.linspace(0.0, 1.0, steps)):
            generator.schedule(i, [ControlEvent("/morph", (float(x),))])
    rows: list[torch.Tensor] = []
    sink = FileSink(args.out) if args.out else MemorySink()
    pipe = Pipeline(generator, StreamingDecoder(codec.model), sink, decode_chunk=16,
                    threads=torch.get_num_threads(),
                    on_row=lambda _, row: rows.append(row))
    start = time.perf_counter()
    try:
        pipe.run(steps)
    finally:
        generator.close()
        sink.close()
    elapsed = time.perf_counter() - start
    _save_npy(args.tokens_out, torch.stack(rows).numpy().astype(np.int64))
    seconds = steps / FRAME_RATE
    print(f"rendered {steps} frames ({seconds:.2f} s, {generator.mode} window "
          f"{generator.window}{f' hop {generator.hop}' if generator.mode == 'fast' else ''}) "
          f"in {elapsed:.2f} s (x{seconds / max(elapsed, 1e-9):.2f} real time), "
          f"seed {sampling.seed}", file=sys.stderr)
    return 0


def _check_bf16() -> None:
    from engine.lean import bf16_is_native

    if not bf16_is_native():
        raise UserError("--quantize bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); "
                        "it would run slower than fp32. Use --quantize int8 or none.")


def _sampling(args: argparse.Namespace) -> SamplingConfig:
    if not args.greedy:
        if not np.isfinite(args.temperature) or args.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {args.temperature}")
        if not 0.0 < args.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.top_k < 0:
            raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    return SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          greedy=args.greedy, seed=seed)


def _load_model(args: argparse.Namespace, prompt_dim: int):
    """The checkpoint's model and codec, or random ones with a loud warning."""
    if args.checkpoint:
        from engine.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        return loaded.model, loaded.codec
    from engine.codec import random_codec
    from engine.model import EnCodecGPT, gpt2_config

    print(f"WARNING: --random-weights: untrained '{args.preset}' model and random codec; the "
          "output is noise. For smoke tests and benchmarks only.", file=sys.stderr)
    with torch.random.fork_rng():
        torch.manual_seed(args.weights_seed)
        model = EnCodecGPT(gpt2_config(PRESETS[args.preset]), prompt_dim=prompt_dim).eval()
    return model, random_codec(args.weights_seed)


class _PromptLoader:
    """A prompt argument: a ``.npy`` vector, or an audio file embedded with EnCodecMAE."""

    def __init__(self, encodecmae: str, trust: bool):
        self.source, self.trust, self._encoder = encodecmae, trust, None

    def load(self, arg: str) -> np.ndarray:
        path = Path(arg)
        if path.suffix.lower() == ".npy":
            return load_prompt_npy(path)
        if self._encoder is None:
            from engine.prompt import load_encodecmae

            self._encoder = load_encodecmae(self.source, trust=self.trust)
        return self._encoder.prompt(path)


def load_prompt_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a prompt .npy or an audio file)")
    try:
        vec = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if vec.ndim == 2 and vec.shape[0] >= 1:
        vec = vec.mean(axis=0)  # [T, D] frames (embed --frames) -> their time mean
    if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.floating):
        raise UserError(f"{path}: expected a float vector [D], got {vec.dtype} {list(vec.shape)}")
    if not np.isfinite(vec).all():
        raise UserError(f"{path}: prompt holds NaN or infinite values")
    return vec.astype(np.float32)


def _save_npy(path: str, array: np.ndarray) -> None:
    try:
        np.save(path, array)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
