"""The README's quick start, run as written: its first engine line and every ``oscsend`` line.

Only these substitutions are made, because this machine has no hub access and no sound card:
``--random-weights --encodecmae FIXTURE`` (the hub's model and EnCodecMAE), ``--device null``
(a named sound card), the ``~/sounds`` folder → a temporary folder holding the example's file
(``cello.wav``), and port 9000 → a free port. The engine's replies go to ``--feedback`` (an
``oscdump``), and none of the example messages may be answered with ``/error``.
"""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from fixtures import ref
from live_helpers import REPO, EngineProcess, OscDump, free_udp_port, need, wait_until

from engine.model.audio_io import read_audio, write_audio


def readme_quick_start() -> tuple[list[str], list[list[str]]]:
    """The first ``python run_engine.py`` line of "Quick start for performers" and the
    ``oscsend`` lines that follow it, as argument lists (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start for performers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [shlex.split(line, comments=True) for block in blocks
             for line in block.replace("\\\n", " ").splitlines()]
    engine = next(w for w in lines if w[:2] == ["python", "run_engine.py"])
    sends = [w for w in lines if w and w[0] == "oscsend"]
    return engine, sends


def _substitute(words: list[str], sounds: Path, port: int) -> list[str]:
    home_sounds = str(Path("~/sounds").expanduser())
    return [w.replace(home_sounds, str(sounds)).replace("~/sounds", str(sounds))
            if "sounds" in w else (str(port) if w == "9000" else w) for w in words]


@pytest.mark.slow
def test_readme_quick_start_runs_without_an_error_reply(tmp_path, mae_dir):
    need("oscsend")
    engine_line, sends = readme_quick_start()
    assert "--prompt-dir" in engine_line and len(sends) >= 5
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    write_audio(sounds / "cello.wav", read_audio(ref("signal_A.wav"), 24000), 24000)
    port, dump_port = free_udp_port(), free_udp_port()
    dump = OscDump(dump_port, tmp_path / "dump.txt")
    args = _substitute(engine_line[2:], sounds, port) + [
        "--random-weights", "--encodecmae", str(mae_dir), "--device", "null",
        "--osc-port", str(port), "--feedback", f"127.0.0.1:{dump_port}", "--no-status"]
    proc = EngineProcess(*args, log=tmp_path / "engine.log")
    try:
        proc.wait_for("playing", timeout=240)
        assert "prompts: plucked_string, bell, filtered_noise, reed" in proc.log, proc.log
        for words in sends:
            subprocess.run(_substitute(words, sounds, port), check=True, timeout=10)
        assert wait_until(lambda: dump.raw("/prompt/loaded"), timeout=120), proc.log
    finally:
        assert proc.stop() == 0, proc.log
        dump.close()
    assert dump.raw("/error") == [], proc.log
    assert dump.lines("/engine/status"), "no feedback arrived"
