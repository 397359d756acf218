"""Ray's own INFO lines stay out of the demo's output unless asked for; the job's lines stay in."""

from cluster.connect import RAY_LOGS_ENV, drop_ray_info

LOG = (
    "2026-12-01 11:47:19,870\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
    "Running entrypoint for job raysubmit_L7uDPszjAfGvLff2: python jobs/pipeline.py\n"
    "2026-12-01 11:47:21,066\tINFO worker.py:1841 -- Connecting to existing Ray cluster at address: 10.0.0.2:46499...\n"
    "cluster: 3 nodes: cpu-small/457d622d (no GPU, meters: estimate)\n"
    "2026-12-01 11:47:22,001\tWARNING worker.py:12 -- something Ray thinks matters\n"
    "wrote /tmp/demo_out/fits.json\n"
)


def test_ray_info_lines_dropped_by_default(monkeypatch):
    monkeypatch.delenv(RAY_LOGS_ENV, raising=False)
    out = drop_ray_info(LOG)
    assert "INFO" not in out
    assert out.splitlines() == [LOG.splitlines()[i] for i in (1, 3, 4, 5)]  # the job's lines and the warning


def test_ray_logs_kept_when_asked(monkeypatch):
    monkeypatch.setenv(RAY_LOGS_ENV, "1")
    assert drop_ray_info(LOG) == LOG
