"""`ray job submit` of jobs/pipeline.py against a local head (its own module: the shared cluster of
test_cluster.py is stopped first, so two clusters never compete for the 2 cores)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")

from llm_energy.store import TrialStore  # noqa: E402
from tests.test_cluster import CONFIG, REPO, write_config  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.mark.slow
def test_ray_job_submit_of_the_pipeline(tmp_path):
    # a 3x3 grid: enough distinct cells per deployment to fit every form
    cfg = write_config(tmp_path, sweep={**CONFIG["sweep"], "tin": [8, 16, 32], "tout": [4, 8, 16], "repeats": 1})
    r = subprocess.run([sys.executable, "-m", "cluster.demo", "--config", str(cfg), "--out", str(tmp_path / "demo")],
                       cwd=REPO, capture_output=True, text=True, timeout=400,
                       env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout
    out = tmp_path / "demo"
    for f in ("fits.json", "plan/summary.json", "plan/assignment.parquet", "report/report.md"):
        assert (out / f).exists(), f
    assert TrialStore(out / "store").trials().height == 2 * 9
