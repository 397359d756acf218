"""``llm-energy route``: replay arriving queries through the fleet under routing policies.

See :mod:`llm_energy.route` and docs/route.md. Writes DIR/queries.parquet, DIR/summary.json, plots.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from llm_energy.errors import bad_value

if TYPE_CHECKING:
    from llm_energy.route.summary import RouteSummary


HELP = "route arriving queries online (policies, trace-replay simulator, offline yardstick)"
DESCRIPTION = ("Replay a trace (or synthetic arrivals) through the deployments' replicas: a FIFO queue per deployment, "
               "replicas x max_batch slots, service time and energy from the fits, idle power for idle replicas. "
               "Compares routing policies with the planner's offline partition.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("route", help=HELP, description=DESCRIPTION)
    p.add_argument("--fits", required=True, help="FITS.json (llm-energy fit) or the paper's coefficients.json")
    p.add_argument("--deployments", required=True,
                   help="deployments YAML (as for plan; replicas and max_batch per deployment, default 1; "
                   "max_batch defaults to the deployment's batch where it has one)")
    p.add_argument("--trace", required=True,
                   help="queries with arrival times: CSV/Parquet/JSONL with tin,tout (or the Azure ContextTokens, "
                        "GeneratedTokens) and TIMESTAMP or arrival_s; with --arrivals poisson|gamma any workload file")
    p.add_argument("--policy", default="all",
                   help="offline | dual | greedy | greedy-queue | jsq | threshold | round-robin | random | only:NAME, "
                        "a comma list, or all (default); offline is always included as the yardstick")
    p.add_argument("--rate-scale", default="1",
                   help="compress time X times (2 = twice the arrival rate); a list 0.5,1,2,4 sweeps the rate")
    p.add_argument("--zeta", type=float, default=0.5, help="weight of energy vs accuracy in [0, 1] (as plan)")
    p.add_argument("--min-share", type=float, default=0.01, help="share bounds for offline/dual/threshold (as plan)")
    p.add_argument("--slo-s", type=float, default=None, help="end-to-end latency SLO in s (violations counted)")
    p.add_argument("--window-s", type=float, default=300.0, help="dual: re-solve the prices every W s (default 300)")
    p.add_argument("--history-windows", type=int, default=3,
                   help="dual: solve each LP on the last H windows' queries (default 3; 0: every query so far)")
    p.add_argument("--seed", type=int, default=0, help="random policy, offline interleaving, synthetic arrivals")
    p.add_argument("--columns", help="tin=COL,tout=COL[,arrival=COL], or 'azure'")
    p.add_argument("--arrivals", default="trace",
                   help="trace (the file's timestamps, default) | poisson | gamma (synthetic, at --rate)")
    p.add_argument("--rate", type=float, default=None, help="synthetic arrival rate, queries/s")
    p.add_argument("--load", type=float, default=None,
                   help="synthetic arrivals without --rate: the rate at which the fleet's slots would be this busy "
                        "with every query on its fastest deployment (e.g. 0.7)")
    p.add_argument("--cv", type=float, default=1.0, help="gamma arrivals: coefficient of variation of the gaps")
    p.add_argument("--idle-w", default=None,
                   help="idle power of a replica where the fits carry no idle_w: W, or NAME=W,NAME=W (default 0)")
    p.add_argument("--utilisation", default="0.9",
                   help="offline/dual load each deployment to at most this share of its slot-seconds over the "
                        "trace (default 0.9); 'none': no fleet capacity")
    p.add_argument("--queue-weight", type=float, default=1.0,
                   help="greedy-queue: cost per mean-runtime of predicted wait (default 1)")
    p.add_argument("--only", help="route over these deployments of the file only: NAME,NAME,...")
    p.add_argument("--solver", default="glpk", help="glpk (default) | highs, for offline and dual")
    p.add_argument("--time-limit", type=float, default=60.0, help="solver time limit per solve (s)")
    p.add_argument("--out-of-range", default="warn", choices=("warn", "refuse"),
                   help="queries routed outside the range their deployment was fitted on: warn (default; a table, "
                        "one warning and summary.json's fitted_range, per policy) | refuse (as plan). No policy routes "
                        "a query beyond a deployment's context length; those beyond every deployment's are not routed "
                        "and counted (summary.json beyond_context), or with refuse refuse the run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of tables")
    p.set_defaults(func=cmd_route)


def _utilisation(v: str) -> float | None:
    if str(v).lower() == "none":
        return None
    try:
        return float(v)
    except ValueError:
        raise bad_value("--utilisation", v, "must be a number in (0, 1] or 'none'") from None


def request_from_args(args: argparse.Namespace):
    from llm_energy.route.run import RouteRequest

    return RouteRequest(fits=args.fits, deployments=args.deployments, trace=args.trace, out=args.out,
                        policy=args.policy, rate_scale=args.rate_scale, zeta=args.zeta, min_share=args.min_share,
                        slo_s=args.slo_s, window_s=args.window_s, history_windows=args.history_windows, seed=args.seed, columns=args.columns,
                        arrivals=args.arrivals, rate=args.rate, load=args.load, cv=args.cv, idle_w=args.idle_w,
                        utilisation=_utilisation(args.utilisation), queue_weight=args.queue_weight,
                        solver=args.solver, time_limit_s=args.time_limit,
                        only=[n.strip() for n in args.only.split(",")] if args.only else None,
                        plots=not args.no_plots, out_of_range=args.out_of_range)


def cmd_route(args: argparse.Namespace) -> int:
    from llm_energy.route.run import run

    outcome = run(request_from_args(args))
    if args.json:
        print(outcome.summary.to_json())
        return 0
    print_summary(outcome.summary)
    return 0


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def print_summary(s: RouteSummary) -> None:
    """The comparison as rich tables: every policy at the first rate scale, then the rate sweep."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(width=max(Console().width, 130))
    tr, opt = s.trace, s.options
    tab = Table(title=f"route: {tr['queries']} queries, {tr['arrival_rate_per_s'] * s.rate_scale:.3g}/s "
                      f"(x{s.rate_scale:g}), zeta={opt['zeta']:g}, SLO {_f(opt['slo_s'], 'g')} s")
    cols = ("policy", "active MJ", "idle MJ", "total MJ", "accuracy", "p50 s", "p99 s", "wait p99 s",
            "SLO viol.", "regret %", "vs offline E %")
    for c in cols:
        tab.add_column(c, justify="left" if c == "policy" else "right")
    for name, m in s.policies.items():
        tab.add_row(escape(name), f"{m.energy_j / 1e6:.3f}", f"{m.idle_energy_j / 1e6:.3f}",
                    f"{m.total_energy_j / 1e6:.3f}", f"{m.accuracy:.2f}", f"{m.latency_p50_s:.3g}",
                    f"{m.latency_p99_s:.4g}", f"{m.wait_p99_s:.4g}", _f(m.slo_violations, "d"),
                    _f(m.regret_pct, ".2f"), _f(m.energy_vs_offline_pct, "+.2f"))
    con.print(tab)
    if s.sweep:
        st = Table(title="rate sweep: total MJ / p99 latency s / SLO violations")
        st.add_column("policy")
        for sc in s.sweep:
            st.add_column(f"x{sc.rate_scale:g} ({sc.arrival_rate_per_s:.3g}/s)", justify="right")
        for name in s.sweep[0].policies:
            st.add_row(escape(name), *[f"{sc.policies[name].total_energy_j / 1e6:.2f} / "
                                       f"{sc.policies[name].latency_p99_s:.4g} / "
                                       f"{_f(sc.policies[name].slo_violations, 'd')}" for sc in s.sweep])
        con.print(st)
    if s.fitted_range and any(r["outside"] or r["beyond_context"] for r in s.fitted_range.values()):
        con.print(_range_table(s.fitted_range, s.beyond_context))
    for w in s.warnings:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}")
    con.print(escape(f"wrote {', '.join(s.files.values())}"))


def _range_table(reports: dict[str, dict[str, Any]], beyond: dict[str, Any] | None = None):
    """Per policy: the queries it routed outside their deployment's fitted range, with their share of the
    predicted energy (fit.ranges.RangeReport, as plan reports). Its beyond-context counts are not shown:
    0 in route by construction (no policy routes a query past its deployment's context); the caption
    counts the queries beyond every deployment's context, which were not routed (``beyond``: summary.json
    ``beyond_context``)."""
    from rich.markup import escape
    from rich.table import Table

    unservable = (beyond or {}).get("unservable") or 0
    caption = (f"{unservable} of {beyond['queries']} queries beyond every context: not routed (beyond_context)"
               if unservable else None)
    t = Table(title="fitted range: queries the fits extrapolate to (per policy, as routed)", caption=caption)
    for c in ("policy", "queries", "outside range", "% energy", "fits without range"):
        t.add_column(c, justify="left" if c == "policy" else "right")
    for name, r in reports.items():
        t.add_row(escape(name), f"{r['queries']:.0f}", f"{r['outside']:.0f}", f"{100 * r['energy_share_outside']:.1f}",
                  escape(", ".join(r["unknown"])) or "-")
    return t
