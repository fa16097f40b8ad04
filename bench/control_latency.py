"""Control latency: OSC datagram received → first output sample generated under the change.

    python bench/control_latency.py [--preset tiny] [--compute auto|cpu|cuda|cuda:N]
                                    [--mode exact|fast] [--quantize int8] [--changes 40]
                                    [--buffer 0.2] [--blocksize 512] [--decode-chunk 8]

Runs the live engine in-process on the paced null sink (a sound card's timing without one),
sends ``/morph`` changes over UDP every 0.4 s, and times for each:

* ``applied``: datagram received → the frame boundary where it took effect;
* ``generated``: → the decoder emitted the first sample of that frame (frame f starts at
  output sample 320·f; it needs rows up to f + 7 — the delay pattern — and its decode chunk);
* ``played``: → the null sink consumed that sample (adds the output buffer).

Prints p50/p95 of each in ms, then one JSON line. Off the CPU it also reports the engine's
startup (step capture, decoder warm-up).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from engine import HOP_LENGTH  # noqa: E402
from engine.cli.compute_flags import (  # noqa: E402
    add_compute,
    add_mode_and_runner,
    add_quantize,
    resolve_engine,
)
from engine.live.engine import LiveConfig  # noqa: E402
from engine.live.step.compute import resolve_compute  # noqa: E402
from engine.model.codec import random_codec  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402
from engine.session.live_session import build_live_engine  # noqa: E402
from osc.server import OSCServer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    add_compute(p)
    add_mode_and_runner(p)
    add_quantize(p)
    p.set_defaults(quantize=None)  # int8 on the CPU (its fastest torch format), else auto
    p.add_argument("--changes", type=int, default=40)
    p.add_argument("--buffer", type=float, default=0.2)
    p.add_argument("--blocksize", type=int, default=512)
    p.add_argument("--decode-chunk", type=int, default=None,
                   help="frames per decode (default 8 on the CPU, 2 on a GPU)")
    args = p.parse_args()
    quantize = args.quantize or ("int8" if resolve_compute(args.compute).type == "cpu"
                                 else "auto")
    choice = resolve_engine(args.compute, quantize, args.mode, args.step_runner)
    print(choice.describe())
    decode_chunk = choice.decode_chunk(args.decode_chunk)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EnCodecGPT(gpt2_config(PRESETS[args.preset])).eval()
    rng = np.random.RandomState(0)
    slots = [rng.randn(model.prompt_dim).astype(np.float32) for _ in range(2)]
    config = LiveConfig(device="null", quantize=choice.weights.name, mode=choice.mode,
                        compute=str(choice.device), runner=choice.runner,
                        buffer_s=args.buffer, blocksize=args.blocksize,
                        decode_chunk=decode_chunk)
    engine = build_live_engine(model, random_codec(0), slots, config, log=lambda m: None)
    received: dict[float, float] = {}  # morph value -> receive time
    applied: dict[float, tuple[int, float]] = {}
    emitted: list[tuple[int, float]] = []  # (samples out so far, time)
    server = OSCServer(engine, port=0, log=lambda m: None)
    handle = server.handle

    def timed_handle(data, sender):
        t = time.perf_counter()
        handle(data, sender)
        received.setdefault(_value(data), t)

    server.handle = timed_handle
    engine.generator.on_control = lambda e: applied.setdefault(
        round(float(e.values[0]), 4), (e.frame, time.perf_counter()))
    total = [0]

    def on_audio(block, start):
        total[0] += len(block)
        emitted.append((total[0], time.perf_counter()))

    engine.pipeline.on_audio = on_audio
    consumed: list[tuple[int, float]] = []
    stop = threading.Event()

    def watch_sink():
        while not stop.is_set():
            consumed.append((engine.output.sink.consumed, time.perf_counter()))
            time.sleep(0.001)

    engine.start()
    server.start()
    threading.Thread(target=watch_sink, daemon=True).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    time.sleep(1.0)
    values = [round(0.05 + 0.9 * (i % 2) + 0.001 * i, 4) for i in range(args.changes)]
    for v in values:
        msg = OscMessageBuilder("/morph")
        msg.add_arg(v, "f")
        client.sendto(msg.build().dgram, server.address)
        time.sleep(0.4)
    time.sleep(1.0)
    stop.set()
    engine.stop()
    server.close()
    rows = {"applied": [], "generated": [], "played": []}
    for v in values:
        if v not in received or v not in applied:
            continue
        t0 = received[v]
        frame, t_applied = applied[v]
        first = frame * HOP_LENGTH + 1
        t_gen = next((t for n, t in emitted if n >= first), None)
        t_play = next((t for n, t in consumed if n >= first), None)
        rows["applied"].append(t_applied - t0)
        if t_gen is not None:
            rows["generated"].append(t_gen - t0)
        if t_play is not None:
            rows["played"].append(t_play - t0)
    out = {"preset": args.preset, "quantize": choice.weights.name,
           "compute": str(choice.device), "mode": choice.mode, "buffer_s": args.buffer,
           "blocksize": args.blocksize, "decode_chunk": decode_chunk,
           "changes": len(rows["generated"]),
           "startup_s": {k: round(v, 3) for k, v in engine.startup.items()}}
    if choice.device.type != "cpu":
        print("startup: " + ", ".join(f"{k} {v:.2f} s" for k, v in engine.startup.items()))
    for key, vals in rows.items():
        ms = np.array(vals) * 1e3
        out[f"{key}_ms_p50"] = round(float(np.percentile(ms, 50)), 1) if len(ms) else None
        out[f"{key}_ms_p95"] = round(float(np.percentile(ms, 95)), 1) if len(ms) else None
        print(f"{key:9s} p50 {out[f'{key}_ms_p50']} ms  p95 {out[f'{key}_ms_p95']} ms")
    print(f"underruns during the run: {engine.output.underruns}")
    out["underruns"] = int(engine.output.underruns)
    print(json.dumps(out))


def _value(data: bytes) -> float:
    from pythonosc.osc_message import OscMessage

    try:
        return round(float(OscMessage(data).params[0]), 4)
    except Exception:
        return float("nan")


if __name__ == "__main__":
    main()
