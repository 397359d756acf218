"""The array master (plan/solve/arrays.py: HiGHS in memory, GLPK from a file we write, columns added in
place, warm-started) gives the same optimum as the Pyomo master on random small problems of every row
kind, and the per-query formulation agrees."""

import numpy as np
import pytest

from llm_energy.plan.problem import make_problem, per_query_problem
from llm_energy.plan.solve.arrays import ArrayMaster
from llm_energy.plan.solve.planner import Planner
from llm_energy.plan.workload import Workload, aggregate


def rel_close(a: float, b: float, tol: float = 1e-7) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def case(seed: int, kind: str, n: int = 160, k: int = 5, distinct: int = 70):
    rng = np.random.default_rng(seed)
    pairs = np.column_stack([rng.integers(1, 2048, distinct), rng.integers(1, 512, distinct)])
    cls = aggregate(Workload(*pairs[rng.integers(0, distinct, n)].T))
    i, o = cls.tin[:, None].astype(float), cls.tout[:, None].astype(float)
    coef = np.column_stack([rng.uniform(1, 10, k), rng.uniform(0.5, 5, k), rng.uniform(20, 400, k),
                            rng.uniform(0.01, 0.3, k)])
    e = coef[:, 0] + coef[:, 1] * i + coef[:, 2] * o + coef[:, 3] * i * o
    r = e / rng.uniform(200, 600, k)
    acc = rng.uniform(40, 70, k)
    kw = {"min_share": 0.05}
    if kind == "slo":
        kw["slo_s"] = [float(np.quantile(r[:, 0], 0.7))] + [None] * (k - 1)
    elif kind == "capacity":
        kw["capacity_s"] = [0.3 * float((cls.count * r[:, j]).sum()) if j < 2 else None for j in range(k)]
    elif kind == "budget":
        kw["energy_budget_j"] = float((cls.count * e.min(axis=1)).sum() * 1.3)
    elif kind == "floor":
        kw["accuracy_floor"] = float(np.sort(acc)[-2])
    return cls, make_problem([f"d{j}" for j in range(k)], cls.count, cls.tokens, e, r, acc, **kw)


@pytest.mark.parametrize("kind", ["share", "slo", "capacity", "budget", "floor"])
@pytest.mark.parametrize("seed", [0, 1])
def test_array_master_optimum_equals_the_pyomo_masters(seed, kind):
    cls, p = case(seed, kind)
    for zeta in (0.0, 0.4, 1.0):
        ref = Planner(p, method="full", mip_gap=0).solve(zeta)  # Pyomo master, GLPK, every class
        pyomo = Planner(p, full_below=0, min_master=2, mip_gap=0).solve(zeta)  # Pyomo column generation
        glpk = Planner(p, full_below=0, min_master=2, mip_gap=0, arrays_above=0).solve(zeta)
        highs = Planner(p, solver="highs", full_below=0, min_master=2, mip_gap=0).solve(zeta)
        for s in (pyomo, glpk, highs):
            assert s.status == "optimal" and p.violations(s.x) == []
            assert np.array_equal(s.x.sum(axis=1), p.count)
            assert rel_close(s.objective, ref.objective), (kind, zeta, s.solver, s.objective, ref.objective)
            assert s.bound <= s.objective + 1e-7 * max(1.0, abs(s.objective))


def test_array_master_matches_the_per_query_formulation_and_grows_in_place():
    cls, p = case(5, "share", n=300, distinct=150)
    ref = Planner(per_query_problem(p, cls.query_class), method="full").solve(0.5)
    from llm_energy.plan.baselines import baselines

    rr = next(b for b in baselines(p, cls.query_class) if b.name == "round-robin")
    for solver in ("glpk", "highs"):
        pl = Planner(p, solver=solver, full_below=0, min_master=2, arrays_above=0)
        pl.seed_columns(rr.x, [0.5])  # a poor start: pricing has to bring the optimal columns in
        s = pl.solve(0.5)
        assert rel_close(s.objective, ref.objective)
        assert s.rounds > 1 and pl.builds == 1  # columns priced in were added to the one live model


def test_array_master_duals_are_the_pyomo_masters():
    """Same LP, same duals read back: class rows and the non-class rows in Row order, with their signs."""
    _, p = case(2, "capacity", n=80, distinct=30)
    from llm_energy.plan.solve.master import build_master
    from llm_energy.plan.solve.solvers import solve_master

    cols = p.allowed.copy()
    m = build_master(p, cols, np.arange(p.n_classes), penalty=1e4)
    m.model.zeta.set_value(0.3)
    ref = solve_master(m, "glpk", 60, 0.0)
    for solver in ("glpk", "highs"):
        a = ArrayMaster(p, cols, 1e4, solver)
        got = a.solve(zeta=0.3, weight=1.0, penalty=1e4, integer=False, time_limit_s=60, mip_gap=0.0)
        assert a.rows == m.rows
        x_ref = np.zeros(p.allowed.shape)
        x_ref[m.col_class, m.col_dep] = ref.x
        x = np.zeros(p.allowed.shape)
        x[a.col_class, a.col_dep] = got.x
        assert rel_close(p.objective(x, 0.3), p.objective(x_ref, 0.3), 1e-9)
        # the optimal duals of this LP are unique here only up to degeneracy: compare what they prove
        from llm_energy.plan.solve.duals import lagrangian_bound
        from llm_energy.plan.solve.solvers import row_duals

        b_ref, _ = lagrangian_bound(p, p.cost(0.3), row_duals(m, ref))
        b, _ = lagrangian_bound(p, p.cost(0.3), row_duals(a, got))
        assert rel_close(b, b_ref, 1e-7) and rel_close(b, p.objective(x, 0.3), 1e-7)


def test_glpk_array_master_survives_a_starting_basis_glpsol_refuses():
    _, p = case(3, "share", n=80, distinct=30)
    a = ArrayMaster(p, p.allowed.copy(), 1e4, "glpk")
    first = a.solve(zeta=0.5, weight=1.0, penalty=1e4, integer=False, time_limit_s=60, mip_gap=0.0)
    rows, cols = a._basis
    a._basis = (np.full(len(rows), "b"), np.full(len(cols), "b"))  # more basic variables than rows
    again = a.solve(zeta=0.5, weight=1.0, penalty=1e4, integer=False, time_limit_s=60, mip_gap=0.0)
    assert first.status == again.status == "optimal"
    assert rel_close(float(again.x.sum()), float(first.x.sum())) and a._basis is not None


def test_accuracy_floor_mip_after_an_array_lp_keeps_its_master_small(tmp_path):
    """Found planning the Azure trace on the H200 fits at --min-accuracy 60 (14,027 classes x 7 deployments,
    GLPK): the array LP holds every class as a row, and pricing added up to that many columns a round, so
    the MIP got 13,675 classes / 27,380 columns, hit its time limit and was reported 'infeasible in whole
    queries'. Pricing adds as many columns as the restricted master's own classes again; the MIP is then
    the old one (74 classes) and optimal, with the optimum of HiGHS."""
    from pathlib import Path

    from llm_energy.plan.run import PlanRequest, run

    root = Path(__file__).resolve().parents[1]
    req = dict(fits=str(root / "data/h200/plans/fits.json"), deployments=str(root / "configs/deployments.h200.yaml"),
               workload=str(root / "data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"), columns="azure",
               min_accuracy=60.0)
    glpk = run(PlanRequest(**req, out=str(tmp_path / "g"))).summary
    highs = run(PlanRequest(**req, solver="highs", out=str(tmp_path / "h"))).summary
    assert glpk.status == "optimal" and highs.status == "optimal"
    assert glpk.accuracy >= 60 - 1e-6
    assert abs(glpk.objective - highs.objective) <= 1e-5 * abs(highs.objective)


def test_plan_json_with_highs_is_json(tmp_path):
    """highspy's Highs() prints its banner on the process's stdout (from C++, before any option can be set):
    `plan --solver highs --json` began with two banner lines. Run as a user runs it, in a fresh process."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "d.yaml").write_text("deployments:\n"
                                     "  - {name: s, fit: 'llama-2-7b@h100x1/static/b1', accuracy: 50}\n"
                                     "  - {name: n, fit: 'llama-2-7b@h100x1/no-cache/b1', accuracy: 51}\n")
    (tmp_path / "w.csv").write_text("tin,tout\n64,64\n128,256\n")
    r = subprocess.run([sys.executable, "-m", "llm_energy.cli", "plan", "--fits", str(root / "data/h100/fits.json"),
                        "--deployments", str(tmp_path / "d.yaml"), "--workload", str(tmp_path / "w.csv"),
                        "--solver", "highs", "--json", "--out", str(tmp_path / "p")],
                       capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "optimal"
