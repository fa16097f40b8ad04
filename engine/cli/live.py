"""``python run_engine.py [options]`` with no command: play live (sound device + OSC)."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from engine.cli.compute_flags import (
    add_compute,
    add_mode_and_runner,
    add_quantize,
    resolve_engine,
)
from engine.cli.console import StatusConsole
from engine.cli.default_prompts import write_default_prompts
from engine.errors import UserError
from engine.live.audio.sound_device import list_devices
from engine.live.engine import LiveConfig
from engine.live.step.compute import out_of_memory_as_user_error
from engine.model.config import PRESETS
from engine.model.encodecmae import default_cache_dir, load_encodecmae
from engine.model.loading.checkpoint import DEFAULT_CHECKPOINT
from engine.model.loading.family import load_family
from engine.model.loading.random_model import random_model
from engine.model.prompt_files import PromptReader, load_prompt_npy
from engine.session.live_session import build_live_engine
from osc.feedback import FeedbackSender
from osc.server import OSCServer


def build_live_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_engine.py",
        description="Play EnCodecGPT live: generates without end to a sound device while OSC "
                    "messages (Max/MSP, TouchOSC, Pure Data) morph the prompt.",
        epilog="Offline commands: run_engine.py encode|embed|render --help.")
    m = p.add_argument_group("model")
    m.add_argument("--checkpoint", "--model", dest="checkpoint", metavar="SRC", default=None,
                   help="EnCodecGPT checkpoint (.ckpt, hub path owner/repo/file.ckpt, or a "
                        "save_pretrained folder); default: the NSynth model from the hub. "
                        "--model is the same option (the family is recognised from SRC)")
    m.add_argument("--random-weights", action="store_true",
                   help="untrained model and codec: smoke tests and benchmarks ONLY")
    m.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    m.add_argument("--weights-seed", type=int, default=0)
    m.add_argument("--trust-checkpoint", action="store_true")
    m.add_argument("--encodecmae", default="base", metavar="SRC",
                   help="EnCodecMAE for audio prompts: small|base|large|..., hub id or folder")
    m.add_argument("--threads", type=int, default=1, help="torch threads per op (default 1)")
    add_compute(m)
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", nargs="+", metavar="FILE", default=[],
                   help="prompt slots in order: audio files or .npy vectors (default: a "
                        "plucked string, a bell and filtered noise, synthesized)")
    g.add_argument("--prompt-dir", action="append", metavar="DIR", default=[],
                   help="folder /prompt/load may read from (repeatable; default: the current "
                        "folder and the folders of --prompt files)")
    g.add_argument("--window", type=int, default=200, help="token window in frames (< 300)")
    add_mode_and_runner(g)
    g.add_argument("--hop", type=int, default=None, help="fast-mode hop (default window/4)")
    add_quantize(g)
    g.add_argument("--seed", type=int, default=0, help="sampler seed")
    a = p.add_argument_group("audio")
    a.add_argument("--device", metavar="NAME|INDEX|null", default=None,
                   help="output device (name substring or index; 'null' = no sound card)")
    a.add_argument("--hostapi", metavar="API", default=None,
                   help="host API: JACK, CoreAudio, ASIO, WASAPI, ALSA, ...")
    a.add_argument("--list-devices", action="store_true", help="list output devices and exit")
    a.add_argument("--blocksize", type=int, default=512, help="frames per audio callback")
    a.add_argument("--latency", default="low", help="PortAudio latency: low, high or seconds")
    a.add_argument("--buffer", type=float, default=0.2, metavar="SECONDS",
                   help="audio buffered ahead of the device (control latency vs. safety)")
    a.add_argument("--decode-chunk", type=int, default=None, metavar="FRAMES",
                   help="frames decoded per call (smaller: lower latency, more work; default "
                        "8 on the CPU, 2 on a GPU)")
    o = p.add_argument_group("OSC")
    o.add_argument("--osc-host", default="127.0.0.1",
                   help="address to listen on (default loopback; a LAN address lets phones in)")
    o.add_argument("--osc-port", type=int, default=9000)
    o.add_argument("--allow", nargs="+", metavar="IP", default=None,
                   help="accept OSC only from these sender addresses")
    o.add_argument("--feedback", metavar="HOST:PORT", default=None,
                   help="also send /engine/status and replies here")
    r = p.add_argument_group("run")
    r.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: until Ctrl-C)")
    r.add_argument("--no-status", action="store_true", help="no live status display")
    r.add_argument("--record", metavar="NAME", default=None,
                   help="record the session from the start (see /record/start)")
    r.add_argument("--sessions-dir", metavar="DIR", type=Path, default=Path("sessions"),
                   help="where recorded sessions go (default ./sessions)")
    r.add_argument("--control-log", metavar="FILE.jsonl", type=Path, default=None,
                   help="append every applied control (frame, sample, address, values)")
    r.add_argument("--tap", metavar="FILE.wav", type=Path, default=None,
                   help="write everything sent to the output, at the device rate (debugging)")
    return p


def cmd_live(argv: list[str]) -> int:
    args = build_live_parser().parse_args(argv)
    if args.list_devices:
        print(list_devices())
        return 0
    torch.set_num_threads(max(1, args.threads))
    feedback = _parse_target(args.feedback) if args.feedback else None
    if args.osc_host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: OSC listens on {args.osc_host}: anyone on that network can control "
              "the engine and make it read prompt files in the prompt folders. Use --allow "
              "to restrict senders.", file=sys.stderr)
    choice = resolve_engine(args.compute, args.quantize, args.mode, args.step_runner)
    print(choice.describe(), file=sys.stderr, flush=True)
    start = time.perf_counter()
    model, codec, encoder_factory = _load(args)
    slots = _initial_prompts(args, model, encoder_factory)
    loaded = time.perf_counter() - start
    engine = _build_engine(args, choice, model, codec, slots, encoder_factory)
    print(_startup_line(loaded, engine.startup, time.perf_counter() - start), file=sys.stderr,
          flush=True)
    return _run(args, engine, feedback)


def _startup_line(load_s: float, startup: dict, total_s: float) -> str:
    """Startup time: load (model, codec, prompts), then capture and warm-up where a GPU runs."""
    parts = [f"load {load_s:.1f} s"]
    if startup["capture_s"]:
        parts.append(f"step capture {startup['capture_s']:.2f} s")
    if startup["decoder_warmup_s"]:
        parts.append(f"decoder warm-up {startup['decoder_warmup_s']:.2f} s")
    return f"startup {total_s:.1f} s ({', '.join(parts)})"


def _parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--feedback expects HOST:PORT, got {text!r}")
    return host, int(port)


def _load(args):
    @functools.cache  # one EnCodecMAE for the initial prompts and every /prompt/load
    def encoder_factory():
        return load_encodecmae(args.encodecmae, trust=args.trust_checkpoint)

    if args.random_weights:
        print("WARNING: --random-weights: an UNTRAINED model and codec — the sound is noise. "
              "For smoke tests and benchmarks only.", file=sys.stderr)
        args.identity = {"random_weights": True, "preset": args.preset,
                         "weights_seed": args.weights_seed,
                         "prompt_dim": _first_npy_dim(args.prompt)}
        model, codec = random_model(args.identity)
        return model, codec, encoder_factory
    source = args.checkpoint or DEFAULT_CHECKPOINT
    print(f"loading {source} ...", file=sys.stderr, flush=True)
    try:
        loaded = load_family(source, trust=args.trust_checkpoint)
    except UserError as e:
        if args.checkpoint is None and "cannot be reached" in str(e):
            raise UserError(OFFLINE_HELP.format(reason=e)) from None
        raise
    if loaded.facts.name != "encodecgpt":
        raise UserError(f"{source}: a {loaded.facts.name} model (x-transformers, flattened "
                        "codebooks); live play of this family is not wired into the engine yet: "
                        "render it with `run_engine.py render --model SRC`")
    args.identity = {"checkpoint": str(source), "sha256": loaded.sha256,
                     "codec": loaded.codec.name}
    return loaded.model, loaded.codec, encoder_factory


OFFLINE_HELP = """the default model is not in the Hugging Face cache and the hub cannot be reached.
  ({reason})
  With no options the engine needs, from the hub:
    lpepino/encodecgpt   nsynth-base/nsynth-390ksteps-base.ckpt (and nsynth-base/config.json
                         if the repo has one)
    lpepino/encodecmae-base   model.pt, config.gin  (to embed the default and loaded prompts)
  Fetch them where there is network access (hf download REPO FILE) and either let them land
  in the cache, or pass --checkpoint FILE (and --encodecmae FOLDER, or --prompt *.npy)."""


def _first_npy_dim(prompts: list[str]) -> int | None:
    for p in prompts:
        if p.lower().endswith(".npy"):
            return load_prompt_npy(Path(p)).shape[0]
    return None


def _initial_prompts(args, model, encoder_factory) -> list[np.ndarray]:
    files = [Path(p) for p in args.prompt]
    if not files and args.random_weights:
        rng = np.random.RandomState(args.weights_seed)
        print("prompts: 3 random vectors (random weights: nothing to embed)", file=sys.stderr)
        args.slot_sources = ["random"] * 3
        return [rng.randn(model.prompt_dim).astype(np.float32) for _ in range(3)]
    if not files:
        files = write_default_prompts(default_cache_dir().parent / "default_prompts")
        print("prompts: " + ", ".join(f.stem for f in files) + " (synthesized)",
              file=sys.stderr)
    args.slot_sources = [str(f.resolve()) for f in files]
    reader = PromptReader(encoder_factory, expected_dim=model.prompt_dim)
    return [reader.read(f) for f in files]


def _build_engine(args, choice, model, codec, slots, encoder_factory):
    dirs = [Path(d) for d in args.prompt_dir] or [Path.cwd(), *{Path(p).resolve().parent
                                                                for p in args.prompt}]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"--prompt-dir {d}: no such folder")
    latency = args.latency
    try:
        latency = float(latency)
    except ValueError:
        if latency not in ("low", "high"):
            raise UserError(f"--latency must be low, high or seconds, got {latency!r}") from None
    config = LiveConfig(window=args.window, mode=choice.mode, hop=args.hop,
                        quantize=choice.weights.name, seed=args.seed,
                        compute=str(choice.device), runner=choice.runner, device=args.device,
                        hostapi=args.hostapi, buffer_s=args.buffer, blocksize=args.blocksize,
                        latency=latency, threads=args.threads, prompt_dirs=dirs,
                        decode_chunk=choice.decode_chunk(args.decode_chunk),
                        num_slots=max(4, len(slots)), control_log=args.control_log,
                        tap=args.tap, sessions_dir=args.sessions_dir,
                        identity=dict(args.identity, prompt_dim=model.prompt_dim),
                        slot_sources=list(args.slot_sources))
    size = f"a {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M-parameter model " \
           f"({choice.weights.label})"
    try:
        with out_of_memory_as_user_error(size, args.window):
            return build_live_engine(model, codec, slots, config,
                                     encoder_factory=encoder_factory)
    except ValueError as e:
        raise UserError(str(e)) from None


def _run(args, engine, feedback) -> int:
    server = OSCServer(engine, args.osc_host, args.osc_port, allow=args.allow,
                       feedback=feedback, log=lambda m: print(m, file=sys.stderr, flush=True))
    sender = FeedbackSender(server, engine)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console = StatusConsole(engine, enabled=not args.no_status)
    try:
        engine.start()
        if args.record is not None:
            engine.recorder.start(args.record)
        server.start()
        sender.start()
        host, port = server.address
        print(f"playing; OSC on {host}:{port} (send /schema for the address table); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        with console:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if engine.pipeline.error is not None:
                    raise engine.pipeline.error
                console.update()
                stop.wait(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        sender.close()
        server.close()
        engine.stop()
        status = engine.status()
        print(f"stopped after {status['frame'] / 75:.1f} s generated; RTF {status['rtf']:.2f}, "
              f"step p50 {status['step_ms_p50']:.1f} ms p99 {status['step_ms_p99']:.1f} ms; "
              f"underruns {status['underruns']}", file=sys.stderr, flush=True)
    return 0
