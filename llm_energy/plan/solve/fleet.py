"""A fleet: whole replicas per deployment within a node inventory, with their keep-on energy.

With an inventory the planner decides, besides which queries each deployment serves, how many
replicas y_K of each deployment to switch on. One replica of K needs ``replica_nodes[K]`` nodes of its
node type; the nodes of a type are limited; a replica gives ``utilisation x window_s`` seconds of
service in the window and draws its idle power all window long (``idle_j`` = idle_w x window_s):

    min  sum_{c,K} x[c,K] cost[c,K]  +  zeta * sum_K idle_j[K] y[K] / E_bar  (+ zeta * price_j * |y - y_prev| / E_bar)
    s.t. sum_K x[c,K] = n[c];   share rows as the plan has them (none by default: a deployment may be off)
         sum_c R[c,K] x[c,K] <= utilisation * window_s * y[K]                 (capacity of the replicas)
         sum_{K on type t} replica_nodes[K] y[K] <= nodes[t]                  (the inventory)
         |y[K] - y_prev[K]| <= max_change                                     (between windows, optional)
         y integer >= 0

Two stages keep GLPK's problems small: (1) the MIP above with integer y only, on the exact classes
when they are few (``exact_pairs``; x integer too when tiny) or else on groups of classes (count-weighted
mean costs, so a group's load is exact when it goes to one deployment); (2) y fixed, the exact
class plan with capacity rows from :mod:`.planner`. On exact classes stage 1 is a relaxation, so its
proven bound bounds the whole problem and the gap is reported; on groups no bound is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llm_energy.errors import UserError
from llm_energy.plan.problem import InfeasiblePlan, PlanProblem, row_coefficients
from llm_energy.plan.solve.solvers import SolveSettings, glpk_timed_out, mip_bound, run_pyomo


@dataclass(frozen=True)
class Fleet:
    """The inventory as the planner sees it (K deployments, T node types).

    ``types``/``type_nodes`` (T,): node types and how many nodes of each exist; ``type_of`` (K,): the
    type index of each deployment; ``replica_nodes`` (K,): nodes one replica needs; ``idle_w`` (K,):
    the idle power of one replica (W); ``window_s``: the window's length; ``utilisation``: the share of
    the window a replica may be busy (1: perfect packing; less leaves queueing headroom).
    """

    types: tuple[str, ...]
    type_nodes: np.ndarray
    type_of: np.ndarray
    replica_nodes: np.ndarray
    idle_w: np.ndarray
    window_s: float
    utilisation: float = 1.0

    @property
    def replica_capacity_s(self) -> float:
        """Service seconds one replica gives in the window."""
        return self.utilisation * self.window_s

    @property
    def idle_j(self) -> np.ndarray:
        """Keep-on energy of one replica over the window (J, K)."""
        return self.idle_w * self.window_s

    @property
    def max_replicas(self) -> np.ndarray:
        """The most replicas of each deployment its node type allows (K,)."""
        return self.type_nodes[self.type_of] // self.replica_nodes

    def nodes_used(self, replicas: np.ndarray) -> np.ndarray:
        """Nodes of each type the replicas take (T,)."""
        return np.bincount(self.type_of, weights=replicas * self.replica_nodes, minlength=len(self.types))

    def with_window(self, window_s: float) -> Fleet:
        return replace(self, window_s=float(window_s))


@dataclass(frozen=True)
class Changes:
    """Replica changes between windows: ``previous`` counts (K,), at most ``max_change`` per deployment
    (None: any), and ``price_j`` J charged per replica switched on or off (as energy, zeta-weighted)."""

    previous: np.ndarray
    max_change: int | None = None
    price_j: float = 0.0


@dataclass
class FleetPlan:
    """A fleet plan: ``replicas`` (K,), the plan ``solution`` (a :class:`PlanSolution` of the queries with
    the replicas' capacities), ``objective`` = queries' objective + zeta-weighted keep-on (and change)
    energy, ``bound`` (proven, None when stage 1 ran on groups), ``gap``, ``idle_energy_j``, the stage-1
    ``status`` and ``classes`` it saw, ``solve_s`` of both stages."""

    replicas: np.ndarray
    solution: object
    objective: float
    bound: float | None
    gap: float | None
    idle_energy_j: float
    status: str
    classes: int
    exact: bool
    solve_s: float
    changes: int = 0


def group_problem(p: PlanProblem, labels: np.ndarray) -> PlanProblem:
    """The classes merged by ``labels`` (C,): counts summed, energy, runtime and tokens count-weighted
    means (so a group's totals are exact when all of it goes to one deployment), a pair allowed only where
    every member is allowed. Same scales as ``p``."""
    _, g = np.unique(labels, return_inverse=True)
    n = int(g.max()) + 1
    cnt = np.bincount(g, weights=p.count, minlength=n)
    w = p.count.astype(np.float64)

    def mean(m: np.ndarray) -> np.ndarray:
        out = np.zeros((n,) + m.shape[1:])
        np.add.at(out, g, m * (w if m.ndim == 1 else w[:, None]))
        return out / (cnt if m.ndim == 1 else cnt[:, None])

    allowed = np.ones((n, p.n_deployments), dtype=bool)
    np.logical_and.at(allowed, g, p.allowed)
    return replace(p, count=cnt.astype(np.int64), tokens=mean(p.tokens), energy_j=mean(p.energy_j),
                   runtime_s=mean(p.runtime_s), allowed=allowed, scales=p.resolved_scales,
                   budget_energy_j=None if p.budget_energy_j is None else mean(p.budget_energy_j))


def capacity_problem(p: PlanProblem, fleet: Fleet, replicas: np.ndarray) -> PlanProblem:
    """The plan of the queries once the replicas are fixed: capacity rows from them, off deployments barred."""
    on = np.asarray(replicas) > 0
    return replace(p, capacity_s=np.asarray(replicas, dtype=np.float64) * fleet.replica_capacity_s,
                   allowed=p.allowed & on[None, :], scales=p.resolved_scales)


def _stage1(p: PlanProblem, fleet: Fleet, zeta: float, settings: SolveSettings, changes: Changes | None,
            integer_x: bool) -> tuple[np.ndarray, str, float | None, float]:
    """The replica MIP (module docstring): (replicas, status, proven lower bound or None, wall s)."""
    import pyomo.environ as pyo
    from pyomo.core.expr.numeric_expr import LinearExpression

    K = p.n_deployments
    rows, cols = np.nonzero(p.allowed)
    cost = p.raw_cost(zeta)[rows, cols]
    coef = row_coefficients(p)
    m = pyo.ConcreteModel(name="llm_energy_fleet")
    m.x = pyo.Var(range(len(rows)), within=pyo.NonNegativeIntegers if integer_x else pyo.NonNegativeReals)
    m.y = pyo.Var(range(K), within=pyo.NonNegativeIntegers, bounds=lambda _, k: (0, int(fleet.max_replicas[k])))
    xs = [m.x[j] for j in range(len(rows))]

    def lin(idx, c=None, extra=()) -> LinearExpression:
        idx = [int(j) for j in idx]
        cs = [1.0] * len(idx) if c is None else [float(v) for v in c]
        return LinearExpression(constant=0.0, linear_coefs=cs + [a for a, _ in extra],
                                linear_vars=[xs[j] for j in idx] + [v for _, v in extra])

    m.c = pyo.ConstraintList()
    starts = np.searchsorted(rows, np.arange(p.n_classes + 1))
    for i in range(p.n_classes):
        m.c.add(lin(range(starts[i], starts[i + 1])) == int(p.count[i]))
    lo, hi = p.share_lo, p.share_hi
    cap = fleet.replica_capacity_s / p.runtime_scale
    for k in range(K):
        jj = np.flatnonzero(cols == k)
        if lo[k] > 0:
            m.c.add(lin(jj) >= int(lo[k]))
        if hi[k] < p.n_queries:
            m.c.add(lin(jj) <= int(hi[k]))
        m.c.add(lin(jj, coef["capacity"][rows[jj], k], [(-cap, m.y[k])]) <= 0)
    for t in range(len(fleet.types)):
        on_t = np.flatnonzero(fleet.type_of == t)
        m.c.add(sum(int(fleet.replica_nodes[k]) * m.y[k] for k in on_t) <= int(fleet.type_nodes[t]))
    idle = fleet.idle_j / p.energy_scale
    all_j = np.arange(len(rows))
    if p.energy_budget_j is not None:
        m.c.add(lin(all_j, coef["budget"][rows, cols], [(float(idle[k]), m.y[k]) for k in range(K)])
                <= p.energy_budget_j / p.energy_scale)
    if p.accuracy_floor is not None:
        m.c.add(lin(all_j, coef["floor"][rows, cols]) >= p.accuracy_floor * (p.count * p.tokens).sum() / p.accuracy_scale)
    obj = lin(all_j, cost, [(zeta * float(idle[k]), m.y[k]) for k in range(K)])
    if changes is not None:
        prev = np.asarray(changes.previous, dtype=np.int64)
        m.up = pyo.Var(range(K), within=pyo.NonNegativeReals)
        m.down = pyo.Var(range(K), within=pyo.NonNegativeReals)
        for k in range(K):
            m.c.add(m.y[k] - m.up[k] + m.down[k] == int(prev[k]))
            if changes.max_change is not None:
                m.c.add(m.up[k] + m.down[k] <= int(changes.max_change))
            m.y[k].value = int(min(prev[k], fleet.max_replicas[k]))  # the warm start
        price = zeta * changes.price_j / p.energy_scale
        if price:
            obj = obj + price * pyo.quicksum(m.up[k] + m.down[k] for k in range(K))
    m.obj = pyo.Objective(expr=obj, sense=pyo.minimize)
    return _solve_stage1(m, K, settings)


def _solve_stage1(m, K: int, settings: SolveSettings) -> tuple[np.ndarray, str, float | None, float, float]:
    """The replica MIP solved at ``settings.mip_gap``: (replicas, status, proven bound or None, wall s, incumbent)."""
    import pyomo.environ as pyo
    from pyomo.opt import TerminationCondition as TC

    run = run_pyomo(m, settings.solver, settings.time_limit_s, settings.mip_gap)
    res, tc = run.res, run.tc
    if tc not in (TC.optimal, TC.feasible, TC.maxTimeLimit) or len(res.solution) == 0:
        if tc == TC.infeasible:
            raise InfeasiblePlan("infeasible: the inventory cannot hold replicas enough for the workload "
                                 "(capacity = replicas x utilisation x window); add nodes, raise --utilisation "
                                 "or --max-replica-change, or relax the constraints")
        raise UserError(f"solver {settings.solver} stopped with status {tc} on the replica MIP; raise --time-limit")
    m.solutions.load_from(res)
    y = np.array([int(round(m.y[k].value or 0)) for k in range(K)], dtype=np.int64)
    obj = float(pyo.value(m.obj))
    timed_out = tc == TC.maxTimeLimit or (settings.solver == "glpk" and glpk_timed_out(run, settings.time_limit_s))
    bound = mip_bound(run, obj, settings.solver, settings.mip_gap)
    return y, ("time_limit" if timed_out else "optimal"), bound, run.wall_s, obj


def plan_fleet(p: PlanProblem, fleet: Fleet, zeta: float, settings: SolveSettings, *,
               groups: np.ndarray | None = None, changes: Changes | None = None, exact_pairs: int = 20000,
               integer_pairs: int = 300, warm_x: np.ndarray | None = None) -> FleetPlan:
    """Replicas and the plan for ``zeta`` (the module docstring's two stages).

    ``groups`` (C,) labels the classes stage 1 may merge when ``p`` has more than ``exact_pairs`` allowed
    pairs; ``warm_x`` (C, K) seeds stage 2's master (e.g. from the previous window).
    """
    from llm_energy.plan.solve.planner import NoIntegerPlanInTime, Planner

    exact = int(p.allowed.sum()) <= exact_pairs or groups is None
    s1 = p if exact else group_problem(p, groups)
    small = exact and int(s1.allowed.sum()) <= integer_pairs  # whole queries in stage 1 only where exact and tiny
    # the gap reported is (objective - stage 1's bound) / |objective|: stage 1's own gap plus what whole
    # queries on fixed replicas cost over stage 1's incumbent. Stage 1 gets half of --mip-gap, stage 2 the rest
    y, status, bound, wall, obj1 = _stage1(s1, fleet, zeta, replace(settings, mip_gap=settings.mip_gap / 2),
                                           changes, integer_x=small)
    stage2 = replace(settings, time_limit_s=min(settings.time_limit_s, settings.stage2_time_limit_s),
                     mip_gap=_stage2_gap(settings.mip_gap, obj1, bound, obj1 - _keep_on(p, fleet, y, zeta, changes)))
    sol = None
    for _ in range(3):
        try:
            # the capacity MIP of one window: GLPK's branch and bound can stall on it (HiGHS closes it in
            # well under a second), so it gets at most settings.stage2_time_limit_s (default 10 s) and then
            # returns its best plan
            planner = Planner(capacity_problem(p, fleet, y), stage2)
            if warm_x is not None:
                planner.seed_columns(warm_x, [zeta])
            sol = planner.solve(zeta)
            break
        except (InfeasiblePlan, NoIntegerPlanInTime) as e:
            # whole queries need a little more than the relaxation's capacity (or are packed so tight in it
            # that the solver found no whole-query plan within stage2_time_limit_s: GLPK, at utilisation 0.7;
            # the window is then time-limited, its gap what the added replicas cost over stage 1's bound)
            status = "time_limit" if isinstance(e, NoIntegerPlanInTime) else status
            grow = (y < fleet.max_replicas) & (y > 0)
            grow &= fleet.nodes_used(y)[fleet.type_of] + fleet.replica_nodes <= fleet.type_nodes[fleet.type_of]
            if not grow.any():
                raise
            y = y + grow
    if sol is None:
        raise InfeasiblePlan("infeasible: no whole-query plan fits the replicas the inventory allows")
    y = _fewest(y, sol.x, p, fleet, changes)
    idle_j = float((fleet.idle_j * y).sum())
    n_changes = 0 if changes is None else int(np.abs(y - changes.previous).sum())
    objective = sol.objective + _keep_on(p, fleet, y, zeta, changes)
    bound = bound if exact else None
    gap = None if bound is None else max(objective - bound, 0.0) / max(abs(objective), 1e-12)
    status = "time_limit" if "time_limit" in (status, sol.status) else "optimal"
    return FleetPlan(replicas=y, solution=sol, objective=objective, bound=bound, gap=gap, idle_energy_j=idle_j,
                     status=status, classes=s1.n_classes, exact=exact, solve_s=wall + sol.solve_s, changes=n_changes)


def _keep_on(p: PlanProblem, fleet: Fleet, y: np.ndarray, zeta: float, changes: Changes | None) -> float:
    """The replicas' share of the objective: zeta (keep-on energy + change price x changes) / E_bar."""
    n_changes = 0 if changes is None else int(np.abs(np.asarray(y) - changes.previous).sum())
    price = 0.0 if changes is None else changes.price_j * n_changes
    return zeta * (float((fleet.idle_j * y).sum()) + price) / p.energy_scale


def _stage2_gap(mip_gap: float, obj1: float, bound1: float | None, queries1: float) -> float:
    """Stage 2's relative gap: what stage 1 (incumbent ``obj1``, proven ``bound1``) left of ``mip_gap``
    x |obj1|, relative to the queries' part of the objective (``queries1``, as stage 1 had it); at most
    ``mip_gap`` (the summary's own gap is stage 2's). Without a bound, or where stage 1 did not meet its half
    (a time limit), ``mip_gap`` / 2."""
    left = 0.0 if bound1 is None else mip_gap * abs(obj1) - max(obj1 - bound1, 0.0)
    if left <= 0:
        return mip_gap / 2
    return float(min(mip_gap, left / max(abs(queries1), 1e-12)))


def _fewest(y: np.ndarray, x: np.ndarray, p: PlanProblem, fleet: Fleet, changes: Changes | None) -> np.ndarray:
    """The fewest replicas that carry the plan's loads (stage 1 is indifferent to idle replicas at zeta = 0),
    within the change limit; with a change price, only where that does not add changes."""
    load = (x * p.node_s).sum(axis=0)
    need = np.ceil(load / fleet.replica_capacity_s * (1 - 1e-12)).astype(np.int64)
    lower = np.maximum(need, 0)
    if changes is not None:
        prev = np.asarray(changes.previous, dtype=np.int64)
        if changes.max_change is not None:
            lower = np.maximum(lower, prev - changes.max_change)
        if changes.price_j > 0:
            lower = np.maximum(lower, np.minimum(prev, y))
    return np.minimum(y, lower)
