"""The OSC server: the UDP socket, the sender allow-list, and sending replies.

One receive thread (``osc``) reads datagrams, drops those from senders outside ``--allow``
and hands the rest to :class:`osc.dispatcher.OSCDispatcher`, which turns them into engine
controls and commands (a bundle whole or not at all; anything wrong answered with
``/error s``). Replies go to the sender and to the ``--feedback`` target; the engine's own
errors and recording notices are sent the same way. Status feedback lives in
:mod:`osc.feedback`.

Reading: on POSIX a reader *process* (:mod:`osc.reader_process`, niceness +5) reads the
socket in batches and coalesces a flood before parsing (:mod:`osc.batch`), so a flood costs
its GIL, not the engine's; the ``osc`` thread receives the survivors over a stream socket.
Where a process cannot share the socket (Windows), or with ``reader="thread"``, the ``osc``
thread (niceness +5) reads and coalesces itself.

Threading: the ``osc`` thread handles the datagrams in turn: it validates, then calls the
engine's thread-safe commands (``submit``, ``play``, ``load_prompt``, the recorder's
``start`` / ``stop``, ...); it never touches the model or a file. Replies may also be sent
from other threads (an engine notice on the generator, recorder or
prompt-loader thread; the feedback thread): ``sendto`` on one UDP socket needs no lock.
:attr:`OSCServer.last_sender` is written by the ``osc`` thread and read by those.
:meth:`~OSCServer.start` / :meth:`~OSCServer.close` on the owner's thread.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pythonosc.osc_message_builder import OscMessageBuilder

from engine.errors import UserError
from engine.live.controls import CONTINUOUS
from osc.batch import coalesce, read_batch
from osc.dispatcher import OSCDispatcher, Target
from osc.reader_process import read_frame

CONTINUOUS_KEYS = frozenset(address.encode("ascii") for address in CONTINUOUS)
"""The continuous controls' addresses as :mod:`osc.batch` matches them."""
READERS = ("process", "thread")
DEFAULT_READER = "process" if os.name == "posix" else "thread"
_ROOT = Path(__file__).resolve().parents[1]  # the reader process imports osc from here


def build_message(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool) or isinstance(a, int):
            builder.add_arg(int(a), "i")
        elif isinstance(a, float):
            builder.add_arg(a, "f")
        else:
            builder.add_arg(str(a), "s")
    return builder.build().dgram


RECEIVE_BUFFER = 4 << 20  # bytes asked for: ~0.5 s of a 175 msg/s fader storm, many times over


def _grow_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER) -> int:
    """Ask the kernel for a ``size``-byte receive buffer, so a burst of OSC (a fader storm,
    a scene recall) waits in the socket instead of being dropped while the ``osc`` thread
    works; returns what was granted. Linux caps the request at ``net.core.rmem_max`` (and
    reports twice the capped value, its bookkeeping included)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass  # the default buffer still works
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


OSC_NICE = 5  # the osc thread's niceness: a flood slows the controls, not the audio


def _below_generation() -> None:
    """Run the calling (``osc``) thread below the generator and decoder: on Linux a
    thread's niceness is its own. Elsewhere (or not permitted) it stays as it is."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), OSC_NICE)
    except (AttributeError, OSError):
        pass


class OSCServer:
    """Serve ``engine`` (a :class:`~engine.live.engine.LiveEngine`) on ``host:port``.

    Args:
        allow: sender IPs accepted (None = any); others are dropped and logged once.
        feedback: an extra target for replies and status (``--feedback HOST:PORT``).
        reader: ``process`` (POSIX default: see the module docstring) or ``thread``.
    """

    def __init__(self, engine, host: str = "127.0.0.1", port: int = 9000,
                 allow: list[str] | None = None, feedback: Target | None = None,
                 log: Callable[[str], None] = print, reader: str = DEFAULT_READER):
        if reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
        self.engine, self.log, self.reader = engine, log, reader
        self.allow = set(allow) if allow else None
        self.feedback = feedback
        self.last_sender: Target | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rcvbuf = _grow_receive_buffer(self.sock)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise UserError(f"cannot listen for OSC on {host}:{port} ({e.strerror or e}); "
                            "is another engine running? Use --osc-port") from None
        self.address = self.sock.getsockname()
        self.sock.setblocking(False)  # read_batch waits with select
        self.received = 0
        self.coalesced = 0  # datagrams skipped before parsing (osc.batch)
        self.dispatcher = OSCDispatcher(engine, reply=self.reply_all, log=log)
        self._denied: set[str] = set()
        self._stop = threading.Event()
        self._process: subprocess.Popen | None = None
        self._stream: socket.socket | None = None  # the reader process's frames arrive here
        serve = self._serve_frames if reader == "process" else self._serve
        self._thread = threading.Thread(target=serve, name="osc", daemon=True)
        engine.error_listeners.append(lambda msg: self.reply_all("/error", [msg]))
        engine.recorder_listeners.append(self._recording_notice)

    @property
    def reader_pid(self) -> int | None:
        """The OSC reader process's pid while it runs (None: the ``osc`` thread reads)."""
        return self._process.pid if self._process is not None else None

    @property
    def errors(self) -> int:
        """Datagrams answered with ``/error`` so far."""
        return self.dispatcher.errors

    def start(self) -> None:
        if self.reader == "process":
            self._start_process()
        self._thread.start()

    def _start_process(self) -> None:
        """Start the reader process on a shared copy of the UDP socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        code = (f"import sys; sys.path.insert(0, {str(_ROOT)!r}); "
                "from osc.reader_process import main; main()")
        fds = (self.sock.fileno(), theirs.fileno())
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, fds), str(OSC_NICE),
             *sorted(CONTINUOUS)], pass_fds=fds, stdin=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        self._stream = ours

    def close(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._stream.shutdown(socket.SHUT_RDWR)  # the osc thread's read ends
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if self._stream is not None:
            self._stream.close()
        self.sock.close()

    # -- sending ---------------------------------------------------------------------------
    def targets(self, sender: Target | None = None) -> list[Target]:
        out = [t for t in (sender or self.last_sender, self.feedback) if t is not None]
        return list(dict.fromkeys(out))

    def send(self, target: Target, address: str, args: list) -> None:
        try:
            self.sock.sendto(build_message(address, args), target)
        except OSError:
            pass  # a peer that went away must not disturb the engine

    def reply_all(self, address: str, args: list, sender: Target | None = None) -> None:
        for t in self.targets(sender):
            self.send(t, address, args)

    # -- receiving -------------------------------------------------------------------------
    def _serve(self) -> None:
        _below_generation()
        while not self._stop.is_set():
            try:
                batch = read_batch(self.sock)
            except (OSError, ValueError):  # ValueError: select on a socket closed under it
                if self._stop.is_set():
                    return
                continue
            batch, skipped = coalesce(batch, CONTINUOUS_KEYS)
            self._handle_batch(batch, skipped)

    def _serve_frames(self) -> None:
        """The ``osc`` thread with a reader process: its frames, in order, until it ends."""
        while not self._stop.is_set():
            try:
                got = read_frame(self._stream)
            except (OSError, ValueError, EOFError, TypeError):
                got = None
            if got is None:
                if not self._stop.is_set():
                    self.log("osc: the reader process ended; OSC is not received any more")
                return
            self._handle_batch(got[1], got[0])

    def _handle_batch(self, batch: list, skipped: int) -> None:
        self.coalesced += skipped
        for data, sender in batch:
            try:
                self.handle(data, sender)
            except Exception as e:  # last line of defence: never let the server die
                self.dispatcher.error(sender, f"internal error on this datagram: {e!r}")

    def handle(self, data: bytes, sender: Target) -> None:
        """Drop ``data`` unless ``sender`` is allowed, else hand it to the dispatcher (also
        called directly by tests and benchmarks)."""
        if self.allow is not None and sender[0] not in self.allow:
            if sender[0] not in self._denied:
                self._denied.add(sender[0])
                self.log(f"osc: ignoring {sender[0]} (not in --allow)")
            return
        self.received += 1
        self.last_sender = sender
        self.dispatcher.handle(data, sender)

    def _recording_notice(self, kind: str, text: str) -> None:
        if kind in ("started", "stopped"):
            self.reply_all(f"/record/{kind}", [text])
