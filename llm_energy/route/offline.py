"""The one place ``route`` touches the planner: the offline (hindsight) partition and the LP duals.

``offline`` is the planner's optimal partition of the same queries (classes, predictions, shares,
the deployments' slo_s and capacity, zeta: exactly what ``plan`` solves), its queries then served by
the simulator like any other policy's. With fleet capacity on (``--utilisation U``, default 0.9)
each deployment without ``hours`` in the file gets the capacity ``nodes x hours x 3600`` with nodes =
replicas x max_batch and hours = U x the trace's span / 3600: the fleet's slot-seconds over the
trace, so the hindsight plan cannot load a deployment beyond what its replicas can serve. A deployment
at batch b (``max_batch`` b on a pooled fit, or a fit at batch b) is written for ``plan`` with
``batch: b`` and nodes x hours x 3600 x b = those slot-seconds (``plan`` counts runtime / b per query);
a file's own nodes x hours are node-seconds in both commands (b slots per node).
:func:`plan_deployments_yaml` writes that deployments file: ``plan`` on it and the same queries gives
the same energy (``DIR/offline_deployments.yaml`` and ``DIR/workload.parquet``).

``dual`` (:mod:`llm_energy.route.dual`) calls :func:`solve_classes` on each window's queries and
reads the prices off the LP's row duals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from llm_energy.route.fleet import Fleet


@dataclass
class OfflineResult:
    """x (C, K) queries per class and deployment; share_price and capacity_price (K,) the LP duals of
    the share rows (lower + upper) and capacity rows; ``runtime_scale`` the unit of the capacity rows."""

    x: np.ndarray
    status: str
    share_price: np.ndarray
    capacity_price: np.ndarray
    runtime_scale: float
    solve_s: float
    gap: float


def infeasible_error():
    from llm_energy.plan.problem import InfeasiblePlan

    return InfeasiblePlan


def class_problem(fleet: Fleet, count: np.ndarray, rows: np.ndarray | None, *, min_share: float, capacity_s,
                  scales: tuple[float, float, float] | None = None, bins: np.ndarray | None = None):
    """The planner's problem (:func:`llm_energy.plan.problem.make_problem`) over classes ``rows`` of the
    fleet (all when None) with ``count`` queries each; ``bins`` (C,): over groups of classes instead (a
    group's energy, runtime and tokens the count-weighted means of its classes, so a group moved whole
    costs exactly what its classes do)."""
    from llm_energy.plan.problem import make_problem

    idx = np.arange(len(fleet.count)) if rows is None else rows
    tok, e, r = fleet.tokens[idx], fleet.energy_j[idx], fleet.runtime_s[idx]
    if bins is not None:
        count, tok, e, r = grouped(bins[idx], count, tok, e, r)
    p = make_problem(fleet.names, count, tok, e, r, fleet.accuracy, min_share=min_share, slo_s=list(fleet.slo_cap),
                     capacity_s=None if capacity_s is None else list(capacity_s), context_tokens=fleet.context)
    return p if scales is None else replace(p, scales=scales)


def plan_defaults() -> dict:
    """``plan``'s default settings (its PlanRequest's field defaults: method, mip_gap, ...)."""
    from dataclasses import MISSING, fields

    from llm_energy.plan.run import PlanRequest

    return {f.name: f.default for f in fields(PlanRequest) if f.default is not MISSING}


def _prices(duals, k: int) -> tuple[np.ndarray, np.ndarray]:
    share, cap = np.zeros(k), np.zeros(k)
    for (kind, j), v in (duals or {}).items():
        if kind in ("share_lo", "share_hi"):
            share[j] += v
        elif kind == "capacity":
            cap[j] += v
    return share, cap


def solve_classes(fleet: Fleet, count: np.ndarray, rows: np.ndarray | None, *, zeta: float, min_share: float,
                  capacity_s, scales: tuple[float, float, float] | None = None, solver: str = "glpk",
                  time_limit_s: float = 60.0, mip_gap: float | None = None, bins: np.ndarray | None = None
                  ) -> OfflineResult:
    """The planner's optimal (integer) plan of :func:`class_problem`, with its LP row duals; the method
    and MIP gap are ``plan``'s defaults (so the plan is the one ``plan`` makes) unless given."""
    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.solve.solvers import SolveSettings

    p = class_problem(fleet, count, rows, min_share=min_share, capacity_s=capacity_s, scales=scales, bins=bins)
    defaults = plan_defaults()
    settings = SolveSettings(solver=solver, method=defaults["method"], time_limit_s=time_limit_s,
                             mip_gap=defaults["mip_gap"] if mip_gap is None else mip_gap)
    sol = Planner(p, settings).solve(zeta)
    share, cap = _prices(sol.duals, fleet.n_deployments)
    return OfflineResult(np.asarray(sol.x, dtype=np.int64), sol.status, share, cap, float(p.runtime_scale),
                         float(sol.solve_s), float(sol.gap))


def lp_prices(fleet: Fleet, count: np.ndarray, rows: np.ndarray | None, *, zeta: float, min_share: float,
              capacity_s, scales: tuple[float, float, float], penalty: float, solver: str = "glpk",
              time_limit_s: float = 60.0, bins: np.ndarray | None = None) -> OfflineResult:
    """The row duals of the planner's LP relaxation (its column generation, no integer plan), with the
    share and capacity rows elastic at ``penalty`` objective units per unit of violation: a window a
    burst makes infeasible still gets prices (capacity prices then at most ``penalty``). ``x`` is empty."""
    from llm_energy.plan.solve.solvers import SolveSettings

    p = class_problem(fleet, count, rows, min_share=min_share, capacity_s=capacity_s, scales=scales, bins=bins)
    try:  # the planner's column generation, stopped at the LP (internal API: see the fallback below)
        from llm_energy.plan.solve.planner import ColumnGeneration, _Clock

        cg = ColumnGeneration(p, SolveSettings(solver=solver, time_limit_s=time_limit_s))
        cg.master.install(zeta)
        clock = _Clock(time.perf_counter(), time_limit_s)
        _, res, y = cg._lp(p.cost(zeta), zeta, 1.0, penalty, clock)
    except (ImportError, AttributeError, TypeError):  # that internal API changed: the planner's public solve
        return _public_prices(fleet, p, zeta, solver, time_limit_s)
    share, cap = _prices(y, fleet.n_deployments)
    status = "optimal" if res.slack.sum() <= 1e-6 else "elastic"
    return OfflineResult(np.zeros((0, fleet.n_deployments), np.int64), status, share, cap, float(p.runtime_scale),
                         float(clock.solve_s), 0.0)


def grouped(group: np.ndarray, count: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows merged by ``group``: the summed counts and each value's count-weighted mean (1-d or (n, K))."""
    _, inv = np.unique(group, return_inverse=True)
    inv = inv.reshape(-1)
    w = np.asarray(count, dtype=np.float64)
    total = np.bincount(inv, weights=w)
    out = [total.astype(np.int64)]
    for v in values:
        if v.ndim == 1:
            out.append(np.bincount(inv, weights=w * v) / total)
        else:
            out.append(np.column_stack([np.bincount(inv, weights=w * v[:, j]) / total for j in range(v.shape[1])]))
    return tuple(out)


def log_bins(tin: np.ndarray, tout: np.ndarray, n_bins: int) -> np.ndarray:
    """A (tin, tout) log-spaced grid cell index per class: n_bins x n_bins cells over the classes' range."""
    def edges(v):
        hi = float(np.log1p(v.max())) if len(v) else 1.0
        return np.linspace(0.0, hi, n_bins + 1)[1:-1]
    bi = np.searchsorted(edges(tin), np.log1p(tin), side="right")
    bo = np.searchsorted(edges(tout), np.log1p(tout), side="right")
    return (bi * n_bins + bo).astype(np.int64)


def _public_prices(fleet: Fleet, p, zeta: float, solver: str, time_limit_s: float) -> OfflineResult:
    """Prices through the planner's public ``solve`` (an integer plan too, with a loose MIP gap; rows not
    elastic: an infeasible window gets zero prices, status ``infeasible``)."""
    from llm_energy.plan.solve.planner import Planner
    from llm_energy.plan.solve.solvers import SolveSettings

    k = fleet.n_deployments
    try:
        sol = Planner(p, SolveSettings(solver=solver, time_limit_s=time_limit_s, mip_gap=0.5)).solve(zeta)
    except infeasible_error():
        return OfflineResult(np.zeros((0, k), np.int64), "infeasible", np.zeros(k), np.zeros(k),
                             float(p.runtime_scale), 0.0, 0.0)
    share, cap = _prices(sol.duals, k)
    return OfflineResult(np.zeros((0, k), np.int64), "optimal", share, cap, float(p.runtime_scale),
                         float(sol.solve_s), 0.0)


def offline_capacity(fleet: Fleet, span_s: float, utilisation: float | None) -> list[float | None]:
    """Per deployment the capacity the offline plan uses, in slot-seconds (each query counts its runtime):
    ``plan``'s nodes x hours x 3600 node-seconds times the batch the deployment is planned at (a node
    serving batches of b finishes b queries per batch runtime: ``plan`` counts runtime / b per query)."""
    out: list[float | None] = []
    for d in _offline_deployments(fleet, span_s, utilisation):
        out.append(None if d.capacity_s is None else d.capacity_s * (d.batch or 1))
    return out


def _offline_deployments(fleet: Fleet, span_s: float, utilisation: float | None):
    """The deployments as ``plan`` is to read them: each at the batch its predictions are at (``batch``);
    without ``hours`` in the file, (with ``utilisation``) the replicas' slot-seconds over the trace as
    nodes x hours x batch (nodes = replicas x max_batch / batch where that is whole, else replicas)."""
    deps = fleet.deployments.deployments
    batch = [1] * len(deps) if fleet.batch is None else [int(b) for b in fleet.batch]
    out = []
    for d, b in zip(deps, batch):
        d = replace(d, batch=b)
        if utilisation is not None and span_s > 0 and d.hours is None:
            slots = int(d.replicas * d.max_batch)
            hours = utilisation * span_s / 3600.0
            d = replace(d, nodes=slots // b, hours=hours) if slots % b == 0 else replace(
                d, nodes=int(d.replicas), hours=hours * slots / (b * d.replicas))
        out.append(d)
    return out


def plan_deployments_yaml(fleet: Fleet, span_s: float, utilisation: float | None) -> str:
    """The deployments file ``plan`` reads to solve the same problem as ``offline``."""
    lines = ["# written by llm-energy route: the offline yardstick as a plan input", "deployments:"]
    for d in _offline_deployments(fleet, span_s, utilisation):
        lines += [f"  - name: {d.name!r}", f"    fit: {d.fit!r}", f"    accuracy: {d.accuracy!r}",
                  f"    replicas: {d.replicas}", f"    max_batch: {d.max_batch}"]
        if d.batch != 1:  # plan's batch: what route predicted this deployment at
            lines.append(f"    batch: {d.batch}")
        for key in ("nodes", "hours", "slo_s"):
            v = getattr(d, key)
            if v is not None:
                lines.append(f"    {key}: {v!r}")
        ctx = fleet.context[fleet.names.index(d.name)] if fleet.context else None
        if ctx is not None:  # as resolved from the file or the fits: plan masks the same pairs
            lines.append(f"    context_tokens: {ctx}")
    return "\n".join(lines) + "\n"


def offline_assignment(x: np.ndarray, qclass: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per query the deployment of a class-level plan ``x`` (C, K): each class's queries, in a seeded
    random order, fill the plan's counts, so a class split over deployments is interleaved in time."""
    n = len(qclass)
    perm = np.random.default_rng(seed).permutation(n)
    order = perm[np.argsort(qclass[perm], kind="stable")]  # queries grouped by class, random within
    cls_sorted = qclass[order]
    first = np.searchsorted(cls_sorted, np.arange(x.shape[0]))
    rank = np.arange(n) - first[cls_sorted]
    cum = np.cumsum(x, axis=1)
    dep_sorted = (rank[:, None] >= cum[cls_sorted]).sum(axis=1)
    dep = np.empty(n, dtype=np.int64)
    dep[order] = dep_sorted
    return dep


def offline_policy(ctx):
    """``offline``: the planner's hindsight partition of the whole trace, then served by the simulator.

    When the fleet cannot serve the trace within its capacity at all (a high rate scale), the plan is
    made without the fleet's capacity rows and ``plan.capacity`` says so."""
    from llm_energy.route.policies import fixed

    f = ctx.fleet
    cap = offline_capacity(f, ctx.span_s, ctx.utilisation)
    note = "fleet slot-seconds x utilisation" if ctx.utilisation is not None else "none"
    try:
        res = solve_classes(f, f.count, None, zeta=ctx.zeta, min_share=ctx.min_share, capacity_s=cap,
                            solver=ctx.solver, time_limit_s=ctx.time_limit_s)
    except infeasible_error() as e:
        if ctx.utilisation is None:
            raise
        note = f"dropped: {e}"
        cap = offline_capacity(f, ctx.span_s, None)
        res = solve_classes(f, f.count, None, zeta=ctx.zeta, min_share=ctx.min_share, capacity_s=cap,
                            solver=ctx.solver, time_limit_s=ctx.time_limit_s)
    dep = offline_assignment(res.x, ctx.qclass, ctx.seed)
    info = {"plan": {"status": res.status, "gap": res.gap, "solve_s": res.solve_s, "capacity": note,
                     "capacity_s": {n: c for n, c in zip(f.names, cap)},
                     "energy_j": float((res.x * f.energy_j).sum())}}
    return fixed(ctx, dep, info)
