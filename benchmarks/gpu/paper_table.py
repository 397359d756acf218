"""The paper's energy-model table re-derived from our stores (no GPU).

    python3 -m benchmarks.gpu.paper_table data/h200/grid-static data/h200/llama-2-13b-static ...

Fits the paper's form (e = a0*tin + a1*tout + a2*tin*tout, OLS without an intercept) and the default
(auto) form on each store's deployments, and prints per deployment: the paper-form coefficients with
p-values, uncentered R², F, and both forms' held-out median relative error (5-fold CV over cells).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def fit(dirs: list[str], form: str) -> dict:
    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "fits.json"
        subprocess.run([sys.executable, "-m", "llm_energy.cli", "fit", *dirs, "--out", str(out), "--form", form],
                       check=True, stdout=subprocess.DEVNULL)
        return {d["deployment"]: d for d in json.loads(out.read_text())["deployments"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args(argv)
    paper, auto = fit(args.dirs, "paper"), fit(args.dirs, "auto")
    print("| deployment | a0 (tin) J | a1 (tout) J | a2 (tin·tout) J | p(a0, a1, a2) | R² unc. | F | "
          "energy held-out median: paper form | auto form (name) | runtime: paper | auto |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in sorted(paper):
        e, r = paper[k]["targets"]["energy_j"], paper[k]["targets"]["runtime_s"]
        ea, ra = auto[k]["targets"]["energy_j"], auto[k]["targets"]["runtime_s"]
        c, s = e["coef"], e["stats"]
        p = ", ".join(f"{x:.1e}" for x in s["pvalues"])
        print(f"| {k} | {c[0]:.5f} | {c[1]:.4f} | {c[2]:.3e} | {p} | {s['r2_uncentered']:.6f} | {s['f']:.3g} | "
              f"{100 * e['cv']['median']:.1f}% | {100 * ea['cv']['median']:.1f}% ({ea['form']}) | "
              f"{100 * r['cv']['median']:.1f}% | {100 * ra['cv']['median']:.1f}% ({ra['form']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
