"""10 million raw power samples -> per-trial energies through llm_energy.measure.integrate (Polars).

    .venv/bin/python -m benchmarks.bench_integrate [--samples 10000000]      (goal: under 10 s on 2 cores)

Synthetic but shaped like a real sweep: 4 nodes, 2 GPUs each, power polled every 20 ms with realistic
levels (70 W idle, 140-350 W in trials) and the energy counter polled alongside it (updating every
100 ms); trials of 0.5-20 s separated by short gaps. Baseline in the same run: the same integration
as a Python loop over 1% of the windows, scaled.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl


def make(n_samples: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    nodes, gpus, period = 4, 2, 0.02
    per_stream = n_samples // (nodes * gpus * 2)  # power + counter rows
    t = np.arange(per_stream) * period
    # trial windows: alternate busy (0.5-20 s) and idle gaps (0.2-1 s)
    edges, x = [], 0.0
    while x < t[-1]:
        d = rng.uniform(0.5, 20)
        edges.append((x, min(x + d, t[-1])))
        x += d + rng.uniform(0.2, 1.0)
    starts = np.array([a for a, _ in edges])
    ends = np.array([b for _, b in edges])
    busy = np.zeros_like(t, dtype=bool)
    idx = np.searchsorted(starts, t, side="right") - 1
    busy[idx >= 0] = t[idx >= 0] <= ends[idx[idx >= 0]]
    frames, windows = [], []
    for n in range(nodes):
        for g in range(gpus):
            watts = np.where(busy, rng.uniform(140, 350), 70.0) + rng.normal(0, 3, t.size)
            cum = np.concatenate([[0.0], np.cumsum(watts[:-1] * period)]) + 1e5
            upd = (np.floor(t / 0.1) * 0.1 / period).astype(int)
            counter = cum[np.minimum(upd, t.size - 1)]
            base = dict(t_wall=t + 1.7e9, t_mono=t, node=f"n{n}", session="s", device=f"gpu{g}")
            frames.append(pl.DataFrame({**base, "source": "nvml-power", "watts": watts, "joules": None}))
            frames.append(pl.DataFrame({**base, "source": "nvml-counter", "watts": None, "joules": counter}))
        windows.append(pl.DataFrame({"trial_id": [f"n{n}/t{i}" for i in range(len(starts))], "node": f"n{n}",
                                     "session": "s", "t_start_mono": starts, "t_end_mono": ends}))
    return pl.concat(frames, how="vertical_relaxed"), pl.concat(windows)


def python_loop(samples: pl.DataFrame, windows: pl.DataFrame) -> int:
    """The baseline: for each window, filter and integrate in Python (trapezoid only)."""
    p = samples.filter(pl.col("watts").is_not_null())
    groups = {k: g.sort("t_mono") for k, g in p.group_by(["node", "device"])}
    n = 0
    for w in windows.iter_rows(named=True):
        for (node, dev), g in groups.items():
            if node != w["node"]:
                continue
            t = g["t_mono"].to_numpy()
            x = g["watts"].to_numpy()
            m = (t >= w["t_start_mono"]) & (t <= w["t_end_mono"])
            if m.sum() > 1:
                np.trapezoid(x[m], t[m]) if hasattr(np, "trapezoid") else np.trapz(x[m], t[m])
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10_000_000)
    args = ap.parse_args()
    from llm_energy.measure.integrate import window_energy

    samples, windows = make(args.samples)
    print(f"{samples.height:,} samples, {windows.height:,} trial windows")
    t0 = time.perf_counter()
    out = window_energy(samples, windows)
    dt = time.perf_counter() - t0
    print(f"polars pipeline: {dt:.2f} s -> {out.height:,} (window, device, method) energies (goal < 10 s)")
    sub = windows.sample(fraction=0.01, seed=0)
    t0 = time.perf_counter()
    python_loop(samples, sub)
    dtp = (time.perf_counter() - t0) / sub.height * windows.height
    print(f"python-loop baseline (trapezoid only, timed on 1% of windows, scaled): {dtp:.1f} s; speed-up {dtp / dt:.1f}x")
    c = out.filter(pl.col("method") == "counter")
    p = out.filter(pl.col("method") == "trapezoid")
    j = c.join(p, on=["trial_id", "device"], suffix="_p")
    rel = ((j["energy_j_p"] - j["energy_j"]) / j["energy_j"]).abs()
    print(f"counter vs trapezoid agreement: median {100 * rel.median():.2f}%, p99 {100 * rel.quantile(0.99):.2f}%")


if __name__ == "__main__":
    main()
