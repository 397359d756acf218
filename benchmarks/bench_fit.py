"""All candidate forms with cross-validation on the paper's 7 x 81 grid: wall time and the comparison
table (paper form vs the default `auto`, held-out median relative error per model and target).

    .venv/bin/python -m benchmarks.bench_fit        (goal: under 10 s on 2 cores)
"""

from __future__ import annotations

import time
from pathlib import Path

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "wilkins2024" / "grid" / "all-stats-raw.csv"


def main() -> None:
    from llm_energy.fit.fits import comparison
    from llm_energy.fit.forms import FitOptions, fit_deployments
    from llm_energy.trials.importers import import_wilkins2024

    trials = import_wilkins2024(REF)
    t0 = time.perf_counter()
    fits = fit_deployments(trials, FitOptions(form="auto"))
    dt = time.perf_counter() - t0
    n_forms = len(next(iter(fits.deployments.values())).targets["energy_j"].candidates)
    print(f"{len(fits.deployments)} deployments x 2 targets x {n_forms} forms, 5-fold CV each: {dt:.2f} s (goal < 10 s)")
    print(f"{'deployment':48s} {'target':10s} {'paper':>8s} {'auto':>8s} form")
    worst = 0.0
    for r in comparison(fits):
        worst = max(worst, r.auto_median)
        print(f"{r.deployment:48s} {r.target:10s} {100 * r.paper_median:7.1f}% {100 * r.auto_median:7.1f}% {r.auto_form}")
    print(f"auto: worst held-out median {100 * worst:.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
