"""The route plots (PNG, matplotlib Agg): energy and p99 latency against arrival rate (the rate sweep),
and the latency CDF of every policy (first rate scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(path: Path, sweep: list[dict]) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    sweep = sorted(sweep, key=lambda s: s["arrival_rate_per_s"])
    rates = [s["arrival_rate_per_s"] for s in sweep]
    for name in sweep[0]["policies"]:
        e = [s["policies"][name]["total_energy_j"] / 1e6 for s in sweep]
        p99 = [max(s["policies"][name]["latency_p99_s"], 1e-3) for s in sweep]
        style = "-o" if not name.startswith("only:") else ":."
        ax1.plot(rates, e, style, ms=4, label=name)
        ax2.plot(rates, p99, style, ms=4, label=name)
    ax1.set_xlabel("arrival rate (queries/s)")
    ax1.set_ylabel("total energy, active + idle (MJ)")
    ax2.set_xlabel("arrival rate (queries/s)")
    ax2.set_ylabel("p99 latency (s)")
    ax1.set_yscale("log")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    ax1.set_title("Energy against arrival rate")
    ax2.set_title("p99 latency against arrival rate")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_cdf(path: Path, frames: list, slo_s: float | None) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=110)
    first = frames[0]["rate_scale"][0]
    for fr in frames:
        if fr["rate_scale"][0] != first:
            continue
        lat = np.sort((fr["end_s"] - fr["arrival_s"]).to_numpy())
        y = np.arange(1, len(lat) + 1) / len(lat)
        ax.plot(np.maximum(lat, 1e-3), y, label=fr["policy"][0], lw=1.2)
    if slo_s is not None:
        ax.axvline(slo_s, color="k", ls="--", lw=0.8, label=f"SLO {slo_s:g} s")
    ax.set_xscale("log")
    ax.set_xlabel("latency: completion - arrival (s)")
    ax.set_ylabel("fraction of queries")
    ax.set_title(f"Latency CDF per policy (rate x{first:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_all(out: Path, frames: list, sweep: list[dict], slo_s: float | None) -> dict[str, str]:
    files = {}
    if len(sweep) > 1:
        files["sweep_png"] = str(out / "rate_sweep.png")
        plot_sweep(out / "rate_sweep.png", sweep)
    if frames:
        files["latency_cdf_png"] = str(out / "latency_cdf.png")
        plot_cdf(out / "latency_cdf.png", frames, slo_s)
    return files
