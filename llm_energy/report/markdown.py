"""Reports: Markdown plus PNG plots (matplotlib, Agg) of stores and their fits.

Plots (:mod:`llm_energy.report.plots`): measured vs predicted per deployment (log-log, with the 1:1
line), the relative residual of the chosen energy model over the (tin, tout) grid as a heat map per
deployment, J/token against tout per deployment, and the fits table. Every deployment whose energy is
an estimate is marked so. The report fits nothing: its caller passes the trials and a FitsFile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError
from llm_energy.fit.fits import FitsFile, deployment_key_expr
from llm_energy.report.plots import plot_j_per_token, plot_measured_vs_predicted, plot_residual_heatmaps
from llm_energy.report.tables import candidate_rows, fit_rows
from llm_energy.trials.schema import SOURCE_ESTIMATE


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
    lines = ["| deployment | target | form | held-out median | held-out p90 | sane | chosen |", "|---|---|---|---|---|---|---|"]
    for d, t, c in candidate_rows(fits):
        lines.append(f"| {d.deployment} | {t} | {c.form} | {_md_pct(c.median)} | {_md_pct(c.p90)} | "
                     f"{'yes' if c.sane else 'no'} | {'**chosen**' if c.chosen else ''} |")
    return "\n".join(lines)


def _deployments_markdown(m: pl.DataFrame) -> list[str]:
    summ = (m.group_by("deployment").agg(pl.len().alias("trials"), pl.col("energy_source").first(),
                                         pl.col("device").first(), (pl.col("energy_j") / (pl.col("tout") * pl.col("batch"))).median().alias("jpt"))
            .sort("deployment"))
    md = ["## Deployments", "", "| deployment | device | energy source | trials | median J/token |", "|---|---|---|---|---|"]
    return md + [f"| {r['deployment']} | {r['device']} | {r['energy_source']} | {r['trials']} | {r['jpt']:.3f} |"
                 for r in summ.iter_rows(named=True)]


def write_report(trials: pl.DataFrame, fits: FitsFile, out: str | Path, *, stores: list[str]) -> Path:
    """``out``/report.md and its plots for ``trials`` (:func:`llm_energy.trials.store.load_trials` of
    ``stores``, the directories the report names) and their ``fits``; returns the report's path."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the report directory ({e.strerror})") from None
    m = _measured(trials, fits)
    plot_measured_vs_predicted(m, out / "measured_vs_predicted.png")
    plot_residual_heatmaps(m, out / "residual_heatmap.png")
    plot_j_per_token(m, out / "j_per_token.png")
    est = sorted(m.filter(pl.col("energy_source") == SOURCE_ESTIMATE)["deployment"].unique().to_list())
    md = ["# llm-energy report", "", f"Stores: {', '.join(stores)}; {trials.filter(~pl.col('warmup')).height} "
          f"measured trials, {len(fits.deployments)} deployments.", ""]
    if est:
        md += [f"**Estimated energy:** {', '.join(est)} ran where no power meter exists; their energy is CPU "
               "utilisation x TDP, an estimate, not a measurement.", ""]
    md += _deployments_markdown(m)
    md += ["", "## Fits", "", "Held-out error: relative error of K-fold cross-validation over cells; 90% PI: "
           "prediction interval as relative bounds.", "", fits_markdown(fits), ""]
    for s in fits.skipped:
        md.append(f"- skipped {s['deployment']}: {s['reason']}")
    md += ["", "### Candidate forms", "", "Sane: non-negative and non-decreasing in tin and tout over 1..4096 "
           "tokens (only sane forms can be chosen).", "", candidates_markdown(fits), ""]
    md += ["", "## Plots", "", "![measured vs predicted](measured_vs_predicted.png)", "",
           "![relative residuals](residual_heatmap.png)", "", "![J per token](j_per_token.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
