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
    for c in ("deployment", "A_K", "queries", "share", "energy kJ", "runtime s"):
        tab.add_column(c, justify="left" if c == "deployment" else "right")
    for name, d in s.deployments.items():
        tab.add_row(escape(name), f"{d.accuracy:g}", f"{d.count}", f"{100 * d.share:.1f}%",
                    f"{d.energy_j / 1e3:.2f}", f"{d.runtime_s:.1f}")
    tab.add_row("total", f"{s.accuracy:.2f}", f"{s.workload.queries}", "100%", f"{s.energy_j / 1e3:.2f}",
                f"{s.runtime_s:.1f}", style="bold")
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


def plot_pareto(s: PlanSummary, path: str) -> None:
    """Energy vs accuracy of the sweep (``s.pareto``), the chosen plan starred; a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    e = np.array([pt.energy_j for pt in s.pareto]) / 1e3
    a = np.array([pt.accuracy for pt in s.pareto])
    ax.plot(e, a, "-o", color="tab:blue", ms=4, label="optimal plans (zeta sweep)")
    for pt, ei, ai in zip(s.pareto, e, a):
        ax.annotate(f"{pt.zeta:.2g}", (ei, ai), textcoords="offset points", xytext=(4, -10), fontsize=7, color="0.4")
    ax.plot([s.energy_j / 1e3], [s.accuracy], "*", color="tab:red", ms=14, label=f"chosen plan (zeta={s.zeta:g})")
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
