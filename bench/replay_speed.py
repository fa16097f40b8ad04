"""How fast ``replay`` re-renders a recorded session, and the CPU it needs per second of it.

    python bench/replay_speed.py [SESSION_DIR] [--seconds 30] [--threads 1]

Without SESSION_DIR it first records one: ``run_engine.py --random-weights --device null
--record bench --seconds S`` (the default tiny model and weights; on a slow or loaded
machine the live engine generates less than S seconds in S seconds — the recording holds
what it generated). Then it runs ``run_engine.py replay`` and prints the speed (session
seconds per wall second), the CPU seconds the replay used per session second (what decides
the speed on an idle machine: generator and decoder run on two threads) and the load
average, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def record(seconds: float, folder: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "run_engine.py"), "--random-weights",
                    "--device", "null", "--record", "bench", "--sessions-dir", str(folder),
                    "--seconds", str(seconds), "--no-status", "--osc-port", "0"],
                   check=True, capture_output=True, text=True)
    return next(folder.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("session", nargs="?", type=Path)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        session = args.session or record(args.seconds, Path(tmp) / "sessions")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "replay",
                               str(session), "--out", str(Path(tmp) / "replay.wav"),
                               "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = proc.stderr.strip().splitlines()[-1]
    seconds = float(re.search(r"frames \(([\d.]+) s\)", line).group(1))
    speed = float(re.search(r"x([\d.]+) real time", line).group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {"session_s": seconds, "replay_speed": speed, "process_wall_s": round(wall, 1),
              "cpu_s_per_session_s": round(cpu / seconds, 2), "threads": args.threads,
              "load_average": os.getloadavg()[0], "cores": os.cpu_count()}
    print(line)
    print(f"replay: x{speed:.2f} real time for {seconds:.1f} s; {cpu / seconds:.2f} CPU s per "
          f"session second; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
