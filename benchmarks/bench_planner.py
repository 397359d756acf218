"""Planner at scale: 1,000,000 queries resampled from the Azure conversation trace x 16 deployments.

    .venv/bin/python -m benchmarks.bench_planner [--n 1000000] [--deployments 16] [--bins 24]
                                                 [--per-query-n 10000] [--per-query-solver glpk|highs]
    .venv/bin/python -m benchmarks.bench_planner --fleet [--zeta 0.7] [--window-s 600] [--solver glpk]
    .venv/bin/python -m benchmarks.bench_planner --glpk-cuts [--seeds 20] [--time-limit 10]

End to end with GLPK and HiGHS (``llm_energy.plan.run.run``, what ``llm-energy plan`` calls: load Parquet,
aggregate, predict, build, solve, baselines, write), exact and binned; prints wall times per stage, the binned plan's objective gap
against the exact optimum (and the bound it reported), and, on the first --per-query-n queries, the
per-query formulation (one variable per query and deployment, all handed to the solver) against our
class + column-generation solve: wall-time ratio and the two optima (they must be equal).
Goal (issue 17): the million x 50 deployments (``--deployments 50``) exact under 5 s on 2 cores, with
either solver; each prints whether it met it.

The 16 deployments are synthetic but shaped like real ones: 3 Llama-2 sizes x 5 node types plus a
small model on CPU; energy = c0 + c_in tin + c_out tout + c_io tin tout with every coefficient positive
(scaled from the paper's published 7B/13B/70B fits), written to a real FITS.json with ``save_fits``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

AZURE = Path(__file__).resolve().parents[1] / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"  # shipped

# (model, accuracy A_K, energy J per output token on A100, J per input token, J per in*out, runtime s/out token)
MODELS = (("llama-2-7b", 50.97, 31.5, 0.9, 0.0427, 0.0835),
          ("llama-2-13b", 55.69, 56.0, 1.6, 0.0729, 0.1426),
          ("llama-2-70b", 64.52, 414.8, 9.0, 0.3145, 0.7032))
# (node type, gpus factor for 70b, energy factor, runtime factor)
NODES = (("a100", 1.00, 1.00), ("h100", 0.72, 0.55), ("v100", 1.45, 1.60), ("l40s", 0.95, 0.90),
         ("a10g", 1.25, 1.35))


def write_inputs(tmp: Path, n_deps: int) -> tuple[Path, Path]:
    """A FITS.json with ``n_deps`` deployments and a deployments YAML naming them all."""
    from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, deployment_key, save_fits

    rng = np.random.default_rng(7)
    deps, yaml_lines = {}, ["deployments:"]
    combos = [(m, nd) for m in MODELS for nd in NODES]
    for i in range(n_deps):
        if i < len(combos):
            (model, acc, eo, ei, eio, ro), (node, fe, fr) = combos[i]
            gpus = 4 if model.endswith("70b") else 1
        else:  # a small model on CPU nodes
            model, acc, eo, ei, eio, ro, node, fe, fr, gpus = (f"tiny-{i}", 30.0 + i % 5, 3.0, 0.1, 0.002, 0.05,
                                                               "cpu", 1.0, 1.0, 0)
        jitter = rng.uniform(0.9, 1.1, 4)
        terms = ["1", "tin", "tout", "tin*tout"]
        e_coef = [5.0 * fe, ei * fe * jitter[0], eo * fe * jitter[1], eio * fe * jitter[2]]
        r_coef = [0.05 * fr, 2e-4 * fr, ro * fr * jitter[3], 1e-6 * fr]
        key = deployment_key(model, node, gpus, "bench", 1)
        # synthetic cost models: a context that covers the trace (tin + tout up to 14,089), so the benchmark
        # times the same problem as before the planner masked pairs beyond a model's context length
        deps[key] = DeploymentFit(deployment=key, model=model, node_type=node, n_gpus=gpus, backend="bench", batch=1,
                                  targets={"energy_j": TargetModel("affine", terms, e_coef),
                                           "runtime_s": TargetModel("affine", terms, r_coef)}, context_tokens=32768)
        yaml_lines += [f"  - name: {model}@{node}", f"    fit: {key}", f"    accuracy: {acc}"]
    fits_path, dep_path = tmp / "FITS.json", tmp / "deployments.yaml"
    save_fits(FitsFile(deployments=deps, source="benchmarks.bench_planner"), fits_path)
    dep_path.write_text("\n".join(yaml_lines) + "\n")
    return fits_path, dep_path


def glpk_cuts_table(seeds: int, time_limit_s: float, zeta: float = 0.6) -> int:
    """GLPK on small capacity MIPs of the kind its branch and bound stalls on (tests/test_plan_incumbent.py's)
    without and with its cuts and pseudocost branching (SolveSettings
    .glpk_cuts_below 0 vs the default), in the same run: wall time, status, the gap proven and the true gap
    to HiGHS's optimum at gap 0; the integrality gap (optimum vs LP bound) says which ones are hard."""
    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.solve.solvers import SolveSettings
    from tests.test_plan_incumbent import capacity_case  # 60 classes x 4 deployments, 3 short of capacity

    on = SolveSettings().glpk_cuts_below
    print(f"GLPK, --mip-gap 1e-4, --time-limit {time_limit_s:g} s, zeta {zeta}: without / with cuts + pcost "
          f"(MIPs up to {on} columns)\n")
    print("| seed | integrality gap | wall s | status | proven gap | true gap |")
    print("|---|---|---|---|---|---|")
    tot = {0: [0.0, 0, 0.0], on: [0.0, 0, 0.0]}
    for seed in range(seeds):
        p = capacity_case(seed)
        ref = Planner(p, solver="highs", method="full", mip_gap=0.0).solve(zeta)
        cells = []
        for below in (0, on):
            t0 = time.perf_counter()
            g = Planner(p, SolveSettings(time_limit_s=time_limit_s, glpk_cuts_below=below)).solve(zeta)
            t = time.perf_counter() - t0
            true = (g.objective - ref.objective) / abs(ref.objective)
            tot[below][0] += t
            tot[below][1] += g.status != "optimal"
            tot[below][2] = max(tot[below][2], true)
            cells.append((t, g.status, g.gap, true))
        integ = (ref.objective - ref.lp_bound) / abs(ref.objective)
        print(f"| {seed} | {integ:.1e} | " + " | ".join(
            " / ".join(f.format(c[i]) for c in cells) for i, f in enumerate(("{:.2f}", "{}", "{:.1e}", "{:.1e}"))) + " |")
    (a, na, wa), (b, nb, wb) = tot[0], tot[on]
    print(f"\ntotal wall {a:.1f} s / {b:.1f} s (ratio {a / b:.2f}x); time-limited {na} / {nb} of {seeds}; "
          f"worst true gap {wa:.1e} / {wb:.1e}")
    return 0


FLEET_YAML = (Path(__file__).resolve().parents[1] / "configs" / "deployments.fleet.yaml").read_text()


def fleet_tables(zeta: float, window_s: float, solver: str) -> int:
    """Issue 17's tables on the conversation trace (the repository's copy, with its timestamps) and the
    measured fits (data/h200 with idle_w, data/h100's static llama-2-7b): replicas per window without and
    with a change limit (and a change price), and the replay latency without and with headroom."""
    from llm_energy.fit.fits import FitsFile, load_fits_any, save_fits
    from llm_energy.plan.run import PlanRequest, run

    repo = Path(__file__).resolve().parents[1]
    trace = repo / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a, b = (load_fits_any(str(repo / "data" / h / "fits.json")) for h in ("h200", "h100"))
        deps = dict(a.deployments)
        deps.update({k: v for k, v in b.deployments.items() if "/static/" in k})
        save_fits(FitsFile(deployments=deps, source="h200+h100"), tmp / "FITS.json")
        (tmp / "fleet.yaml").write_text(FLEET_YAML)

        def plan(name, **kw):
            t0 = time.perf_counter()
            s = run(PlanRequest(fits=str(tmp / "FITS.json"), deployments=str(tmp / "fleet.yaml"), workload=str(trace),
                                out=str(tmp / name), zeta=zeta, window_s=window_s, solver=solver, **kw)).summary
            return time.perf_counter() - t0, s

        runs = [("no limit", {}), ("--max-replica-change 1", {"max_replica_change": 1}),
                ("--replica-change-j 2e4", {"replica_change_j": 2e4})]
        res = [(label, *plan(f"w{i}", utilisation=0.7, **kw)) for i, (label, kw) in enumerate(runs)]
        names = list(res[0][2].deployments)
        print(f"replicas per {window_s:g} s window, zeta={zeta}, --utilisation 0.7, {solver} (columns: "
              f"{', '.join(names)})\n")
        print("| window | queries | " + " | ".join(label for label, _, _ in res) + " |")
        print("|---|---|" + "---|" * len(res))
        for i, w in enumerate(res[0][2].windows):
            cells = [" / ".join(str(s.windows[i]["replicas"][n]) for n in names) for _, _, s in res]
            print(f"| {i} [{w['start_s']:.0f}, {w['end_s']:.0f}) s | {w['queries']} | " + " | ".join(cells) + " |")
        print("| replica changes | | " + " | ".join(str(s.fleet["replica_changes"]) for _, _, s in res) + " |")
        print("| energy (queries + keep-on), MJ | | " + " | ".join(
            f"{s.energy_j / 1e6:.3f} + {s.idle_energy_j / 1e6:.3f}" for _, _, s in res) + " |")
        print("| objective (normalised) | | " + " | ".join(f"{s.fleet['objective']:.3f}" for _, _, s in res) + " |")
        print("| worst window gap (proven) | | " + " | ".join(
            f"{max((w['gap'] or 0) for w in s.windows):.1e}" for _, _, s in res) + " |")
        print("| status | | " + " | ".join(s.status for _, _, s in res) + " |")
        print("| wall s | | " + " | ".join(f"{t:.1f}" for _, t, _ in res) + " |")

        heads = [("utilisation 1 (perfect packing)", {}), ("--utilisation 0.7", {"utilisation": 0.7}),
                 ("--max-wait-s 1 (M/G/c)", {"max_wait_s": 1.0})]
        print("\nreplay of the trace's arrival times against each plan (FIFO replicas, predicted runtimes), "
              "latency limit 10 s\n")
        print("| capacity model | latency p50 s | p95 s | p99 s | max s | within 10 s | replicas (peak) | keep-on MJ | wall s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, (label, kw) in enumerate(heads):
            t, s = plan(f"h{i}", latency_limit_s=10.0, **kw)
            r = s.fleet["replay"]
            print(f"| {label} | {r['latency_p50_s']:.2f} | {r['latency_p95_s']:.2f} | {r['latency_p99_s']:.2f} | "
                  f"{r['latency_max_s']:.1f} | {r['met_pct']:.1f}% | {sum(s.fleet['replicas'].values())} | "
                  f"{s.idle_energy_j / 1e6:.3f} | {t:.1f} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--deployments", type=int, default=16)
    ap.add_argument("--bins", type=int, default=24)
    ap.add_argument("--zeta", type=float, default=0.5)
    ap.add_argument("--per-query-n", type=int, default=10_000, help="0 skips the per-query comparison")
    ap.add_argument("--per-query-solver", default="glpk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fleet", action="store_true", help="issue 17's window-stability and replay tables instead")
    ap.add_argument("--window-s", type=float, default=600.0)
    ap.add_argument("--solver", default="glpk")
    ap.add_argument("--glpk-cuts", action="store_true", help="GLPK on small capacity MIPs without and with cuts")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=10.0)
    args = ap.parse_args()
    if args.glpk_cuts:
        return glpk_cuts_table(args.seeds, args.time_limit)
    if args.fleet:
        return fleet_tables(0.7 if args.zeta == 0.5 else args.zeta, args.window_s, args.solver)
    if not AZURE.exists():
        print(f"skipped: {AZURE} not found")
        return 0

    from llm_energy.fit.fits import load_fits_any
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.costs import problem_from_fits
    from llm_energy.plan.problem import per_query_problem
    from llm_energy.plan.run import PlanRequest, run
    from llm_energy.plan.workload import Workload, aggregate, load_workload, save_workload

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fits_path, dep_path = write_inputs(tmp, args.deployments)
        trace = load_workload(AZURE, ("ContextTokens", "GeneratedTokens"))
        idx = np.random.default_rng(args.seed).integers(0, trace.n_queries, args.n)
        wl_path = save_workload(Workload(trace.tin[idx], trace.tout[idx]), tmp / "million.parquet")
        print(f"workload: {args.n} queries resampled from {AZURE.name} ({trace.n_queries} queries, "
              f"{aggregate(trace).n_classes} distinct pairs); {args.deployments} deployments; zeta={args.zeta}")

        def plan(**kw):
            req = PlanRequest(fits=str(fits_path), deployments=str(dep_path), workload=str(wl_path),
                              out=str(tmp / kw.pop("out")), zeta=args.zeta, **kw)
            t0 = time.perf_counter()
            s = run(req).summary
            return time.perf_counter() - t0, s

        wall, exact = plan(out="exact", solver="glpk")
        t = exact.timings_s
        print(f"\nexact, GLPK: {wall:.2f} s end to end  [load {t['load']:.2f}, aggregate {t['aggregate']:.2f}, "
              f"predict {t['predict']:.2f}, solve {t['solve']:.2f} (model build {exact.build_s:.2f}, GLPK "
              f"{exact.solve_s:.2f} in {exact.solver_calls} calls, largest master {exact.master_classes} "
              f"classes / {exact.master_columns} columns), baselines {t['baselines']:.2f}, write {t['write']:.2f}]")
        print(f"  {exact.workload.classes} classes, status {exact.status}, objective "
              f"{exact.objective:.6f}, energy {exact.energy_j / 1e6:.3f} MJ, accuracy {exact.accuracy:.3f}")
        print(f"  goal < 5 s: {'met' if wall < 5 else 'NOT met'}")

        cmd = [sys.executable, "-m", "llm_energy.cli", "plan", "--fits", str(fits_path), "--deployments",
               str(dep_path), "--workload", str(wl_path), "--out", str(tmp / "cli"), "--zeta", str(args.zeta),
               "--json"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        wall_cli = time.perf_counter() - t0
        ok = r.returncode == 0 and abs(json.loads(r.stdout)["objective"] - exact.objective) < 1e-6 * abs(
            exact.objective)
        print(f"  as a fresh `llm-energy plan` process (interpreter start and imports included): {wall_cli:.2f} s"
              f"{'' if ok else ' (FAILED: ' + r.stderr.strip()[-300:] + ')'}")

        wall_b, binned = plan(out="binned", solver="glpk", bins=args.bins)
        b = binned.binning
        gap = (binned.objective - exact.objective) / abs(exact.objective)
        print(f"\nbinned ({args.bins}x{args.bins} log bins -> {b.bin_classes} classes), GLPK: {wall_b:.2f} s end "
              f"to end (solve {binned.timings_s['solve']:.2f})")
        print(f"  objective gap vs exact: {gap:.3e} (relative); reported bound {b.bound_rel:.3e} "
              f"(a priori {b.bound_a_priori / abs(exact.objective):.3e}); "
              f"{'within bound' if gap <= b.bound_rel + 1e-12 else 'BOUND VIOLATED'}")

        busiest = sorted(exact.deployments, key=lambda k: exact.deployments[k].runtime_s)[-3:]
        text = dep_path.read_text()
        for name in busiest:  # half the node-hours each needs when unconstrained
            hours = 0.5 * exact.deployments[name].runtime_s / 3600
            text = text.replace(f"  - name: {name}\n", f"  - name: {name}\n    hours: {hours}\n")
        cap_path = tmp / "capacity.yaml"
        cap_path.write_text(text)
        for solver in ("glpk", "highs"):
            t0 = time.perf_counter()
            cap = run(PlanRequest(fits=str(fits_path), deployments=str(cap_path), workload=str(wl_path),
                                  out=str(tmp / f"cap-{solver}"), zeta=args.zeta, solver=solver)).summary
            wall_c = time.perf_counter() - t0
            print(f"\nexact with capacity rows on the 3 busiest deployments (MIP), {solver}: {wall_c:.2f} s end to "
                  f"end (solve {cap.timings_s['solve']:.2f}, {cap.solver_calls} calls, largest master "
                  f"{cap.master_classes} classes); status {cap.status}, proven gap {cap.gap:.2e}, objective "
                  f"{cap.objective:.3f} (unconstrained {exact.objective:.3f})")

        wall_h, highs = plan(out="highs", solver="highs")
        rel = abs(highs.objective - exact.objective) / abs(exact.objective)
        print(f"\nexact, HiGHS: {wall_h:.2f} s end to end (solve {highs.timings_s['solve']:.2f}: HiGHS "
              f"{highs.solve_s:.2f} in {highs.solver_calls} calls, model {highs.build_s:.2f}); objective "
              f"{highs.objective:.6f} (GLPK {exact.objective:.6f}, relative difference {rel:.1e}; proven gaps "
              f"{highs.gap:.1e} / {exact.gap:.1e})")
        print(f"  goal < 5 s: {'met' if wall_h < 5 else 'NOT met'}")

        if args.per_query_n:
            n = args.per_query_n
            small = Workload(trace.tin[idx[:n]], trace.tout[idx[:n]])
            deps = load_deployments(dep_path)
            fits = load_fits_any(str(fits_path))
            cls = aggregate(small)
            t0 = time.perf_counter()
            prob, _ = problem_from_fits(cls, deps, fits)
            ours = Planner(prob, solver="glpk").solve(args.zeta)
            t_ours = time.perf_counter() - t0
            pq = per_query_problem(prob, cls.query_class)
            t0 = time.perf_counter()
            per_query = Planner(pq, solver=args.per_query_solver, method="full", time_limit_s=3600).solve(args.zeta)
            t_pq = time.perf_counter() - t0
            same = abs(per_query.objective - ours.objective) <= 1e-7 * max(1.0, abs(ours.objective))
            print(f"\nper-query formulation on {n} queries ({cls.n_classes} classes) x {prob.n_deployments}: "
                  f"{args.per_query_solver} {t_pq:.2f} s ({pq.n_classes * pq.n_deployments} variables; build "
                  f"{per_query.build_s:.2f}, solver {per_query.solve_s:.2f}) vs ours (GLPK) {t_ours:.2f} s: "
                  f"ratio {t_pq / t_ours:.1f}x")
            print(f"  optima: per-query {per_query.objective:.9f}, ours {ours.objective:.9f} -> "
                  f"{'equal' if same else 'DIFFERENT'}")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
