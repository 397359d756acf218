"""Where the measured energy went: per node and per deployment (tables and a figure), with carbon when
a grid intensity is given, and the power trace of one trial.

A trial's *window energy* is ``energy_j * n_inner`` (``energy_j`` is per generation; the window ran
``n_inner`` of them): what its devices drew while it ran, warm-ups included. Suspect trials (a meter
reading that cannot be trusted, ``quality`` ``suspect:...``) are left out of every sum and counted.
Carbon of measured energy: each trial's window energy at the intensity of the hour it started
(:meth:`~llm_energy.report.carbon.GridIntensity.at`; a trial without a timestamp, as in imported data,
takes the series' mean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError
from llm_energy.fit.fits import deployment_key_expr
from llm_energy.report.carbon import GridIntensity, grams_co2e
from llm_energy.report.plots import estimated
from llm_energy.report.style import Palette, finish, is_estimate, plt, short


def usable(trials: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """(trials not flagged suspect, the number flagged)."""
    if "quality" not in trials.columns:
        return trials, 0
    bad = pl.col("quality").fill_null("ok").str.starts_with("suspect")
    return trials.filter(~bad), int(trials.select(bad.sum()).item())


def with_window_energy(trials: pl.DataFrame, grid: GridIntensity | None) -> pl.DataFrame:
    """Trials with ``deployment``, ``window_j`` (energy of the whole window), ``window_s`` and, given a
    grid, ``gco2_per_kwh`` (at the trial's start) and ``co2e_g``."""
    n = pl.col("n_inner").fill_null(1).cast(pl.Float64)
    df = trials.with_columns(deployment_key_expr().alias("deployment"), pl.col("node").fill_null("(unknown)"),
                             (pl.col("energy_j") * n).alias("window_j"), (pl.col("runtime_s") * n).alias("window_s"))
    if grid is None:
        return df
    ci = grid.at(df["t_start"].cast(pl.Float64).fill_null(np.nan).to_numpy(), what=df["trial_id"].to_list())
    return df.with_columns(pl.Series("gco2_per_kwh", ci), pl.Series("co2e_g", grams_co2e(df["window_j"].to_numpy(), ci)))


def _sums(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    aggs = [pl.len().alias("trials"), pl.col("window_s").sum(), pl.col("window_j").sum(),
            pl.col("energy_source").unique().sort().str.join(", ").alias("energy_source")]
    if "co2e_g" in df.columns:
        aggs.append(pl.col("co2e_g").sum())
    return df.group_by(by).agg(aggs).sort(by)


def per_node(df: pl.DataFrame) -> pl.DataFrame:
    return _sums(df, ["node", "node_type"]).with_columns((pl.col("window_j") / pl.col("window_s")).alias("mean_w"))


def per_deployment(df: pl.DataFrame) -> pl.DataFrame:
    jpt = (pl.col("energy_j") / (pl.col("tout_actual").fill_null(pl.col("tout")) * pl.col("batch"))).filter(~pl.col("warmup"))
    out = _sums(df, ["deployment"])
    extra = [jpt.median().alias("j_per_token")]
    if "co2e_g" in df.columns:
        extra.append((jpt * pl.col("gco2_per_kwh").filter(~pl.col("warmup")) / 3.6e3).median().alias("mg_per_token"))
    return out.join(df.group_by("deployment").agg(extra), on="deployment", how="left")


def _g(v) -> str:
    return "-" if v is None or not np.isfinite(v) else (f"{v:.3g}" if v < 100 else f"{v:,.0f}")


def energy_markdown(nodes: pl.DataFrame, deps: pl.DataFrame, suspect: int) -> list[str]:
    carbon = "co2e_g" in nodes.columns
    c_head, c_sep = (" | gCO2e", "|---") if carbon else ("", "")
    md = ["## Energy per node and per deployment", "",
          "Window energy of every trial (energy per generation x generations in the window, warm-ups included)"
          + (f"; {suspect} suspect trials left out" if suspect else "") + ".", "",
          f"| node | node type | energy source | trials | window time s | energy kJ | kWh | mean W{c_head} |",
          f"|---|---|---|---|---|---|---|---{c_sep}|"]
    for r in nodes.iter_rows(named=True):
        md.append(f"| {r['node']} | {r['node_type']} | {r['energy_source']} | {r['trials']} | {r['window_s']:.1f} | "
                  f"{r['window_j'] / 1e3:.2f} | {r['window_j'] / 3.6e6:.4f} | {r['mean_w']:.1f}"
                  + (f" | {_g(r['co2e_g'])} |" if carbon else " |"))
    md += ["", f"| deployment | energy source | trials | energy kJ | median J/token{' | gCO2e | median mgCO2e/token' if carbon else ''} |",
           f"|---|---|---|---|---{'|---|---' if carbon else ''}|"]
    for r in deps.iter_rows(named=True):
        md.append(f"| {r['deployment']} | {r['energy_source']} | {r['trials']} | {r['window_j'] / 1e3:.2f} | "
                  f"{_g(r['j_per_token'])}" + (f" | {_g(r['co2e_g'])} | {_g(r['mg_per_token'])} |" if carbon else " |"))
    return md


def plot_energy(df: pl.DataFrame, path: Path, palette: Palette) -> None:
    """Per node, bars stacked by deployment; per deployment, one bar each (kJ; gCO2e on top given a grid)."""
    p = plt()
    fig, (a1, a2) = p.subplots(1, 2, figsize=(10, 4.2))
    nodes = per_node(df)["node"].to_list()
    deps = sorted(df["deployment"].unique().to_list())
    stack = df.group_by("node", "deployment").agg(pl.col("window_j").sum())
    bottom = np.zeros(len(nodes))
    for d in deps:
        v = np.array([stack.filter((pl.col("node") == n) & (pl.col("deployment") == d))["window_j"].sum()
                      for n in nodes]) / 1e3
        a1.bar(nodes, v, bottom=bottom, color=palette(d), label=short(d, 40))
        bottom += v
    per = per_deployment(df)
    a2.bar(range(per.height), per["window_j"] / 1e3, color=[palette(d) for d in per["deployment"]])
    a2.set_xticks(range(per.height), [short(d, 34) for d in per["deployment"]], rotation=20, ha="right", fontsize=7)
    if "co2e_g" in df.columns:
        for i, (j, g) in enumerate(zip(per["window_j"], per["co2e_g"])):
            a2.annotate(f"{_g(g)} g", (i, j / 1e3), ha="center", va="bottom", fontsize=7)
    a1.set_ylabel("window energy (kJ)"), a1.set_title("energy per node", fontsize=10)
    a2.set_title("energy per deployment" + (" (gCO2e on top)" if "co2e_g" in df.columns else ""), fontsize=10)
    a1.legend(fontsize=6)
    finish(fig, path, estimated(df))


def pick_trace_trial(df: pl.DataFrame, trial_id: str | None) -> dict:
    """The trial whose power trace is drawn: ``trial_id``, or the measured trial with the most power samples."""
    if trial_id is not None:
        hit = df.filter(pl.col("trial_id") == trial_id)
        if hit.height == 0:
            raise UserError(f"--trace-trial={trial_id!r}: no such trial in these stores")
        return hit.row(0, named=True)
    cand = df.filter(~pl.col("warmup") & pl.col("t_start").is_not_null() & pl.col("t_end").is_not_null())
    cand = cand.sort([pl.col("n_samples").fill_null(0), "window_s"], descending=True)
    return cand.row(0, named=True) if cand.height else {}


def trace_samples(stores: list[str], trial: dict, pad_s: float) -> pl.DataFrame:
    """The samples of ``trial``'s node from ``pad_s`` before its window to ``pad_s`` after (first store with any)."""
    from llm_energy.trials.store import TrialStore

    lo, hi = trial["t_start"] - pad_s, trial["t_end"] + pad_s
    for s in stores:
        if not (Path(s) / "manifest.json").exists():
            continue
        got = (TrialStore(s, create=False).samples()
               .filter((pl.col("node") == trial["node"]) & pl.col("t_wall").is_between(lo, hi)).collect())
        if got.height:
            return got.sort("t_wall")
    return pl.DataFrame()


def _watts(s: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Per device: (t_wall, W, how): polled power where there is any, else counter increments over time."""
    out = {}
    for (dev,), g in s.group_by(["device"], maintain_order=True):
        w = g.filter(pl.col("watts").is_not_null())
        if w.height:
            out[dev] = (w["t_wall"].to_numpy(), w["watts"].to_numpy(), "polled power")
            continue
        c = g.filter(pl.col("joules").is_not_null()).unique("joules", keep="first", maintain_order=True)
        if c.height > 1:
            t, j = c["t_wall"].to_numpy(), c["joules"].to_numpy()
            out[dev] = (t[1:], np.diff(j) / np.maximum(np.diff(t), 1e-9), "counter increments")
    return out


def plot_trace(trial: dict, samples: pl.DataFrame, path: Path, colour: str) -> None:
    """Power of each device around one trial's window (shaded), its energy in the title."""
    p = plt()
    fig, ax = p.subplots(figsize=(8, 3.6))
    t0, dur = trial["t_start"], trial["t_end"] - trial["t_start"]
    styles = ["-", "--", ":", "-."]
    for i, (dev, (t, w, how)) in enumerate(_watts(samples).items()):
        ax.plot(t - t0, w, styles[i % 4], color=colour, lw=1.2, label=f"{dev} ({how})")
    ax.axvspan(0, dur, color=colour, alpha=0.12, label=f"window: {trial.get('n_inner') or 1} generation(s)")
    ax.set_xlabel("seconds from the window's start"), ax.set_ylabel("power (W)")
    ax.set_title(f"{short(trial['trial_id'], 60)}: {trial['energy_j']:.1f} J per generation, "
                 f"{trial['energy_source']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    finish(fig, path, [trial["deployment"]] if is_estimate(trial["energy_source"]) else [])
