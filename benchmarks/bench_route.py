"""Online routing speed: the Azure conversation trace (19,366 queries, 1 hour) under every policy, and
1,000,000 queries under ``dual``, each against a plain-Python event loop in the same run.

    .venv/bin/python -m benchmarks.bench_route [--n 1000000] [--slo-s 400] [--reference-n 1000000]

Fleet: the paper's three Llama-2 deployments (the authors' coefficients.json when found, else the
project's H100 fits under the same names) with 150 / 150 / 40 replicas for the hour; for the million the
same fleet scaled by n / 19,366 and the queries resampled from the trace on Poisson arrivals at the same
hour's rate x that factor. "ours" = route + serve + metrics in process (``get_policy(p)(ctx)`` and
``policy_metrics``), fits predicted once per class; "plain" = the plain-Python event loop of
:mod:`llm_energy.route.reference` (every query's prediction on every deployment in Python from the
fitted coefficients, an event heap, FIFO deques) replaying the same decisions; both must give the same
start and end times. Goals: every policy < 2 s on the hour, dual < 10 s on the million (2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
PAPER = [REPO / "reference" / "wilkins2024" / "coefficients.json",
         REPO.parent / "shared" / "reference" / "wilkins2024" / "coefficients.json"]
REPLICAS = {"llama-2-7b": 150, "llama-2-13b": 150, "llama-2-70b": 40}
ACCURACY = {"llama-2-7b": 50.97, "llama-2-13b": 55.69, "llama-2-70b": 64.52}
H100_KEYS = {"llama-2-7b": "llama-2-7b@h100x1/static/b1", "llama-2-13b": "llama-2-7b@h100x1/cache/b1",
             "llama-2-70b": "llama-2-7b@h100x1/no-cache/b1"}


def inputs(tmp: Path, scale: float) -> tuple[str, Path, str]:
    """(fits path, deployments YAML with replicas x scale, which fits)."""
    paper = next((p for p in PAPER if p.exists()), None)
    keys = ({"llama-2-7b": "llama-2-7b@a100x1/paper/b1", "llama-2-13b": "llama-2-13b@a100x1/paper/b1",
             "llama-2-70b": "llama-2-70b@a100x4/paper/b1"} if paper else H100_KEYS)
    lines = ["deployments:"] + [f"  - {{name: {n}, fit: '{keys[n]}', accuracy: {ACCURACY[n]}, "
                                f"replicas: {max(1, round(r * scale))}}}" for n, r in REPLICAS.items()]
    path = tmp / f"fleet-x{scale:g}.yaml"
    path.write_text("\n".join(lines) + "\n")
    fits = str(paper) if paper else str(REPO / "data" / "h100" / "fits.json")
    return fits, path, ("the paper's coefficients" if paper else "data/h100/fits.json (paper coefficients not found)")


def ours(fleet, arrival, policy: str, slo_s: float, window_s: float):
    from llm_energy.route.metrics import policy_metrics
    from llm_energy.route.policies import RouteContext, get_policy

    t0 = time.perf_counter()
    ctx = RouteContext(fleet=fleet, arrival=arrival, slo_s=slo_s, window_s=window_s)
    routed = get_policy(policy)(ctx)
    m = policy_metrics(fleet, ctx.cost_c(), arrival, routed, slo_s)
    return time.perf_counter() - t0, routed, m


def plain(fits, deps, tin, tout, arrival, dep, zeta: float | None = None, scales=None) -> tuple[float, list, list]:
    """The plain-Python event loop: per-query predictions in Python, event heap. It replays ``dep``, or
    with ``zeta`` decides greedily itself (:func:`llm_energy.route.reference.reference_greedy`)."""
    from llm_energy.route.reference import py_predict, reference_greedy, simulate_events

    t0 = time.perf_counter()
    targets = [fits.deployments[d.fit].targets for d in deps.deployments]
    slots = [d.replicas * d.max_batch for d in deps.deployments]
    if zeta is not None:
        models = [{"e": (m["energy_j"].terms, m["energy_j"].coef), "r": (m["runtime_s"].terms, m["runtime_s"].coef),
                   "accuracy": d.accuracy} for m, d in zip(targets, deps.deployments)]
        _, start, end, _ = reference_greedy(arrival.tolist(), tin.tolist(), tout.tolist(), models, slots, zeta,
                                            *scales)
        return time.perf_counter() - t0, start, end
    pairs = list(zip(tin.tolist(), tout.tolist()))
    service = [[max(py_predict(m["runtime_s"].terms, m["runtime_s"].coef, i, o), 0.0) for m in targets]
               for i, o in pairs]
    energy = [[max(py_predict(m["energy_j"].terms, m["energy_j"].coef, i, o), 0.0) for m in targets] for i, o in pairs]
    d = dep.tolist()
    _, start, end = simulate_events(arrival.tolist(), service, slots, lambda q: d[q])
    sum(energy[q][d[q]] for q in range(len(d)))
    return time.perf_counter() - t0, start, end


def routable(trace, fits_path: str, deps_path: Path):
    """The trace less the queries beyond every deployment's context length (1,612 of the hour's on Llama-2's
    4,096 tokens), as ``route`` routes it (:func:`llm_energy.route.run.drop_beyond_context`), and how many
    were dropped."""
    from llm_energy.fit.fits import load_fits_any
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.route.run import drop_beyond_context

    kept, report, _ = drop_beyond_context(trace, load_deployments(deps_path), load_fits_any(fits_path))
    return kept, 0 if report is None else report.unservable


def load(fits_path: str, deps_path: Path, tin, tout):
    from llm_energy.fit.fits import load_fits_any
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.route.fleet import build_fleet

    fits, deps = load_fits_any(fits_path), load_deployments(deps_path)
    t0 = time.perf_counter()
    fleet = build_fleet(fits, deps, tin, tout)
    return fits, deps, fleet, time.perf_counter() - t0


def bench_hour(tmp: Path, slo_s: float, window_s: float) -> None:
    from llm_energy.route.policies import POLICY_NAMES
    from llm_energy.route.trace import load_trace

    fits_path, deps_path, which = inputs(tmp, 1.0)
    trace, dropped = routable(load_trace(AZURE), fits_path, deps_path)
    fits, deps, fleet, t_pred = load(fits_path, deps_path, trace.tin, trace.tout)
    print(f"hour: {trace.n_queries} queries over {trace.span_s:.0f} s ({which}; {dropped} beyond every context "
          f"length, not routed); fleet {REPLICAS}; "
          f"SLO {slo_s:g} s; predictions for {len(fleet.count)} classes x 3 in {t_pred:.3f} s")
    print("plain: the event loop replaying the policy's decisions (greedy: deciding itself in Python too); "
          "ours includes offline's and dual's LP solves")
    print(f"{'policy':<18}{'ours s':>8}{'LP s':>7}{'plain s':>9}{'ratio':>8}{'same times':>12}{'energy MJ':>11}"
          f"{'p99 s':>9}{'SLO viol.':>10}  goal < 2 s")
    for p in list(POLICY_NAMES) + [f"only:{n}" for n in fleet.names]:
        ours(fleet, trace.arrival_s, p, slo_s, window_s)  # warm (imports, solver start)
        t, routed, m = ours(fleet, trace.arrival_s, p, slo_s, window_s)
        greedy = dict(zeta=0.5, scales=fleet.scales()) if p == "greedy" else {}  # decides in Python too
        tp, st, en = plain(fits, deps, trace.tin, trace.tout, trace.arrival_s, routed.dep, **greedy)
        same = bool(np.allclose(st, routed.start, atol=1e-6) and np.allclose(en, routed.end, atol=1e-6))
        lp = (m.get("dual") or {}).get("solve_s") or (m.get("plan") or {}).get("solve_s") or 0.0
        print(f"{p:<18}{t:>8.3f}{lp:>7.3f}{tp:>9.2f}{tp / t:>7.1f}x{str(same):>12}{m['energy_j'] / 1e6:>11.2f}"
              f"{m['latency_p99_s']:>9.1f}{m['slo_violations']:>10}  {'met' if t < 2 else 'NOT met'}")


def bench_million(tmp: Path, n: int, slo_s: float, window_s: float, ref_n: int) -> None:
    from llm_energy.route.trace import load_trace, synthetic_arrivals

    full = load_trace(AZURE)
    scale = n / full.n_queries
    fits_path, deps_path, which = inputs(tmp, scale)
    src, _ = routable(full, fits_path, deps_path)  # resampled from the queries route would route
    idx = np.random.default_rng(0).integers(0, src.n_queries, n)
    tin, tout = src.tin[idx], src.tout[idx]
    arrival = synthetic_arrivals(n, full.n_queries / full.span_s * scale, "poisson", 1.0, seed=0)
    t0 = time.perf_counter()
    fits, deps, fleet, t_pred = load(fits_path, deps_path, tin, tout)
    t_load = time.perf_counter() - t0
    t, routed, m = ours(fleet, arrival, "dual", slo_s, window_s)
    print(f"\nmillion: {n} queries resampled from the trace ({len(fleet.count)} classes), Poisson at "
          f"{n / arrival[-1]:.0f}/s over {arrival[-1]:.0f} s, fleet x{scale:.1f} ({which})")
    print(f"  dual: {t:.2f} s route + serve + metrics ({m['dual']['windows_solved']} LP solves, "
          f"{m['dual']['solve_s']:.2f} s in them), {t_load:.2f} s load + class predictions; total {t + t_load:.2f} s; "
          f"goal < 10 s: {'met' if t + t_load < 10 else 'NOT met'}")
    print(f"  energy {m['energy_j'] / 1e6:.1f} MJ, accuracy {m['accuracy']:.2f}, p99 {m['latency_p99_s']:.1f} s, "
          f"SLO violations {m['slo_violations']}")
    k = min(ref_n, n)
    tp, st, en = plain(fits, deps, tin[:k], tout[:k], arrival[:k], routed.dep[:k])
    same = bool(np.allclose(st, routed.start[:k], atol=1e-6) and np.allclose(en, routed.end[:k], atol=1e-6))
    est = tp * n / k
    print(f"  plain-Python event loop replaying dual's decisions on {k} queries: {tp:.2f} s"
          + (f" (x{n / k:.0f} -> {est:.0f} s for {n})" if k < n else "")
          + f"; same start/end times: {same}; ratio {est / (t + t_load):.1f}x (without dual's LP solves on our "
          f"side: {est / (t + t_load - m['dual']['solve_s']):.1f}x)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--slo-s", type=float, default=400.0)
    ap.add_argument("--window-s", type=float, default=300.0)
    ap.add_argument("--reference-n", type=int, default=1_000_000, help="queries the plain loop replays (million)")
    args = ap.parse_args()
    if not AZURE.exists():
        print(f"skipped: {AZURE} not found")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        bench_hour(Path(tmp), args.slo_s, args.window_s)
        bench_million(Path(tmp), args.n, args.slo_s, args.window_s, args.reference_n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
