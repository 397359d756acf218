"""Report plots of the fits (matplotlib, Agg): measured vs predicted, relative residual heat maps, J per
token. Each takes the report's :class:`~llm_energy.report.style.Palette` (one colour per deployment
in every figure) and is marked where a deployment's energy is an estimate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.report.style import Palette, finish, is_estimate
from llm_energy.report.style import plt as _plt
from llm_energy.report.style import short as _short


def estimated(m: pl.DataFrame, by: str = "deployment") -> list[str]:
    """The values of ``by`` whose energy is an estimate, sorted (what a figure's estimate mark names)."""
    if m.height == 0:
        return []
    g = m.select(by, "energy_source").unique()
    return sorted({r[by] for r in g.iter_rows(named=True) if is_estimate(r["energy_source"])})


def plot_measured_vs_predicted(m: pl.DataFrame, path: Path, palette: Palette | None = None) -> None:
    palette = palette or Palette()
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (col, pred, unit) in zip(axes, (("energy_j", "energy_pred", "J"), ("runtime_s", "runtime_pred", "s"))):
        for (key,), g in m.group_by(["deployment"], maintain_order=True):
            ax.scatter(g[col], np.clip(g[pred].to_numpy(), 1e-6, None), s=10, alpha=0.7, label=_short(key),
                       color=palette(key))
        lo = max(1e-6, float(min(m[col].min(), m[pred].clip(1e-6).min())))
        hi = float(max(m[col].max(), m[pred].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel(f"measured {col} ({unit})"), ax.set_ylabel(f"predicted ({unit})")
        ax.set_title(f"{col}: measured vs predicted (chosen form)")
    axes[0].legend(fontsize=6, loc="upper left")
    finish(fig, path, estimated(m))


def plot_residual_heatmaps(m: pl.DataFrame, path: Path) -> None:
    plt = _plt()
    keys = m["deployment"].unique(maintain_order=True).to_list()
    n = len(keys)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.5 * rows), squeeze=False)
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
        ax.set_title(_short(key), fontsize=7, color=_title_colour(m, key))
        fig.colorbar(im, ax=ax, label="(pred - meas) / meas")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("energy: relative residual of the chosen form (in-sample)")
    finish(fig, path, estimated(m))


def _title_colour(m: pl.DataFrame, key: str) -> str:
    return "tab:red" if key in estimated(m.filter(pl.col("deployment") == key)) else "black"


def plot_j_per_token(m: pl.DataFrame, path: Path, palette: Palette | None = None) -> None:
    palette = palette or Palette()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    g = (m.with_columns((pl.col("energy_j") / (pl.col("tout") * pl.col("batch"))).alias("jpt"))
         .group_by("deployment", "tout").agg(pl.col("jpt").median()).sort("tout"))
    for (key,), d in g.group_by(["deployment"], maintain_order=True):
        ax.plot(d["tout"], d["jpt"], marker="o", ms=3, label=_short(key), color=palette(key))
    ax.set_xscale("log", base=2), ax.set_yscale("log")
    ax.set_xlabel("output tokens (tout)"), ax.set_ylabel("J per output token (median over tin)")
    ax.set_title("energy per generated token")
    ax.legend(fontsize=6)
    finish(fig, path, estimated(m))
