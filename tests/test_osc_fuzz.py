"""≥ 10,000 random and mutated datagrams into a running engine: it keeps playing, nothing
escapes, and every bad datagram is answered (counted) as an error."""

import random
import time

import numpy as np
import pytest
from conftest import tiny_random_model
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from engine.live.engine import LiveConfig
from engine.model.codec import random_codec
from engine.session.live_session import build_live_engine
from osc.addresses import TABLE
from osc.server import OSCServer

ARGS = [0, 1, -1, 7, 2**31 - 1, -(2**31), 0.0, 0.5, 1.0, -3.5, 1e30, float("nan"),
        float("inf"), float("-inf"), "", "x", "../../etc/passwd", "/dev/zero", b"\x00\x01",
        True, False, None]


def _message(rng: random.Random) -> bytes:
    address = rng.choice(list(TABLE) + ["/", "/morph/", "/MORPH", "/x" * 40, "/prompt"])
    b = OscMessageBuilder(address=address)
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 9])):
        b.add_arg(rng.choice(ARGS))
    return b.build().dgram


def _bundle(rng: random.Random) -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    for _ in range(rng.randint(1, 4)):
        b.add_content(OscMessageBuilder(address=rng.choice(list(TABLE))).build()
                      if rng.random() < 0.2 else _parsed(_message(rng)))
    return b.build().dgram


def _parsed(dgram: bytes):
    from pythonosc.osc_message import OscMessage

    return OscMessage(dgram)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.6:
            data = data[: rng.randrange(len(data) + 1)]
        elif op < 0.8:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data = data[:4] + data
    return bytes(data)


def _datagrams(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.random()
        if kind < 0.35:
            yield _message(rng)
        elif kind < 0.5:
            yield _bundle(rng)
        elif kind < 0.9:
            yield _mutate(rng, _bundle(rng) if rng.random() < 0.3 else _message(rng))
        else:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))


@pytest.fixture
def engine(tmp_path):
    rng = np.random.RandomState(0)
    slots = [rng.randn(128).astype(np.float32) for _ in range(4)]
    eng = build_live_engine(tiny_random_model(), random_codec(0), slots,
                     LiveConfig(window=32, device="null", prompt_dirs=[tmp_path],
                                sessions_dir=tmp_path / "sessions"),
                     log=lambda m: None)
    eng.start()
    yield eng
    eng.stop()


def test_fuzzed_datagrams_never_stop_the_engine(engine):
    server = OSCServer(engine, port=0, log=lambda m: None)
    sender = ("127.0.0.1", 9)  # discard port: replies go nowhere
    sent = 0
    for data in _datagrams(10_000):
        server.handle(data, sender)  # raises if anything escapes
        sent += 1
    assert sent == 10_000 and server.received == 10_000
    assert server.errors > 3000  # most fuzzed datagrams are wrong and were answered
    server.handle(OscMessageBuilder(address="/play").build().dgram, sender)
    frame = engine.generator.t
    time.sleep(1.0)
    assert engine.pipeline.error is None
    assert engine.generator.t > frame + 20, "the engine stopped generating"
    s = engine.status()
    assert all(np.isfinite(v) for v in s["mix"]) and np.isfinite(s["temperature"])
    server.close()
