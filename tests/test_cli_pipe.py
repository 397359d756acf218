"""Output piped into a reader that stops early (`| head`) ends quietly, with no traceback."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_json_into_a_closed_pipe_ends_quietly():
    # `show --json` of the committed H100 grid prints ~180 KB, more than a pipe buffers; the reader
    # takes one byte and closes its end
    p = subprocess.Popen([sys.executable, "-m", "llm_energy", "show", "data/h100/grid-static", "--json"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(1)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
