"""Batch-1 decode by static-cache bucket, every preset, from measured stores (no GPU): a figure of what
``decode_limit --stores`` prints per bucket.

    python3 -m benchmarks.gpu.plot_buckets data/h200/v2/* --bw 4.265 --out docs/h200/decode_by_bucket.png

Left: decode ms a step against the bucket, each preset over its own limit (the bytes a step reads + the
bucket's KV bytes, at --bw), both relative to the preset's 256-bucket step. Right: the step over that
limit (x limit). Only stores whose decode read its KV cache give bucket rows (``decode_limit._bucket_rows``).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.gpu.decode_limit import _imp, from_stores


def plot(rows: list[dict], out: str, bw_tbs: float) -> list[str]:
    """Write the figure; returns the presets drawn (rows of ``kind`` bucket, one line each)."""
    style = _imp("llm_energy.report.style")
    plt = style.plt()
    buckets = [r for r in rows if r.get("kind") == "bucket"]
    presets = sorted({r["preset"] for r in buckets})
    palette = style.Palette(presets)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for p in presets:
        rs = sorted((r for r in buckets if r["preset"] == p), key=lambda r: r["bucket"])
        base = rs[0]["ms_per_step"]
        xs = [r["bucket"] for r in rs]
        ax1.plot(xs, [r["ms_per_step"] / base for r in rs], "o-", color=palette(p), label=p)
        ax1.plot(xs, [r["limit_kv_ms"] / rs[0]["limit_kv_ms"] for r in rs], ":", color=palette(p), lw=1)
        ax2.plot(xs, [r["ratio_kv"] for r in rs], "o-", color=palette(p), label=p)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("static-cache bucket (tokens)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("ms/step relative to the first bucket's")
    ax1.set_title("decode step by bucket (dotted: the limit's growth)", fontsize=10)
    ax2.set_ylabel(f"ms/step / limit (weights read + bucket KV, {bw_tbs:g} TB/s)")
    ax2.set_title("batch-1 decode against the HBM limit", fontsize=10)
    ax2.legend(fontsize=8)
    style.finish(fig, out)
    return presets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--bw", type=float, required=True, help="HBM copy bandwidth in TB/s")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args(argv)
    rows = from_stores(args.stores, args.bw * 1e12)
    if not any(r.get("kind") == "bucket" for r in rows):
        print("plot_buckets: no store gave bucket rows (none read its KV cache)", file=sys.stderr)
        return 2
    drawn = plot(rows, args.out, args.bw)
    print(f"wrote {args.out}: {', '.join(drawn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
