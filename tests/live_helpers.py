"""Helpers for tests that run the live engine and real peers (oscsend, oscdump, Pd, JACK)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


class EngineProcess:
    """``python run_engine.py ARGS`` until :meth:`stop` (SIGINT, like Ctrl-C)."""

    def __init__(self, *args: str, log: Path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
               "PYTHONUNBUFFERED": "1"}
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(REPO / "run_engine.py"), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)

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
