"""The rotary family live: the pipeline on the paced null sink, with a slot change mid-run.

Random weights at the NSynth-guitar recipe's size (dim 256, depth 6, heads 4, 2 codebooks,
W = 250) and a random 24 kHz codec; plays ``--seconds`` of audio in real time through
:class:`engine.live.pipeline.Pipeline` (generator thread + decoder thread + a null sink that
consumes 512-sample blocks like a sound card, 0.5 s buffer), re-primes the window from an
audio prefix (random codes, 1 s) half way, and reports underruns, the generator's step
time (one frame = 2 tokens) and the largest sample step at the re-prime seam compared with
the largest step elsewhere.

    python bench/rotary_live.py [--seconds 60] [--mode fast|exact] [--threads 1]

Prints one JSON line. Timings depend on the machine's load.
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
from engine.live.audio.sinks import NullSink  # noqa: E402
from engine.live.controls import ControlEvent  # noqa: E402
from engine.live.decoder import StreamingDecoder  # noqa: E402
from engine.live.pipeline import Pipeline  # noqa: E402
from engine.live.rotary.generator import RotaryGenerator  # noqa: E402
from engine.model.codec import random_codec  # noqa: E402
from engine.model.rotary_lm import RotaryLM, RotaryLMConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--mode", choices=("fast", "exact"), default="fast")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.manual_seed(0)
    model = RotaryLM(RotaryLMConfig()).eval()
    codec = random_codec(0)
    gen = RotaryGenerator(model, mode=args.mode, seed=0)
    sink = NullSink(buffer_s=0.5, block=512, prefill_s=0.25)
    audio: list[np.ndarray] = []
    pipe = Pipeline(gen, StreamingDecoder(codec.model), sink, decode_chunk=4,
                    threads=args.threads, on_audio=lambda a, _: audio.append(a.copy()))
    frames = int(args.seconds * 75)
    pipe.start(frames)
    seam_frame = None
    while pipe._gen_thread.is_alive():
        if seam_frame is None and gen.t >= frames // 2:
            rows = torch.randint(0, 1024, (75, 2)).numpy()  # codes [T, Q]
            gen.submit([ControlEvent("/prime/rows", (rows,))])  # at the next frame boundary
            seam_frame = gen.t + 1
        time.sleep(0.05)
    pipe.join()
    time.sleep(0.6)  # let the sink play what is buffered
    sink.close()
    out = np.concatenate(audio)
    steps = np.abs(np.diff(out))
    seam = seam_frame * 320
    near = steps[max(0, seam - 640): seam + 640].max()
    result = {"mode": args.mode, "seconds": args.seconds, "underruns": sink.underruns,
              "frame_step_p50_ms": round(pipe.stats.percentile(50), 2),
              "frame_step_p99_ms": round(pipe.stats.percentile(99), 2),
              "seam_max_sample_step": round(float(near), 4),
              "elsewhere_max_sample_step": round(float(steps.max()), 4),
              "elsewhere_p999_sample_step": round(float(np.percentile(steps, 99.9)), 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
