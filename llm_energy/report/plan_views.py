"""How a plan is shown: the rich tables of ``llm-energy plan`` and the Pareto figure, both read from
a :class:`~llm_energy.plan.summary.PlanSummary` (so the CLI, a notebook and the demo show the same
thing from the same record, or from a summary.json read back with ``PlanSummary.load``)."""

from __future__ import annotations

from llm_energy.plan.summary import PlanSummary


def _objective_words(s: PlanSummary) -> str:
    if s.mode == "zeta":
        return f"zeta={s.zeta:g}"
    if s.mode == "min-accuracy":
        return f"least energy with accuracy >= {s.constraints.accuracy_floor:g}"
    return f"most accuracy with energy <= {s.constraints.energy_budget_j:g} J"


def print_summary(s: PlanSummary) -> None:
    """The plan as rich tables: per deployment, baselines, binning, the sweep, warnings, files."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(width=max(Console().width, 110))
    tab = Table(title=f"plan ({_objective_words(s)}): {s.status}, {s.solver} {s.solve_s:.2f} s in "
                      f"{s.solver_calls} solver call(s)")
    batched = any(d.batch != 1 for d in s.deployments.values())  # batch and node-seconds (runtime / batch)
    for c in ("deployment", "A_K", "queries", "share", "energy kJ", "runtime s") + (("batch", "node s") * batched):
        tab.add_column(c, justify="left" if c == "deployment" else "right")
    for name, d in s.deployments.items():
        extra = (f"{d.batch}", f"{d.node_s if d.node_s is not None else d.runtime_s:.1f}") if batched else ()
        tab.add_row(escape(name), f"{d.accuracy:g}", f"{d.count}", f"{100 * d.share:.1f}%",
                    f"{d.energy_j / 1e3:.2f}", f"{d.runtime_s:.1f}", *extra)
    total_node = sum(d.node_s if d.node_s is not None else d.runtime_s for d in s.deployments.values())
    tab.add_row("total", f"{s.accuracy:.2f}", f"{s.workload.queries}", "100%", f"{s.energy_j / 1e3:.2f}",
                f"{s.runtime_s:.1f}", *(("", f"{total_node:.1f}") if batched else ()), style="bold")
    con.print(tab)
    bt = Table(title="baselines (same predictions)")
    for c in ("baseline", "energy kJ", "accuracy", "runtime s", "plan saves", "meets constraints"):
        bt.add_column(c, justify="left" if c in ("baseline", "meets constraints") else "right")
    for b in s.baselines:
        bt.add_row(escape(b.name), f"{b.energy_j / 1e3:.2f}", f"{b.accuracy:.2f}", f"{b.runtime_s:.1f}",
                   f"{b.saved_pct:.1f}%", "yes" if b.feasible else escape("no: " + ", ".join(b.violations)))
    con.print(bt)
    if s.binning:
        b = s.binning
        con.print(f"binning: {b.classes} classes -> {b.bin_classes} bins; objective within "
                  f"{b.bound:.4g} ({100 * b.bound_rel:.3g}%) of the exact optimum")
    if s.fleet:
        _print_fleet(con, s)
    if s.pareto:
        pt = Table(title="Pareto sweep")
        for c in ("zeta", "energy kJ", "accuracy", "status"):
            pt.add_column(c, justify="right")
        for r in s.pareto:
            pt.add_row(f"{r.zeta:.2f}", f"{r.energy_j / 1e3:.2f}", f"{r.accuracy:.3f}", r.status)
        con.print(pt)
    for w in s.warnings:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}")
    con.print(escape(f"wrote {', '.join(s.files.values())}"))


def _print_fleet(con, s: PlanSummary) -> None:
    """An inventory plan: replicas (per window with --window-s), keep-on energy, the replay."""
    from rich.markup import escape
    from rich.table import Table

    f = s.fleet
    names = list(s.deployments)
    rows = s.windows or [{"index": "all", "queries": s.workload.queries, "replicas": f["replicas"], "changes": 0}]
    wt = Table(title=f"replicas per {f['window_s']:g} s window (utilisation {f['utilisation']:g}; "
                     f"{f['replica_changes']} change(s))")
    for c in ["window", "queries", *names, "changes"]:
        wt.add_column(escape(c), justify="right")
    for w in rows:
        wt.add_row(str(w["index"]), str(w["queries"]), *(str(w["replicas"][n]) for n in names), str(w["changes"]))
    con.print(wt)
    gap = "no bound (stage 1 on groups)" if f["gap"] is None else f"proven gap {f['gap']:.2g}"
    con.print(f"energy {s.energy_j / 1e6:.3f} MJ + keep-on {s.idle_energy_j / 1e6:.3f} MJ = "
              f"{f['energy_total_j'] / 1e6:.3f} MJ; {gap}")
    r = f.get("replay")
    if r:
        met = "" if r["met_pct"] is None else f", {r['met_pct']:.1f}% within {r['limit_s']:g} s"
        con.print(f"replay on the arrival times: latency p50 {r['latency_p50_s']:.2f} s, p95 "
                  f"{r['latency_p95_s']:.2f} s, p99 {r['latency_p99_s']:.2f} s{met}")


def plot_pareto(s: PlanSummary, path: str) -> None:
    """``plan``'s pareto.png: the report's front (the chosen plan starred, zeta labels that never overlap),
    so the plan directory and the report draw the same figure."""
    from llm_energy.report.plan_section import plot_pareto_front

    plot_pareto_front(s, path)
