"""Tables printed where there is no terminal (a Ray job's log, a pipe) are not cut to a few characters."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_fit_table_whole_in_a_pipe(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "llm_energy", "fit", "data/h100/issue3", "--out", str(tmp_path / "f.json")],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "llama-2-7b@h100" in r.stdout  # the deployment column is whole
    assert "…" not in r.stdout, r.stdout
