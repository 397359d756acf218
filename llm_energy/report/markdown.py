"""Reports: Markdown plus PNG figures (matplotlib, Agg) of stores, their fits, a plan and a route.

Figures: measured vs predicted per deployment (log-log, with the 1:1 line), the relative residual of
the chosen energy model over the (tin, tout) grid per deployment, J/token against tout
(:mod:`~llm_energy.report.plots`); energy per node and per deployment and one trial's power trace
(:mod:`~llm_energy.report.energy`); the plan's shares, energy and baselines and its Pareto front
(:mod:`~llm_energy.report.plan_section`). One colour per deployment in every figure, a red ESTIMATE
mark on every figure showing estimated energy (:mod:`~llm_energy.report.style`), carbon beside energy
given a grid intensity (:mod:`~llm_energy.report.carbon`). docs/report.md describes it all. The
report fits nothing: its caller passes the trials and a FitsFile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError
from llm_energy.fit.fits import FitsFile, deployment_key_expr
from llm_energy.io import write_text_atomic
from llm_energy.report.carbon import GridIntensity
from llm_energy.report.energy import (
    energy_markdown,
    per_deployment,
    per_node,
    pick_trace_trial,
    plot_energy,
    plot_trace,
    trace_samples,
    usable,
    with_window_energy,
)
from llm_energy.report.plan_section import load_route, plan_markdown, plot_pareto_front, plot_plan, route_markdown
from llm_energy.report.plots import estimated, plot_j_per_token, plot_measured_vs_predicted, plot_residual_heatmaps
from llm_energy.report.style import Palette, figure_lines, is_estimate
from llm_energy.report.tables import candidate_rows, fit_rows


def _measured(df: pl.DataFrame, fits: FitsFile) -> pl.DataFrame:
    """Measured trials per deployment key, with the chosen models' predictions."""
    df = df.filter(~pl.col("warmup")).with_columns(
        pl.coalesce("tin_actual", "tin").alias("_tin"), pl.coalesce("tout_actual", "tout").alias("_tout"),
        deployment_key_expr().alias("_key"), deployment_key_expr(pool_batch=True).alias("_key_pooled"))
    out = []
    for key, d in fits.deployments.items():
        g = df.filter(pl.col("_key_pooled" if d.batch == "*" else "_key") == key).drop("_key", "_key_pooled")
        if g.height == 0:
            continue
        i, o, b = g["_tin"].to_numpy(), g["_tout"].to_numpy(), g["batch"].to_numpy()
        out.append(g.with_columns(
            pl.lit(key).alias("deployment"),
            pl.Series("energy_pred", d.targets["energy_j"].predict(i, o, b)),
            pl.Series("runtime_pred", d.targets["runtime_s"].predict(i, o, b)),
        ))
    if not out:
        raise UserError("the fits match no trials in these stores")
    return pl.concat(out, how="diagonal_relaxed")


def _md_pct(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def fits_markdown(fits: FitsFile) -> str:
    lines = ["| deployment | target | form | n | R² (uncentered) | R² (centered) | held-out median | held-out p90 | paper form median | 90% PI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    p = _md_pct
    for d, t, m, paper in fit_rows(fits):
        st, cv, pi = m.stats, m.cv, m.interval
        lines.append(f"| {d.deployment} | {t} | {m.form} | {st.n if st.n is not None else '-'} | "
                     f"{f(st.r2_uncentered)} | {f(st.r2_centered)} | {p(cv.median if cv else None)} | "
                     f"{p(cv.p90 if cv else None)} | {p(paper.median) if paper else '-'} | "
                     f"{p(pi.q_lo if pi else None)} .. {p(pi.q_hi if pi else None)} |")
    return "\n".join(lines)


def candidates_markdown(fits: FitsFile) -> str:
    """Every candidate form's held-out median and p90 per (deployment, target), the chosen one marked."""
    from llm_energy.report.tables import eligibility

    lines = ["| deployment | target | form | held-out median | held-out p90 | sane | eligible | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for d, t, c in candidate_rows(fits):
        lines.append(f"| {d.deployment} | {t} | {c.form} | {_md_pct(c.median)} | {_md_pct(c.p90)} | "
                     f"{'yes' if c.sane else 'no'} | {eligibility(c, t)} | {'**chosen**' if c.chosen else ''} |")
    return "\n".join(lines)


def _deployments_markdown(m: pl.DataFrame) -> list[str]:
    summ = (m.group_by("deployment").agg(pl.len().alias("trials"), pl.col("energy_source").first(),
                                         pl.col("device").first(), (pl.col("energy_j") / (pl.col("tout") * pl.col("batch"))).median().alias("jpt"))
            .sort("deployment"))
    md = ["## Deployments", "", "| deployment | device | energy source | trials | median J/token |", "|---|---|---|---|---|"]
    return md + [f"| {r['deployment']} | {r['device']} | {r['energy_source']} | {r['trials']} | {r['jpt']:.3f} |"
                 for r in summ.iter_rows(named=True)]


def write_report(trials: pl.DataFrame, fits: FitsFile, out: str | Path, *, stores: list[str],
                 plan_dir: str | Path | None = None, route_dir: str | Path | None = None,
                 grid: GridIntensity | None = None, trace_trial: str | None = None) -> Path:
    """``out``/report.md and its figures for ``trials`` (:func:`llm_energy.trials.store.load_trials` of
    ``stores``, the directories the report names and reads power samples from) and their ``fits``;
    with ``plan_dir`` (a ``plan --out`` directory) the plan section, with ``route_dir`` (a ``route
    --out`` directory) the routing policies, with ``grid`` carbon beside energy; ``trace_trial``: the
    trial whose power trace is drawn (default: the measured trial with the most power samples).
    Returns the report's path."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the report directory ({e.strerror})") from None
    trusted, suspect = usable(trials)
    palette = Palette(sorted(fits.deployments))
    m = _measured(trusted, fits)
    figures = ["measured_vs_predicted.png", "residual_heatmap.png", "j_per_token.png"]
    plot_measured_vs_predicted(m, out / figures[0], palette)
    plot_residual_heatmaps(m, out / figures[1])
    plot_j_per_token(m, out / figures[2], palette)
    est = estimated(m)
    md = ["# llm-energy report", "", f"Stores: {', '.join(stores)}; {trials.filter(~pl.col('warmup')).height} "
          f"measured trials, {len(fits.deployments)} deployments.", ""]
    if suspect:
        md += [f"**Suspect trials:** {suspect} trials carry a quality flag (a meter reading that cannot be trusted); "
               "they are left out of every figure and sum below.", ""]
    if est:
        md += [f"**Estimated energy:** {', '.join(est)} ran where no power meter exists; their energy is CPU "
               "utilisation x TDP, an estimate, not a measurement. Every figure showing it carries a red "
               "ESTIMATE mark.", ""]
    if grid is not None:
        md += [f"**Carbon:** grid intensity {grid.describe()}. Measured energy takes the intensity of the hour "
               "each trial started in; predicted plans and routes take the mean (docs/report.md).", ""]
    md += _deployments_markdown(m) + [""]
    md += _energy_section(trusted, suspect, stores, out, palette, grid, trace_trial)
    if plan_dir is not None:
        md += _plan_section(plan_dir, out, palette, grid, fits)
    if route_dir is not None:
        md += route_markdown(load_route(route_dir), str(route_dir), grid)
    md += _fits_section(fits)  # last: the candidates table ends the deployment rows (tests read it so)
    md += ["## Fit plots", ""] + figure_lines(figures)
    return write_text_atomic(out / "report.md", "\n".join(md), what="report")


def _fits_section(fits: FitsFile) -> list[str]:
    md = ["", "## Fits", "", "Held-out error: relative error of K-fold cross-validation over cells; 90% PI: "
          "prediction interval as relative bounds.", "", fits_markdown(fits), ""]
    for s in fits.skipped:
        md.append(f"- skipped {s['deployment']}: {s['reason']}")
    return md + ["", "### Candidate forms", "", "Sane: non-negative and non-decreasing in tin and tout over 1..4096 "
                 "tokens (only sane forms can be chosen); eligible: made for the target (energy: the additive forms; "
                 "runtime: the floored ones) and, pooled over batch sizes, with a batch term.", "", candidates_markdown(fits), ""]


def _energy_section(trusted: pl.DataFrame, suspect: int, stores: list[str], out: Path, palette: Palette,
                    grid: GridIntensity | None, trace_trial: str | None) -> list[str]:
    """Per node and per deployment energy (and carbon), the energy figure and one trial's power trace."""
    df = with_window_energy(trusted, grid)
    palette.add(sorted(df["deployment"].unique().to_list()))
    md = energy_markdown(per_node(df), per_deployment(df), suspect)
    plot_energy(df, out / "energy.png", palette)
    md += ["", "![energy per node and deployment](energy.png)", "", "## Power trace", ""]
    trial = pick_trace_trial(df, trace_trial)
    samples = trace_samples(stores, trial, pad_s=max(0.5, 0.2 * trial.get("window_s", 0))) if trial else pl.DataFrame()
    if samples.height == 0:
        if trace_trial is not None:
            raise UserError(f"--trace-trial={trace_trial!r}: no power samples of this trial in {', '.join(stores)}")
        return md + ["No power samples in these stores (imported data keeps only each trial's energy).", ""]
    plot_trace(trial, samples, out / "power_trace.png", palette(trial["deployment"]))
    return md + [f"Trial {trial['trial_id']} ({trial['deployment']}, node {trial['node']}): every device's power "
                 "from the store's samples around its window (shaded).", "", "![power trace](power_trace.png)", ""]


def _plan_section(plan_dir: str | Path, out: Path, palette: Palette, grid: GridIntensity | None,
                  fits: FitsFile) -> list[str]:
    from llm_energy.plan.summary import PlanSummary

    s = PlanSummary.load(plan_dir)
    palette.add(s.deployments)
    est = sorted(k for k, d in fits.deployments.items() if is_estimate(d.energy_source))
    figures = ["plan.png"]
    plot_plan(s, out / "plan.png", palette, est)
    if s.pareto:
        figures.append("plan_pareto.png")
        plot_pareto_front(s, out / "plan_pareto.png", est)
    return plan_markdown(s, grid, figures)
