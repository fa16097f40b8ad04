"""10,000 random and mutated datagrams into a running engine: nothing escapes, every refused
datagram gets exactly one ``/error`` and nothing of it reaches the engine, and the engine
keeps generating and taking controls."""

import random
import time

import numpy as np
import pytest
from live_helpers import null_engine
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from osc.addresses import TABLE
from osc.dispatcher import OSCDispatcher

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


def _surely_refused(data: bytes) -> bool:
    """Not OSC, or naming an address the engine does not have (judged without the
    dispatcher)."""
    try:
        messages = OscPacket(data).messages
    except Exception:
        return True
    return any(m.message.address not in TABLE for m in messages)


class Reached:
    """The engine as the dispatcher sees it; every call that reaches it is appended to
    ``calls`` (the recorder's too)."""

    def __init__(self, target, calls: list[str]):
        self._target, self._calls = target, calls

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if name == "recorder":
            return Reached(attr, self._calls)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self._calls.append(name)
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def engine(tmp_path):
    eng = null_engine(tmp_path, slots=4)
    eng.start()
    yield eng
    eng.stop()


def test_fuzzed_datagrams_never_stop_the_engine(engine):
    sender = ("127.0.0.1", 9)
    errors, calls = [], []
    dispatcher = OSCDispatcher(Reached(engine, calls), log=lambda m: None,
                               reply=lambda a, args, to: errors.append(args) if a == "/error"
                               else None)
    refused = surely = 0
    for data in _datagrams(10_000):
        n_errors, n_calls = len(errors), len(calls)
        accepted = dispatcher.handle(data, sender)  # raises if anything escapes
        assert len(errors) - n_errors == (0 if accepted else 1), (data, errors[n_errors:])
        refused += not accepted
        if _surely_refused(data):
            surely += 1
            assert not accepted and len(calls) == n_calls, (data, calls[n_calls:])
    assert dispatcher.errors == refused == len(errors)
    assert surely > 3000 and refused > surely  # most are wrong; some only by their arguments
    assert engine.pipeline.error is None
    dispatcher.handle(OscMessageBuilder(address="/play").build().dgram, sender)
    temperature = OscMessageBuilder(address="/temperature")
    temperature.add_arg(0.42, "f")
    assert dispatcher.handle(temperature.build().dgram, sender)
    frame = engine.generator.t
    time.sleep(1.0)
    assert engine.pipeline.error is None
    assert engine.generator.t > frame + 20, "the engine stopped generating"
    assert engine.generator.controls.target_temperature == pytest.approx(0.42)
    s = engine.status()
    assert all(np.isfinite(v) for v in s["mix"]) and np.isfinite(s["temperature"])
