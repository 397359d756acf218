"""The falcon tests again under transformers 5.24, the last falcon layout before 5.25's (the GPU machine
runs 5.17's, the same): there falcon caches every query head's copy of its KV groups and calls SDPA
itself, and ``gqa`` binds its own forward per module (packed_gqa.py); from 5.25 transformers caches the
groups and dispatches through ``AttentionInterface``. ``make test`` installs 5.24 beside the venv's own
(``.venv/compat/transformers-5.24``, no dependencies); the tests run in a child pytest with it first on
the path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / ".venv" / "compat" / "transformers-5.24"


def test_the_falcon_tests_pass_under_the_older_falcon_layout():
    if not COMPAT.is_dir():
        pytest.skip(f"{COMPAT} missing: `make test` installs it (pip install --no-deps --target {COMPAT} "
                    "transformers==5.24.0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(COMPAT), os.environ.get("PYTHONPATH")]))}
    probe = ("import transformers; from llm_energy.measure.inference.presets import falcon_caches_kv_groups as f;"
             "from transformers.models.falcon import modeling_falcon as m;"
             "print(transformers.__version__, f(), hasattr(m.FalconAttention, '_split_heads'))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5.24.0", "False", "True"], out.stdout  # the older layout, and known as such
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "falcon",
                          "tests/test_kv_bytes.py", "tests/test_packed_gqa.py"],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail
