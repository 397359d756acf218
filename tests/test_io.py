"""io.write_text_atomic: whole or absent, and a killed writer's aside file does not stay forever."""

import subprocess
import sys

from llm_energy.io import write_text_atomic


def test_a_killed_writers_aside_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "fits.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".fits.json.tmp-{int(dead.stdout)}"  # that process has exited
    stale.write_text('{"half')
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".fits.json.tmp-{alive.pid}"
        live.write_text("in progress")
        write_text_atomic(target, "{}")
        assert target.read_text() == "{}"
        assert not stale.exists()
        assert live.exists()  # another writer still at work keeps its file
    finally:
        alive.kill()
        alive.wait()
