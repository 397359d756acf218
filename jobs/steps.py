"""The pipeline's steps as functions (each job entrypoint runs one or all of them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config import PipelineConfig
from llm_energy.errors import UserError

if TYPE_CHECKING:
    from llm_energy.plan.deployments import DeploymentsFile
    from llm_energy.plan.workload import Workload


def paths(cfg: PipelineConfig) -> dict[str, Path]:
    out = Path(cfg.out)
    return {"store": out / "store", "fits": out / "fits.json", "workload": out / "workload.csv",
            "plan": out / "plan", "route": out / "route", "report": out / "report"}


def sweep(cfg: PipelineConfig, *, live: bool | None = None) -> None:
    import ray

    from cluster.connect import connect
    from cluster.collector import run_cluster_sweep
    from cluster.placement import check_placement
    from cluster.discovery import discover_nodes
    from llm_energy.cli.profile import print_prepare
    from llm_energy.report.live import SweepView
    from llm_energy.report.tables import stdout_console
    from llm_energy.trials.store import TrialStore

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
    print_prepare(stdout_console(), store.trials())  # compile time, apart from every trial's window
    if rep.failed:
        raise UserError("sweep incomplete: " + "; ".join(rep.failed))


def fit(cfg: PipelineConfig) -> None:
    """Fit every deployment of the store with the default forms (chosen by held-out error)."""
    from llm_energy.fit.fits import save_fits
    from llm_energy.fit.forms import fit_deployments
    from llm_energy.report.tables import fits_table, stdout_console
    from llm_energy.trials.schema import drop_suspect
    from llm_energy.trials.store import load_trials

    p = paths(cfg)
    trials, note = drop_suspect(load_trials([str(p["store"])]))  # as `llm-energy fit` does
    con = stdout_console()
    if note:
        con.print(note)
    if trials.is_empty():
        raise UserError(f"{p['store']}: every trial is flagged suspect (see `llm-energy show`): nothing to fit")
    fits = fit_deployments(trials, source=str(p["store"]))
    save_fits(fits, p["fits"])
    con.print(fits_table(fits))
    for s in fits.skipped:
        con.print(f"skipped {s['deployment']}: {s['reason']}")
    con.print(f"wrote {p['fits']}")


def deployments(cfg: PipelineConfig, fits) -> "DeploymentsFile":
    """The planner's deployments: each config entry bound to the fit its node type's sweep produced
    (any GPU count: a node type has one), as the planner reads them."""
    from llm_energy.fit.fits import DeploymentKey, find_fit
    from llm_energy.plan.deployments import Deployment, DeploymentsFile

    p = paths(cfg)
    out = []
    for d in cfg.planner.deployments:
        key = DeploymentKey(d.model, d.node_type, None, cfg.node_types[d.node_type].backend, cfg.sweep.batch[0])
        dep = find_fit(fits, key, source=f"{cfg.source}: planner deployment {d.name!r} in {p['fits']}")
        out.append(Deployment(name=d.name, fit=dep.deployment, accuracy=d.accuracy, nodes=d.nodes, hours=d.hours,
                              slo_s=d.slo_s, replicas=d.nodes or 1))  # route: one replica per node
    return DeploymentsFile(f"{cfg.source}: planner.deployments", tuple(out))


def workload(cfg: PipelineConfig, *, save: bool = False) -> "Workload":
    """The config's workload: its file, or a seeded synthetic one (the same queries every time; with
    ``save``, also written to OUT/workload.csv for the record)."""
    from llm_energy.plan.workload import load_workload, save_workload, synth_workload

    if cfg.workload.path:
        return load_workload(cfg.workload.path)
    wl = synth_workload(cfg.workload.synth, cfg.workload.n, cfg.workload.seed)
    if save:
        path = save_workload(wl, paths(cfg)["workload"])
        print(f"wrote {wl.n_queries} queries ({cfg.workload.synth}, seed {cfg.workload.seed}) to {path}")
    return wl


def plan(cfg: PipelineConfig) -> None:
    """The energy-optimal partition of the workload over the config's deployments (plan.run)."""
    if cfg.planner is None:
        print("no planner section: skipping the plan")
        return
    from llm_energy.fit.fits import load_fits
    from llm_energy.plan.run import PlanRequest, run
    from llm_energy.report.plan_views import plot_pareto, print_summary

    p = paths(cfg)
    fits = load_fits(p["fits"])
    req = PlanRequest(fits=fits, deployments=deployments(cfg, fits), workload=workload(cfg, save=True),
                      out=str(p["plan"]),
                      zeta=cfg.planner.zeta, min_share=cfg.planner.min_share, solver=cfg.planner.solver,
                      pareto_steps=cfg.planner.pareto_steps)
    print_summary(run(req, plot_pareto=plot_pareto).summary)


def route(cfg: PipelineConfig) -> None:
    """Online routing of the same workload on the same fits: every policy against the offline optimum.
    A workload file with timestamps is replayed as it arrived; a synthetic one arrives as a Poisson
    stream at 70% of the fleet's capacity (one replica per configured node)."""
    if cfg.planner is None:
        print("no planner section: skipping routing")
        return
    from llm_energy.cli.route import print_summary
    from llm_energy.fit.fits import load_fits
    from llm_energy.route.run import RouteRequest, run

    p = paths(cfg)
    fits = load_fits(p["fits"])
    timed = cfg.workload.path is not None
    req = RouteRequest(fits=fits, deployments=deployments(cfg, fits), trace=cfg.workload.path or workload(cfg),
                       out=str(p["route"]), policy="all", zeta=cfg.planner.zeta, min_share=cfg.planner.min_share,
                       solver=cfg.planner.solver, arrivals="trace" if timed else "poisson",
                       load=None if timed else 0.7, seed=cfg.workload.seed)
    print_summary(run(req).summary)


def report(cfg: PipelineConfig) -> None:
    """The Markdown report with plots, from the store and the fits of the fit step."""
    from llm_energy.fit.fits import load_fits
    from llm_energy.report.carbon import GridIntensity
    from llm_energy.report.markdown import write_report
    from llm_energy.trials.store import load_trials

    p = paths(cfg)
    store = str(p["store"])
    plan_dir = p["plan"] if (p["plan"] / "summary.json").exists() else None
    route_dir = p["route"] if (p["route"] / "summary.json").exists() else None
    path = write_report(load_trials([store]), load_fits(p["fits"]), p["report"], stores=[store], plan_dir=plan_dir,
                        route_dir=route_dir, grid=None if cfg.grid_gco2_per_kwh is None
                        else GridIntensity.of_constant(cfg.grid_gco2_per_kwh))
    print(f"report: {path}")
