"""``llm-energy plan`` (partition a workload across deployments) and ``llm-energy workload`` (make workloads).

``plan`` loads the inputs, predicts every query class on every deployment, solves (see
:mod:`llm_energy.plan.solve.planner`), compares with the baselines and writes ``PLAN_DIR/assignment.parquet``
(:data:`ASSIGNMENT_SCHEMA`), ``PLAN_DIR/summary.json`` and, with ``--pareto``, ``pareto.parquet`` +
``pareto.png``; with ``--per-query`` also ``assignment_per_query.parquet`` (:data:`PER_QUERY_SCHEMA`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.fits import load_fits_any
from llm_energy.io import json_default

ASSIGNMENT_SCHEMA = {
    "tin": pl.Int64, "tout": pl.Int64, "count": pl.Int64, "deployment": pl.String, "count_assigned": pl.Int64,
    "energy_j": pl.Float64, "runtime_s": pl.Float64,
}  # one row per (class, deployment) with count_assigned > 0; energy_j/runtime_s per query (predicted)
PER_QUERY_SCHEMA = {"query": pl.Int64, "tin": pl.Int64, "tout": pl.Int64, "deployment": pl.String}
PARETO_SCHEMA = {
    "zeta": pl.Float64, "status": pl.String, "objective": pl.Float64, "energy_j": pl.Float64,
    "accuracy": pl.Float64, "runtime_s": pl.Float64, "gap": pl.Float64, "chosen": pl.Boolean,
}
OBJECTIVE_TEXT = "sum over queries of zeta * E_K(q) / E_bar - (1 - zeta) * A_K * (tin + tout) / A_bar"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="partition a workload across deployments at least energy for the accuracy asked for",
        description="Decide which deployment serves which queries: minimise zeta*energy - (1-zeta)*accuracy "
                    "(both normalised) under share, SLO, capacity and budget constraints, exactly, with GLPK "
                    "(or HiGHS). Writes assignment.parquet and summary.json to --out.")
    p.add_argument("--fits", required=True,
                   help="FITS.json (llm-energy fit), or the paper's coefficients.json (Wilkins et al. 2024)")
    p.add_argument("--deployments", required=True, help="deployments YAML (name, fit, accuracy, nodes, hours, slo_s)")
    p.add_argument("--workload", required=True, help="queries: CSV, Parquet or JSONL with tin, tout columns")
    p.add_argument("--columns", help="column mapping tin=COL,tout=COL, or 'azure' (ContextTokens,GeneratedTokens)")
    p.add_argument("--only", help="plan over these deployments of the file only: NAME,NAME,...")
    p.add_argument("--zeta", type=float, default=None, help="weight of energy vs accuracy in [0, 1] (default 0.5)")
    p.add_argument("--pareto", action="store_true", help="also sweep zeta and write pareto.parquet + pareto.png")
    p.add_argument("--pareto-steps", type=int, default=11, help="zeta values in the sweep (default 11: 0, 0.1, .. 1)")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="minimise energy subject to a token-weighted mean accuracy >= X (units of A_K)")
    p.add_argument("--max-energy", type=float, default=None,
                   help="maximise accuracy subject to total predicted energy <= J")
    p.add_argument("--energy-budget", type=float, default=None, help="an energy budget in J for --zeta/--pareto")
    p.add_argument("--min-share", type=float, default=0.01,
                   help="each deployment gets at least EPS and at most 1-EPS of the queries (default 0.01)")
    p.add_argument("--solver", default="glpk", help="glpk (default) | highs")
    p.add_argument("--method", default="reduced",
                   help="reduced (default: exact column generation) | full (hand every class to the solver)")
    p.add_argument("--time-limit", type=float, default=60.0, help="solver time limit in seconds (default 60)")
    p.add_argument("--mip-gap", type=float, default=1e-4,
                   help="relative MIP gap when a MIP is needed (capacity, budget, accuracy floor; default 1e-4)")
    p.add_argument("--bins", type=int, default=None,
                   help="merge classes into N x N log-spaced (tin, tout) bins; the error bound is reported")
    p.add_argument("--negative-energy", default="clip",
                   help="negative predicted energy/runtime: clip (to 0, default) | keep | error")
    p.add_argument("--per-query", action="store_true", help="also write assignment_per_query.parquet")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--out", required=True, help="plan directory (created if missing)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of tables")
    p.set_defaults(func=cmd_plan)

    w = sub.add_parser("workload", help="make workloads (synthetic or resampled)",
                       description="Make workload files for `plan` (columns tin, tout).")
    wsub = w.add_subparsers(dest="workload_command", metavar="ACTION")
    s = wsub.add_parser("synth", help="a seeded synthetic workload",
                        description="A seeded synthetic workload: lognormal, grid (the paper's 9x9 grid), chat "
                                    "(heavy-tailed prompts), code (long contexts, short outputs) or mix.")
    s.add_argument("--kind", default="mix", help="lognormal | grid | chat | code | mix (default)")
    s.add_argument("--n", type=int, default=1000, help="queries (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-tokens", type=int, default=4096, help="cap on tin and tout (default 4096)")
    s.add_argument("--out", required=True, help="file to write: .parquet, .csv or .jsonl")
    s.set_defaults(func=cmd_workload_synth)
    r = wsub.add_parser("resample", help="resample a trace (with replacement) to N queries",
                        description="Draw N queries with replacement from a workload file (e.g. the Azure trace).")
    r.add_argument("file")
    r.add_argument("--columns", help="tin=COL,tout=COL or 'azure'")
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_workload_resample)
    w.set_defaults(func=lambda a: (w.print_help(), 0)[1])


# ---------------------------------------------------------------------------------------------------
# workload


def cmd_workload_synth(args: argparse.Namespace) -> int:
    from llm_energy.plan.workload import save_workload, synth_workload

    wl = synth_workload(args.kind, args.n, args.seed, args.max_tokens)
    path = save_workload(wl, args.out)
    print(f"wrote {wl.n_queries} queries ({args.kind}, seed {args.seed}) to {path}: tin median "
          f"{int(np.median(wl.tin))}, tout median {int(np.median(wl.tout))}")
    return 0


def cmd_workload_resample(args: argparse.Namespace) -> int:
    from llm_energy.plan.workload import Workload, load_workload, parse_column_mapping, save_workload

    if args.n < 1:
        raise bad_value("--n", args.n, "must be >= 1")
    src = load_workload(args.file, parse_column_mapping(args.columns))
    idx = np.random.default_rng(args.seed).integers(0, src.n_queries, args.n)
    wl = Workload(src.tin[idx], src.tout[idx], f"resample:{args.file}:n={args.n}:seed={args.seed}")
    path = save_workload(wl, args.out)
    print(f"wrote {wl.n_queries} queries resampled from {args.file} ({src.n_queries} queries) to {path}")
    return 0


# ---------------------------------------------------------------------------------------------------
# plan


@dataclass
class PlanRequest:
    """Everything ``plan`` needs, validated (see the CLI flags for meanings and units)."""

    fits: str
    deployments: str
    workload: str
    out: str
    columns: str | None = None
    only: list[str] | None = None
    zeta: float = 0.5
    mode: str = "zeta"  # zeta | min-accuracy | max-energy
    pareto_steps: int | None = None
    min_accuracy: float | None = None
    max_energy: float | None = None
    energy_budget: float | None = None
    min_share: float = 0.01
    solver: str = "glpk"
    method: str = "reduced"
    time_limit_s: float = 60.0
    mip_gap: float = 1e-4
    bins: int | None = None
    negative: str = "clip"
    per_query: bool = False
    seed: int = 0


@dataclass
class PlanOutcome:
    """The result of :func:`run_plan`: the summary (as written to summary.json) and output paths."""

    summary: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def request_from_args(args: argparse.Namespace) -> PlanRequest:
    modes = [n for n, v in (("--min-accuracy", args.min_accuracy), ("--max-energy", args.max_energy)) if v is not None]
    if len(modes) > 1:
        raise UserError("--min-accuracy and --max-energy exclude each other: choose one")
    if modes and args.zeta is not None:
        raise UserError(f"{modes[0]} sets the objective itself; drop --zeta")
    if modes and args.pareto:
        raise UserError(f"{modes[0]} and --pareto exclude each other")
    zeta = 0.5 if args.zeta is None else args.zeta
    if not (math.isfinite(zeta) and 0.0 <= zeta <= 1.0):
        raise bad_value("--zeta", zeta, "must be in [0, 1]")
    if not (math.isfinite(args.min_share) and 0.0 <= args.min_share <= 0.5):
        raise bad_value("--min-share", args.min_share, "must be in [0, 0.5]")
    if args.pareto and args.pareto_steps < 2:
        raise bad_value("--pareto-steps", args.pareto_steps, "must be >= 2")
    if args.min_accuracy is not None and not math.isfinite(args.min_accuracy):
        raise bad_value("--min-accuracy", args.min_accuracy, "must be a finite number")
    for flag, v in (("--max-energy", args.max_energy), ("--energy-budget", args.energy_budget)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise bad_value(flag, v, "must be a positive number of joules")
    if args.energy_budget is not None and args.max_energy is not None:
        raise UserError("--max-energy is already a budget; drop --energy-budget")
    if args.bins is not None and args.bins < 1:
        raise bad_value("--bins", args.bins, "must be >= 1")
    if not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise bad_value("--time-limit", args.time_limit, "must be > 0 seconds")
    if not 0 <= args.mip_gap < 1:
        raise bad_value("--mip-gap", args.mip_gap, "must be in [0, 1)")
    mode = "min-accuracy" if args.min_accuracy is not None else "max-energy" if args.max_energy is not None else "zeta"
    return PlanRequest(fits=args.fits, deployments=args.deployments, workload=args.workload, out=args.out,
                       columns=args.columns, only=[n.strip() for n in args.only.split(",")] if args.only else None,
                       zeta=1.0 if mode == "min-accuracy" else 0.0 if mode == "max-energy"
                       else zeta, mode=mode, pareto_steps=args.pareto_steps if args.pareto else None,
                       min_accuracy=args.min_accuracy, max_energy=args.max_energy, energy_budget=args.energy_budget,
                       min_share=args.min_share, solver=args.solver, method=args.method,
                       time_limit_s=args.time_limit, mip_gap=args.mip_gap, bins=args.bins,
                       negative=args.negative_energy, per_query=args.per_query, seed=args.seed)


def run_plan(req: PlanRequest) -> PlanOutcome:
    """Load, aggregate, predict, solve, compare and write: the whole ``plan`` command without printing."""
    from llm_energy.plan.baselines import baselines
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.solve.solvers import check_solver
    from llm_energy.plan.binning import binned_problem, binning_report, realise_bins
    from llm_energy.plan.costs import NEGATIVE_POLICIES, handle_negative, predict_matrix, problem_from_fits
    from llm_energy.plan.workload import aggregate, bin_classes, load_workload, parse_column_mapping

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if req.negative not in NEGATIVE_POLICIES:
        raise bad_value("--negative-energy", req.negative, f"expected one of {', '.join(NEGATIVE_POLICIES)}")
    if req.method not in ("reduced", "full"):
        raise bad_value("--method", req.method, "expected reduced or full")
    if Path(req.out).exists() and not Path(req.out).is_dir():  # before the solve, not after it
        raise bad_value("--out", req.out, "is a file; the plan is a directory")
    check_solver(req.solver)
    deps = load_deployments(req.deployments)
    if req.only:
        deps = deps.select(req.only, "--only")
    fits = load_fits_any(req.fits)
    wl = load_workload(req.workload, parse_column_mapping(req.columns))
    t["load"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    classes = aggregate(wl)
    t["aggregate"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    budget = req.max_energy if req.mode == "max-energy" else req.energy_budget
    problem, neg = problem_from_fits(classes, deps, fits, min_share=req.min_share, energy_budget_j=budget,
                                     accuracy_floor=req.min_accuracy, negative=req.negative, fits_source=req.fits)
    t["predict"] = time.perf_counter() - t1

    warnings: list[str] = []
    w = neg.warning(wl.n_queries)
    if w:
        warnings.append(w)
    no_hours = [d.name for d in deps.deployments if d.nodes is not None and d.hours is None]
    if no_hours:
        warnings.append(f"{req.deployments}: {', '.join(no_hours)}: nodes without hours sets no capacity limit "
                        f"(capacity = nodes x hours x 3600 s); add hours to limit them")
    t1 = time.perf_counter()
    solve_problem, binned, report = problem, None, None
    if req.bins:
        binned = bin_classes(classes, req.bins)
        btin, btout = np.rint(binned.bins.tin), np.rint(binned.bins.tout)
        be, br = predict_matrix(fits, deps, btin, btout, req.fits)
        be, br, _ = handle_negative(deps.names, btin, btout, binned.bins.count, be, br, req.negative)
        solve_problem = binned_problem(problem, binned.bins.count, binned.bins.tokens, be, br)
    planner = Planner(solve_problem, solver=req.solver, method=req.method, time_limit_s=req.time_limit_s,
                      mip_gap=req.mip_gap)
    zetas = list(np.linspace(0.0, 1.0, req.pareto_steps)) if req.pareto_steps else []
    if zetas and min(abs(z - req.zeta) for z in zetas) > 1e-12:
        zetas = sorted(zetas + [req.zeta])  # the chosen point is on the front it is shown on
    if zetas:
        planner.prepare(zetas + [req.zeta])
    sol = planner.solve(req.zeta)
    x = sol.x
    if binned is not None:
        x, moves = realise_bins(problem, binned.class_bin, sol.x, req.zeta)
        report = binning_report(problem, solve_problem, binned.class_bin, x, sol.x, req.zeta, req.bins, moves,
                                sol.duals)
        broken = problem.violations(x)
        if broken:
            warnings.append(f"--bins {req.bins}: the binned plan, checked on exact predictions, breaks "
                            f"{', '.join(broken)}")
    sweep = []
    if zetas:
        for z in zetas:
            s = planner.solve(float(z))
            xs = s.x if binned is None else realise_bins(problem, binned.class_bin, s.x, float(z))[0]
            sweep.append((float(z), s, problem.metrics(xs), problem.objective(xs, float(z))))
    t["solve"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    bl = baselines(problem, classes.query_class, req.seed)
    t["baselines"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    out = Path(req.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise bad_value("--out", req.out, f"cannot create it ({e.strerror or e})") from None
    files = {"assignment": str(out / "assignment.parquet"), "summary": str(out / "summary.json")}
    assignment_frame(classes.tin, classes.tout, classes.count, problem.names, x, problem.energy_j,
                     problem.runtime_s).write_parquet(files["assignment"])
    if req.per_query:
        files["assignment_per_query"] = str(out / "assignment_per_query.parquet")
        per_query_frame(wl.tin, wl.tout, classes.query_class, problem.names, x).write_parquet(
            files["assignment_per_query"])
    metrics = problem.metrics(x)
    summary = _summary(req, problem, sol, x, metrics, bl, neg, report, warnings, wl.n_queries, classes.n_classes)
    if sweep:
        frame = pareto_frame(sweep, req.zeta)
        files["pareto"] = str(out / "pareto.parquet")
        files["pareto_png"] = str(out / "pareto.png")
        frame.write_parquet(files["pareto"])
        plot_pareto(frame, metrics, req.zeta, files["pareto_png"])
        summary["pareto"] = frame.drop("chosen").to_dicts()
    summary["files"] = files
    t["write"] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0
    summary["timings_s"] = t
    Path(files["summary"]).write_text(json.dumps(summary, indent=1, default=json_default))
    return PlanOutcome(summary=summary, files=files)


def assignment_frame(tin, tout, count, names, x: np.ndarray, energy_j: np.ndarray, runtime_s: np.ndarray,
                     ) -> pl.DataFrame:
    """Per (class, deployment) with queries assigned: :data:`ASSIGNMENT_SCHEMA`."""
    c, k = np.nonzero(x)
    return pl.DataFrame({
        "tin": np.asarray(tin, dtype=np.int64)[c], "tout": np.asarray(tout, dtype=np.int64)[c],
        "count": np.asarray(count, dtype=np.int64)[c], "deployment": np.asarray(names, dtype=object)[k].tolist(),
        "count_assigned": x[c, k].astype(np.int64), "energy_j": energy_j[c, k], "runtime_s": runtime_s[c, k],
    }, schema=ASSIGNMENT_SCHEMA)


def per_query_deployment(query_class: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Deployment index of each query (file order): the queries of a class fill its deployments in order."""
    order = np.argsort(query_class, kind="stable")
    qc = query_class[order]
    starts = np.searchsorted(qc, np.arange(x.shape[0]))
    rank = np.arange(len(qc)) - starts[qc]
    cum = np.cumsum(x, axis=1)
    dep_sorted = (cum[qc] <= rank[:, None]).sum(axis=1)
    dep = np.empty_like(dep_sorted)
    dep[order] = dep_sorted
    return dep


def per_query_frame(tin, tout, query_class, names, x) -> pl.DataFrame:
    """One row per query (file order): :data:`PER_QUERY_SCHEMA`."""
    dep = per_query_deployment(query_class, x)
    names_s = pl.Series("deployment", list(names), dtype=pl.String)
    return pl.DataFrame({"query": np.arange(len(tin), dtype=np.int64), "tin": tin, "tout": tout,
                         "deployment": names_s.gather(dep)}, schema=PER_QUERY_SCHEMA)


def pareto_frame(sweep, chosen_zeta: float) -> pl.DataFrame:
    rows = [{"zeta": z, "status": s.status, "objective": obj, "energy_j": m["energy_j"], "accuracy": m["accuracy"],
             "runtime_s": m["runtime_s"], "gap": s.gap, "chosen": abs(z - chosen_zeta) < 1e-12}
            for z, s, m, obj in sweep]
    return pl.DataFrame(rows, schema=PARETO_SCHEMA)


def plot_pareto(frame: pl.DataFrame, chosen: dict[str, float], zeta: float, path: str) -> None:
    """Energy vs accuracy of the sweep, the chosen plan marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    e, a = frame["energy_j"].to_numpy() / 1e3, frame["accuracy"].to_numpy()
    ax.plot(e, a, "-o", color="tab:blue", ms=4, label="optimal plans (zeta sweep)")
    for z, ei, ai in zip(frame["zeta"].to_list(), e, a):
        ax.annotate(f"{z:.2g}", (ei, ai), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.4")
    ax.plot([chosen["energy_j"] / 1e3], [chosen["accuracy"]], "*", color="tab:red", ms=14,
            label=f"chosen plan (zeta={zeta:g})")
    if e.min() > 0 and e.max() / e.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("predicted energy (kJ)")
    ax.set_ylabel("token-weighted mean accuracy A_K")
    ax.set_title("Energy vs accuracy of optimal plans")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _summary(req, problem, sol, x, metrics, bl, neg, report, warnings, n_queries, n_classes) -> dict[str, Any]:
    per = x.sum(axis=0)
    deployments = {}
    for k, name in enumerate(problem.names):
        used = float((x[:, k] * problem.runtime_s[:, k]).sum())
        cap = float(problem.capacity_s[k])
        deployments[name] = {
            "count": int(per[k]), "share": float(per[k] / max(n_queries, 1)),
            "energy_j": float((x[:, k] * problem.energy_j[:, k]).sum()), "runtime_s": used,
            "accuracy": float(problem.accuracy[k]), "capacity_s": cap if math.isfinite(cap) else None,
            "slo_s": (problem.slo_s or (None,) * problem.n_deployments)[k],
        }
    if sol.status != "optimal":
        warnings.append(f"solver status {sol.status}: the plan is the best found, within {sol.gap:.3g} of the "
                        f"LP bound; raise --time-limit to prove optimality")
    if sol.lp_integral and _share_only(problem):
        formulation = ("LP: with share/SLO rows only this is a transportation problem (totally unimodular), so "
                       "the LP optimum is integral and no MIP is needed")
    elif sol.lp_integral:
        formulation = "LP: the LP optimum came out integral, so no MIP was needed"
    else:
        formulation = (f"MIP (capacity/budget/accuracy rows break total unimodularity): relative MIP gap "
                       f"{req.mip_gap:g}, proven gap to the LP bound {sol.gap:.3g}")
    return {
        "status": sol.status,
        "objective": sol.objective if report is None else problem.objective(x, req.zeta),
        "objective_per_query": (sol.objective if report is None else problem.objective(x, req.zeta)) / n_queries,
        "lp_bound": sol.lp_bound,
        "gap": sol.gap,
        "energy_j": metrics["energy_j"],
        "accuracy": metrics["accuracy"],
        "accuracy_per_query": metrics["accuracy_per_query"],
        "runtime_s": metrics["runtime_s"],
        "deployments": deployments,
        "solver": sol.solver,
        "solve_s": sol.solve_s,
        "build_s": sol.build_s,
        "method": sol.method,
        "formulation": formulation,
        "mip_gap": req.mip_gap,
        "time_limit_s": req.time_limit_s,
        "solver_calls": sol.rounds,
        "master_classes": sol.master_classes,
        "master_columns": sol.master_columns,
        "zeta": req.zeta,
        "mode": req.mode,
        "constraints": {
            "min_share": problem.min_share, "share_lo": int(problem.share_lo[0]), "share_hi": int(problem.share_hi[0]),
            "energy_budget_j": problem.energy_budget_j, "accuracy_floor": problem.accuracy_floor,
        },
        "normalisation": {
            "objective": OBJECTIVE_TEXT,
            "energy_j_per_query": problem.energy_scale,
            "accuracy_tokens_per_query": problem.accuracy_scale,
            "accuracy": "token-weighted mean of A_K: sum_q A_K(q) (tin+tout) / sum_q (tin+tout)",
        },
        "workload": {"source": req.workload, "queries": n_queries, "classes": n_classes},
        "negative_predictions": {
            "queries_energy": neg.queries_energy, "queries_runtime": neg.queries_runtime,
            "by_deployment": neg.by_deployment, "policy": neg.policy,
            "examples": [{"tin": a, "tout": b} for a, b in neg.examples],
        },
        "binning": None if report is None else report.to_dict(),
        "baselines": [{"name": b.name, "energy_j": b.energy_j, "accuracy": b.accuracy, "runtime_s": b.runtime_s,
                       "saved_pct": b.saved_pct(metrics["energy_j"]), "feasible": b.feasible,
                       "violations": list(b.violations)} for b in bl],
        "warnings": warnings,
    }


def _share_only(problem) -> bool:
    return (not np.isfinite(problem.capacity_s).any() and problem.energy_budget_j is None
            and problem.accuracy_floor is None)


def cmd_plan(args: argparse.Namespace) -> int:
    req = request_from_args(args)
    outcome = run_plan(req)
    s = outcome.summary
    if args.json:
        print(json.dumps(s, indent=1, default=json_default))
        return 0
    print_summary(s)
    return 0


def print_summary(s: dict[str, Any]) -> None:
    """The plan as rich tables: per deployment, baselines, warnings."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(width=max(Console().width, 110))
    cons = s["constraints"]
    what = (f"zeta={s['zeta']:g}" if s["mode"] == "zeta" else
            f"least energy with accuracy >= {cons['accuracy_floor']:g}" if s["mode"] == "min-accuracy" else
            f"most accuracy with energy <= {cons['energy_budget_j']:g} J")
    tab = Table(title=f"plan ({what}): {s['status']}, {s['solver']} {s['solve_s']:.2f} s in "
                      f"{s['solver_calls']} solver call(s)")
    for c in ("deployment", "A_K", "queries", "share", "energy kJ", "runtime s"):
        tab.add_column(c, justify="left" if c == "deployment" else "right")
    for name, d in s["deployments"].items():
        tab.add_row(escape(name), f"{d['accuracy']:g}", f"{d['count']}", f"{100 * d['share']:.1f}%",
                    f"{d['energy_j'] / 1e3:.2f}", f"{d['runtime_s']:.1f}")
    tab.add_row("total", f"{s['accuracy']:.2f}", f"{s['workload']['queries']}", "100%", f"{s['energy_j'] / 1e3:.2f}",
                f"{s['runtime_s']:.1f}", style="bold")
    con.print(tab)
    bt = Table(title="baselines (same predictions)")
    for c in ("baseline", "energy kJ", "accuracy", "runtime s", "plan saves", "meets constraints"):
        bt.add_column(c, justify="left" if c in ("baseline", "meets constraints") else "right")
    for b in s["baselines"]:
        bt.add_row(escape(b["name"]), f"{b['energy_j'] / 1e3:.2f}", f"{b['accuracy']:.2f}", f"{b['runtime_s']:.1f}",
                   f"{b['saved_pct']:.1f}%", "yes" if b["feasible"] else escape("no: " + ", ".join(b["violations"])))
    con.print(bt)
    if s.get("binning"):
        b = s["binning"]
        con.print(f"binning: {b['classes']} classes -> {b['bin_classes']} bins; objective within "
                  f"{b['bound']:.4g} ({100 * b['bound_rel']:.3g}%) of the exact optimum")
    if s.get("pareto"):
        pt = Table(title="Pareto sweep")
        for c in ("zeta", "energy kJ", "accuracy", "status"):
            pt.add_column(c, justify="right")
        for r in s["pareto"]:
            pt.add_row(f"{r['zeta']:.2f}", f"{r['energy_j'] / 1e3:.2f}", f"{r['accuracy']:.3f}", r["status"])
        con.print(pt)
    for w in s["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}")
    con.print(escape(f"wrote {', '.join(s['files'].values())}"))
