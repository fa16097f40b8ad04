"""RTF and underruns of a live run on the JACK2 dummy driver (a real audio server).

    python bench/live_jack.py [--seconds 300] [--preset tiny] [--quantize int8]
                              [--compute cpu|auto|cuda|cuda:N] [--pin-threads]

Starts ``jackd -d dummy -r 48000 -p 1024`` (no real-time scheduling), runs
``run_engine.py --hostapi JACK --device system`` for ``--seconds``, and prints the engine's
final report (generated seconds, RTF, step p50/p99, underruns) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--quantize", default=None, help="default int8 on the CPU, else auto")
    p.add_argument("--compute", default="cpu", help="auto|cpu|cuda|cuda:N (default cpu)")
    p.add_argument("--buffer", default="0.2")
    p.add_argument("--pin-threads", action="store_true",
                   help="the engine's --pin-threads (Linux: generator and decoder on own CPUs)")
    args = p.parse_args()
    args.quantize = args.quantize or ("int8" if args.compute == "cpu" else "auto")
    jackd = shutil.which("jackd")
    if jackd is None:
        sys.exit("jackd not found (apt-get install jackd2)")
    name = f"bench{os.getpid()}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": name,
           "PYTHONWARNINGS": "ignore"}
    server = subprocess.Popen([jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000",
                               "-p", "1024"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    try:
        run = subprocess.run(
            [sys.executable, str(REPO / "run_engine.py"), "--random-weights", "--preset",
             args.preset, "--quantize", args.quantize, "--compute", args.compute,
             "--hostapi", "JACK", "--device", "system",
             "--buffer", args.buffer, "--osc-port", "0", "--no-status",
             "--seconds", str(args.seconds)] + (["--pin-threads"] if args.pin_threads else []),
            env=env, capture_output=True, text=True)
    finally:
        server.terminate()
        server.wait(10)
    print(run.stderr.strip().splitlines()[-1] if run.stderr else "(no output)")
    m = re.search(r"after ([\d.]+) s generated; RTF ([\d.]+), step p50 ([\d.]+) ms p99 "
                  r"([\d.]+) ms; underruns (\d+)", run.stderr)
    if run.returncode != 0 or m is None:
        sys.exit(f"engine failed ({run.returncode}):\n{run.stderr[-2000:]}")
    print(json.dumps({"seconds": args.seconds, "preset": args.preset, "quantize": args.quantize,
                      "compute": args.compute, "pin_threads": args.pin_threads,
                      "generated_s": float(m[1]), "rtf": float(m[2]),
                      "step_ms_p50": float(m[3]), "step_ms_p99": float(m[4]),
                      "underruns": int(m[5])}))


if __name__ == "__main__":
    main()
