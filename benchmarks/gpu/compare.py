"""Matched H100-vs-H200 comparison of two stores of the same preset and backend, cell by cell (no GPU).

    python3 -m benchmarks.gpu.compare data/h100/grid-static data/h200/grid-static --plot docs/h200/h100_vs_h200.png

Per cell (tin, tout, batch 1, warm-ups left out): median gross J/token and decode ms/step
(decode_s / (tout - 1)) of each store, and their H200/H100 ratios; then the ratios' range and median
over the cells both stores hold. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from benchmarks.gpu.decode_limit import _imp


def cells(d: str) -> pl.DataFrame:
    df = _imp("llm_energy.trials.store", "llm_energy.store").open_store(d).trials()
    df = df.filter(~pl.col("warmup") & (pl.col("batch") == 1))
    return df.group_by("tin", "tout").agg(
        n=pl.len(),
        jt=(pl.col("energy_j") / pl.col("tout")).median(),
        ms=(1e3 * pl.col("decode_s") / (pl.col("tout") - 1)).median(),
        w=pl.col("mean_w").median(),
        model=pl.col("model").first(), node=pl.col("node_type").first(),
    ).sort("tin", "tout")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="first store (the reference, e.g. data/h100/grid-static)")
    ap.add_argument("b", help="second store (e.g. data/h200/grid-static)")
    ap.add_argument("--plot", default=None, help="write a PNG here")
    args = ap.parse_args(argv)
    a, b = cells(args.a), cells(args.b)
    na, nb = a["node"][0], b["node"][0]
    j = a.join(b, on=["tin", "tout"], suffix="_b").with_columns(
        rj=pl.col("jt_b") / pl.col("jt"), rms=pl.col("ms_b") / pl.col("ms"))
    print(f"{a['model'][0]}: {na} ({args.a}) vs {nb} ({args.b}), {j.height} matched cells, batch 1\n")
    print(f"| tin | tout | {na} J/token | {nb} J/token | {nb}/{na} | {na} ms/step | {nb} ms/step | {nb}/{na} | {na} W | {nb} W |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in j.iter_rows(named=True):
        print(f"| {r['tin']} | {r['tout']} | {r['jt']:.2f} | {r['jt_b']:.2f} | {r['rj']:.3f} | {r['ms']:.2f} | "
              f"{r['ms_b']:.2f} | {r['rms']:.3f} | {r['w']:.0f} | {r['w_b']:.0f} |")
    long = j.filter(pl.col("tout") >= 64)
    print(f"\nJ/token {nb}/{na}: median {j['rj'].median():.3f}, range {j['rj'].min():.3f}-{j['rj'].max():.3f}; "
          f"ms/step (tout >= 64): median {long['rms'].median():.3f}, range {long['rms'].min():.3f}-{long['rms'].max():.3f}")
    print(f"J/token {na}: {j['jt'].min():.2f}-{j['jt'].max():.2f}; {nb}: {j['jt_b'].min():.2f}-{j['jt_b'].max():.2f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(15, 4.4))
        tins = sorted(set(j["tin"].to_list()))
        show = [t for t in (8, 128, 512, 2048) if t in tins]
        for k, t in enumerate(show):
            g = j.filter(pl.col("tin") == t).sort("tout")
            c = f"C{k}"
            ax[0].plot(g["tout"], g["jt"], "o--", color=c, alpha=0.6, label=f"{na} tin {t}")
            ax[0].plot(g["tout"], g["jt_b"], "s-", color=c, label=f"{nb} tin {t}")
            ax[1].plot(g["tout"], g["ms"], "o--", color=c, alpha=0.6)
            ax[1].plot(g["tout"], g["ms_b"], "s-", color=c)
        for x in ax[:2]:
            x.set_xscale("log", base=2)
            x.set_xlabel("tout (new tokens)")
        ax[0].set_ylabel("J / token (gross, batch 1)")
        ax[0].set_yscale("log")
        ax[0].legend(fontsize=7, ncol=2)
        ax[1].set_ylabel("decode ms / step")
        ax[1].set_title("dashed: " + na + ", solid: " + nb)
        touts = sorted(set(j["tout"].to_list()))
        grid = [[float("nan")] * len(touts) for _ in tins]
        for r in j.iter_rows(named=True):
            grid[tins.index(r["tin"])][touts.index(r["tout"])] = r["rj"]
        im = ax[2].imshow(grid, origin="lower", cmap="viridis")
        ax[2].set_xticks(range(len(touts)), [str(t) for t in touts], rotation=45)
        ax[2].set_yticks(range(len(tins)), [str(t) for t in tins])
        ax[2].set_xlabel("tout")
        ax[2].set_ylabel("tin")
        ax[2].set_title(f"J/token {nb} / {na}")
        for y, row in enumerate(grid):
            for x, v in enumerate(row):
                if v == v:
                    ax[2].text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax[2])
        fig.suptitle(f"{a['model'][0]}, static backend, batch 1: {na} vs {nb} (matched cells)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
