"""Play along, measured: EnCodecMAE's time per update, then a listening engine on the paced sink.

    python bench/listen.py                       # embedding times, then 120 s listening
    python bench/listen.py --seconds 30 --quantize int8

1. The embedding time of a base-size EnCodecMAE (random weights: D = 768, 10 layers, 12 heads,
   feed-forward 4096, as the published ``base``) for 1–4 s of audio, one torch thread (what
   the listen worker gets), p50 of 10.
2. The live engine (``--preset`` random weights, the paced null sink) with ``--input
   file:...`` (a synthetic 8 s loop) and slot 1 listening (``--analysis`` seconds), morphed
   to it, for ``--seconds``: underruns, the update interval the engine settled on, updates
   made, and the CPU share of the listen worker and of the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.live.controls import ControlEvent  # noqa: E402
from engine.live.engine import LiveConfig  # noqa: E402
from engine.model.encodecmae import EncodecMAEFeatures, PromptEncoder  # noqa: E402
from engine.model.loading.random_model import random_model  # noqa: E402
from engine.session.live_session import build_live_engine  # noqa: E402

BASE = {"dim": 768, "layers": 10, "heads": 12, "ff_dim": 4096}  # encodecmae.gin, base


def base_encoder() -> PromptEncoder:
    torch.manual_seed(0)
    return PromptEncoder(EncodecMAEFeatures(**BASE), "random-base", "0" * 64, cache_dir=None)


def embed_times(encoder: PromptEncoder, repeats: int = 10) -> dict[float, float]:
    rng = np.random.RandomState(0)
    out = {}
    for seconds in (1.0, 2.0, 3.0, 4.0):
        audio = (0.1 * rng.randn(int(seconds * 24000))).astype(np.float32)
        encoder.mae.features(audio)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder.mae.features(audio)
            times.append(1e3 * (time.perf_counter() - t0))
        out[seconds] = float(np.median(times))
        print(f"EnCodecMAE base, {seconds:.0f} s of audio: {out[seconds]:.0f} ms (p50 of "
              f"{repeats}, 1 thread)", file=sys.stderr)
    return out


def _thread_cpu_s(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called ``name`` (Linux)."""
    ident = next((t.native_id for t in threading.enumerate() if t.name == name), None)
    if ident is None:
        return 0.0
    try:
        fields = Path(f"/proc/self/task/{ident}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listening_run(args, encoder: PromptEncoder) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="listen-bench-"))
    t = np.arange(8 * 24000) / 24000
    loop = (0.3 * np.sin(2 * np.pi * 196 * t * (1 + 0.2 * np.sin(t)))
            + 0.03 * np.random.RandomState(1).randn(t.size)).astype(np.float32)
    sf.write(folder / "loop.wav", loop, 24000, subtype="FLOAT")
    ident = {"random_weights": True, "preset": args.preset, "weights_seed": 0,
             "prompt_dim": BASE["dim"]}
    model, codec = random_model(ident)
    rng = np.random.RandomState(0)
    slots = [rng.randn(BASE["dim"]).astype(np.float32) for _ in range(2)]
    config = LiveConfig(device="null", quantize=args.quantize, buffer_s=args.buffer,
                        prompt_dirs=[folder], sessions_dir=folder / "sessions",
                        identity=ident, input=f"file:{folder / 'loop.wav'}",
                        listen_interval_s=args.interval)
    engine = build_live_engine(model, codec, slots, config, encoder_factory=lambda: encoder,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    engine.start()
    try:
        engine.listen(1, args.analysis)
        engine.submit([ControlEvent("/morph", (0.5,))])
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(args.seconds)
        listen_cpu = _thread_cpu_s("listen")
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        status = engine.status()
    finally:
        engine.stop()
    return {"preset": args.preset, "quantize": engine.generator.weight_format,
            "seconds": round(wall, 1), "buffer_s": args.buffer, "analysis_s": args.analysis,
            "underruns": status["underruns"], "rtf": round(status["rtf"], 2),
            "interval_start_s": args.interval,
            "interval_settled_s": engine.listener.interval,
            "updates": engine.listener.updates, "embed_ms_last": round(engine.listener.embed_ms),
            "listen_cpu_share": round(listen_cpu / wall, 3),
            "process_cpu_share": round(cpu / wall, 3), "cores": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--quantize", default="int8")
    p.add_argument("--buffer", type=float, default=0.2)
    p.add_argument("--analysis", type=float, default=3.0, help="seconds analysed per update")
    p.add_argument("--interval", type=float, default=1.0, help="starting update interval")
    args = p.parse_args()
    torch.set_num_threads(1)
    encoder = base_encoder()
    times = embed_times(encoder)
    run = listening_run(args, encoder)
    for key, value in run.items():
        print(f"{key:22s} {value}", file=sys.stderr)
    print(json.dumps({"embed_ms_p50": times, **run}))


if __name__ == "__main__":
    main()
