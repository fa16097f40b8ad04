"""Running things: the command line in a subprocess, the live engine in-process, real peers.

* :func:`run_cli` (``python run_engine.py ARGS`` to completion) and :class:`EngineProcess`
  (the live engine until :meth:`~EngineProcess.stop`) — the only two ways tests start the CLI;
* :func:`null_engine` — the one factory of an in-process live engine on the null device;
* liblo's ``oscsend``/``oscdump`` (:func:`oscsend`, :class:`OscDump`), :func:`need` for a
  binary that may be missing, :func:`free_udp_port`, :func:`wait_until`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli.main import main as cli_main
from engine.live.engine import LiveConfig, LiveEngine
from engine.model.loading.random_model import random_model
from engine.session.live_session import build_live_engine

REPO = Path(__file__).resolve().parents[1]

# -- the command line -----------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a CLI run gets: offline hub, warnings silenced, ``extra`` on top."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1", **extra}


def cli_command(*args) -> list[str]:
    return [sys.executable, str(REPO / "run_engine.py"), *map(str, args)]


def cli_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """Run the CLI in this process, for refusals that come before a model loads (no
    interpreter and torch start-up: ~7 s saved per call). Returns what :func:`run_cli`
    returns (``returncode``, ``stdout``, ``stderr``); torch's thread count is left as it was."""
    capsys.readouterr()
    threads = torch.get_num_threads()
    code = cli_main([str(a) for a in args])
    assert torch.get_num_threads() == threads, "a refusal changed torch's thread count"
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def run_cli(*args, ok: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python run_engine.py ARGS`` as a user runs it, to the end.

    Args:
        ok: assert exit status 0 (showing the end of stderr otherwise).
        env: extra environment variables (on top of :func:`cli_env`).
    """
    proc = subprocess.run(cli_command(*args), capture_output=True, text=True,
                          env=cli_env(**(env or {})), timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A test run started in the
    background of a non-interactive shell (``cmd &``, ``nohup``) ignores SIGINT, children
    inherit that, and Python then installs no Ctrl-C handler: :meth:`EngineProcess.stop`
    would test nothing and wait for its timeout."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class EngineProcess:
    """``python run_engine.py ARGS`` until :meth:`stop` (SIGINT, like Ctrl-C); its output
    goes to the file ``log``."""

    def __init__(self, *args: str, log: Path):
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cli_command(*args), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=cli_env(),
                                     preexec_fn=_default_sigint)

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited ({self.proc.returncode}):\n{self.log}")
            time.sleep(0.1)
        raise AssertionError(f"'{text}' not seen in {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# -- the live engine in-process -------------------------------------------------------------------

TINY_IDENTITY = {"random_weights": True, "weights_seed": 0, "prompt_dim": 128,
                 "size": {"n_layer": 2, "n_head": 2, "n_embd": 128, "n_positions": 256,
                          "vocab_size": 1}}
"""The tiny random model of :func:`null_engine`, as ``session.json`` records it (a replay
rebuilds the same weights from it)."""


def null_engine(tmp_path: Path, slots: int = 2, log: Callable[[str], None] = lambda m: None,
                **config) -> LiveEngine:
    """A live engine on the paced null sink, not started, with a recorder.

    Args:
        tmp_path: the prompt folder; sessions go to ``tmp_path / "sessions"``.
        slots: random prompt vectors ``[128]`` (seeded) put into the first slots.
        log: the engine's console.
        config: :class:`LiveConfig` fields overriding the defaults here (window 32,
            ``device="null"``).
    """
    model, codec = random_model(TINY_IDENTITY)
    rng = np.random.RandomState(0)
    vectors = [rng.randn(128).astype(np.float32) for _ in range(slots)]
    fields = {"window": 32, "device": "null", "prompt_dirs": [tmp_path],
              "sessions_dir": tmp_path / "sessions", "scenes_dir": tmp_path / "scenes",
              "identity": TINY_IDENTITY,
              "slot_sources": [f"random {i}" for i in range(slots)], **config}
    return build_live_engine(model, codec, vectors, LiveConfig(**fields), log=log)


# -- real peers, ports, waiting -------------------------------------------------------------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PACKAGES = {"oscsend": "liblo-tools", "oscdump": "liblo-tools", "puredata": "puredata-core",
            "jackd": "jackd2"}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"'{binary}' is not installed "
                    f"(apt-get install {PACKAGES.get(binary, binary)})")
    return path


def wait_until(predicate, timeout: float = 10.0, poll: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


class OscDump:
    """``oscdump PORT`` writing every received message to a file."""

    def __init__(self, port: int, out: Path):
        self.out = out
        self._file = open(out, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([need("oscdump"), "-L", str(port)], stdout=self._file,
                                     stderr=subprocess.STDOUT)
        time.sleep(0.3)

    def lines(self, address: str | None = None) -> list[list[str]]:
        """Received messages as token lists ``[address, types, arg...]`` (timestamp dropped)."""
        rows = []
        for line in self.out.read_text().splitlines():
            parts = line.split(None, 1)
            if len(parts) < 2 or not parts[1].startswith("/"):
                continue
            tokens = _split_args(parts[1])
            if address is None or tokens[0] == address:
                rows.append(tokens)
        return rows

    def raw(self, address: str) -> list[str]:
        """The text after ``address types`` of each message to ``address`` (one string arg:
        without its quotes)."""
        out = []
        for line in self.out.read_text().splitlines():
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == address:
                text = parts[3]
                out.append(text[1:-1] if text.startswith('"') and text.endswith('"') else text)
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._file.close()


def _split_args(text: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def oscsend(port: int, address: str, types: str = "", *args) -> None:
    subprocess.run([need("oscsend"), "localhost", str(port), address, types,
                    *map(str, args)] if types else [need("oscsend"), "localhost", str(port),
                                                    address], check=True, timeout=10)
