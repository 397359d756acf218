"""The report's plan and route sections: read a plan directory (``summary.json``, by
:class:`~llm_energy.plan.summary.PlanSummary`) and a route directory (its ``summary.json``'s
``policies``), write their tables and figures, with carbon beside energy given a grid intensity.

A plan's or route's energy is *predicted* for a workload that is tied to no clock time, so its carbon
uses the grid's mean intensity (a constant is its own mean); with an hourly series the plan's range
over the series' cleanest and dirtiest hours is given too. Plan figures carry the estimate mark when
any deployment of the report's fits was fitted on estimated energy (the plan's summary does not say
which fit each of its deployments used).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from llm_energy.errors import UserError
from llm_energy.report.carbon import GridIntensity, grams_co2e
from llm_energy.report.style import (
    BASELINE_COLOUR,
    PLAN_COLOUR,
    Palette,
    figure_lines,
    finish,
    label_points,
    layout,
    plt,
    save,
    short,
)

ROUTE_KEYS = ("energy_j", "idle_energy_j", "total_energy_j", "accuracy", "latency_p50_s", "latency_p99_s",
              "wait_p99_s", "slo_violations")


def _kj(j) -> str:
    return "-" if j is None else f"{j / 1e3:.2f}"


def _co2(j, grid: GridIntensity | None) -> str:
    if grid is None or j is None:
        return ""
    g = float(grams_co2e(j, grid.mean))
    return f" | {g:.3g}" if g < 100 else f" | {g:,.0f}"


def plan_markdown(s, grid: GridIntensity | None, figures: list[str]) -> list[str]:
    """The plan section: per deployment, baselines, the Pareto front and the chosen point."""
    ch, cs = (" | gCO2e", "|---") if grid else ("", "")
    md = ["## Plan", "", f"{s.status} plan ({s.mode}, zeta={s.zeta:g}) of {s.workload.queries} queries "
          f"({s.workload.classes} classes) from {s.workload.source}; {s.solver}, proven gap {s.gap:.3g}.", ""]
    if grid is not None and grid.hourly:
        md += [f"Carbon at the series' mean intensity, {grid.mean:.1f} gCO2e/kWh ({grid.describe()}); the plan "
               f"would emit {float(grams_co2e(s.energy_j, grid.low)):.3g} .. {float(grams_co2e(s.energy_j, grid.high)):.3g} "
               "gCO2e if run at the cleanest or the dirtiest hour.", ""]
    elif grid is not None:
        md += [f"Carbon at {grid.describe()}.", ""]
    md += [f"| deployment | A_K | queries | share | energy kJ{ch} | runtime s |", f"|---|---|---|---|---{cs}|---|"]
    for name, d in s.deployments.items():
        md.append(f"| {name} | {d.accuracy:g} | {d.count} | {100 * d.share:.1f}% | {_kj(d.energy_j)}"
                  f"{_co2(d.energy_j, grid)} | {d.runtime_s:.1f} |")
    md.append(f"| **total** | {s.accuracy:.2f} | {s.workload.queries} | 100% | {_kj(s.energy_j)}{_co2(s.energy_j, grid)} "
              f"| {s.runtime_s:.1f} |")
    md += ["", "### Baselines (same predictions)", "",
           f"| baseline | energy kJ{ch} | accuracy | plan saves | meets constraints |", f"|---|---{cs}|---|---|---|"]
    for b in s.baselines:
        md.append(f"| {b.name} | {_kj(b.energy_j)}{_co2(b.energy_j, grid)} | {b.accuracy:.2f} | {b.saved_pct:.1f}% | "
                  + ("yes" if b.feasible else "no: " + ", ".join(b.violations)) + " |")
    if s.pareto:
        md += ["", "### Pareto front (zeta sweep)", "", f"| zeta | energy kJ{ch} | accuracy | status | |",
               f"|---|---{cs}|---|---|---|"]
        for pt in s.pareto:
            mark = "**chosen**" if abs(pt.zeta - s.zeta) < 1e-12 else ""
            md.append(f"| {pt.zeta:.2f} | {_kj(pt.energy_j)}{_co2(pt.energy_j, grid)} | {pt.accuracy:.3f} | {pt.status} | {mark} |")
    else:
        md += ["", "No Pareto front: the plan was made without `--pareto`."]
    return md + [""] + figure_lines(figures)


def plot_plan(s, path: Path, palette: Palette, estimate: Sequence[str]) -> None:
    """Shares and predicted energy per deployment; the plan against its baselines."""
    p = plt()
    fig, (a1, a2, a3) = p.subplots(1, 3, figsize=(12, 3.9), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    names = list(s.deployments)
    cols = [palette(n) for n in names]
    a1.bar(range(len(names)), [100 * s.deployments[n].share for n in names], color=cols)
    a2.bar(range(len(names)), [s.deployments[n].energy_j / 1e3 for n in names], color=cols)
    for ax, title in ((a1, "share of queries (%)"), (a2, "predicted energy (kJ)")):
        ax.set_xticks(range(len(names)), [short(n, 20) for n in names], rotation=20, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    rows = [("plan", s.energy_j, True)] + [(b.name, b.energy_j, b.feasible) for b in s.baselines]
    y = np.arange(len(rows))[::-1]
    a3.barh(y, [r[1] / 1e3 for r in rows], color=[PLAN_COLOUR] + [BASELINE_COLOUR] * (len(rows) - 1))
    for yi, (_, e, ok) in zip(y, rows):
        a3.annotate("" if ok else " infeasible", (e / 1e3, yi), va="center", fontsize=6, color="0.3")
    a3.set_yticks(y, [short(r[0], 24) for r in rows], fontsize=7)
    a3.set_xlim(0, 1.2 * max(r[1] for r in rows) / 1e3 or 1)
    a3.set_title("plan vs baselines: predicted energy (kJ)", fontsize=9)
    finish(fig, path, estimate)


def plot_pareto_front(s, path: str | Path, estimate: Sequence[str] = ()) -> None:
    """Energy vs accuracy of the zeta sweep (``s.pareto``), the chosen plan starred, each point labelled
    with its zeta where a label fits (points at one place share a label; no two labels overlap)."""
    p = plt()
    fig, ax = p.subplots(figsize=(6.4, 4.4))
    e = np.array([pt.energy_j for pt in s.pareto]) / 1e3
    a = np.array([pt.accuracy for pt in s.pareto])
    ax.plot(e, a, "-o", color="tab:blue", ms=4, label="optimal plans (zeta sweep)")
    ax.plot([s.energy_j / 1e3], [s.accuracy], "*", color=PLAN_COLOUR, ms=14, label=f"chosen plan (zeta={s.zeta:g})")
    if e.min() > 0 and e.max() / e.min() > 20:
        ax.set_xscale("log")
    ax.margins(0.12)
    ax.set_xlabel("predicted energy (kJ)"), ax.set_ylabel("token-weighted mean accuracy A_K")
    ax.set_title("Energy vs accuracy of optimal plans (labels: zeta)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    layout(fig, estimate)
    label_points(ax, e, a, [f"{pt.zeta:.2g}" for pt in s.pareto])
    save(fig, path, estimate)


def load_route(route_dir: str | Path) -> dict[str, dict]:
    """``policies`` of a route directory's summary.json (a UserError naming the file if it has none)."""
    p = Path(route_dir)
    p = p / "summary.json" if p.is_dir() else p
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: no such file (--route)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{p}: not a route summary ({type(e).__name__}: {e})") from None
    pol = doc.get("policies") if isinstance(doc, dict) else None
    if not isinstance(pol, dict) or not all(isinstance(v, dict) for v in pol.values()):
        raise UserError(f"{p}: policies={type(pol).__name__ if pol is not None else 'missing'}: not a route summary "
                        "(expected policies: {name: {energy_j, ...}})")
    return pol


def route_markdown(policies: dict[str, dict], source: str, grid: GridIntensity | None) -> list[str]:
    """The route section: per policy, energy (active, idle, total), carbon, accuracy and latency."""
    def num(v, fmt):
        return "-" if not isinstance(v, (int, float)) or isinstance(v, bool) else format(v, fmt)

    ch, cs = (" | gCO2e", "|---") if grid else ("", "")
    md = ["## Online routing", "", f"Policies of {source} (simulated on the trace; energy predicted from the fits"
          + (f"; carbon at {grid.mean:.1f} gCO2e/kWh, the grid's mean" if grid else "") + ").", "",
          f"| policy | energy kJ | idle kJ | total kJ{ch} | accuracy | p50 latency s | p99 latency s | p99 wait s | SLO violations |",
          f"|---|---|---|---{cs}|---|---|---|---|---|"]
    for name, m in policies.items():
        tot = m.get("total_energy_j")
        md.append(f"| {name} | {num((m.get('energy_j') or 0) / 1e3, '.2f') if 'energy_j' in m else '-'} | "
                  f"{num((m.get('idle_energy_j') or 0) / 1e3, '.2f') if 'idle_energy_j' in m else '-'} | "
                  f"{num(tot / 1e3, '.2f') if isinstance(tot, (int, float)) else '-'}"
                  f"{_co2(tot if isinstance(tot, (int, float)) else None, grid) or (' | -' if grid else '')} | "
                  f"{num(m.get('accuracy'), '.2f')} | {num(m.get('latency_p50_s'), '.3g')} | "
                  f"{num(m.get('latency_p99_s'), '.3g')} | {num(m.get('wait_p99_s'), '.3g')} | "
                  f"{num(m.get('slo_violations'), 'g')} |")
    return md + [""]
