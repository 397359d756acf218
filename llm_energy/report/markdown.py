"""Reports: Markdown plus PNG plots (matplotlib, Agg) of stores and their fits.

Plots: measured vs predicted per deployment (log-log, with the 1:1 line), the relative residual of
the chosen energy model over the (tin, tout) grid as a heat map per deployment, J/token against tout
per deployment, and the fits table. Every deployment whose energy is an estimate is marked so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError
from llm_energy.fit.fits import FitsFile, load_fits
from llm_energy.trials.schema import SOURCE_ESTIMATE


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _measured(df: pl.DataFrame, fits: FitsFile) -> pl.DataFrame:
    """Measured trials per deployment key, with the chosen models' predictions."""
    df = df.filter(~pl.col("warmup")).with_columns(
        pl.coalesce("tin_actual", "tin").alias("_tin"), pl.coalesce("tout_actual", "tout").alias("_tout"))
    out = []
    for key, d in fits.deployments.items():
        sel = (pl.col("model") == d.model) & (pl.col("node_type") == d.node_type) & (pl.col("backend") == d.backend)
        if d.batch != "*":
            sel &= pl.col("batch") == int(d.batch)
        g = df.filter(sel & (pl.col("n_gpus").fill_null(0) == d.n_gpus))
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


def _short(key: str) -> str:
    return key if len(key) <= 48 else key[:45] + "..."


def plot_measured_vs_predicted(m: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (col, pred, unit) in zip(axes, (("energy_j", "energy_pred", "J"), ("runtime_s", "runtime_pred", "s"))):
        for (key,), g in m.group_by(["deployment"], maintain_order=True):
            ax.scatter(g[col], np.clip(g[pred].to_numpy(), 1e-6, None), s=10, alpha=0.7, label=_short(key))
        lo = max(1e-6, float(min(m[col].min(), m[pred].clip(1e-6).min())))
        hi = float(max(m[col].max(), m[pred].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel(f"measured {col} ({unit})"), ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(f"{col}: measured vs predicted (chosen form)")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_residual_heatmaps(m: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    keys = m["deployment"].unique(maintain_order=True).to_list()
    n = len(keys)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys):
        g = (m.filter(pl.col("deployment") == key)
             .group_by("tin", "tout").agg(((pl.col("energy_pred") - pl.col("energy_j")) / pl.col("energy_j")).median().alias("r")))
        tins, touts = sorted(g["tin"].unique().to_list()), sorted(g["tout"].unique().to_list())
        grid = np.full((len(tins), len(touts)), np.nan)
        for r in g.iter_rows(named=True):
            grid[tins.index(r["tin"]), touts.index(r["tout"])] = r["r"]
        im = ax.imshow(grid, origin="lower", cmap="RdBu_r", vmin=-0.3, vmax=0.3, aspect="auto")
        ax.set_xticks(range(len(touts)), [str(t) for t in touts], rotation=90, fontsize=6)
        ax.set_yticks(range(len(tins)), [str(t) for t in tins], fontsize=6)
        ax.set_xlabel("tout"), ax.set_ylabel("tin")
        ax.set_title(_short(key), fontsize=7)
        fig.colorbar(im, ax=ax, label="(pred - meas) / meas")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("energy: relative residual of the chosen form (in-sample)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_j_per_token(m: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    g = (m.with_columns((pl.col("energy_j") / (pl.col("tout") * pl.col("batch"))).alias("jpt"))
         .group_by("deployment", "tout").agg(pl.col("jpt").median()).sort("tout"))
    for (key,), d in g.group_by(["deployment"], maintain_order=True):
        ax.plot(d["tout"], d["jpt"], marker="o", ms=3, label=_short(key))
    ax.set_xscale("log", base=2), ax.set_yscale("log")
    ax.set_xlabel("output tokens (tout)"), ax.set_ylabel("J per output token (median over tin)")
    ax.set_title("energy per generated token")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fits_markdown(fits: FitsFile) -> str:
    lines = ["| deployment | target | form | n | R² (uncentered) | R² (centered) | held-out median | held-out p90 | paper form median | 90% PI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            paper = next((c for c in m.candidates if c["form"] == "paper"), None)
            st, pi = m.stats, m.interval
            f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            p = lambda v: "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"  # noqa: E731
            lines.append(f"| {d.deployment} | {t} | {m.form} | {st.get('n', '-')} | {f(st.get('r2_uncentered'))} | "
                         f"{f(st.get('r2_centered'))} | {p(m.cv.get('median'))} | {p(m.cv.get('p90'))} | "
                         f"{p(paper['median']) if paper else '-'} | {p(pi.get('q_lo'))} .. {p(pi.get('q_hi'))} |")
    return "\n".join(lines)


def candidates_markdown(fits: FitsFile) -> str:
    """Every candidate form's held-out median and p90 per (deployment, target), the chosen one marked."""
    p = lambda v: "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"  # noqa: E731
    lines = ["| deployment | target | form | held-out median | held-out p90 | sane | chosen |", "|---|---|---|---|---|---|---|"]
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            for c in sorted(m.candidates, key=lambda c: (not c["chosen"], c["median"])):
                lines.append(f"| {d.deployment} | {t} | {c['form']} | {p(c['median'])} | {p(c['p90'])} | "
                             f"{'yes' if c['sane'] else 'no'} | {'**chosen**' if c['chosen'] else ''} |")
    return "\n".join(lines)


def write_report(dirs: list[str], out: str | Path, *, fits_path: str | None = None) -> Path:
    from llm_energy.cli.fit import load_trials
    from llm_energy.fit.forms import fit_deployments

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the report directory ({e.strerror})") from None
    df = load_trials(dirs)
    fits = load_fits(fits_path) if fits_path else fit_deployments(df, source=",".join(dirs))
    m = _measured(df, fits)
    plot_measured_vs_predicted(m, out / "measured_vs_predicted.png")
    plot_residual_heatmaps(m, out / "residual_heatmap.png")
    plot_j_per_token(m, out / "j_per_token.png")
    est = sorted(m.filter(pl.col("energy_source") == SOURCE_ESTIMATE)["deployment"].unique().to_list())
    md = [f"# llm-energy report", "", f"Stores: {', '.join(dirs)}; {df.filter(~pl.col('warmup')).height} measured trials, "
          f"{len(fits.deployments)} deployments.", ""]
    if est:
        md += [f"**Estimated energy:** {', '.join(est)} ran where no power meter exists; their energy is CPU "
               "utilisation x TDP, an estimate, not a measurement.", ""]
    summ = (m.group_by("deployment").agg(pl.len().alias("trials"), pl.col("energy_source").first(),
                                         pl.col("device").first(), (pl.col("energy_j") / (pl.col("tout") * pl.col("batch"))).median().alias("jpt"))
            .sort("deployment"))
    md += ["## Deployments", "", "| deployment | device | energy source | trials | median J/token |", "|---|---|---|---|---|"]
    md += [f"| {r['deployment']} | {r['device']} | {r['energy_source']} | {r['trials']} | {r['jpt']:.3f} |"
           for r in summ.iter_rows(named=True)]
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
