"""The MIP's first incumbent (plan/solve/seeding.fill_capacity): the rounded LP's idle capacity filled with
whole queries. Always feasible, never worse, and the MIP optimum with it still equals the full MIP's."""

import numpy as np
import pytest

from llm_energy.plan.problem import make_problem
from llm_energy.plan.solve.planner import Planner
from llm_energy.plan.solve.seeding import fill_capacity, round_lp


def rel_close(a: float, b: float, tol: float = 1e-7) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def capacity_case(seed: int, c: int = 60, k: int = 4):
    rng = np.random.default_rng(seed)
    tin, tout = rng.integers(1, 2048, c), rng.integers(1, 512, c)
    e = rng.uniform(1, 10, k) + np.outer(tin, rng.uniform(0.5, 5, k)) / 100 + np.outer(tout, rng.uniform(20, 400, k)) / 100
    r = e / rng.uniform(200, 600, k)
    count = rng.integers(1, 40, c)
    need = (count[:, None] * r).sum(axis=0)
    cap = [float(need[j] * rng.uniform(0.2, 0.5)) if j < k - 1 else None for j in range(k)]
    return make_problem([f"d{j}" for j in range(k)], count, tin + tout, e, r, rng.uniform(40, 70, k), min_share=0.0,
                        capacity_s=cap)


@pytest.mark.parametrize("seed", range(6))
def test_filling_idle_capacity_is_feasible_never_worse_and_keeps_the_optimum(seed):
    p = capacity_case(seed)
    zeta = 0.6
    lp = Planner(p, method="full").exact
    from llm_energy.plan.solve.planner import _Clock
    import time

    lp.master.install(zeta)  # the LP relaxation, as ColumnGeneration.solve starts it
    master, res, _ = lp._feasible_lp(p.cost(zeta), zeta, _Clock(time.perf_counter(), 60.0))
    x_lp = lp.master.assemble(master, res.x)
    x0 = round_lp(p, x_lp, p.cost(zeta))
    assert x0 is not None
    x1 = fill_capacity(p, x0, p.cost(zeta))
    assert p.violations(x1) == [] and np.array_equal(x1.sum(axis=1), p.count) and (x1 >= 0).all()
    assert p.objective(x1, zeta) <= p.objective(x0, zeta) + 1e-12
    # the MIP optimum is unchanged (HiGHS proves it at gap 0; GLPK's branch and bound stalls on some of
    # these small MIPs with large counts: see docs/planner.md), and with GLPK the gap it reports is honest,
    # at its time limit too (seed 2 stops there, at 2 s as at 5 s, with its proven gap; the others finish in
    # at most ~1.2 s)
    ref = Planner(p, solver="highs", method="full", mip_gap=0).solve(zeta)
    got = Planner(p, solver="highs", full_below=0, min_master=2, mip_gap=0).solve(zeta)
    assert got.status == ref.status == "optimal" and rel_close(got.objective, ref.objective)
    glpk = Planner(p, full_below=0, min_master=2, time_limit_s=2).solve(zeta)
    assert glpk.objective >= ref.objective - 1e-7 * abs(ref.objective) and p.violations(glpk.x) == []
    assert glpk.objective - ref.objective <= glpk.gap * abs(glpk.objective) + 1e-7 * abs(ref.objective)


def test_filling_uses_the_capacity_rounding_left_idle():
    # one class of big queries half fits on the cheap deployment; small queries fill the rest
    p = make_problem(["cheap", "dear"], [1, 10], [100, 10], [[1.0, 5.0], [1.0, 2.0]], [[10.0, 10.0], [1.0, 1.0]],
                     [50, 50], min_share=0.0, capacity_s=[5.0, None])
    x0 = np.array([[0, 1], [0, 10]], dtype=np.int64)  # nothing on 'cheap': 5 s of it idle
    x1 = fill_capacity(p, x0, p.cost(1.0))
    assert x1[1, 0] == 5 and p.violations(x1) == []  # five small queries moved into the idle 5 s
    assert p.objective(x1, 1.0) < p.objective(x0, 1.0)


def test_an_exchange_makes_room_where_no_single_move_fits():
    # 'cheap' is full with one big query that gains little there; ten small ones would gain much more
    p = make_problem(["cheap", "dear"], [1, 10], [100, 10], [[1.0, 1.1], [1.0, 2.0]], [[10.0, 10.0], [1.0, 1.0]],
                     [50, 50], min_share=0.0, capacity_s=[10.0, None])
    x0 = np.array([[1, 0], [0, 10]], dtype=np.int64)
    x1 = fill_capacity(p, x0, p.cost(1.0))
    assert x1[0, 1] == 1 and x1[1, 0] == 10 and p.violations(x1) == []
    assert fill_capacity(p, x0, p.cost(1.0), max_swaps=0)[1, 0] == 0  # single moves alone cannot
