"""The OSC server: the UDP socket, the sender allow-list, and sending replies.

One receive thread (``osc``) reads datagrams, drops those from senders outside ``--allow``
and hands the rest to :class:`osc.dispatcher.OSCDispatcher`, which turns them into engine
controls and commands (a bundle whole or not at all; anything wrong answered with
``/error s``). Replies go to the sender and to the ``--feedback`` target; the engine's own
errors and recording notices are sent the same way. Status feedback lives in
:mod:`osc.feedback`.

Threading: the ``osc`` thread (niceness +5: a flood slows controls, not audio) reads the
socket in batches, coalesces a flood before parsing (:mod:`osc.batch`) and handles the rest
in turn: it validates, then calls the engine's thread-safe commands (``submit``, ``play``,
``load_prompt``, the recorder's ``start`` / ``stop``, ...); it never touches the model or a
file. Replies may
also be sent from other threads (an engine notice on the generator, recorder or
prompt-loader thread; the feedback thread): ``sendto`` on one UDP socket needs no lock.
:attr:`OSCServer.last_sender` is written by the ``osc`` thread and read by those.
:meth:`~OSCServer.start` / :meth:`~OSCServer.close` on the owner's thread.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from pythonosc.osc_message_builder import OscMessageBuilder

from engine.errors import UserError
from osc.batch import coalesce, read_batch
from osc.dispatcher import OSCDispatcher, Target


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
    """

    def __init__(self, engine, host: str = "127.0.0.1", port: int = 9000,
                 allow: list[str] | None = None, feedback: Target | None = None,
                 log: Callable[[str], None] = print):
        self.engine, self.log = engine, log
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
        self._thread = threading.Thread(target=self._serve, name="osc", daemon=True)
        engine.error_listeners.append(lambda msg: self.reply_all("/error", [msg]))
        engine.recorder_listeners.append(self._recording_notice)

    @property
    def errors(self) -> int:
        """Datagrams answered with ``/error`` so far."""
        return self.dispatcher.errors

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
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
            batch, skipped = coalesce(batch)
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
