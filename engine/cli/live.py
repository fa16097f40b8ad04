"""``python run_engine.py [options]`` with no command: play live (sound device + OSC)."""

from __future__ import annotations

import argparse
import functools
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from engine.cli.commands import COMMANDS
from engine.cli.compute_flags import (
    EngineChoice,
    add_compute,
    add_mode_and_runner,
    add_quantize,
    resolve_engine,
)
from engine.cli.console import StatusConsole
from engine.cli.default_prompts import write_default_prompts
from engine.cli.models import add_encodecmae
from engine.errors import UserError
from engine.live.audio.sound_device import list_devices, set_jack_client_name
from engine.live.control_input import DEFAULT_SLOTS
from engine.live.controls import MAX_SLOTS
from engine.live.engine import LiveConfig
from engine.live.generator import DEFAULT_WINDOW
from engine.live.listen.capture import check_input
from engine.live.musicgen.generator import DEFAULT_WINDOW as MUSICGEN_WINDOW
from engine.live.musicgen.generator import check_window
from engine.live.pipeline import pinned_cpus
from engine.live.rotary.prefix import PrefixReader, prefix_frames
from engine.live.step.compute import (
    out_of_memory_as_user_error,
    resolve_compute,
    resolve_weights,
)
from engine.model.config import PRESETS
from engine.model.encodecmae import DEFAULT_ENCODECMAE, default_cache_dir, load_encodecmae
from engine.model.loading.checkpoint import DEFAULT_CHECKPOINT
from engine.model.loading.family import load_family
from engine.model.loading.pairing import choose_encodecmae
from engine.model.loading.published import models_table
from engine.model.loading.random_model import random_model
from engine.model.musicgen.files import musicgen_table
from engine.model.musicgen.lm import MusicGenLM
from engine.model.prompt_files import PromptReader, load_prompt_npy
from engine.model.rotary_lm import RotaryLM
from engine.session.live_session import build_live_engine
from osc.feedback import FeedbackSender
from osc.midi import MidiMapper, open_midi_input, read_mapping
from osc.server import RECEIVE_BUFFER, OSCServer


def build_live_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_engine.py",
        description="Play EnCodecGPT live: generates without end to a sound device while OSC "
                    "messages (Max/MSP, TouchOSC, Pure Data) morph the prompt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Commands (run_engine.py COMMAND --help): " + ", ".join(COMMANDS) + ".")
    m = p.add_argument_group("model")
    m.add_argument("--checkpoint", "--model", dest="checkpoint", metavar="SRC", default=None,
                   help="the model: a published name (nsynth, librilight, audioset; see "
                        "--list-models), an EnCodecGPT .ckpt, hub path owner/repo/file.ckpt or "
                        "save_pretrained folder; default: nsynth. --model is the same option "
                        "(the family is recognised from SRC)")
    m.add_argument("--random-weights", action="store_true",
                   help="untrained model and codec: smoke tests and benchmarks ONLY")
    m.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    m.add_argument("--weights-seed", type=int, default=0)
    m.add_argument("--trust-checkpoint", action="store_true")
    add_encodecmae(m)
    m.add_argument("--list-models", action="store_true",
                   help="list the published models and what the local cache holds, and exit")
    m.add_argument("--threads", type=int, default=1, help="torch threads per op (default 1)")
    m.add_argument("--pin-threads", action="store_true",
                   help="Linux: the generator on one CPU, the decoder and the re-prefill "
                        "worker on another (2-core machines: a shorter step tail)")
    add_compute(m)
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", nargs="+", metavar="FILE", default=[],
                   help="prompt slots in order: audio files or .npy vectors (default: a "
                        "plucked string, a bell, filtered noise and a reed, synthesized)")
    g.add_argument("--prompt-text", nargs="+", metavar="TEXT", default=[],
                   help="MusicGen: text slots in order, e.g. \"warm analog pad\" \"broken "
                        "breakbeat\" (/prompt/text i TEXT changes one while playing)")
    g.add_argument("--guidance", type=float, default=3.0, metavar="G",
                   help="MusicGen: classifier-free guidance scale at start (1 = none; "
                        "/guidance changes it)")
    g.add_argument("--slots", type=int, default=DEFAULT_SLOTS, metavar="N",
                   help=f"prompt slots 0..N-1 (at most {MAX_SLOTS}; the control surfaces "
                        "address the first 4)")
    g.add_argument("--prompt-dir", action="append", metavar="DIR", default=[],
                   help="folder /prompt/load may read from (repeatable; default: the current "
                        "folder and the folders of --prompt files)")
    g.add_argument("--prompt-seconds", type=float, default=30.0, metavar="S",
                   help="embed at most the first S seconds of an audio prompt (--prompt and "
                        "/prompt/load; default 30; 0 = the whole file)")
    g.add_argument("--window", type=int, default=argparse.SUPPRESS,
                   help=f"token window in frames, < 300 (default: {DEFAULT_WINDOW}); a rotary "
                        "model's in tokens, start token included (default and at most its "
                        "max_seq_len)")
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
    a.add_argument("--jack-name", metavar="NAME", default=None,
                   help="the engine's JACK client name (with --hostapi JACK; default PortAudio)")
    a.add_argument("--blocksize", type=int, default=512, help="frames per audio callback")
    a.add_argument("--latency", default="low", help="PortAudio latency: low, high or seconds")
    a.add_argument("--buffer", type=float, default=0.2, metavar="SECONDS",
                   help="audio buffered ahead of the device (control latency vs. safety)")
    a.add_argument("--decode-chunk", type=int, default=None, metavar="FRAMES",
                   help="frames decoded per call (smaller: lower latency, more work; default "
                        "8 on the CPU, 2 on a GPU)")
    a.add_argument("--input", metavar="NAME|INDEX|file:PATH", default=None,
                   help="a live input for /prompt/listen: a capture device (index or name; "
                        "'default'), or file:PATH, a file looped in real time (rehearsal)")
    a.add_argument("--input-hostapi", metavar="API", default=None,
                   help="host API of the --input device (e.g. JACK: the engine gets input "
                        "ports)")
    a.add_argument("--listen-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often a listening slot is re-embedded (raised automatically "
                        "when embedding cannot keep up)")
    a.add_argument("--listen-silence-db", type=float, default=-50.0, metavar="DB",
                   help="input RMS below this leaves a listening slot unchanged")
    a.add_argument("--no-limiter", dest="limiter", action="store_false",
                   help="turn off the safety limiter (peaks held at -0.3 dBFS; non-finite "
                        "samples are replaced by silence either way)")
    o = p.add_argument_group("OSC")
    o.add_argument("--osc-host", default="127.0.0.1",
                   help="address to listen on (default loopback; a LAN address lets phones in)")
    o.add_argument("--osc-port", type=int, default=9000, help="UDP port OSC arrives on")
    o.add_argument("--allow", nargs="+", metavar="IP", default=None,
                   help="accept OSC only from these sender addresses ('any': every sender; "
                        "needed with a non-loopback --osc-host)")
    o.add_argument("--feedback", metavar="HOST:PORT", default=None,
                   help="also send /engine/status and replies here")
    o.add_argument("--midi", metavar="PORT", default=None,
                   help="MIDI input (a piece of its name) to play the engine from a controller")
    o.add_argument("--midi-map", metavar="FILE.json", type=Path, default=None,
                   help="MIDI mapping (CC -> address and range, note -> slot/scene/button); "
                        "/midi/learn writes new bindings into it")
    r = p.add_argument_group("run")
    r.add_argument("--seconds", type=float, default=None,
                   help="stop after this long (default: until Ctrl-C)")
    r.add_argument("--no-status", action="store_true", help="no live status display")
    r.add_argument("--record", metavar="NAME", default=None,
                   help="record the session from the start (see /record/start)")
    r.add_argument("--sessions-dir", metavar="DIR", type=Path, default=Path("sessions"),
                   help="where recorded sessions go (default ./sessions)")
    r.add_argument("--scenes-dir", metavar="DIR", type=Path, default=Path("scenes"),
                   help="where /scene/save writes and /scene/recall reads scenes "
                        "(default ./scenes)")
    r.add_argument("--control-log", metavar="FILE.jsonl", type=Path, default=None,
                   help="append every applied control (frame, sample, address, values)")
    r.add_argument("--tap", metavar="FILE.wav", type=Path, default=None,
                   help="write everything sent to the output, at the device rate (debugging)")
    return p


def cmd_live(argv: list[str]) -> int:
    args = build_live_parser().parse_args(argv)
    if args.jack_name:
        set_jack_client_name(args.jack_name)
    if args.list_devices:
        print(list_devices())
        return 0
    if args.list_models:
        print(models_table() + "\n\n" + musicgen_table())
        return 0
    _check_slots(args)  # refusals first: before a model loads, and before torch is touched
    feedback = _parse_target(args.feedback) if args.feedback else None
    _check_exposure(args)
    _check_input(args)
    if args.pin_threads:
        pinned_cpus()  # Linux and two CPUs, or a one-line refusal now
    choice = resolve_engine(args.compute, args.quantize, args.mode, args.step_runner)
    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    model, codec, encoder_factory = _load(args)
    args.window = getattr(args, "window", None)  # given, or the family's default below
    if isinstance(model, MusicGenLM):
        choice = _musicgen_choice(args, model)
    elif isinstance(model, RotaryLM):
        choice = _rotary_choice(args, model)
        cfg = model.cfg
        print(f"model: rotary (x-transformers, {cfg.codebooks} codebooks flattened, dim "
              f"{cfg.dim}, depth {cfg.depth}), window {args.window} tokens; unconditional: "
              "slots hold audio prefixes (/prompt/load i FILE, /prime i)", file=sys.stderr)
    elif not isinstance(model, MusicGenLM):
        args.window = args.window or DEFAULT_WINDOW
        if args.prompt_text:
            raise UserError("--prompt-text: text slots are MusicGen's (--model musicgen-small); "
                            "this model's slots hold audio prompts (--prompt FILE)")
    print(choice.describe(), file=sys.stderr, flush=True)
    slots = _initial_prompts(args, model, codec, encoder_factory)
    loaded = time.perf_counter() - start
    engine = _build_engine(args, choice, model, codec, slots, encoder_factory)
    if engine.pipeline.pin is not None:
        print("threads: generator on CPU {}, decoder and re-prefill worker on CPU {}".format(
            *engine.pipeline.pin), file=sys.stderr, flush=True)
    print(_startup_line(loaded, engine.startup, time.perf_counter() - start), file=sys.stderr,
          flush=True)
    return _run(args, engine, feedback)


def _check_slots(args) -> None:
    if not 1 <= args.slots <= MAX_SLOTS:
        raise UserError(f"--slots must be in 1..{MAX_SLOTS}, got {args.slots}")
    if len(args.prompt) > args.slots:
        raise UserError(f"{len(args.prompt)} --prompt files for --slots {args.slots}; "
                        "pass a larger --slots")
    if len(args.prompt_text) > args.slots:
        raise UserError(f"{len(args.prompt_text)} --prompt-text texts for --slots "
                        f"{args.slots}; pass a larger --slots")


def _check_input(args) -> None:
    """``--input`` names a capture device that is there, or a file that exists: refused before
    a model loads (seconds) rather than after."""
    if args.input is not None:
        check_input(args.input, args.input_hostapi)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_exposure(args) -> None:
    """A non-loopback ``--osc-host`` needs ``--allow IP…`` or an explicit ``--allow any``: on
    stage a warning scrolls by unseen, and anyone on the network could play the engine."""
    if args.osc_host in LOOPBACK:
        return
    if not args.allow:
        raise UserError(f"--osc-host {args.osc_host} lets anyone on that network control the "
                        "engine and make it read prompt files; name the senders with --allow "
                        "IP... (e.g. your phone's address), or pass --allow any")
    if "any" in args.allow:
        args.allow = None
        print(f"WARNING: OSC listens on {args.osc_host} for any sender (--allow any).",
              file=sys.stderr)


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
    try:  # now, not at the first reply: a typo must not pass silently on stage
        socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--feedback {text}: the host {host!r} does not resolve "
                        f"({getattr(e, 'strerror', None) or e})") from None
    return host, int(port)


def _load(args):
    @functools.cache  # one EnCodecMAE for the initial prompts and every /prompt/load
    def encoder_factory():
        return load_encodecmae(args.encodecmae or "base", trust=args.trust_checkpoint)

    if args.random_weights:
        print("WARNING: --random-weights: an UNTRAINED model and codec — the sound is noise. "
              "For smoke tests and benchmarks only.", file=sys.stderr)
        prompt_dim = _random_prompt_dim(args, encoder_factory)  # before the default below
        args.embed_random_prompts = args.encodecmae is not None  # else random vectors
        args.encodecmae = args.encodecmae or DEFAULT_ENCODECMAE
        args.context_s = None
        args.identity = {"random_weights": True, "preset": args.preset,
                         "weights_seed": args.weights_seed, "prompt_dim": prompt_dim}
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
    if loaded.facts.name == "rotary":
        args.context_s = None
        args.identity = {"model": loaded.source, "sha256": loaded.sha256, "family": "rotary",
                         "codec": loaded.codec.name}
        return loaded.model, loaded.codec, encoder_factory
    if loaded.facts.name == "musicgen":
        args.context_s = None
        args.identity = {"model": loaded.source, "sha256": loaded.sha256, "family": "musicgen",
                         "codec": loaded.codec.name}
        return loaded.model, loaded.codec, lambda: loaded.text
    ckpt = loaded.checkpoint
    args.encodecmae, warning = choose_encodecmae(
        ckpt.encodecmae, ckpt.pairing, args.encodecmae, args.force_encodecmae, str(source))
    if warning:
        print(warning, file=sys.stderr, flush=True)
    args.context_s = ckpt.context_s
    args.identity = {"checkpoint": ckpt.source, "sha256": ckpt.sha256,
                     "codec": ckpt.codec.name, "encodecmae": args.encodecmae}
    return loaded.model, loaded.codec, encoder_factory


OFFLINE_HELP = """the default model is not in the Hugging Face cache and the hub cannot be reached.
  ({reason})
  With no options the engine needs, from the hub:
    lpepino/encodecgpt   nsynth-base/nsynth-390ksteps-base.ckpt (and nsynth-base/config.json
                         if the repo has one)
    lpepino/encodecmae-base   model.pt, config.gin  (to embed the default and loaded prompts)
  Fetch them where there is network access (hf download REPO FILE) and either let them land
  in the cache, or pass --checkpoint FILE (and --encodecmae FOLDER, or --prompt *.npy)."""


def _random_prompt_dim(args, encoder_factory) -> int | None:
    """The prompt width of a random model: that of the first ``.npy`` prompt, else of the
    EnCodecMAE named by ``--encodecmae`` (so its embeddings fit), else the model's own."""
    for p in args.prompt:
        if p.lower().endswith(".npy"):
            return load_prompt_npy(Path(p)).shape[0]
    if args.encodecmae is not None:
        return int(encoder_factory().dim)
    return None


def _rotary_choice(args, model: RotaryLM) -> EngineChoice:
    """The rotary family runs fp32 on the CPU (a model of a few million weights), in the
    window mode asked for (``fast`` by default); its window is in tokens (start token
    included), ``max_seq_len`` by default and at most."""
    if args.compute not in ("auto", "cpu"):
        raise UserError(f"--compute {args.compute}: the rotary family runs on the CPU")
    if args.quantize not in (None, "auto", "none"):
        raise UserError(f"--quantize {args.quantize}: the rotary family runs fp32 weights")
    if args.step_runner is not None or args.hop is not None:
        raise UserError("--step-runner and --hop are EnCodecGPT's; the rotary window slides "
                        "token by token (--mode fast) or is recomputed (--mode exact)")
    if args.input is not None:
        raise UserError("--input: the rotary model is unconditional: it has no prompt vector "
                        "a live input could update")
    cap = model.cfg.max_seq_len
    args.window = args.window or cap
    if not 2 <= args.window <= cap:
        raise UserError(f"--window {args.window}: the rotary model was trained on {cap} "
                        f"positions; give 2..{cap} tokens (start token included)")
    cpu = torch.device("cpu")
    mode = args.mode or "fast"
    return EngineChoice(cpu, resolve_weights("none", cpu, mode), mode, None)


def _musicgen_choice(args, lm: MusicGenLM) -> EngineChoice:
    """MusicGen runs its exact step (the window recomputed, under guidance) in fp32, on the
    CPU or a GPU (``--compute``; the model moves there); its window is in 50 Hz frames,
    150 (3 s) by default, below 200 (4 s)."""
    if args.quantize not in (None, "auto", "none"):
        raise UserError(f"--quantize {args.quantize}: MusicGen runs fp32 weights")
    if args.step_runner is not None or args.hop is not None or args.mode not in (None, "exact"):
        raise UserError("--mode fast, --step-runner and --hop are EnCodecGPT's; MusicGen "
                        "recomputes its window every step (exact)")
    if args.input is not None or args.prompt:
        raise UserError("--input/--prompt: MusicGen's slots hold texts (--prompt-text TEXT ...)")
    if not args.prompt_text:
        raise UserError('MusicGen needs a text: --prompt-text "warm analog pad" ...')
    args.window = args.window or MUSICGEN_WINDOW
    try:
        check_window(args.window, lm.max_positions)
    except ValueError as e:
        raise UserError(f"--window: {e}") from None
    if not 0.0 <= args.guidance <= 10.0:
        raise UserError(f"--guidance must be in 0..10, got {args.guidance:g}")
    device = resolve_compute(args.compute)
    lm.model.to(device)
    args.slot_sources = [f"text: {t}" for t in args.prompt_text]
    print(f"model: MusicGen ({lm.num_q} codebooks of {lm.card}, 32 kHz), window "
          f"{args.window} frames ({args.window / 50:.1f} s), guidance {args.guidance:g}, "
          f"on {device}; text slots: " + "; ".join(args.prompt_text), file=sys.stderr)
    return EngineChoice(device, resolve_weights("none", device, "exact"), "exact", None)


def _initial_prompts(args, model, codec, encoder_factory) -> list:
    if isinstance(model, MusicGenLM):
        return [t.strip() for t in args.prompt_text]
    if isinstance(model, RotaryLM):
        return _initial_prefixes(args, model, codec)
    files = [Path(p) for p in args.prompt]
    count = min(args.slots, DEFAULT_SLOTS)  # every slot the XY pad uses
    if not files and args.random_weights and not args.embed_random_prompts:
        rng = np.random.RandomState(args.weights_seed)
        print(f"prompts: {count} random vectors (random weights: nothing to embed)",
              file=sys.stderr)
        args.slot_sources = ["random"] * count
        return [rng.randn(model.prompt_dim).astype(np.float32) for _ in range(count)]
    if not files:
        files = write_default_prompts(default_cache_dir().parent / "default_prompts")[:count]
        print("prompts: " + ", ".join(f.stem for f in files) + " (synthesized)",
              file=sys.stderr)
    args.slot_sources = [str(f.resolve()) for f in files]
    reader = PromptReader(encoder_factory, expected_dim=model.prompt_dim,
                          max_seconds=_prompt_seconds(args))
    return [reader.read(f) for f in files]


def _initial_prefixes(args, model: RotaryLM, codec) -> list[np.ndarray]:
    """The rotary family's slots: audio prefixes, codes ``[T, Q]`` of each ``--prompt``
    file's first seconds (the first primes the window); none: the start token alone."""
    if any(p.lower().endswith(".npy") for p in args.prompt):
        raise UserError("--prompt: the rotary model is unconditional; a slot holds an audio "
                        "prefix (a sound file), not a .npy vector")
    reader = PrefixReader(codec, model.cfg.codebooks,
                          prefix_frames(args.window, model.cfg.codebooks,
                                        _prompt_seconds(args)))
    args.slot_sources = [str(Path(p).resolve()) for p in args.prompt]
    prefixes = [reader.read(p) for p in args.prompt]
    print("prompts: " + (", ".join(f"{Path(p).name} ({c.shape[0]} frames)"
                                   for p, c in zip(args.prompt, prefixes, strict=True))
                         or "none (the start token alone: unconditional)"), file=sys.stderr)
    return prefixes


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise UserError(f"{flag} must be positive, got {value:g}")
    return value


def _prompt_seconds(args) -> float | None:
    if args.prompt_seconds < 0:
        raise UserError(f"--prompt-seconds must be >= 0, got {args.prompt_seconds}")
    return args.prompt_seconds or None


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
                        pin_threads=args.pin_threads,
                        decode_chunk=choice.decode_chunk(args.decode_chunk),
                        num_slots=args.slots, control_log=args.control_log,
                        prompt_seconds=_prompt_seconds(args),
                        tap=args.tap, sessions_dir=args.sessions_dir,
                        scenes_dir=args.scenes_dir,
                        identity=dict(args.identity,
                                      prompt_dim=getattr(model, "prompt_dim", None)),
                        slot_sources=list(args.slot_sources), context_s=args.context_s,
                        limiter=args.limiter, input=args.input,
                        input_hostapi=args.input_hostapi,
                        listen_interval_s=_positive(args.listen_interval, "--listen-interval"),
                        listen_silence_db=args.listen_silence_db, guidance=args.guidance)
    params = (model.model.decoder if isinstance(model, MusicGenLM) else model).parameters()
    size = f"a {sum(p.numel() for p in params) / 1e6:.0f}M-parameter model " \
           f"({choice.weights.label})"
    try:
        with out_of_memory_as_user_error(size, args.window):
            return build_live_engine(model, codec, slots, config,
                                     encoder_factory=encoder_factory)
    except ValueError as e:
        raise UserError(str(e)) from None


def _open_midi(args, server: OSCServer):
    """The MIDI input of ``--midi`` feeding the OSC dispatcher (None without ``--midi``)."""
    if args.midi is None:
        if args.midi_map is not None:
            raise UserError("--midi-map needs --midi PORT")
        return None
    ccs, notes = read_mapping(args.midi_map) if args.midi_map and args.midi_map.is_file() \
        else ([], [])
    mapper = MidiMapper(server.dispatcher.handle, ccs, notes, save_to=args.midi_map,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    server.dispatcher.midi = mapper
    port = open_midi_input(args.midi, mapper)
    print(f"midi: listening to {port.name}", file=sys.stderr, flush=True)
    return port


def _run(args, engine, feedback) -> int:
    server = OSCServer(engine, args.osc_host, args.osc_port, allow=args.allow,
                       feedback=feedback, log=lambda m: print(m, file=sys.stderr, flush=True))
    sender = FeedbackSender(server, engine)
    midi_port = _open_midi(args, server)
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
        print(f"osc: receive buffer {server.rcvbuf // 1024} KiB"
              + ("" if server.rcvbuf >= RECEIVE_BUFFER else
                 f" (asked {RECEIVE_BUFFER // 1024} KiB; the kernel's limit is "
                 "net.core.rmem_max: raise it with sysctl for bigger OSC bursts)"),
              file=sys.stderr, flush=True)
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
        if midi_port is not None:
            midi_port.close()
        sender.close()
        server.close()
        engine.stop()
        status = engine.status()
        print(f"stopped after {status['frame'] / 75:.1f} s generated; RTF {status['rtf']:.2f}, "
              f"step p50 {status['step_ms_p50']:.1f} ms p99 {status['step_ms_p99']:.1f} ms; "
              f"underruns {status['underruns']}", file=sys.stderr, flush=True)
    return 0
