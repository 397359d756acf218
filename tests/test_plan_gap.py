"""The gap a plan reports against the --mip-gap it asked for: the bound GLPK proved read from its log
(its solution file has none), a fleet plan's two stages sharing the gap, the Pyomo master's own gap set
so that the whole problem's gap meets --mip-gap."""

from types import SimpleNamespace

import numpy as np
import pytest
from pyomo.opt import TerminationCondition as TC

from llm_energy.plan.problem import make_problem
from llm_energy.plan.solve.fleet import Fleet, plan_fleet
from llm_energy.plan.solve.planner import Planner
from llm_energy.plan.solve.solvers import GLPK_TOL_OBJ, PyomoRun, SolveSettings, mip_bound
from tests.test_plan_fleet import three_deployments
from tests.test_plan_incumbent import capacity_case

GAP_STOP = """+   310: mip =   1.250000000e+02 >=   1.240000000e+02   0.8% (12; 3)
+   362: >>>>>   1.241000000e+02 >=   1.240500000e+02 < 0.1% (9; 5)
RELATIVE MIP GAP TOLERANCE REACHED; SEARCH TERMINATED
"""
EMPTY = """+    17: >>>>>   5.985318513e+03 >=   8.416128544e+01  98.6% (7; 0)
+    21: mip =   8.900057216e+02 >=     tree is empty   0.0% (0; 19)
INTEGER OPTIMAL SOLUTION FOUND
"""
TIMED_OUT = """+ 81073: mip =   4.817642040e+02 >=   2.447670257e+01  94.9% (39160; 7767)
TIME LIMIT EXCEEDED; SEARCH TERMINATED
"""


def glpk_run(log: str, tc=TC.feasible) -> PyomoRun:
    return PyomoRun(res=SimpleNamespace(), wall_s=0.1, tc=tc, log=log)


def test_glpks_proven_bound_is_read_from_its_log():
    # stopped at --mipgap: the best node's bound (printed to 10 digits), not incumbent - mipgap |incumbent|
    b = mip_bound(glpk_run(GAP_STOP), 124.1, "glpk", 1e-3)
    assert 124.05 * (1 - 2e-9) <= b <= 124.05 and b > 124.1 - 1e-3 * 124.1
    # every node pruned: optimal to GLPK's tol_obj, whatever --mipgap was
    b = mip_bound(glpk_run(EMPTY, TC.optimal), 890.0057216, "glpk", 1e-4)
    assert b == pytest.approx(890.0057216 - GLPK_TOL_OBJ * (1 + 890.0057216), abs=1e-12)
    # time limit: the bound so far is still a bound
    assert mip_bound(glpk_run(TIMED_OUT), 481.764204, "glpk", 1e-4) == pytest.approx(24.4767025, rel=1e-8)
    # no progress line with an incumbent: only a stop at the gap proves incumbent - mipgap |incumbent|
    assert mip_bound(glpk_run("mip =     not found yet >=              -inf        (1; 0)\n"), 10.0, "glpk",
                     1e-4) == pytest.approx(10.0 - 1e-3)
    assert mip_bound(glpk_run("TIME LIMIT EXCEEDED; SEARCH TERMINATED\n"), 10.0, "glpk", 1e-4) is None


def fleet_case(seed: int, n: int = 60):
    """A fleet whose stage 2 (whole queries on the replicas stage 1 chose) is a fractional MIP."""
    _, p, load = three_deployments(np.random.default_rng(seed), n, 2000, 500)
    fleet = Fleet(types=("gpu-a", "gpu-b"), type_nodes=np.array([6, 8]), type_of=np.array([0, 0, 1]),
                  replica_nodes=np.array([1, 2, 2]), idle_w=np.array([30.0, 70.0, 200.0]),
                  window_s=float(load.min() / 3.3), utilisation=0.8)
    return p, fleet


@pytest.mark.parametrize("seed,zeta", [(1, 0.7), (0, 0.7), (2, 0.9)])
def test_a_fleet_plans_gap_meets_the_mip_gap_asked_for(seed, zeta):
    # the old code took stage 1's bound as incumbent - mipgap |incumbent| (GLPK reports none) and added what
    # whole queries cost in stage 2 on top: 1.1-1.2e-4 reported at --mip-gap 1e-4
    p, fleet = fleet_case(seed)
    fp = plan_fleet(p, fleet, zeta, SolveSettings(mip_gap=1e-4))
    assert fp.status == "optimal" and fp.exact and fp.bound is not None
    assert not fp.solution.lp_integral  # stage 2 had something to round
    assert fp.gap <= 1e-4, fp.gap
    ref = plan_fleet(p, fleet, zeta, SolveSettings(solver="highs", mip_gap=0.0))
    assert ref.objective >= fp.bound - 1e-9 * abs(ref.objective)  # the bound is a bound
    assert fp.objective - ref.objective <= fp.gap * abs(fp.objective) + 1e-9 * abs(ref.objective)


def test_the_pyomo_masters_own_gap_keeps_the_whole_problems_gap_within_mip_gap():
    # the solver's relative gap is on the master's objective, the fixed classes' cost F left out: where the
    # master's part X outweighs the whole X + F (costs of both signs) the solver is asked for less
    rng = np.random.default_rng(3)
    c, k = 80, 3
    e = rng.uniform(1, 50, (c, k))
    p = make_problem([f"d{j}" for j in range(k)], rng.integers(1, 30, c), rng.integers(10, 500, c), e, e / 300,
                     [40.0, 55.0, 70.0], min_share=0.0, capacity_s=[float((e / 300).sum() * 3), None, None])
    cg = Planner(p, full_below=0, min_master=2).exact
    cg.master.install(0.5)
    master = cg.master.model(cg.penalty, integer=True)
    fixed = p.objective(cg.master.assemble(master, np.zeros(master.n_columns)), 0.5)
    assert fixed != 0 and len(master.classes) < p.n_classes
    G = 1e-4
    for bound in (0.5 * fixed, 0.1 * fixed, -fixed, 2 * fixed, 1.0001 * fixed):
        g = cg._solver_gap(master, 0.5, bound)
        assert 0 < g <= G
        x_lp = bound - fixed
        for x_inc in np.linspace(x_lp, x_lp + G * abs(bound), 7):  # where the solver may stop
            assert g * abs(x_inc) <= G * abs(x_inc + fixed) * (1 + 1e-12)
    assert cg._solver_gap(master, 0.5, 0.1 * fixed) < G / 8  # the master's part 9x the whole: 9x tighter
    assert cg._solver_gap(master, 0.5, 1.0001 * fixed) == G  # a small part: never looser than asked for


def test_a_window_the_solver_packs_no_whole_queries_into_in_time_gets_a_replica_more(monkeypatch):
    # GLPK found no whole-query plan in stage 1's replicas within the stage-2 limit (utilisation 0.7 on the
    # conversation trace, window 5): not an error any more, a replica more and status time_limit
    import llm_energy.plan.solve.planner as planner

    p, fleet = fleet_case(1)
    free = plan_fleet(p, fleet, 0.7, SolveSettings())
    calls = []
    real = planner.Planner.solve

    def first_times_out(self, zeta):
        calls.append(self.p.capacity_s.copy())
        if len(calls) == 1:
            raise planner.NoIntegerPlanInTime("solver glpk reached the time limit (10 s) before an integer plan met ...")
        return real(self, zeta)

    monkeypatch.setattr(planner.Planner, "solve", first_times_out)
    fp = plan_fleet(p, fleet, 0.7, SolveSettings())
    assert len(calls) == 2 and (calls[1] >= calls[0]).all() and (calls[1] > calls[0]).any()
    assert fp.status == "time_limit" and fp.objective >= free.objective - 1e-9
    assert fp.gap is not None and fp.bound == pytest.approx(free.bound, rel=1e-9)
    assert ((fp.solution.x * p.runtime_s).sum(axis=0) <= fp.replicas * fleet.replica_capacity_s + 1e-9).all()


def test_small_glpk_mips_get_cuts_and_pseudocost_branching(monkeypatch):
    # no timing here: benchmarks/bench_planner.py --glpk-cuts measures what they buy
    import llm_energy.plan.solve.solvers as solvers

    seen = []
    real = solvers.run_pyomo

    def spy(m, solver, time_limit_s, mip_gap, glpk_options=None):
        run = real(m, solver, time_limit_s, mip_gap, glpk_options)
        seen.append((glpk_options, run.log))
        return run

    monkeypatch.setattr(solvers, "run_pyomo", spy)
    p = capacity_case(0)  # 60 classes x 4 deployments, optimal within a second either way
    on = Planner(p, method="full").solve(0.6)
    mips = [(o, log) for o, log in seen if o is not None]
    assert not on.lp_integral and mips and all(o == solvers.GLPK_SMALL_MIP_OPTIONS for o, _ in mips)
    assert all("Gomory's cuts enabled" in log and "MIR cuts enabled" in log and "--pcost" in log for _, log in mips)
    seen.clear()
    off = Planner(p, SolveSettings(method="full", glpk_cuts_below=0)).solve(0.6)
    assert seen and all(o is None for o, _ in seen)
    assert abs(off.objective - on.objective) <= 1e-4 * abs(on.objective) * 2
