"""``make demo``: a local Ray cluster of 3 raylets (2 node types) on this machine, the pipeline job
submitted to it as ``ray job submit`` would (the Jobs API of the head's dashboard), its logs
followed, then the plan summary and the report path; the cluster is stopped at the end.
With ``--address URL`` the job goes to a running cluster's dashboard instead (its raylets must carry
the config's node types as resources), and that cluster is left running.

One machine only simulates a heterogeneous cluster, and with no power meter here CPU energy is a
labelled estimate (utilisation x TDP): see README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--out", default=None, help="output directory (default: the config's out:)")
    ap.add_argument("--ray-logs", action="store_true", help="show Ray's own INFO logs (hidden by default)")
    ap.add_argument("--address", default=None, metavar="URL",
                    help="submit to a running cluster's dashboard (http://HEAD:8265) instead of starting a local "
                         "one; that cluster is left running")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from cluster.config import load_config
    from cluster.connect import RAY_LOGS_ENV, quiet_ray_logger
    from cluster.local import LocalNode, dashboard_url, start_local_cluster

    cfg = load_config(REPO / args.config)  # fail before starting anything
    out = Path(args.out).resolve() if args.out else REPO / cfg.out
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if args.ray_logs:
        os.environ[RAY_LOGS_ENV] = "1"  # the raylets and the job inherit it
    quiet_ray_logger()
    t0 = time.time()
    cluster = None
    if args.address is None:
        types = list(cfg.node_types)
        nodes = [LocalNode(types[0]), *(LocalNode(t) for t in types)]  # the first type twice: >= 3 raylets, 2 types
        print(f"starting a local Ray cluster: {len(nodes)} raylets, node types "
              + ", ".join(n.node_type for n in nodes) + " (the head is the first)", flush=True)
        cluster = start_local_cluster(nodes, dashboard=True)
    try:
        url = dashboard_url(cluster) if cluster is not None else args.address
        from ray.job_submission import JobStatus, JobSubmissionClient

        try:
            client = _client(JobSubmissionClient, url, tries=30 if cluster is not None else 5)
        except RuntimeError as e:
            print(f"demo: error: --address={url!r}: {e}", file=sys.stderr)
            return 2
        entry = entrypoint(args.config, out)
        state = f"up in {time.time() - t0:.1f} s" if cluster is not None else "given"
        print(f"cluster {state}; dashboard {url}\n$ ray job submit --address {url} --working-dir . -- {entry}",
              flush=True)
        job = _submit(client, entrypoint=entry, runtime_env={
            "working_dir": str(REPO),
            "excludes": [".venv", ".git", ".whl", "data", "out", "runs", "docs", "*.egg-info", ".hypothesis"],
        })
        print(f"live view: this terminal (or `llm-energy watch {out}` from another one)", flush=True)
        status = _follow(client, job, args.timeout_s, progress=out / "progress.json")
        print(f"job {job}: {status} after {time.time() - t0:.0f} s", flush=True)
        if status != JobStatus.SUCCEEDED:
            return 1
        if (out / "plan" / "summary.json").exists():
            from llm_energy.plan.summary import PlanSummary

            s = PlanSummary.load(out / "plan")
            print(f"plan: {s.status} energy {s.energy_j / 1e3:.2f} kJ, accuracy {s.accuracy:.2f}; "
                  + ", ".join(f"{k}: {v.count} ({100 * v.share:.1f}%)" for k, v in s.deployments.items()))
            for b in s.baselines[:6]:
                print(f"  baseline {b.name}: {b.energy_j / 1e3:.2f} kJ, plan saves {b.saved_pct:.1f}%")
        if (out / "route" / "summary.json").exists():
            from llm_energy.route.summary import RouteSummary

            pol = RouteSummary.load(out / "route").policies
            print("online routing (energy incl. idle, p99 latency): " + ", ".join(
                f"{k} {v.total_energy_j / 1e3:.1f} kJ / {v.latency_p99_s:.1f} s" for k, v in pol.items()))
        print(f"report: {out / 'report' / 'report.md'}")
        print("note: CPU energy on this machine is an ESTIMATE (utilisation x TDP), not a measurement")
        return 0
    finally:
        import ray

        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
            print(f"cluster stopped; demo took {time.time() - t0:.0f} s")


def entrypoint(config: str | Path, out: Path) -> str:
    """The job's command line. Ray runs an entrypoint through a shell, so every path is quoted: a space,
    ``;`` or ``$`` in a path is part of the path, never shell syntax."""
    return shlex.join([sys.executable, "jobs/pipeline.py", "--config", str(config), "--out", str(out), "--no-live"])


def _client(cls, url: str, tries: int = 30):
    last = None
    for _ in range(tries):
        try:
            return cls(url)
        except Exception as e:  # noqa: BLE001 - the job server may need a moment after the head starts
            last = e
            time.sleep(1)
    raise RuntimeError(f"the job server at {url} did not answer in {tries} tries: {(str(last).splitlines() or [''])[0]}")


def _submit(client, tries: int = 60, **kw) -> str:
    """submit_job, retried while the head's job agent is still starting ("No available agent")."""
    for i in range(tries):
        try:
            return client.submit_job(**kw)
        except RuntimeError as e:
            if "No available agent" not in str(e) or i == tries - 1:
                raise
            time.sleep(1)
    raise RuntimeError("unreachable")


def _follow(client, job: str, timeout_s: float, progress: Path | None = None):
    """Print the job's log as it grows; on a terminal, keep the live per-node view (rendered from the
    job's ``progress.json``) below the log lines."""
    from ray.job_submission import JobStatus
    from rich.console import Console
    from rich.live import Live

    from cluster.connect import drop_ray_info
    from llm_energy.report.live import view_from_progress

    con = Console()
    live = Live(console=con, refresh_per_second=4, transient=False) if progress and con.is_terminal else None
    if live is not None:
        live.start()

    def emit(text: str) -> None:
        text = drop_ray_info(text)
        if live is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        for line in text.splitlines():
            con.print(line, markup=False, highlight=False)

    seen = 0
    deadline = time.time() + timeout_s
    try:
        while True:
            logs = client.get_job_logs(job)
            if len(logs) > seen:
                emit(logs[seen:])
                seen = len(logs)
            if live is not None:
                view = view_from_progress(progress, con)
                if view is not None:
                    live.update(view.render())
            st = client.get_job_status(job)
            if st in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                emit(client.get_job_logs(job)[seen:])
                return st
            if time.time() > deadline:
                client.stop_job(job)
                return JobStatus.STOPPED
            time.sleep(0.5)
    finally:
        if live is not None:
            live.stop()


if __name__ == "__main__":
    sys.exit(main())
