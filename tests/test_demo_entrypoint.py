"""The demo's job entrypoint survives the shell Ray runs it through."""

import shlex
import subprocess
import sys
from pathlib import Path

from cluster.demo import entrypoint


def test_paths_with_shell_characters_are_quoted(tmp_path):
    out = tmp_path / "my out; touch pwned $HOME"
    entry = entrypoint("configs/my demo.yaml", out)
    assert shlex.split(entry) == [sys.executable, "jobs/pipeline.py", "--config", "configs/my demo.yaml",
                                  "--out", str(out), "--no-live"]
    # through a real shell, as Ray runs it: the arguments arrive intact and nothing else runs
    probe = entry.replace(shlex.quote(sys.executable), "printf '%s\\n'", 1)
    r = subprocess.run(probe, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.splitlines()[-3:-1] == ["--out", str(out)]
    assert not (Path(tmp_path) / "pwned").exists()
