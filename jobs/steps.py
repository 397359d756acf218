"""The pipeline's steps as functions (each job entrypoint runs one or all of them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.config import PipelineConfig
from llm_energy.errors import UserError


def cli(argv: list[str]) -> int:
    """Run an ``llm-energy`` command in a subprocess, exactly as a user would (its output goes to the
    job's log); ``llm_energy`` is installed on every node (ray_cluster.yaml's setup commands)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "llm_energy.cli", *argv]).returncode


def paths(cfg: PipelineConfig) -> dict[str, Path]:
    out = Path(cfg.out)
    return {"store": out / "store", "fits": out / "fits.json", "deploy": out / "deployments.yaml",
            "workload": out / "workload.csv", "plan": out / "plan", "report": out / "report"}


def sweep(cfg: PipelineConfig, *, live: bool | None = None) -> None:
    import ray

    from cluster.connect import connect
    from cluster.collector import run_cluster_sweep
    from cluster.placement import check_placement
    from cluster.discovery import discover_nodes
    from llm_energy.trials.store import TrialStore
    from llm_energy.report.live import SweepView

    if not ray.is_initialized():
        connect()
    nodes = discover_nodes(probe=True)
    check_placement(cfg, nodes)  # fail before any work: a type with no node, a preset too big for its nodes
    print(f"cluster: {len(nodes)} nodes: " + ", ".join(
        f"{n.label} ({n.hardware.gpu_kinds if n.hardware and n.hardware.gpus else 'no GPU'}, "
        f"meters: {'+'.join(n.hardware.meters) if n.hardware else '?'})" for n in nodes), flush=True)
    store = TrialStore(paths(cfg)["store"])
    # progress.json mirrors the live view for another process (`llm-energy watch OUT`, `make demo`)
    with SweepView(live=live, title="llm-energy cluster sweep", log_every_s=5,
                   mirror=Path(cfg.out) / "progress.json") as view:
        rep = run_cluster_sweep(cfg, store, on_tick=view.update, nodes=nodes)
    print(f"sweep: {rep.trials_written} trials, {rep.samples_written} samples written; actors: "
          + ", ".join(f"{k} on {v[:8]}" for k, v in rep.actors.items()), flush=True)
    for r in rep.requeued:
        print(f"requeued {r}")
    if rep.failed:
        raise UserError("sweep incomplete: " + "; ".join(rep.failed))


def fit(cfg: PipelineConfig) -> None:
    """Fit every deployment of the store with the default forms (chosen by held-out error)."""
    from llm_energy.fit.fits import save_fits
    from llm_energy.fit.forms import fit_deployments
    from llm_energy.report.tables import fits_table, stdout_console
    from llm_energy.trials.store import load_trials

    p = paths(cfg)
    fits = fit_deployments(load_trials([str(p["store"])]), source=str(p["store"]))
    save_fits(fits, p["fits"])
    con = stdout_console()
    con.print(fits_table(fits))
    for s in fits.skipped:
        con.print(f"skipped {s['deployment']}: {s['reason']}")
    con.print(f"wrote {p['fits']}")


def plan(cfg: PipelineConfig) -> None:
    p = paths(cfg)
    if cfg.planner is None:
        print("no planner section: skipping the plan")
        return
    from llm_energy.fit.fits import deployment_key, load_fits

    fits = load_fits(p["fits"])
    entries = []
    for d in cfg.planner.deployments:
        batch = cfg.sweep.batch[0]
        key = deployment_key(d.model, d.node_type, 0, cfg.node_types[d.node_type].backend, batch)
        match = [k for k in fits.deployments if k.startswith(f"{d.model}@{d.node_type}") and k.endswith(
            f"/{cfg.node_types[d.node_type].backend}/b{batch}")]
        if not match:
            raise UserError(f"{cfg.source}: planner deployment {d.name!r}: no fit {key!r} in {p['fits']}")
        e = {"name": d.name, "fit": match[0], "accuracy": d.accuracy}
        for k in ("nodes", "hours", "slo_s"):
            if getattr(d, k) is not None:
                e[k] = getattr(d, k)
        entries.append(e)
    p["deploy"].write_text(yaml.safe_dump({"deployments": entries}))
    if cfg.workload.path:
        wl = cfg.workload.path
    else:
        wl = str(p["workload"])
        if cli(["workload", "synth", "--kind", cfg.workload.synth, "--n", str(cfg.workload.n), "--seed",
                str(cfg.workload.seed), "--out", wl]) != 0:
            raise UserError("workload synth failed")
    if cli(["plan", "--fits", str(p["fits"]), "--deployments", str(p["deploy"]), "--workload", wl,
            "--zeta", str(cfg.planner.zeta), "--min-share", str(cfg.planner.min_share), "--solver",
            cfg.planner.solver, "--out", str(p["plan"])]) != 0:
        raise UserError("plan failed")


def report(cfg: PipelineConfig) -> None:
    """The Markdown report with plots, from the store and the fits of the fit step."""
    from llm_energy.fit.fits import load_fits
    from llm_energy.report.markdown import write_report
    from llm_energy.trials.store import load_trials

    p = paths(cfg)
    store = str(p["store"])
    path = write_report(load_trials([store]), load_fits(p["fits"]), p["report"], stores=[store])
    print(f"report: {path}")
