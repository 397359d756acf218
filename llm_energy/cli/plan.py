"""``llm-energy plan`` (partition a workload across deployments) and ``llm-energy workload`` (make workloads).

``plan`` maps its flags onto a :class:`~llm_energy.plan.run.PlanRequest` (checked there, once), runs
:func:`llm_energy.plan.run.run` (load, predict, solve, compare, write ``PLAN_DIR``: see
:mod:`llm_energy.plan.outputs`) and shows the :class:`~llm_energy.plan.summary.PlanSummary`: as tables
(:mod:`llm_energy.report.plan_views`) or, with ``--json``, as summary.json's text.
"""

from __future__ import annotations

import argparse

import numpy as np

from llm_energy.errors import bad_value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="partition a workload across deployments at least energy for the accuracy asked for",
        description="Decide which deployment serves which queries: minimise zeta*energy - (1-zeta)*accuracy "
                    "(both normalised) under share, SLO, capacity and budget constraints, exactly, with GLPK "
                    "(or HiGHS). Writes assignment.parquet and summary.json to --out.")
    p.add_argument("--fits", required=True,
                   help="FITS.json (llm-energy fit), or the paper's coefficients.json (Wilkins et al. 2024)")
    p.add_argument("--deployments", required=True, help="deployments YAML (name, fit, accuracy, nodes, hours, slo_s, "
                   "batch: queries served in one batch, planned at the fit's prediction at that batch: energy / batch "
                   "per query, the batch's runtime as latency, runtime / batch node-seconds of capacity; "
                   "docs/planner.md)")
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
    p.add_argument("--min-share", type=float, default=None,
                   help="each deployment gets at least EPS and at most 1-EPS of the queries (default 0.01; "
                        "0 with an inventory, where a deployment may be off: give it to keep the shares)")
    p.add_argument("--solver", default="glpk", help="glpk (default) | highs")
    p.add_argument("--method", default="reduced",
                   help="reduced (default: exact column generation) | full (hand every class to the solver)")
    p.add_argument("--time-limit", type=float, default=60.0, help="solver time limit in seconds (default 60)")
    p.add_argument("--mip-gap", type=float, default=1e-4,
                   help="relative MIP gap when a MIP is needed (capacity, budget, accuracy floor; default 1e-4; the summary reports the gap achieved)")
    p.add_argument("--bins", type=int, default=None,
                   help="merge classes into N x N log-spaced (tin, tout) bins; the error bound is reported")
    p.add_argument("--negative-energy", default="clip",
                   help="negative predicted energy/runtime: clip (to 0, default) | keep | error")
    p.add_argument("--per-query", action="store_true", help="also write assignment_per_query.parquet")
    p.add_argument("--out-of-range", default="warn", choices=("warn", "refuse"),
                   help="queries planned outside the range their deployment was fitted on: warn (default; counts "
                        "and energy share in the warnings and summary.json's fitted_range) | refuse. No query is ever "
                        "planned beyond a deployment's context length; those beyond every deployment's are left out "
                        "and counted (summary.json beyond_context), or with refuse refuse the plan")
    g = p.add_argument_group("fleet (deployments file with an inventory:)")
    g.add_argument("--window-s", type=float, default=None,
                   help="the window replicas are kept on for (default: the file's hours); on a timed trace, plan "
                        "consecutive windows of this length")
    g.add_argument("--time-column", default=None, help="arrival-time column (default TIMESTAMP, timestamp, arrival_s)")
    g.add_argument("--max-replica-change", type=int, default=None,
                   help="at most this many replicas switched on or off per deployment between windows")
    g.add_argument("--replica-change-j", type=float, default=0.0,
                   help="price of switching one replica on or off between windows, J (counted as energy)")
    g.add_argument("--utilisation", type=float, default=1.0,
                   help="share of the window a replica may be busy (default 1; e.g. 0.7 leaves queueing headroom)")
    g.add_argument("--max-wait-s", type=float, default=None,
                   help="add replicas until the M/G/c mean wait predicted from the runtime model is at most this")
    g.add_argument("--latency-limit-s", type=float, default=None,
                   help="the replay of a timed trace reports the share of queries within this latency")
    g.add_argument("--stage2-time-limit", type=float, default=10.0,
                   help="each window's second stage (LP + capacity MIP on the fixed replicas) stops after this many "
                        "seconds with its best plan (default 10; never more than --time-limit)")
    p.add_argument("--plan-on", default="point",
                   help="point (default) | upper: capacity rows (nodes x hours, or replicas) on the upper end of the "
                        "fits' prediction interval; summary.json's uncertainty reports the loads either way")
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


def request_from_args(args: argparse.Namespace):
    """The flags as a :class:`~llm_energy.plan.run.PlanRequest` (which checks them)."""
    from llm_energy.plan.run import PlanRequest

    return PlanRequest(fits=args.fits, deployments=args.deployments, workload=args.workload, out=args.out,
                       columns=args.columns,
                       only=tuple(n.strip() for n in args.only.split(",")) if args.only else None,
                       zeta=args.zeta, pareto_steps=args.pareto_steps if args.pareto else None,
                       min_accuracy=args.min_accuracy, max_energy=args.max_energy, energy_budget=args.energy_budget,
                       min_share=args.min_share, solver=args.solver, method=args.method,
                       time_limit_s=args.time_limit, stage2_time_limit_s=args.stage2_time_limit,
                       mip_gap=args.mip_gap, bins=args.bins,
                       negative=args.negative_energy, per_query=args.per_query, seed=args.seed,
                       window_s=args.window_s, time_column=args.time_column,
                       max_replica_change=args.max_replica_change, replica_change_j=args.replica_change_j,
                       utilisation=args.utilisation, max_wait_s=args.max_wait_s, latency_limit_s=args.latency_limit_s,
                       plan_on=args.plan_on,
                       out_of_range=args.out_of_range)


def cmd_plan(args: argparse.Namespace) -> int:
    from llm_energy.plan.run import run
    from llm_energy.report.plan_views import plot_pareto, print_summary

    outcome = run(request_from_args(args), plot_pareto=plot_pareto)
    if args.json:
        print(outcome.summary.to_json())
        return 0
    print_summary(outcome.summary)
    return 0
