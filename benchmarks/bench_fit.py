"""Fitting, measured honestly (issue 15).

1. Time: all candidate forms with 5-fold CV on the paper's 7 x 81 grid (goal: ~3 s on 2 cores).
2. The authors' grid: outer 5-fold over cells of the whole procedure (form, knot and interval chosen
   again inside each outer fold), per model and target: held-out median and p90 relative error and
   the share of held-out cells inside the 90% interval; pooled over models; the paper form's
   held-out median beside it. Goals: median <= 3% pooled, <= 5% per model, p90 <= 12%, coverage
   85-95%.
3. Every chosen model: no negative and no decreasing prediction over tin, tout in 1..32768.
4. The H100 and H200 stores: the same figures per backend (deployment).
5. The H100 batch sweep (cache backend, pooled over batch sizes 1, 4, 16, 64 with the batch-1
   grid): each batch size held out in turn. Goal: within 10%.

    .venv/bin/python -m benchmarks.bench_fit
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference" / "wilkins2024" / "grid" / "all-stats-raw.csv"
STORES = {  # label -> stores (one deployment per backend)
    "h100": ["data/h100/grid-static", "data/h100/grid-cache", "data/h100/grid-nocache", "data/h100/issue3"],
    "h200": ["data/h200/grid-static", "data/h200/llama-2-13b-static", "data/h200/mistral-7b-static"],
}
BATCH_STORES = ["data/h100/grid-cache", "data/h100/issue3", "data/h100/batch-cache"]
GRID = np.unique(np.round(np.geomspace(1, 32768, 64)).astype(int))


def pct(v: float) -> str:
    return f"{100 * v:5.1f}%"


def timing(trials) -> None:
    from llm_energy.fit.forms import FitOptions, fit_deployments

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fits = fit_deployments(trials, FitOptions(form="auto"))
        best = min(best, time.perf_counter() - t0)
    n_forms = len(next(iter(fits.deployments.values())).targets["energy_j"].candidates)
    print(f"fit: {len(fits.deployments)} deployments x 2 targets x {n_forms} forms, 5-fold CV each: "
          f"{best:.2f} s (best of 3; goal ~3 s on 2 cores)")


def holdout_table(title: str, trials, fits) -> None:
    """Nested held-out figures per deployment and target, pooled, and the in-fit CV and paper form."""
    from llm_energy.fit.validate import nested_holdout

    h = nested_holdout(trials)
    print(f"\n{title}: outer 5-fold over cells (form, knot and interval chosen inside each fold)")
    print(f"{'deployment':50s} {'target':9s} {'form':11s} {'median':>7s} {'p90':>7s} {'cover':>7s} "
          f"{'paper':>8s} {'CV cover':>8s}  n")
    for dep in h.deployments:
        for t in ("energy_j", "runtime_s"):
            s = h.summary(dep, t)
            m = fits.deployments[dep].targets[t]
            paper = m.candidate("paper")
            cov = m.interval.coverage_cv if m.interval and m.interval.coverage_cv is not None else float("nan")
            print(f"{dep:50s} {t:9s} {m.form:11s} {pct(s['median'])} {pct(s['p90'])} {pct(s['coverage'])} "
                  f"{pct(paper.median) if paper else '   -':>8s} {pct(cov):>8s}  {s['n']}")
    for t in ("energy_j", "runtime_s"):
        s = h.summary(None, t)
        print(f"{'pooled':50s} {t:9s} {'':11s} {pct(s['median'])} {pct(s['p90'])} {pct(s['coverage'])}")


def sanity(fits) -> None:
    """No negative or decreasing prediction over tin, tout in 1..32768 (64 x 64 log grid and the edges)."""
    ii, oo = np.meshgrid(GRID, GRID, indexing="ij")
    bad = []
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            for b in ([1, 4, 16, 64] if d.batch == "*" else [d.batch]):
                p = m.predict(ii.ravel(), oo.ravel(), np.full(ii.size, b)).reshape(ii.shape)
                if (p < 0).any() or (np.diff(p, axis=0) < 0).any() or (np.diff(p, axis=1) < 0).any():
                    bad.append(f"{d.deployment} {t} b{b}")
    n = sum(len(d.targets) for d in fits.deployments.values())
    print(f"sanity: {n} chosen models, tin, tout in 1..32768: {'all non-negative and non-decreasing' if not bad else bad}")


def batch_table() -> None:
    from llm_energy.fit.validate import batch_holdout
    from llm_energy.trials.store import load_trials

    for label, stores in (("the batch sweep alone (batch-cache: 4 cells a size)", BATCH_STORES[2:]),
                          ("the batch sweep with the batch-1 grids (grid-cache, issue3)", BATCH_STORES)):
        res = batch_holdout(load_trials([str(ROOT / s) for s in stores]))
        print(f"\nH100 cache backend, pooled over batch sizes, {label}: each batch size held out (trained on the others)")
        print(f"{'held-out batch':>14s} {'target':9s} {'median':>7s} {'p90':>7s} {'max':>7s} {'cover':>7s}  n")
        for b, h in res.items():
            for t in ("energy_j", "runtime_s"):
                s = h.summary(None, t)
                print(f"{b:>14d} {t:9s} {pct(s['median'])} {pct(s['p90'])} {pct(s['max'])} {pct(s['coverage'])}  {s['n']}")


def main() -> None:
    from llm_energy.fit.forms import FitOptions, fit_deployments
    from llm_energy.trials.importers import import_wilkins2024
    from llm_energy.trials.store import load_trials

    trials = import_wilkins2024(REF)
    timing(trials)
    grid_fits = fit_deployments(trials, FitOptions(form="auto"))
    holdout_table("the authors' grid (A100, no KV cache)", trials, grid_fits)
    sanity(grid_fits)
    for label, stores in STORES.items():
        t = load_trials([str(ROOT / s) for s in stores])
        fits = fit_deployments(t)
        holdout_table(f"{label} stores ({', '.join(Path(s).name for s in stores)})", t, fits)
        sanity(fits)
    batch_table()


if __name__ == "__main__":
    main()
