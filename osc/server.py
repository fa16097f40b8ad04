"""The OSC control server: UDP datagrams in, engine controls and commands out, replies back.

One receive thread parses each datagram with python-osc. All control messages of one
datagram (a bundle, nested bundles flattened) are validated together against the address
table and submitted as one event list, so they take effect at the same frame. Anything
wrong — unknown address, wrong types or counts, NaN/inf, out of range, a malformed
datagram, a refused prompt file — is answered with ``/error s`` and changes nothing.
Replies go to the sender and to the ``--feedback`` target. Status feedback lives in
:mod:`osc.feedback`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from engine.errors import UserError
from engine.live.controls import ControlError, ControlEvent, check_args
from osc.addresses import TABLE, schema_json
from osc.feedback import info_message, status_messages

Target = tuple[str, int]


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
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise UserError(f"cannot listen for OSC on {host}:{port} ({e.strerror or e}); "
                            "is another engine running? Use --osc-port") from None
        self.address = self.sock.getsockname()
        self.sock.settimeout(0.2)
        self.received = 0
        self.errors = 0
        self._denied: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="osc", daemon=True)
        engine.error_listeners.append(lambda msg: self.reply_all("/error", [msg]))
        engine.recorder_listeners.append(self._recording_notice)

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
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                self.handle(data, sender)
            except Exception as e:  # last line of defence: never let the server die
                self.errors += 1
                self.log(f"osc: internal error on a datagram from {sender[0]}: {e!r}")

    def handle(self, data: bytes, sender: Target) -> None:
        """Parse and act on one datagram (also called directly by tests and the fuzzer)."""
        if self.allow is not None and sender[0] not in self.allow:
            if sender[0] not in self._denied:
                self._denied.add(sender[0])
                self.log(f"osc: ignoring {sender[0]} (not in --allow)")
            return
        self.received += 1
        self.last_sender = sender
        try:
            messages = [m.message for m in OscPacket(data).messages]
        except Exception as e:  # ParseError, and python-osc's own struct/unicode errors
            self._error(sender, f"malformed OSC datagram ({type(e).__name__})")
            return
        events = []
        for msg in messages:
            spec = TABLE.get(msg.address)
            if spec is None:
                self._error(sender, f"unknown address {msg.address}; send /schema for the list")
                return
            try:
                args = list(check_args(spec, msg.params))
            except ControlError as e:
                self._error(sender, str(e))
                return
            if spec.kind == "control":
                events.append(ControlEvent(spec.address, tuple(args)))
            else:
                self._command(spec.address, args, sender)
        if events:
            try:
                self.engine.submit(events)
            except ControlError as e:
                self._error(sender, str(e))

    def _command(self, address: str, args: list, sender: Target) -> None:
        eng = self.engine
        if address == "/play":
            eng.play()
        elif address == "/pause":
            eng.pause()
        elif address == "/panic":
            eng.panic()
        elif address == "/status":
            for addr, vals in [*status_messages(eng.status()), info_message(eng.info())]:
                self.reply_all(addr, vals, sender)
        elif address == "/schema":
            self.reply_all("/schema", [schema_json()], sender)
        elif address in ("/record/start", "/record/stop"):
            try:
                if address == "/record/start":
                    eng.recorder.start(args[0] if args else None)
                else:
                    eng.recorder.stop()
            except UserError as e:
                self._error(sender, f"{address}: {e}")
        elif address == "/prompt/load":
            slot, path = args
            eng.load_prompt(
                slot, path,
                done=lambda s, p: self.reply_all("/prompt/loaded", [s, p], sender),
                failed=lambda m: self._error(sender, f"/prompt/load: {m}"))

    def _recording_notice(self, kind: str, text: str) -> None:
        if kind in ("started", "stopped"):
            self.reply_all(f"/record/{kind}", [text])

    def _error(self, sender: Target, message: str) -> None:
        self.errors += 1
        self.log(f"osc: {message}")
        self.reply_all("/error", [message], sender)
