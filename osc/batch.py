"""Reading the OSC socket in batches, and coalescing a flood before it is parsed.

A fader storm (TouchOSC at 200 Hz, a Max ``metro 1``, a patch gone wrong at 100 000
messages/s) must not cost the ``osc`` thread a parse per datagram: of several values queued
for one setting, only the last can take effect anyway (the same rule as the generator's
queue, :mod:`engine.live.control_queue`, one step earlier and much cheaper). So the thread
takes every datagram waiting in the socket (up to :data:`MAX_BATCH`) and, before parsing,
skips each plain message that a later one in the batch makes pointless: same sender, same
address and type tags, the address a continuous control (the ``continuous`` addresses given:
:data:`~engine.live.controls.CONTINUOUS`), and only such messages in between. Bundles,
discrete controls, commands and anything unparsable end a run and are always handled, in
order. A skipped datagram is counted, not checked (a malformed value in it goes unanswered:
it was replaced before it could matter).

This module imports nothing of the engine: the OSC reader process
(:mod:`osc.reader_process`) runs it without torch.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Collection

MAX_BATCH = 512  # datagrams taken per wake-up; a batch is handled before the next is read
WAIT_S = 0.2  # how long one wait for data lasts (the thread checks for close between)

Datagram = tuple[bytes, tuple[str, int]]


def read_batch(sock: socket.socket, limit: int = MAX_BATCH,
               wait: float = WAIT_S) -> list[Datagram]:
    """Wait up to ``wait`` seconds for ``sock`` (non-blocking) to be readable, then take what
    is waiting, at most ``limit`` datagrams; ``[]`` on timeout."""
    if not select.select([sock], [], [], wait)[0]:
        return []
    batch: list[Datagram] = []
    while len(batch) < limit:
        try:
            batch.append(sock.recvfrom(65536))
        except (BlockingIOError, InterruptedError):
            break
    return batch


def _setting_key(data: bytes, continuous: Collection[bytes]) -> bytes | None:
    """Address and type tags of a plain message to a continuous control, else None."""
    end = data.find(b"\0")
    if end <= 0 or data[:end] not in continuous:
        return None
    tags = (end + 4) & ~3  # the address is padded to a multiple of 4 bytes
    tags_end = data.find(b"\0", tags)
    if tags_end < 0 or data[tags : tags + 1] != b",":
        return None
    return data[:tags_end]


def coalesce(batch: list[Datagram],
             continuous: Collection[bytes]) -> tuple[list[Datagram], int]:
    """The datagrams of ``batch`` worth parsing, in order, and how many were skipped;
    ``continuous``: the continuous controls' addresses (ASCII bytes)."""
    keep = [True] * len(batch)
    later: set[tuple[bytes, tuple[str, int]]] = set()
    for i in range(len(batch) - 1, -1, -1):
        data, sender = batch[i]
        key = _setting_key(data, continuous)
        if key is None:
            later.clear()  # a discrete control, command or bundle: a run ends here
        elif (key, sender) in later:
            keep[i] = False
        else:
            later.add((key, sender))
    kept = [d for d, k in zip(batch, keep, strict=True) if k]
    return kept, len(batch) - len(kept)
