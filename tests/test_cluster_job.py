"""`ray job submit` of jobs/pipeline.py against a local head, with the real `ray` CLI and through
`make demo`'s path (cluster.demo --address), both jobs on one 2-raylet cluster of this module's (its own
module: the shared cluster of test_cluster.py is stopped first, so two clusters never compete for the
2 cores)."""

import json

import os
import subprocess
from pathlib import Path
import sys

import pytest

pytest.importorskip("ray")

from cluster.local import LocalNode, dashboard_url, start_local_cluster  # noqa: E402
from llm_energy.trials.store import TrialStore  # noqa: E402
from tests.test_cluster import CONFIG, REPO, write_config  # noqa: E402

pytestmark = pytest.mark.ray

# one node at a time, as the demo does: the raylets share 2 cores and the machine-wide CPU estimate, so a
# node measuring its idle while the others run would read TDP and be flagged estimate-pinned; a 3x3 grid:
# enough distinct cells per deployment to fit every form
SWEEP = {**CONFIG["sweep"], "tin": [8, 16, 32], "tout": [4, 8, 16], "repeats": 1, "max_concurrent": 1}
EXCLUDES = [".venv", ".git", ".whl", "data", "docs", "out", "runs", ".hypothesis"]


@pytest.fixture(scope="module")
def job_cluster():
    """One head (cpu-a) + one raylet (cpu-b) with the dashboard's job server, shared by the module's jobs
    (each job is its own driver, so this process disconnects once it has the URL)."""
    import ray

    c = start_local_cluster([LocalNode("cpu-a"), LocalNode("cpu-b")], dashboard=True)
    try:
        url = dashboard_url(c)
        ray.shutdown()
        yield url
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.slow
def test_ray_job_submit_of_the_pipeline(tmp_path, job_cluster):
    """make demo's path (cluster.demo: the Jobs API, its log followed, the plan printed) against a running
    cluster (--address); the demo's own local cluster is start_local_cluster, as test_cluster.py's."""
    cfg = write_config(tmp_path, sweep=SWEEP)
    r = subprocess.run([sys.executable, "-m", "cluster.demo", "--config", str(cfg), "--out", str(tmp_path / "demo"),
                        "--address", job_cluster],
                       cwd=REPO, capture_output=True, text=True, timeout=400,
                       env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout and "plan: " in r.stdout and "cluster given" in r.stdout
    out = tmp_path / "demo"
    for f in ("fits.json", "plan/summary.json", "plan/assignment.parquet", "report/report.md"):
        assert (out / f).exists(), f
    assert TrialStore(out / "store").trials().height == 2 * 9


def test_demo_with_an_address_nothing_answers_is_one_line(tmp_path):
    cfg = write_config(tmp_path, sweep=SWEEP)
    r = subprocess.run([sys.executable, "-m", "cluster.demo", "--config", str(cfg), "--address", "http://127.0.0.1:1"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "--address='http://127.0.0.1:1'" in r.stderr, r.stderr


@pytest.mark.slow
def test_ray_job_submit_cli_runs_the_pipeline_and_mirrors_progress(tmp_path, job_cluster):
    cfg = write_config(tmp_path, sweep=SWEEP)
    out = tmp_path / "out"
    url = job_cluster
    ray_cli = str(Path(sys.executable).with_name("ray"))
    excludes = json.dumps({"excludes": EXCLUDES})
    cmd = [ray_cli, "job", "submit", "--address", url, "--working-dir", str(REPO), "--runtime-env-json", excludes,
           "--", sys.executable, "jobs/pipeline.py", "--config", str(cfg), "--out", str(out), "--no-live"]
    r = None
    for _ in range(30):  # the head's job agent may need a few seconds after the head starts
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400,
                           env={**os.environ, "RAY_ADDRESS": ""})
        if "No available agent" not in r.stdout + r.stderr:
            break
        import time

        time.sleep(1)
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in log, log[-4000:]
    assert "pipeline done" in log and "meters: estimate" in log  # nodes were probed before any work
    for f in ("fits.json", "plan/summary.json", "report/report.md", "progress.json"):
        assert (out / f).exists(), f
    assert TrialStore(out / "store").trials().height == 2 * 9
    # the live view's mirror: one row per node, every sweep done, totals equal to the stored trials
    from llm_energy.report.live import view_from_progress

    view = view_from_progress(out / "progress.json")
    assert len(view.rows) == 2 and {t.state for t in view.rows.values()} == {"done"}
    assert sum(t.done for t in view.sweeps.values()) == 2 * 9
    w = subprocess.run([sys.executable, "-m", "llm_energy.cli", "watch", str(out), "--once"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert w.returncode == 0 and "total" in w.stdout and "18/18" in w.stdout, w.stdout + w.stderr


def test_demo_client_gives_up_in_one_line_even_on_an_error_without_a_message():
    from cluster.demo import _client

    def refuses(url):
        raise ConnectionError()  # str() is empty

    with pytest.raises(RuntimeError, match=r"^the job server at http://x did not answer in 1 tries: $"):
        _client(refuses, "http://x", tries=1)
