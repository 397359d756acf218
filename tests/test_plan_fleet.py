"""A fleet (issue 17): whole replicas within an inventory, keep-on energy, deployments that may be off,
checked against a brute-force enumeration; the inventory section of the deployments file."""

import itertools

import numpy as np
import pytest

from llm_energy.errors import UserError
from llm_energy.plan.deployments import parse_deployments
from llm_energy.plan.problem import make_problem
from llm_energy.plan.solve.fleet import Changes, Fleet, plan_fleet
from llm_energy.plan.solve.solvers import SolveSettings
from llm_energy.plan.workload import Workload, aggregate


def three_deployments(rng, n: int, tin_max: int, tout_max: int):
    """(classes, problem, load s per deployment) of ``n`` random queries on a small, a middle and a big
    deployment (energy and runtime affine in tin and tout; accuracy 45, 55, 65; no minimum share)."""
    cls = aggregate(Workload(rng.integers(10, tin_max, n), rng.integers(5, tout_max, n)))
    i, o = cls.tin[:, None].astype(float), cls.tout[:, None].astype(float)
    e = np.column_stack([1 + 0.02 * i + 1.0 * o, 2 + 0.05 * i + 2.5 * o, 5 + 0.1 * i + 6.0 * o])
    r = np.column_stack([0.01 + 2e-4 * i + 0.02 * o, 0.01 + 1e-4 * i + 0.012 * o, 0.02 + 1e-4 * i + 0.008 * o])
    p = make_problem(["s", "m", "b"], cls.count, cls.tokens, e, r, [45.0, 55.0, 65.0], min_share=0.0)
    return cls, p, (r * cls.count[:, None]).sum(axis=0)


def small_case(seed: int, n: int = 7, zeta: float = 0.6):
    rng = np.random.default_rng(seed)
    cls, p, load = three_deployments(rng, n, 800, 300)
    window = float(load.min() / 2.5)  # every deployment needs a few replicas for the whole workload
    fleet = Fleet(types=("gpu-a", "gpu-b"), type_nodes=np.array([3, 4]), type_of=np.array([0, 0, 1]),
                  replica_nodes=np.array([1, 2, 2]), idle_w=np.array([30.0, 70.0, 200.0]) * rng.uniform(0.5, 2),
                  window_s=window, utilisation=0.8)
    return cls, p, fleet, zeta


def brute_force(p, fleet, zeta):
    """Every query to every deployment; the fewest replicas carrying each load; the inventory checked."""
    q = np.repeat(np.arange(p.n_classes), p.count)
    cost = p.raw_cost(zeta)
    best = None
    for a in itertools.product(range(p.n_deployments), repeat=len(q)):
        a = np.array(a)
        load = np.bincount(a, weights=p.runtime_s[q, a], minlength=p.n_deployments)
        y = np.ceil(load / fleet.replica_capacity_s - 1e-12).astype(int)
        if (y > fleet.max_replicas).any() or (fleet.nodes_used(y) > fleet.type_nodes).any():
            continue
        obj = cost[q, a].sum() + zeta * (fleet.idle_j * y).sum() / p.energy_scale
        energy = p.energy_j[q, a].sum() + (fleet.idle_j * y).sum()
        if best is None or obj < best[0] - 1e-12:
            best = (obj, y, energy)
    return best


@pytest.mark.parametrize("seed,zeta,solver", [(0, 0.6, "glpk"), (1, 0.9, "glpk"), (2, 0.3, "highs"), (3, 1.0, "highs")])
def test_replicas_and_energy_equal_a_brute_force_enumeration(seed, zeta, solver):
    cls, p, fleet, _ = small_case(seed)
    ref_obj, ref_y, ref_energy = brute_force(p, fleet, zeta)
    fp = plan_fleet(p, fleet, zeta, SolveSettings(solver=solver, mip_gap=0.0))
    x = fp.solution.x
    energy = float((x * p.energy_j).sum()) + fp.idle_energy_j
    assert abs(fp.objective - ref_obj) <= 1e-7 * max(1, abs(ref_obj)), (fp.objective, ref_obj)
    assert abs(energy - ref_energy) <= 1e-6 * ref_energy and fp.replicas.tolist() == ref_y.tolist()
    assert fp.exact and fp.bound is not None and fp.bound <= fp.objective + 1e-9
    assert (fleet.nodes_used(fp.replicas) <= fleet.type_nodes).all()
    assert ((x * p.runtime_s).sum(axis=0) <= fp.replicas * fleet.replica_capacity_s + 1e-9).all()


def test_a_deployment_may_be_off_and_strict_shares_keep_it_on():
    cls, p, fleet, _ = small_case(4, n=12)
    fleet = fleet.with_window(fleet.window_s * 3)
    fp = plan_fleet(p, fleet, 1.0, SolveSettings())
    off = fp.replicas == 0
    assert off.any() and (fp.solution.x[:, off] == 0).all()
    strict = make_problem(p.names, p.count, p.tokens, p.energy_j, p.runtime_s, p.accuracy, min_share=0.1)
    fs = plan_fleet(strict, fleet, 1.0, SolveSettings())
    assert (fs.replicas >= 1).all() and (fs.solution.x.sum(axis=0) >= 2).all()
    assert fs.objective >= fp.objective - 1e-9


def test_a_change_limit_bounds_replica_moves():
    cls, p, fleet, _ = small_case(5, n=12)
    fleet = fleet.with_window(fleet.window_s * 3)
    free = plan_fleet(p, fleet, 1.0, SolveSettings())
    prev = np.array([0, 0, 2])
    lim = plan_fleet(p, fleet, 1.0, SolveSettings(), changes=Changes(prev, max_change=1))
    assert (np.abs(lim.replicas - prev) <= 1).all() and lim.objective >= free.objective - 1e-9


def test_inventory_section_parses_and_names_bad_entries():
    doc = {"inventory": {"a100": {"nodes": 8, "idle_w": 250}, "h100": {"nodes": 2}},
           "deployments": [{"name": "a", "fit": "f", "accuracy": 50, "node_type": "a100", "replica_nodes": 4},
                           {"name": "b", "fit": "g", "accuracy": 60, "node_type": "h100", "replicas": 3}]}
    d = parse_deployments(doc, "f.yaml")
    assert d.inventory["a100"].nodes == 8 and d.inventory["a100"].idle_w == 250 and d.inventory["h100"].idle_w is None
    assert d.deployments[0].replica_nodes == 4 and d.deployments[1].replicas == 3  # the router's key kept
    bad = [({"inventory": {"a100": {"nodes": -1}}}, "inventory.a100.nodes"),
           ({"inventory": {"a100": {"nodes": 1, "watts": 3}}}, "inventory.a100.watts"),
           ({"inventory": {"x": {"nodes": 1}}}, "deployments[0].node_type"),
           ({"inventory": None}, "deployments[0].node_type")]
    for patch, field in bad:
        with pytest.raises(UserError, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse_deployments({**doc, **patch}, "f.yaml")
