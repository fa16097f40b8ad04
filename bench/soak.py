"""Soak: the live engine for N minutes under a show's OSC load; is anything lost or growing?

    python bench/soak.py --minutes 60 [--preset tiny] [--quantize int8] [--device null]
                         [--hostapi API] [--rate 200] [--burst-seconds 5] [--out DIR]
    python bench/soak.py --minutes 1 --warmup 0.25          # the short version

The engine runs in this process (random weights of ``--preset``, the paced null sink unless
``--device`` names a sound card) with its OSC server; a load process (its own CPU use is
reported: it shares the cores) sends over UDP:

* a fader stream: ``--rate`` messages/s, ``/morph`` and ``/morph/xy`` alternating;
* a probe ``/temperature`` with a unique value every 0.1 s, timestamped when sent; the
  engine's hook timestamps the frame boundary where it applied (the probe latency);
* a burst: ``/morph`` as fast as the socket takes, ``--burst-seconds`` every minute (at 30 s),
  with the load process held to ``--load-cpu`` of one core (default 0.25: it sleeps three
  times as long as it sends). On this 2-core machine an uncapped sender takes a whole core,
  half of what the engine plays on, which no stage machine gives away to its controller;
  the report gives the burst rate it reached;
* ``/record/start`` at 25 s and ``/record/stop`` at 40 s of every minute (a 15 s take around
  the burst: every take is replayed at the end, so an hour of takes must replay in minutes);
* ``/prompt/load`` every 20 s, cycling a short ``.npy`` prompt, a corrupt file (text), and,
  with ``--encodecmae SRC``, a 10-minute WAV (its first 30 s embedded afresh at every load:
  the prompt cache is off, the worst case).

Every 10 s it samples RSS, open file descriptors, threads, underruns, step p99, RTF, and the
CPU that other processes on the machine took (busy time less this process's and the load
generator's; and the hypervisor's steal): an engine that slows down by itself and a machine
someone else is using look alike in RTF and apart in this column. At the end
it prints the figures and one JSON line: underruns, RSS slope after ``--warmup`` minutes,
probe latency p50/p99 (all, and during bursts), the message accounting (sent = applied +
coalesced + answered with ``/error`` + dropped by the kernel's socket buffer), and whether
every recorded session replays token-identically, underruns split between the sampling
intervals that overlap a burst and the others; ``DIR/soak.png`` plots RSS, underruns, probe
latency, RTF and the other processes' CPU over time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from engine.live.engine import LiveConfig  # noqa: E402
from engine.live.step.weight_formats import resolve as resolve_weight_format  # noqa: E402
from engine.model.encodecmae import load_encodecmae  # noqa: E402
from engine.model.loading.random_model import random_model  # noqa: E402
from engine.session.live_session import build_live_engine  # noqa: E402
from engine.session.replay import replays_identically  # noqa: E402
from osc.server import OSCServer  # noqa: E402

FADER = ("/morph", "/morph/xy")
DEFAULT_QUANTIZE = resolve_weight_format("auto")
SAMPLE_EVERY_S = 10.0
PROBE_EVERY_S = 0.1


def osc(address: str, *args) -> bytes:
    msg = OscMessageBuilder(address)
    for a in args:
        msg.add_arg(a)
    return msg.build().dgram


# -- the load process -------------------------------------------------------------------------


def run_load(port: int, seconds: float, rate: float, burst_s: float, files: list[str],
             cpu_cap: float = 0.5) -> None:
    """Send the show's messages to ``port`` for ``seconds``; print one JSON line of what was
    sent (counts, probe send times, burst windows, replies, own CPU)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    target = ("127.0.0.1", port)
    morph = [osc("/morph", i / 1000) for i in range(1001)]
    xy = [osc("/morph/xy", (i % 101) / 100, (i // 101 % 101) / 100) for i in range(10201)]
    sent = {"fader": 0, "burst": 0, "probe": 0, "record": 0, "load": 0, "kernel_refused": 0}
    probes: list[tuple[float, float]] = []
    bursts: list[tuple[float, float]] = []
    replies: dict[str, int] = {}
    print("ready", flush=True)  # the engine side samples from now on
    t0 = time.monotonic()
    next_fader = next_probe = t0
    done_events: set[tuple[str, int]] = set()

    def send(data: bytes, kind: str) -> None:
        try:
            sock.sendto(data, target)
            sent[kind] += 1
        except BlockingIOError:
            sent["kernel_refused"] += 1

    k = 0
    while (now := time.monotonic()) - t0 < seconds:
        t = now - t0
        minute, within = int(t // 60), t % 60
        if 30 <= within < 30 + burst_s:
            if ("burst", minute) not in done_events:
                done_events.add(("burst", minute))
                bursts.append((now, now + burst_s))
            t_chunk = time.monotonic()
            for _ in range(64):
                send(morph[k % 1001], "burst")
                k += 1
            time.sleep((time.monotonic() - t_chunk) * (1.0 / cpu_cap - 1.0))
        if now >= next_fader:
            send(morph[k % 1001] if k % 2 else xy[k % 10201], "fader")
            k += 1
            next_fader += 1.0 / rate
        if now >= next_probe:
            value = 0.5 + (sent["probe"] % 1000) / 2000
            probes.append((round(value, 6), time.monotonic()))
            send(osc("/temperature", value), "probe")
            next_probe += PROBE_EVERY_S
        for at, key, data in ((25, "start", osc("/record/start", f"soak{minute}")),
                              (40, "stop", osc("/record/stop"))):
            if within >= at and (key, minute) not in done_events:
                done_events.add((key, minute))
                send(data, "record")
        slot_turn = int(t // 20)
        if files and t >= 10 + 20 * slot_turn and ("load", slot_turn) not in done_events:
            done_events.add(("load", slot_turn))
            send(osc("/prompt/load", 2 + slot_turn % 2, files[slot_turn % len(files)]), "load")
        _drain(sock, replies)
        time.sleep(max(0.0, min(next_fader, next_probe) - time.monotonic()) if not (
            30 <= within < 30 + burst_s) else 0.0)
    time.sleep(1.0)
    _drain(sock, replies)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"sent": sent, "probes": probes, "bursts": bursts, "replies": replies,
                      "cpu_s": cpu.ru_utime + cpu.ru_stime, "wall_s": time.monotonic() - t0}))


def _drain(sock: socket.socket, replies: dict[str, int]) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, OSError):
            return
        address = data.split(b"\0", 1)[0].decode("ascii", "replace")
        replies[address] = replies.get(address, 0) + 1


# -- the engine side ----------------------------------------------------------------------------


def _proc_figures() -> dict:
    status = Path("/proc/self/status").read_text()
    field = {line.split(":")[0]: line.split(":")[1].split() for line in status.splitlines()}
    return {"rss_mb": int(field["VmRSS"][0]) / 1024, "threads": int(field["Threads"][0]),
            "fds": len(os.listdir("/proc/self/fd"))}


def _cpu_ticks(load_pid: int, reader_pid: int | None = None) -> dict:
    """Cumulative CPU ticks: the machine's busy and steal time, the engine's (this process
    and its OSC reader process) and the load generator's (to tell the engine's own slowness
    from a machine others are using)."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = cpu

    def own(pid: str) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the load generator has ended
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    return {"busy": user + nice + system + irq + softirq, "steal": steal,
            "engine": own("self") + (own(str(reader_pid)) if reader_pid else 0),
            "load": own(str(load_pid))}


def _others_percent(before: dict, after: dict, seconds: float) -> tuple[float, float]:
    """(other processes' CPU, hypervisor steal) over an interval, in % of one core."""
    hz = os.sysconf("SC_CLK_TCK") * max(seconds, 1e-9) / 100
    others = (after["busy"] - before["busy"]) - (after["engine"] - before["engine"]) \
        - (after["load"] - before["load"])
    return max(0.0, others / hz), (after["steal"] - before["steal"]) / hz


def _kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (receive buffer full)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port:
            return int(cols[-1])
    return 0


def _prompt_files(out: Path, dim: int, encodecmae: str | None) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "short.npy", np.random.RandomState(1).randn(dim).astype(np.float32))
    (out / "corrupt.npy").write_text("not a prompt\n")
    files = [out / "short.npy", out / "corrupt.npy"]
    if encodecmae:
        ten_min = 0.1 * np.random.RandomState(2).randn(600 * 24000).astype(np.float32)
        sf.write(out / "ten_minutes.wav", ten_min, 24000, subtype="PCM_16")
        files.append(out / "ten_minutes.wav")
    return [str(f) for f in files]


class Hook:
    """Counts applied fader events and timestamps applied probes (generator thread)."""

    def __init__(self, engine, capacity: int):
        self.forward = engine.generator.on_control
        self.applied = {a: 0 for a in FADER}
        # Preallocated [capacity, 2] (value, applied at): a list of tuples would grow the
        # process's RSS by ~4 MB an hour, which the soak would then blame on the engine.
        self._probes = np.zeros((capacity, 2))
        self._count = 0
        engine.generator.on_control = self

    @property
    def probes(self) -> np.ndarray:
        """``[n, 2]``: each applied probe's value and ``time.monotonic()`` when applied."""
        return self._probes[: self._count]

    def __call__(self, entry) -> None:
        if entry.address in self.applied:
            self.applied[entry.address] += 1
        elif entry.address == "/temperature" and self._count < len(self._probes):
            self._probes[self._count] = (round(float(entry.values[0]), 6), time.monotonic())
            self._count += 1
        self.forward(entry)


def _latencies(sent: list, applied: list, bursts: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Probe latency in ms for each applied probe (matched to its last send), and whether it
    was sent during a burst."""
    last: dict[float, list[float]] = {}
    for value, t in sent:
        last.setdefault(value, []).append(t)
    ms, in_burst, when = [], [], []
    for value, t in np.asarray(applied).reshape(-1, 2).tolist():
        times = [s for s in last.get(value, []) if s <= t]
        if not times:
            continue
        ms.append((t - times[-1]) * 1e3)
        in_burst.append(any(a <= times[-1] <= b + 0.5 for a, b in bursts))
        when.append(times[-1])
    return np.array(ms), np.array(in_burst, bool), when


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the RSS slope")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--quantize", default=DEFAULT_QUANTIZE,
                   help="the CPU fast mode's weights (default: the engine's, int4-128 "
                        "with onnxruntime, else int8)")
    p.add_argument("--device", default="null")
    p.add_argument("--hostapi", default=None)
    p.add_argument("--buffer", type=float, default=0.2)
    p.add_argument("--rate", type=float, default=200.0, help="fader messages per second")
    p.add_argument("--burst-seconds", type=float, default=5.0)
    p.add_argument("--load-cpu", type=float, default=0.25,
                   help="share of one core the load may use in a burst (1 = uncapped)")
    p.add_argument("--encodecmae", default=None, help="EnCodecMAE source: adds a 10-min WAV")
    p.add_argument("--out", type=Path, default=Path("soak-out"))
    p.add_argument("--load", nargs=5, help=argparse.SUPPRESS)  # port seconds rate burst cpu
    p.add_argument("--files", nargs="*", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        port, seconds, rate, burst, cpu = args.load
        run_load(int(port), float(seconds), float(rate), float(burst), args.files, float(cpu))
        return
    report = soak(args)
    print(json.dumps(report))


def soak(args) -> dict:
    torch.set_num_threads(1)
    identity = {"random_weights": True, "preset": args.preset, "weights_seed": 0}
    mae = None
    if args.encodecmae:  # the model's prompts must be the size EnCodecMAE makes
        mae = load_encodecmae(args.encodecmae)
        mae.cache_dir = None  # every load of the long file embeds it: the worst case
        identity["prompt_dim"] = mae.dim
    model, codec = random_model(identity)
    identity["prompt_dim"] = model.prompt_dim
    rng = np.random.RandomState(0)
    slots = [rng.randn(model.prompt_dim).astype(np.float32) for _ in range(4)]
    files = _prompt_files(args.out / "prompts", model.prompt_dim, args.encodecmae)
    encoder = None if mae is None else (lambda: mae)
    config = LiveConfig(device=args.device, hostapi=args.hostapi, quantize=args.quantize,
                        buffer_s=args.buffer, prompt_dirs=[args.out / "prompts"],
                        sessions_dir=args.out / "sessions", identity=identity,
                        slot_sources=[f"random {i}" for i in range(4)])
    engine = build_live_engine(model, codec, slots, config, encoder_factory=encoder,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    hook = Hook(engine, capacity=int(60 * args.minutes / PROBE_EVERY_S) + 1000)
    server = OSCServer(engine, port=0, log=lambda m: None)
    engine.start()
    server.start()
    seconds = 60.0 * args.minutes
    load = subprocess.Popen([sys.executable, __file__, "--load", str(server.address[1]),
                             str(seconds), str(args.rate), str(args.burst_seconds),
                             str(args.load_cpu), "--files", *files],
                            stdout=subprocess.PIPE, text=True)
    load.stdout.readline()  # "ready": the load's clock starts with the samples'
    samples = _sample_until(engine, load, seconds, server.reader_pid)
    sent = json.loads(load.communicate(timeout=60)[0])
    time.sleep(0.5)
    drops = _kernel_drops(server.address[1])
    errors, server_coalesced = server.errors, server.coalesced
    if engine.recorder is not None and engine.recorder.recording:
        engine.recorder.stop()
    server.close()
    engine.stop()
    return _report(args, engine, hook, samples, sent, drops, errors, server_coalesced)


def _sample_until(engine, load: subprocess.Popen, seconds: float,
                  reader_pid: int | None = None) -> list[dict]:
    t0, samples = time.monotonic(), []
    ticks, at = _cpu_ticks(load.pid, reader_pid), t0
    while True:
        status = engine.status()
        now, now_ticks = time.monotonic(), _cpu_ticks(load.pid, reader_pid)
        others, steal = _others_percent(ticks, now_ticks, now - at)
        ticks, at = now_ticks, now
        samples.append({"t": now - t0, "mono": now, **_proc_figures(),
                        "underruns": status["underruns"], "step_p99": status["step_ms_p99"],
                        "rtf": status["rtf"], "frame": status["frame"],
                        "others_pct": others, "steal_pct": steal})
        s = samples[-1]
        print(f"{s['t']:7.0f} s  RSS {s['rss_mb']:7.1f} MB  fds {s['fds']}  threads "
              f"{s['threads']}  underruns {s['underruns']}  RTF {s['rtf']:.2f}  step p99 "
              f"{s['step_p99']:.1f} ms  others {others:3.0f}%  steal {steal:3.0f}%",
              file=sys.stderr, flush=True)
        if s["t"] >= seconds or load.poll() is not None:
            return samples
        time.sleep(min(SAMPLE_EVERY_S, max(0.1, seconds - s["t"])))


def _report(args, engine, hook: Hook, samples, sent, drops: int, errors: int,
            server_coalesced: int) -> dict:
    t = np.array([s["t"] for s in samples]) / 60
    rss = np.array([s["rss_mb"] for s in samples])
    after = t >= args.warmup
    slope = float(np.polyfit(t[after], rss[after], 1)[0]) if after.sum() >= 2 else None
    ms, in_burst, when = _latencies(sent["probes"], hook.probes, sent["bursts"])
    fader_sent = sent["sent"]["fader"] + sent["sent"]["burst"]
    applied = sum(hook.applied.values())
    coalesced = int(getattr(engine.generator.queue, "coalesced", 0)) + server_coalesced
    sessions = sorted((args.out / "sessions").glob("*")) if (args.out / "sessions").exists() \
        else []
    identical = _replay_all(sessions)
    report = {
        "minutes": args.minutes, "preset": args.preset, "quantize": args.quantize,
        "device": args.device, "underruns": samples[-1]["underruns"],
        "rss_mb_start": round(float(rss[0]), 1), "rss_mb_end": round(float(rss[-1]), 1),
        "rss_slope_mb_per_min_after_warmup": None if slope is None else round(slope, 2),
        "rss_growth_mb_after_warmup": round(float(rss[after][-1] - rss[after][0]), 1)
        if after.sum() else None,
        "fds": [samples[0]["fds"], samples[-1]["fds"]],
        "threads": [samples[0]["threads"], samples[-1]["threads"]],
        "step_ms_p99_last": round(samples[-1]["step_p99"], 1),
        "rtf_last": round(samples[-1]["rtf"], 2),
        "probe_ms_p50": _pct(ms, 50), "probe_ms_p99": _pct(ms, 99),
        "probe_ms_p99_in_bursts": _pct(ms[in_burst], 99) if len(ms) else None,
        "probes": [len(sent["probes"]), len(ms)],
        "sent": sent["sent"], "fader_sent": fader_sent, "fader_applied": applied,
        "coalesced": coalesced, "errors_answered": errors, "kernel_drops": drops,
        "unaccounted": fader_sent + sent["sent"]["probe"] + sent["sent"]["record"]
        + sent["sent"]["load"] - applied - len(hook.probes) - coalesced - errors - drops
        - sent["replies"].get("/record/started", 0) - sent["replies"].get("/record/stopped", 0)
        - sent["replies"].get("/prompt/loaded", 0),
        "burst_msgs_per_s": round(sent["sent"]["burst"] / max(1e-9, sum(
            b - a for a, b in sent["bursts"]))),
        "replies": sent["replies"], "load_cpu_s": round(sent["cpu_s"], 1),
        "load_wall_s": round(sent["wall_s"], 1),
        "sessions": len(sessions), "sessions_identical": sum(identical),
        **_underrun_split(samples, sent["bursts"]),
        "others_cpu_pct_mean": round(float(np.mean([s["others_pct"] for s in samples])), 1),
        "others_cpu_pct_max": round(max(s["others_pct"] for s in samples), 1),
        "steal_pct_max": round(max(s["steal_pct"] for s in samples), 1),
    }
    _plot(args.out / "soak.png", samples, when, ms, sent["bursts"])
    for key, value in report.items():
        print(f"{key:36s} {value}", file=sys.stderr)
    return report


def _underrun_split(samples: list[dict], bursts: list) -> dict:
    """Underruns counted in the sampling intervals that overlap a burst (+1 s to drain) and
    in those that do not."""
    split = {"underruns_in_burst_intervals": 0, "underruns_elsewhere": 0}
    for prev, cur in zip(samples, samples[1:], strict=False):
        lost = cur["underruns"] - prev["underruns"]
        burst = any(a < cur["mono"] and prev["mono"] < b + 1.0 for a, b in bursts)
        split["underruns_in_burst_intervals" if burst else "underruns_elsewhere"] += lost
    return split


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def _replay_all(sessions: list[Path], workers: int = 2) -> list[bool]:
    """Whether each session replays token-identically (tokens only, no decoder), on
    ``workers`` processes: the engine has stopped, the cores are free."""
    if not sessions:
        return []
    spawn = multiprocessing.get_context("spawn")  # torch and threads: no fork
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        return list(pool.map(replays_identically, sessions))


def _plot(path: Path, samples: list[dict], when: list[float], ms: np.ndarray,
          bursts: list) -> None:
    import matplotlib  # only for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [s["rss_mb"] for s in samples])
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(t, [s["underruns"] for s in samples])
    axes[1].set_ylabel("underruns (total)")
    if len(ms):
        start = min(when)
        axes[2].plot([(w - start) / 60 for w in when], ms, ".", markersize=2)
        for a, b in bursts:
            axes[2].axvspan((a - start) / 60, (b - start) / 60, color="orange", alpha=0.2)
    axes[2].set_ylabel("probe latency (ms)")
    axes[3].plot(t, [s["rtf"] for s in samples], label="engine RTF")
    axes[3].plot(t, [s["others_pct"] / 100 for s in samples], label="other processes (cores)")
    axes[3].axhline(1.0, color="grey", linewidth=0.5)
    axes[3].legend(loc="lower left", fontsize=8)
    axes[3].set_xlabel("minutes (orange: bursts)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
