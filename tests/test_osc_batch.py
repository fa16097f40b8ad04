"""Coalescing a flood before parsing (osc.batch), and a real server under a 10 000-message
burst: the last value wins, discrete messages and bundles are never skipped."""

import os
import socket
import subprocess
import sys

import pytest
from live_helpers import REPO, null_engine, wait_until
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from osc.batch import coalesce
from osc.reader_process import frame, read_frame
from osc.server import CONTINUOUS_KEYS, READERS, OSCServer, build_message

A, B = ("127.0.0.1", 1000), ("127.0.0.1", 2000)


def _bundle(*messages: bytes) -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    for address, value in messages:
        m = OscMessageBuilder(address)
        m.add_arg(value, "f")
        b.add_content(m.build())
    return b.build().dgram


def _addresses(kept):
    return [(d.split(b"\0", 1)[0].decode(), s) for d, s in kept]


def test_the_last_of_a_run_of_one_setting_is_kept_in_order():
    morph = [build_message("/morph", [v / 10]) for v in range(5)]
    batch = [(m, A) for m in morph] + [(build_message("/temperature", [0.5]), A)]
    kept, skipped = coalesce(batch, CONTINUOUS_KEYS)
    assert skipped == 4 and [d for d, _ in kept] == [morph[-1], batch[-1][0]]


def test_discrete_messages_bundles_senders_and_type_tags_end_or_split_runs():
    m1, m2 = build_message("/morph", [0.1]), build_message("/morph", [0.2])
    record = build_message("/record/start", ["take"])
    seed = build_message("/seed", [3])  # a discrete control
    whole = _bundle(("/morph", 0.3), ("/temperature", 0.9))
    as_int = build_message("/morph", [1])  # other type tags: its own setting key
    batch = [(m1, A), (record, A), (m1, A), (seed, A), (m1, A), (whole, A), (m1, A),
             (m1, B), (m2, A), (as_int, A), (m2, A)]
    kept, skipped = coalesce(batch, CONTINUOUS_KEYS)
    # Each discrete message, command and bundle ends a run: nothing before it is skipped.
    # After the bundle, A's /morph f appears twice (the first is skipped), B's is its own,
    # and the int-tagged /morph is not the same key.
    assert skipped == 2
    assert [d for d, _ in kept] == [m1, record, m1, seed, m1, whole, m1, as_int, m2]
    assert [s for _, s in kept][6] == B


def test_garbage_is_never_skipped():
    junk = [(b"\0\0\0\0", A), (b"/morph", A), (b"/morph\0\0xf\0", A), (b"", A)]
    kept, skipped = coalesce(junk, CONTINUOUS_KEYS)
    assert skipped == 0 and kept == junk


@pytest.mark.parametrize("reader", READERS)
def test_a_flood_through_the_server_applies_the_last_value_and_counts_the_rest(tmp_path,
                                                                             reader):
    """Through the reader process (POSIX default) or the osc thread alike."""
    engine = null_engine(tmp_path)
    server = OSCServer(engine, port=0, log=lambda m: None, reader=reader)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 10_000
    try:
        engine.start()
        server.start()
        for k in range(n):
            client.sendto(build_message("/morph", [k / n]), server.address)
        # every datagram is handled, skipped before parsing, or dropped by the kernel (its
        # receive buffer holds a few thousand of them), none lost otherwise
        assert wait_until(lambda: server.received + server.coalesced
                          + _kernel_drops(server.address[1]) == n, timeout=20), (
            server.received, server.coalesced)
        client.sendto(build_message("/morph", [0.75]), server.address)  # after the flood
        assert wait_until(lambda: abs(float(engine.generator.controls.weights[1]) - 0.75)
                          < 1e-6, timeout=10)
        assert server.coalesced > 0
    finally:
        client.close()
        server.close()
        engine.stop()


def _kernel_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port``."""
    with open("/proc/net/udp") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                return int(cols[-1])
    return 0


def test_frames_carry_batches_whole_and_in_order():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        big = [(bytes(range(256)) * 200, ("10.0.0.7", 9001))] * 30  # frames past one recv
        theirs.sendall(frame(3, [(b"/a", ("127.0.0.1", 1))]) + frame(0, big) + frame(9, []))
        theirs.close()
        assert read_frame(ours) == (3, [(b"/a", ("127.0.0.1", 1))])
        assert read_frame(ours) == (0, big)
        assert read_frame(ours) == (9, [])
        assert read_frame(ours) is None  # the stream ended
    finally:
        ours.close()


def test_the_reader_process_imports_no_torch_and_ends_with_the_server(tmp_path):
    """Light (the socket and osc.batch only: no torch in a second process's memory) and
    gone once the server is closed (no orphan on the performer's machine)."""
    probe = subprocess.run([sys.executable, "-c", "import sys; import osc.reader_process; "
                            "print('torch' in sys.modules, 'engine' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert probe.stdout.split() == ["False", "False"], probe.stderr
    if os.name != "posix":
        pytest.skip("the reader process shares the socket through pass_fds (POSIX)")
    engine = null_engine(tmp_path)
    server = OSCServer(engine, port=0, log=lambda m: None, reader="process")
    server.start()
    pid = server.reader_pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    server.close()
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
