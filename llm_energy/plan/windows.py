"""Inventory plans over one window or many: the fleet from the files, then :func:`plan_inventory`.

:func:`build_fleet` turns the deployments file's ``inventory`` (and the fits' measured ``idle_w`` per
deployment, which wins where present) into a :class:`~llm_energy.plan.solve.fleet.Fleet`.
:func:`plan_inventory` plans the whole workload as one window, or, on a timed trace with
``window_s``, consecutive windows in order: each window's replica MIP starts from the previous
window's replicas (their start values) and is held within ``max_change`` replicas of them per deployment
(or charged ``price_j`` J per replica switched), so plans stay stable from window to window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llm_energy.errors import UserError
from llm_energy.plan.outputs import per_query_deployment
from llm_energy.plan.problem import PlanProblem
from llm_energy.plan.solve.fleet import Changes, Fleet, FleetPlan, plan_fleet
from llm_energy.plan.solve.solvers import SolveSettings


def build_fleet(deployments, fits, window_s: float, utilisation: float) -> tuple[Fleet, list[str]]:
    """The :class:`Fleet` of a deployments file with an inventory, and warnings (idle power unknown)."""
    inv = deployments.inventory
    types = tuple(inv)
    fit_idle = {}
    for key, d in (getattr(fits, "deployments", None) or {}).items():
        if getattr(d, "idle_w", None) is not None:
            fit_idle[key] = float(d.idle_w)
    idle, unknown = [], []
    for d in deployments.deployments:
        node = inv[d.node_type]
        if d.fit in fit_idle:
            idle.append(fit_idle[d.fit])  # measured for the whole deployment (one replica)
        elif node.idle_w is not None:
            idle.append(node.idle_w * d.replica_nodes)
        else:
            idle.append(0.0)
            unknown.append(d.name)
    warnings = []
    if unknown:
        warnings.append(f"{deployments.path}: no idle power for {', '.join(unknown)} (neither the fits' idle_w nor "
                        f"inventory.<type>.idle_w): their keep-on energy is counted as 0")
    fleet = Fleet(types=types, type_nodes=np.array([inv[t].nodes for t in types], dtype=np.int64),
                  type_of=np.array([types.index(d.node_type) for d in deployments.deployments], dtype=np.int64),
                  replica_nodes=np.array([d.replica_nodes for d in deployments.deployments], dtype=np.int64),
                  idle_w=np.array(idle, dtype=np.float64), window_s=float(window_s), utilisation=float(utilisation))
    return fleet, warnings


@dataclass
class WindowPlan:
    """One window: [start_s, end_s), its ``rows`` (classes of the whole problem present), its plan."""

    index: int
    start_s: float
    end_s: float
    queries: np.ndarray
    rows: np.ndarray
    plan: FleetPlan


@dataclass
class InventoryOutcome:
    """Every window's plan, the plan on the whole problem's classes ``x`` (C, K), each query's
    deployment ``dep`` and window ``window`` (file order), and the replicas per window (W, K)."""

    windows: list[WindowPlan]
    x: np.ndarray
    dep: np.ndarray
    window: np.ndarray
    replicas: np.ndarray

    @property
    def idle_energy_j(self) -> float:
        return float(sum(w.plan.idle_energy_j for w in self.windows))

    @property
    def changes(self) -> int:
        return int(np.abs(np.diff(self.replicas, axis=0)).sum()) if len(self.windows) > 1 else 0


def sub_problem(p: PlanProblem, rows: np.ndarray, count: np.ndarray) -> PlanProblem:
    """The classes ``rows`` of ``p`` with counts ``count`` (one window), in ``p``'s units."""
    return replace(p, count=np.asarray(count, dtype=np.int64), **p.rows_of(rows), scales=p.resolved_scales)


def plan_inventory(p: PlanProblem, query_class: np.ndarray, fleet: Fleet, zeta: float, settings: SolveSettings, *,
                   groups: np.ndarray | None = None, arrival_s: np.ndarray | None = None,
                   window_s: float | None = None, max_change: int | None = None, price_j: float = 0.0
                   ) -> InventoryOutcome:
    """Plan the replicas and queries of one window (no ``window_s``), or of consecutive windows of a timed
    trace in order, each held to the previous one's replicas (module docstring)."""
    n = len(query_class)
    if window_s is None:
        window = np.zeros(n, dtype=np.int64)
        edges = [0.0, fleet.window_s]
    else:
        if arrival_s is None:
            raise UserError("--window-s needs a timed trace: the workload has no arrival times")
        window = np.floor(arrival_s / window_s).astype(np.int64)
        edges = list(np.arange(window.max() + 2) * float(window_s))
        fleet = fleet.with_window(window_s)
    x = np.zeros(p.allowed.shape, dtype=np.int64)
    dep = np.zeros(n, dtype=np.int64)
    plans: list[WindowPlan] = []
    prev = None
    for w in range(int(window.max()) + 1):
        q = np.flatnonzero(window == w)
        counts = np.bincount(query_class[q], minlength=p.n_classes)
        rows = np.flatnonzero(counts)
        changes = None if prev is None else Changes(prev, max_change, price_j)
        if rows.size == 0:
            fp_rep = np.zeros(p.n_deployments, dtype=np.int64) if changes is None or max_change is None \
                else np.maximum(prev - max_change, 0)
            plans.append(WindowPlan(w, edges[w], edges[w + 1], q, rows, _empty(fp_rep, fleet, changes)))
            prev = fp_rep
            continue
        sub = sub_problem(p, rows, counts[rows])
        fp = plan_fleet(sub, fleet, zeta, settings, groups=None if groups is None else groups[rows], changes=changes)
        x[rows] += fp.solution.x
        dep[q] = per_query_deployment(np.searchsorted(rows, query_class[q]), fp.solution.x)
        plans.append(WindowPlan(w, edges[w], edges[w + 1], q, rows, fp))
        prev = fp.replicas
    replicas = np.array([wp.plan.replicas for wp in plans], dtype=np.int64)
    return InventoryOutcome(windows=plans, x=x, dep=dep, window=window, replicas=replicas)


def _empty(replicas: np.ndarray, fleet: Fleet, changes: Changes | None) -> FleetPlan:
    """A window without queries: only the replicas the change limit keeps on."""
    n_changes = 0 if changes is None else int(np.abs(replicas - changes.previous).sum())
    return FleetPlan(replicas=replicas, solution=None, objective=0.0, bound=None, gap=None,
                     idle_energy_j=float((fleet.idle_j * replicas).sum()), status="optimal", classes=0, exact=True,
                     solve_s=0.0, changes=n_changes)
