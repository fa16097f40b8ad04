"""The engine playing to a real audio server: JACK2's dummy driver, captured by a JACK
client, compared with what the engine sent to the device."""

import os
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from live_helpers import EngineProcess, free_udp_port, need

RATE = 48000


@pytest.fixture
def jack_server():
    jackd = need("jackd")
    jack = pytest.importorskip("jack", reason="JACK-Client is not installed (pip install "
                                              "JACK-Client)")
    name = f"egl{os.getpid()}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": name}
    proc = subprocess.Popen([jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", str(RATE),
                             "-p", "1024"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        client = None
        for _ in range(50):
            try:
                client = jack.Client("probe", servername=name, no_start_server=True)
                break
            except jack.JackError:
                time.sleep(0.1)
        if client is None:
            pytest.skip("jackd (dummy driver) did not start here")
        client.close()
        yield jack, name
    finally:
        os.environ.pop("JACK_DEFAULT_SERVER", None)
        proc.terminate()
        proc.wait(10)


class Capture:
    """A JACK client with one input port recording everything it receives."""

    def __init__(self, jack, server: str):
        self.client = jack.Client("capture", servername=server, no_start_server=True)
        self.port = self.client.inports.register("in")
        self.blocks: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames):
        with self.lock:
            self.blocks.append(self.port.get_array().copy())

    def audio(self) -> np.ndarray:
        with self.lock:
            return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)

    def close(self):
        self.client.deactivate()
        self.client.close()


def test_engine_plays_to_jack_and_the_capture_matches(jack_server, tmp_path):
    jack, server = jack_server
    capture = Capture(jack, server)
    engine = EngineProcess("--random-weights", "--preset", "tiny", "--quantize", "int8",
                           "--hostapi", "JACK", "--device", "system", "--buffer", "0.3",
                           "--osc-port", str(free_udp_port()), "--no-status",
                           "--tap", str(tmp_path / "tap.wav"), log=tmp_path / "engine.log")
    try:
        engine.wait_for("playing")
        assert "at 48000 Hz" in engine.log and "resampled 24000 -> 48000" in engine.log
        ours = [p for p in capture.client.get_ports(is_audio=True, is_output=True)
                if not p.name.startswith("system:")]
        assert ours, [p.name for p in capture.client.get_ports()]
        capture.client.connect(ours[0], capture.port)
        time.sleep(8.0)
    finally:
        code = engine.stop()
        capture.close()
    assert code == 0, engine.log
    underruns = int(engine.log.rsplit("underruns", 1)[1].split()[0])
    assert underruns == 0, engine.log
    got = capture.audio()
    sent, rate = sf.read(tmp_path / "tap.wav", dtype="float32")
    assert rate == RATE and len(sent) > 5 * RATE
    # The capture joined mid-stream: find the tap position of a stretch it recorded. JACK
    # passes float samples through untouched, so candidates are exact matches.
    live = np.flatnonzero(np.abs(got) > 1e-4)
    assert live.size > 4 * RATE, "JACK captured (almost) nothing"
    start = live[0] + RATE // 2
    probe = got[start : start + 64]
    candidates = [k for k in np.flatnonzero(sent == probe[0])
                  if np.array_equal(sent[k : k + 64], probe)]
    assert len(candidates) == 1, f"{len(candidates)} exact matches for the probe"
    offset = candidates[0]
    # Stop at the fade-out: the engine stopped, what was still buffered was never played.
    n = min(live[-1] - start - RATE // 10, len(sent) - offset)
    assert n > 3 * RATE
    assert np.array_equal(got[start : start + n], sent[offset : offset + n])
