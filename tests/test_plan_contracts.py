"""The planner's contracts (issue 17): HiGHS on every MIP, a time-limited MIP returns its best plan,
negative predictions never silently rescaled, ties at zeta = 0 / 1 as documented, the gap reported is
the gap achieved. Each of these failed on the code before issue 17."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from llm_energy.cli import main
from llm_energy.plan.problem import make_problem
from llm_energy.plan.solve.planner import Planner
from llm_energy.plan.workload import Workload, aggregate

from tests.test_cli_plan import hand_fits  # noqa: F401,F811 (a fixture)
from tests.test_planner import random_case, rel_close

REPO = Path(__file__).resolve().parents[1]
COEFFICIENTS = REPO.parent / "shared" / "reference" / "wilkins2024" / "coefficients.json"
PAPER_YAML = REPO / "configs" / "deployments.paper.yaml"


def plan_json(capsys, *argv):
    rc = main([str(a) for a in argv] + ["--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def capacity_case(seed=5, n=50, distinct=25):
    cls, p0 = random_case(seed, n=n, k=3, distinct=distinct, min_share=0.05)
    free = Planner(p0).solve(0.5)
    used = (free.x * p0.runtime_s).sum(axis=0)
    cap = [None, None, None]
    k = int(np.argmax(used))
    cap[k] = 0.6 * used[k]
    return cls, p0, cap


@pytest.mark.parametrize("row", ["capacity", "budget", "floor"])
def test_highs_solves_every_mip_glpk_does(row):
    """Was: RuntimeError 'Solver does not currently have valid duals' (the dual suffix imported on a MIP)."""
    cls, p0, cap = capacity_case(5, n=200, distinct=150)
    kw = {"capacity": dict(capacity_s=cap),
          "budget": dict(energy_budget_j=0.5 * sum(Planner(p0).solve(z).metrics["energy_j"] for z in (0.0, 1.0))),
          "floor": dict(accuracy_floor=float(np.average(p0.accuracy, weights=[1, 2, 4])))}[row]
    p = make_problem(p0.names, p0.count, p0.tokens, p0.energy_j, p0.runtime_s, p0.accuracy, min_share=0.05, **kw)
    zeta = {"capacity": 0.5, "budget": 0.0, "floor": 1.0}[row]
    g = Planner(p, solver="glpk", mip_gap=1e-7).solve(zeta)
    h = Planner(p, solver="highs", mip_gap=1e-7).solve(zeta)
    assert h.solver == "highs" and h.status == g.status == "optimal" and not g.lp_integral  # a MIP
    assert p.violations(h.x) == [] and rel_close(h.objective, g.objective, 1e-6)


def hard_mip():
    cls, p0 = random_case(11, n=4000, k=6, distinct=3000, min_share=0.0)
    free = Planner(p0).solve(1.0)
    used = (free.x * p0.runtime_s).sum(axis=0)
    cap = list(np.maximum(used, used.mean()) * 0.97)
    return make_problem(p0.names, p0.count, p0.tokens, p0.energy_j, p0.runtime_s, p0.accuracy, min_share=0.0,
                        capacity_s=cap)


def test_a_time_limited_glpk_mip_returns_its_best_plan_with_gap_and_bound():
    """Was: exit 2 ('stopped with status time_limit_no_solution on the MIP'), no plan; and a MIP stopped by
    GLPK's --tmlim with an incumbent was reported 'optimal' at a 1.2% gap."""
    p = hard_mip()
    # 3 s, not 1: GLPK's first incumbent comes near 1 s here and a loaded CI core missed it once (no plan:
    # TimeLimitReached); the gap stays 1.6e-2 up to 5 s at least, so the limit still stops it unproven
    s = Planner(p, method="full", time_limit_s=3, mip_gap=0.0).solve(0.7)
    assert s.status == "time_limit"
    assert p.violations(s.x) == [] and np.array_equal(s.x.sum(axis=1), p.count)
    assert s.bound <= s.objective and s.gap > 0
    assert rel_close(s.gap, (s.objective - s.bound) / abs(s.objective), 1e-9)


def test_the_gap_reported_is_the_gap_achieved(hand_fits, tmp_path, capsys):  # noqa: F811
    """Was: the default --mip-gap 1e-4 stopped 4.1e-5 (GLPK; HiGHS 5.2e-5, another plan) from the LP bound
    with no bound in the summary; the gap is now to the best proven bound, and holds against the optimum."""
    fits, deps, w = hand_fits
    base = ["plan", "--fits", fits, "--deployments", deps, "--workload", w, "--energy-budget", 3e6, "--zeta", 0.2]
    rc, ref, err = plan_json(capsys, *base, "--out", tmp_path / "ref", "--solver", "highs", "--mip-gap", 0)
    assert rc == 0, err
    for solver, gap in (("glpk", None), ("highs", None), ("glpk", 1e-6), ("highs", 1e-6)):
        extra = [] if gap is None else ["--mip-gap", gap]
        rc, d, err = plan_json(capsys, *base, "--out", tmp_path / solver, "--solver", solver, *extra)
        assert rc == 0, err
        assert d["status"] == "optimal" and d["mip_gap"] == (gap or 1e-4)
        assert d["lp_bound"] <= d["bound"] <= ref["objective"] + 1e-9 * abs(ref["objective"])
        assert rel_close(d["gap"], (d["objective"] - d["bound"]) / abs(d["objective"]), 1e-9)
        assert d["objective"] - ref["objective"] <= d["gap"] * abs(d["objective"]) + 1e-12
        assert d["gap"] <= d["mip_gap"] * (1 + 1e-6) and "gap achieved" in d["formulation"]


def test_negative_energy_keep_never_rescales_silently(tmp_path, capsys):
    """Was: mean predicted energy <= 0, E_bar silently set to 1 J, a plan of negative energy 'optimal'."""
    if not COEFFICIENTS.exists():
        pytest.skip("reference coefficients missing")
    w = tmp_path / "code.csv"
    main(["workload", "synth", "--kind", "code", "--n", "300", "--out", str(w)])
    capsys.readouterr()
    rc, d, err = plan_json(capsys, "plan", "--fits", COEFFICIENTS, "--deployments", PAPER_YAML, "--workload", w,
                           "--out", tmp_path / "o", "--negative-energy", "keep")
    assert rc == 2 and "--negative-energy=keep" in err and "<= 0" in err and len(err.strip().splitlines()) == 1


def brute_lexicographic(p, first, second):
    """Enumerate every per-query assignment: best ``first`` objective, then best ``second`` among those."""
    q = np.repeat(np.arange(p.n_classes), p.count)
    best = None
    for a in itertools.product(range(p.n_deployments), repeat=len(q)):
        x = np.zeros(p.allowed.shape)
        np.add.at(x, (q, np.array(a)), 1)
        if p.violations(x):
            continue
        key = (round(first(x), 9), round(second(x), 9))
        if best is None or key < best[0]:
            best = (key, x)
    return best


@pytest.mark.parametrize("zeta", [0.0, 1.0])
def test_ties_at_zeta_0_and_1_resolve_to_the_documented_plan(zeta):
    """Was: at zeta = 0 with equal-accuracy deployments (and classes of equal tokens) the plan used more
    energy than the least-energy plan of top accuracy."""
    pairs = np.array([[100, 20], [60, 60], [20, 100], [119, 1], [1, 119], [30, 90], [90, 30]])
    cls = aggregate(Workload(pairs[:, 0], pairs[:, 1]))
    i, o = cls.tin[:, None].astype(float), cls.tout[:, None].astype(float)
    e = np.column_stack([2 + 0.5 * i + 9 * o, 1 + 0.9 * i + 7 * o, 3 + 0.1 * i + 20 * o])
    acc = [50.0, 60.0, 60.0] if zeta == 0.0 else [50.0, 55.0, 65.0]
    if zeta == 1.0:
        e[:, 2] = e[:, 1]  # deployments 1 and 2: the same energy, different accuracy
    p = make_problem(["a", "b", "c"], cls.count, cls.tokens, e, e / 100, acc, min_share=0.2)
    s = Planner(p, full_below=0, min_master=1).solve(zeta)
    energy = lambda x: float((x * p.energy_j).sum())  # noqa: E731
    accuracy = lambda x: -p.metrics(x)["accuracy"]  # noqa: E731
    (k1, k2), ref = brute_lexicographic(p, accuracy, energy) if zeta == 0.0 else brute_lexicographic(p, energy, accuracy)
    got = (accuracy(s.x), energy(s.x)) if zeta == 0.0 else (energy(s.x), accuracy(s.x))
    assert abs(got[0] - k1) <= 1e-9 * max(1, abs(k1)) and abs(got[1] - k2) <= 1e-9 * max(1, abs(k2)), (got, k1, k2)
    assert s.status == "optimal"
