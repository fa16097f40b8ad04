"""Live priming on the paced null sink: underruns around each ``/prime/file`` and the seam.

    python bench/prime_seam.py [--preset tiny|gpt2] [--seconds 20] [--every 4] [--window 200]
                               [--mode fast|exact] [--quantize none|int8|int4]
                               [--checkpoint CKPT] [--context 3]

A live engine (random weights of the preset, or ``--checkpoint``) plays to the null sink,
paced like a sound card (0.2 s buffer, blocks of 512). After a warm-up, every ``--every``
seconds it primes from a synthesized 3 s recording (``/prime/file``: read, encode with the
codec and delay on the loader thread; applied at a frame boundary; the decoder crossfades).
Printed: underruns before the first prime, in the 1 s after each prime and in all; the time
from request to the frame it took effect; and for each seam the largest sample step within
it against the largest step of the rest of the output. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import HOP_LENGTH, SAMPLE_RATE  # noqa: E402
from engine.live.audio.seam import CROSSFADE_FRAMES  # noqa: E402
from engine.live.engine import EngineListener, LiveConfig  # noqa: E402
from engine.model.loading.checkpoint import load_checkpoint  # noqa: E402
from engine.model.loading.random_model import random_model  # noqa: E402
from engine.session.live_session import build_live_engine  # noqa: E402


class _Tap(EngineListener):
    def __init__(self):
        self.blocks: list[np.ndarray] = []
        self.primes: list[int] = []

    def on_control(self, entry):
        if entry.address == "/prime/rows":
            self.primes.append(entry.frame)

    def on_audio(self, block, start24, rate):
        self.blocks.append(block.copy())


def _recording(folder: Path) -> Path:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    wav = 0.3 * np.sin(2 * np.pi * 196 * t) + 0.1 * np.sin(2 * np.pi * 587 * t)
    path = folder / "take.wav"
    sf.write(path, wav.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--checkpoint")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--every", type=float, default=4.0)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--mode", default="fast")
    p.add_argument("--quantize", default="none")
    p.add_argument("--context", type=float, default=3.0, help="priming context in seconds")
    args = p.parse_args()
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint)
        model, codec = loaded.model, loaded.codec
    else:
        model, codec = random_model({"preset": args.preset, "weights_seed": 0,
                                     "prompt_dim": 768})
    folder = Path(tempfile.mkdtemp())
    take = _recording(folder)
    rng = np.random.RandomState(0)
    slots = [rng.randn(model.prompt_dim).astype(np.float32) for _ in range(2)]
    config = LiveConfig(window=args.window, mode=args.mode, quantize=args.quantize,
                        device="null", prompt_dirs=[folder], sessions_dir=folder / "s",
                        context_s=args.context, slot_sources=[str(take), "random"])
    engine = build_live_engine(model, codec, slots, config, log=lambda m: None)
    tap = _Tap()
    engine.add_listener(tap)
    engine.start()
    asked: list[float] = []
    applied_at: list[float] = []
    under: list[tuple[int, int]] = []
    try:
        time.sleep(2.0)
        before = engine.status()["underruns"]
        stop = time.monotonic() + args.seconds
        while time.monotonic() < stop:
            u0 = engine.status()["underruns"]
            asked.append(time.perf_counter())
            n = len(tap.primes)
            engine.prime_file(str(take), lambda *_: None, lambda m: print("error:", m))
            while len(tap.primes) == n and time.monotonic() < stop + 10:
                time.sleep(0.002)
            applied_at.append(time.perf_counter())
            time.sleep(1.0)
            under.append((u0, engine.status()["underruns"]))
            time.sleep(max(0.0, args.every - 1.0))
        status = engine.status()
    finally:
        engine.stop()
    out = np.concatenate(tap.blocks)
    steps = np.abs(np.diff(out))
    seams, mask = [], np.ones(steps.size, bool)
    for f in tap.primes:
        s = (f - model.num_q + 1) * HOP_LENGTH
        region = slice(max(0, s - 2 * HOP_LENGTH), s + (CROSSFADE_FRAMES + 2) * HOP_LENGTH)
        seams.append(float(steps[region].max()))
        mask[region] = False
    own = float(steps[mask].max())
    latency = [1e3 * (b - a) for a, b in zip(asked, applied_at, strict=True)]
    result = {"bench": "prime_seam", "preset": args.checkpoint or args.preset,
              "mode": args.mode, "quantize": args.quantize, "window": args.window,
              "primes": len(tap.primes), "rtf": round(status["rtf"], 3),
              "underruns_before_first_prime": before,
              "underruns_in_1s_after_each_prime": [b - a for a, b in under],
              "underruns_total": status["underruns"],
              "prime_request_to_frame_ms": [round(x, 1) for x in latency],
              "seam_max_step": [round(x, 5) for x in seams], "signal_max_step": round(own, 5)}
    print(f"primes {len(tap.primes)}, RTF {status['rtf']:.2f}, underruns before "
          f"{before}, after each prime {result['underruns_in_1s_after_each_prime']}, total "
          f"{status['underruns']}; request→frame ms {result['prime_request_to_frame_ms']}; "
          f"seam max step {result['seam_max_step']} vs the signal's own {own:.5f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
