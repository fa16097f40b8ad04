"""The OSC reader process: reads the engine's UDP socket, coalesces floods, hands on the rest.

Why a process: a flood (a fader storm, a patch gone wrong: 50 000 datagrams/s) costs the
reader Python time for every datagram, even to skip it. In the engine's own process that
time is spent holding the GIL, which the generator needs between its torch calls: measured,
the generator's step p99 went from 16 to 23–30 ms during a flood read by a thread, and
stayed at 16 ms when the same flood was drained by another process (DEVELOPERS.md, "An hour
on stage"). Here the reading and the skipping (:mod:`osc.batch`) cost this process's GIL, not
the engine's; the engine receives a few hundred survivors a second.

Frames leave at most every :data:`FRAME_GAP_S` (4 ms, a third of an EnCodecGPT frame): a
datagram arriving after a quiet gap goes on at once, while in a flood what arrives within the
gap is collected and coalesced as one batch (a fader's last value per 4 ms; controls take
effect at frame boundaries anyway), so the engine gets at most 250 frames a second however
fast the flood.

Protocol (one stream socket from :func:`socket.socketpair`, this process → the engine): per
batch, a frame ``len (4 bytes, big-endian) + marshal((skipped, [(data, sender), ...]))``.
The UDP socket is shared: replies still leave from the engine's end, and the kernel's drop
count is still the socket's. This process imports nothing of the engine (no torch), runs
at niceness +5, and ends when the engine closes its end of the stream or goes away.

Run by :class:`osc.server.OSCServer` as::

    python -c "…from osc.reader_process import main; main()" UDP_FD STREAM_FD NICE ADDRESS…
"""

from __future__ import annotations

import marshal
import os
import socket
import sys
import time

from osc.batch import WAIT_S, coalesce, read_batch

FRAME_GAP_S = 0.004  # the shortest time between two frames to the engine


def frame(skipped: int, kept: list) -> bytes:
    """One batch as a length-prefixed frame."""
    body = marshal.dumps((skipped, kept))
    return len(body).to_bytes(4, "big") + body


def read_frame(stream: socket.socket) -> tuple[int, list] | None:
    """The next frame's ``(skipped, [(data, sender), ...])``; None at the end of the stream."""
    head = _exactly(stream, 4)
    if head is None:
        return None
    body = _exactly(stream, int.from_bytes(head, "big"))
    if body is None:
        return None
    skipped, kept = marshal.loads(body)
    return skipped, [(data, tuple(sender)) for data, sender in kept]


def _exactly(stream: socket.socket, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        chunk = stream.recv(min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def serve(udp: socket.socket, stream: socket.socket, continuous: set[bytes]) -> None:
    """Read, coalesce and forward until the engine goes away."""
    parent = os.getppid()
    pending: list = []  # datagrams read since the last frame, in order
    sent_at = 0.0
    while True:
        due = sent_at + FRAME_GAP_S - time.monotonic()
        try:
            pending += read_batch(udp, wait=max(0.0, due) if pending else WAIT_S)
        except (OSError, ValueError):
            return  # the socket was closed under us: the engine is stopping
        if not pending:
            if os.getppid() != parent:  # the engine died without closing the stream
                return
            continue
        if time.monotonic() < sent_at + FRAME_GAP_S:
            continue  # a flood: collect until the gap is over
        kept, skipped = coalesce(pending, continuous)
        pending = []
        try:
            stream.sendall(frame(skipped, kept))
        except OSError:
            return  # the engine closed its end
        sent_at = time.monotonic()


def main(argv: list[str] | None = None) -> None:
    udp_fd, stream_fd, nice, *addresses = argv if argv is not None else sys.argv[1:]
    try:
        os.nice(int(nice))
    except (AttributeError, OSError):
        pass
    udp = socket.socket(fileno=int(udp_fd))
    udp.setblocking(False)
    stream = socket.socket(fileno=int(stream_fd))
    serve(udp, stream, {a.encode("ascii") for a in addresses})


if __name__ == "__main__":
    main()
