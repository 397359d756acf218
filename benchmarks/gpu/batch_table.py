"""Batch sweeps from measured stores (no GPU): J per generated token, decode ms a step and mean power by
batch size, the tables of docs/h200.md ("Eighth session"), and a figure of J/token against batch.

    python3 -m benchmarks.gpu.batch_table data/h200/v2/batch-* [--plot docs/h200/batch_j_per_token.png]

J/token is gross: a trial's energy over the tokens its batch generated, ``energy_j / (batch x tout)``
(the prefill's energy is in it); ms/step is the decode time over ``tout - 1`` steps; mean power is the
energy over the runtime of all the trials at that batch. Medians over repeats; warm-ups and trials whose
meter failed (null energy) are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from llm_energy.errors import UserError
from llm_energy.trials.store import load_trials

GOAL_J_PER_TOKEN = 0.070  # issue 13's large-batch goal: what vLLM reaches for an 8B model on an H100 at batch 512


def per_cell(trials: pl.DataFrame) -> pl.DataFrame:
    """One row per (store label, tin, tout, batch): n, energy_j, runtime_s, decode_s (medians), j_per_token,
    ms_per_step."""
    t = trials.filter(~pl.col("warmup") & pl.col("energy_j").is_not_null())
    g = (t.group_by("label", "tin", "tout", "batch")
         .agg(n=pl.len(), energy_j=pl.col("energy_j").median(), runtime_s=pl.col("runtime_s").median(),
              decode_s=pl.col("decode_s").median()))
    return g.with_columns(
        j_per_token=pl.col("energy_j") / (pl.col("batch") * pl.col("tout")),
        ms_per_step=pl.when(pl.col("tout") > 1).then(1e3 * pl.col("decode_s") / (pl.col("tout") - 1)),
    ).sort("label", "tin", "tout", "batch")


def per_batch(trials: pl.DataFrame) -> pl.DataFrame:
    """One row per (label, batch): the ms/step range over its cells and the mean power (W)."""
    t = trials.filter(~pl.col("warmup") & pl.col("energy_j").is_not_null())
    cells = per_cell(trials)
    power = t.group_by("label", "batch").agg(mean_w=pl.col("energy_j").sum() / pl.col("runtime_s").sum())
    steps = cells.group_by("label", "batch").agg(ms_min=pl.col("ms_per_step").min(),
                                                 ms_max=pl.col("ms_per_step").max())
    return steps.join(power, on=["label", "batch"]).sort("label", "batch")


def markdown(trials: pl.DataFrame) -> str:
    cells, batches = per_cell(trials), per_batch(trials)
    out = []
    for label in cells["label"].unique(maintain_order=True):
        c = cells.filter(pl.col("label") == label)
        bs = sorted(c["batch"].unique().to_list())
        out += [f"{label}, J/token:", "", "| cell | " + " | ".join(str(b) for b in bs) + " |",
                "|---|" + "---|" * len(bs)]
        for (tin, tout), rows in c.group_by("tin", "tout", maintain_order=True):
            by = dict(zip(rows["batch"].to_list(), rows["j_per_token"].to_list()))
            out.append(f"| {tin} x {tout} | " + " | ".join(f"{by[b]:.3f}" if b in by else "" for b in bs) + " |")
        b = batches.filter(pl.col("label") == label)
        rng = {r["batch"]: f"{r['ms_min']:.2f}-{r['ms_max']:.2f}" for r in b.iter_rows(named=True)}
        w = {r["batch"]: f"{r['mean_w']:.0f}" for r in b.iter_rows(named=True)}
        out.append("| ms/step (min-max) | " + " | ".join(rng.get(x, "") for x in bs) + " |")
        out.append("| mean power W | " + " | ".join(w.get(x, "") for x in bs) + " |")
        out.append("")
    return "\n".join(out)


def plot(trials: pl.DataFrame, path: str) -> None:
    from llm_energy.report import style

    cells = per_cell(trials)
    plt = style.plt()
    labels = cells["label"].unique(maintain_order=True).to_list()
    palette = style.Palette(labels)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    marks = {}
    for (label, tin, tout), rows in cells.group_by("label", "tin", "tout", maintain_order=True):
        m = marks.setdefault((tin, tout), "os^vD"[len(marks) % 5])
        ax.plot(rows["batch"], rows["j_per_token"], marker=m, color=palette(label), lw=1, ms=4,
                label=f"{label} {tin}x{tout}")
    ax.axhline(GOAL_J_PER_TOKEN, ls="--", color="grey", lw=0.8)
    ax.text(1, GOAL_J_PER_TOKEN * 1.08, f"{GOAL_J_PER_TOKEN} J/token: vLLM, 8B model, H100, batch 512 (ML.ENERGY)",
            fontsize=7, color="grey")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("J per generated token (gross)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    style.finish(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.batch_table", description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", help="trial stores (each a batch sweep; the label is its directory name)")
    ap.add_argument("--plot", help="write a PNG of J/token against batch here")
    args = ap.parse_args(argv)
    try:
        trials = pl.concat([load_trials([s]).with_columns(label=pl.lit(Path(s).name)) for s in args.stores],
                           how="diagonal_relaxed")
        print(markdown(trials))
        if args.plot:
            plot(trials, args.plot)
            print(f"wrote {args.plot}")
    except UserError as e:
        print(f"batch_table: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
