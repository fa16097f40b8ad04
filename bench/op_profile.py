"""Where the onnxruntime live step's time goes: kernel time per op type, and the rest.

    python bench/op_profile.py [--preset gpt2] [--formats int4-128,int8-128] [--steps 200]
                               [--context 175] [--rows 1|2]

For each onnxruntime weight format, a fresh step records ``--steps`` live steps with
onnxruntime's profiler: one row at ``--context`` cached positions (``--rows 2``: the prompt
row too, the step while the morph moves), then the head. Prints per op type the kernel
milliseconds a step and their share, the kernels' sum, the wall time of ``forward`` and the
difference (session overhead and the Python around the runs). One thread, as live.

Ends with one JSON line. The profiler itself adds a little to each node (a timestamp pair);
compare the wall time with ``bench/cpu_step.py``'s unprofiled p50.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.live.step.kv_step import RowGroup  # noqa: E402
from engine.live.step.ort_step import ORT_FORMATS, OrtKVStep  # noqa: E402
from engine.model.config import PRESETS  # noqa: E402
from engine.model.encodecgpt import EnCodecGPT, gpt2_config  # noqa: E402


def kernel_ms(files: dict[str, str], runs: int) -> dict[str, float]:
    """Kernel microseconds by op type over the last ``runs`` runs of each session that ran
    at least that often (the measured steps; earlier runs are the prefill and warm-up), in
    ms per run."""
    per_op: dict[str, float] = defaultdict(float)
    for path in files.values():
        events = json.loads(Path(path).read_text())
        starts = sorted(e["ts"] for e in events
                        if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(starts) < runs:
            continue  # this graph did not run the measured steps
        first = starts[-runs]
        for e in events:
            if (e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                    and e["ts"] >= first):
                per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(per_op)


def profile_format(model: EnCodecGPT, fmt: str, steps: int, context: int, rows: int,
                   warm: int = 20) -> dict:
    """Profile ``steps`` live steps of ``fmt``; returns per-op ms, kernel sum and wall p50."""
    d = model.gpt.config.n_embd
    with tempfile.TemporaryDirectory() as tmp:
        step = OrtKVStep(model, fmt, threads=1, profile_prefix=str(Path(tmp) / fmt))
        cache = step.new_cache(context + 2)
        step.forward([RowGroup(cache, 0, torch.randn(context, d) * 0.5)], [])
        prompt = torch.randn(1, d)
        wall = []
        for i in range(warm + steps):
            groups = [RowGroup(cache, 0, prompt + 0.01 * i)] if rows == 2 else []
            groups.append(RowGroup(cache, context, torch.randn(1, d)))
            start = time.perf_counter()
            step.forward(groups, [len(groups) - 1])
            if i >= warm:
                wall.append((time.perf_counter() - start) * 1e3)
        per_op = kernel_ms(step.end_profiling(), steps)
    kernels = sum(per_op.values())
    return {"ops_ms": per_op, "kernels_ms": kernels, "wall_ms_p50": float(np.median(wall)),
            "wall_ms_mean": float(np.mean(wall)),
            "outside_kernels_ms": float(np.mean(wall)) - kernels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    p.add_argument("--formats", default="int4-128,int8-128",
                   help=f"comma-separated, of {','.join(ORT_FORMATS)}")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--context", type=int, default=175, help="cached positions (W 200, H 50: "
                   "150..200, mean 175)")
    p.add_argument("--rows", type=int, choices=(1, 2), default=2,
                   help="2: the prompt row too (the morph moving, the bench's case)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EnCodecGPT(gpt2_config(PRESETS[args.preset])).eval()
    out = {"preset": args.preset, "context": args.context, "rows": args.rows, "formats": {}}
    for fmt in args.formats.split(","):
        r = out["formats"][fmt] = profile_format(model, fmt, args.steps, args.context,
                                                 args.rows)
        print(f"{args.preset} {fmt}, {args.rows} row(s) at {args.context} positions: forward "
              f"p50 {r['wall_ms_p50']:.2f} ms, mean {r['wall_ms_mean']:.2f} ms; kernels "
              f"{r['kernels_ms']:.2f} ms; outside them {r['outside_kernels_ms']:.2f} ms")
        for op, ms in sorted(r["ops_ms"].items(), key=lambda kv: -kv[1]):
            print(f"  {op:26s} {ms:6.3f} ms  {ms / r['kernels_ms']:5.1%}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
