"""Every benchmark script starts: its imports still resolve after the code moves (CI runs
no benchmark, so nothing else would notice)."""

import subprocess
import sys

import pytest
from live_helpers import REPO

SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_answers_help(script):
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
