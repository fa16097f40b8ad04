"""The live engine driven by real OSC peers: liblo's oscsend/oscdump and Pure Data."""

import json
import socket
import subprocess
import time

import pytest
from live_helpers import EngineProcess, OscDump, free_udp_port, need, oscsend, wait_until
from pythonosc.osc_message import OscMessage

PD_DRIVER = """#N canvas 0 0 450 300 12;
#X obj 10 10 loadbang;
#X msg 10 40 connect localhost {port};
#X obj 10 200 netsend -u -b;
#X obj 150 10 delay 300;
#X msg 150 40 0.3;
#X obj 150 70 oscformat morph;
#X msg 300 40 0.8;
#X obj 300 70 oscformat temperature;
#X obj 150 100 list prepend send;
#X obj 150 130 list trim;
#X obj 10 250 delay 1500;
#X msg 10 280 \\; pd quit;
#X connect 0 0 1 0;
#X connect 1 0 2 0;
#X connect 0 0 3 0;
#X connect 3 0 4 0;
#X connect 3 0 6 0;
#X connect 4 0 5 0;
#X connect 6 0 7 0;
#X connect 5 0 8 0;
#X connect 7 0 8 0;
#X connect 8 0 9 0;
#X connect 9 0 2 0;
#X connect 0 0 10 0;
#X connect 10 0 11 0;
"""

STATUS_MORPH, STATUS_TEMPERATURE = 6, 8  # token index in [addr, types, args...]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    need("oscsend")
    d = tmp_path_factory.mktemp("live")
    port, dump_port = free_udp_port(), free_udp_port()
    dump = OscDump(dump_port, d / "dump.txt")
    proc = EngineProcess("--random-weights", "--preset", "tiny", "--quantize", "int8",
                         "--device", "null", "--osc-port", str(port),
                         "--feedback", f"127.0.0.1:{dump_port}", "--no-status",
                         "--control-log", str(d / "controls.jsonl"), "--prompt-dir", str(d),
                         log=d / "engine.log")
    proc.wait_for("playing")
    yield proc, port, dump, d
    assert proc.stop() == 0, proc.log
    dump.close()


def _controls(d):
    path = d / "controls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _status_has(dump, index, value):
    return any(abs(float(r[index]) - value) < 1e-6 for r in dump.lines("/engine/status"))


@pytest.mark.slow
def test_oscsend_changes_mix_and_temperature(engine):
    proc, port, dump, d = engine
    oscsend(port, "/morph", "f", 0.7)
    oscsend(port, "/temperature", "f", 0.5)
    assert wait_until(lambda: _status_has(dump, STATUS_MORPH, 0.7)), \
        dump.lines("/engine/status")[-3:]
    assert wait_until(lambda: _status_has(dump, STATUS_TEMPERATURE, 0.5))
    log = _controls(d)
    morph = next(c for c in log if c["address"] == "/morph" and abs(c["values"][0] - 0.7) < 1e-6)
    temp = next(c for c in log if c["address"] == "/temperature")
    assert 0 < morph["frame"] <= temp["frame"] and morph["sample"] == morph["frame"] * 320


@pytest.mark.slow
def test_bad_messages_get_error_replies_and_change_nothing(engine):
    proc, port, dump, d = engine
    before = len(_controls(d))
    oscsend(port, "/temperature", "s", "hot")
    oscsend(port, "/morph", "f", "nan")
    oscsend(port, "/nowhere", "i", 1)
    oscsend(port, "/prompt/load", "is", 1, "/etc/passwd")
    oscsend(port, "/topk", "i", 99999)
    assert wait_until(lambda: len(dump.lines("/error")) >= 5), dump.lines("/error")
    errors = " | ".join(r[2] for r in dump.lines("/error"))
    for text in ("expected a number", "finite", "unknown address /nowhere",
                 "outside the prompt folders", "outside [0, 1025]"):
        assert text in errors
    time.sleep(0.3)
    assert len(_controls(d)) == before
    assert proc.proc.poll() is None


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


@pytest.mark.slow
def test_schema_and_status_queries(engine):
    proc, port, dump, d = engine
    oscsend(port, "/schema")
    assert wait_until(lambda: dump.raw("/schema"))
    schema = json.loads(dump.raw("/schema")[0])
    accepts = {a["address"] for a in schema["accepts"]}
    assert {"/morph", "/morph/xy", "/mix", "/glide", "/prompt/load", "/status", "/panic"} <= accepts
    oscsend(port, "/morph", "f", 0.35)
    oscsend(port, "/topk", "i", 12)
    oscsend(port, "/topp", "f", 0.8)
    oscsend(port, "/temperature", "f", 0.9)
    assert wait_until(lambda: _status_has(dump, STATUS_TEMPERATURE, 0.9))
    with _udp_socket() as asker, _udp_socket() as other:
        asker.sendto(b"/status\x00,\x00\x00\x00", ("127.0.0.1", port))
        # From now on the periodic status goes to the last sender, ``other``: what reaches
        # ``asker`` is the reply to its /status.
        other.sendto(b"/schema\x00,\x00\x00\x00", ("127.0.0.1", port))
        status = OscMessage(asker.recv(65536))
        mix = OscMessage(asker.recv(65536))
    assert status.address == "/engine/status" and status.dgram[16:28] == b",fffffiffiii"
    (rtf, p50, p99, buffer_ms, morph, underruns, temperature, topp, topk, recording,
     playing) = status.params
    assert rtf > 0 and 0 < p50 <= p99 and 0 <= buffer_ms <= 250 and underruns >= 0
    assert morph == pytest.approx(0.35) and temperature == pytest.approx(0.9)
    assert topp == pytest.approx(0.8) and topk == 12
    assert recording == 0 and playing == 1
    assert mix.address == "/engine/mix" and mix.params == pytest.approx([0.65, 0.35, 0, 0])


@pytest.mark.slow
def test_prompt_load_from_allowed_folder(engine):
    import numpy as np

    proc, port, dump, d = engine
    np.save(d / "slot3.npy", np.random.RandomState(3).randn(512).astype(np.float32))
    oscsend(port, "/prompt/load", "is", 3, str(d / "slot3.npy"))
    assert wait_until(lambda: dump.lines("/prompt/loaded"))
    assert dump.lines("/prompt/loaded")[0][2:] == ["3", str(d / "slot3.npy")]
    oscsend(port, "/mix", "ffff", 0, 0, 0, 1)
    assert wait_until(lambda: any(r[2:] == ["0.000000", "0.000000", "0.000000", "1.000000"]
                             for r in dump.lines("/engine/mix")))


@pytest.mark.slow
def test_pure_data_patch_drives_the_engine(engine, tmp_path):
    pd = need("puredata")
    proc, port, dump, d = engine
    patch = tmp_path / "driver.pd"
    patch.write_text(PD_DRIVER.format(port=port))
    subprocess.run([pd, "-nogui", "-noaudio", "-nomidi", str(patch)], timeout=30,
                   capture_output=True)
    assert wait_until(lambda: _status_has(dump, STATUS_MORPH, 0.3))
    assert wait_until(lambda: _status_has(dump, STATUS_TEMPERATURE, 0.8))
    log = _controls(d)
    assert any(c["address"] == "/morph" and abs(c["values"][0] - 0.3) < 1e-6 for c in log)
    assert any(c["address"] == "/temperature" and abs(c["values"][0] - 0.8) < 1e-6 for c in log)


def test_readme_holds_the_generated_osc_table():
    from live_helpers import REPO

    from osc.addresses import markdown_table

    assert markdown_table() in (REPO / "README.md").read_text()
