"""The inventory path of :func:`llm_energy.plan.run.run`: replicas, windows, headroom, replay, summary parts.

Called by ``run`` when the deployments file has an ``inventory``: builds the fleet, plans the
window(s) (:func:`llm_energy.plan.windows.plan_inventory`), optionally adds replicas until the
M/G/c delay predicted from the runtime model is within ``--max-wait-s``, replays a timed trace
against the plan (:mod:`llm_energy.plan.replay`), and returns the pieces the summary reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llm_energy.plan.problem import PlanProblem
from llm_energy.plan.replay import erlang_c_wait, replay_stats
from llm_energy.plan.windows import InventoryOutcome, build_fleet, plan_inventory


@dataclass
class InventoryResult:
    """What the summary needs: the combined ``solution`` (a PlanSolution on the whole problem), the
    ``outcome``, the ``fleet`` dict and ``windows`` list of summary.json, each query's deployment."""

    solution: Any
    outcome: InventoryOutcome
    fleet: dict[str, Any]
    windows: list[dict[str, Any]] | None
    dep: np.ndarray


def window_length(req, deployments) -> float:
    """An inventory plan's window: --window-s, else the file's hours x 3600 (a UserError without either)."""
    from llm_energy.errors import UserError

    if req.window_s is not None:
        return float(req.window_s)
    if deployments.hours is not None:
        return float(deployments.hours) * 3600.0
    raise UserError(f"{deployments.path}: an inventory plan needs its window's length: give a top-level "
                    "hours: or --window-s")


def solve_inventory(req, problem: PlanProblem, classes, inputs, groups: np.ndarray, warnings: list[str]
                    ) -> InventoryResult:
    """Plan the fleet (see the module docstring) for ``req.chosen_zeta``."""
    fleet, w = build_fleet(inputs.deployments, inputs.fits, window_length(req, inputs.deployments), req.utilisation)
    warnings.extend(w)
    arrival = inputs.workload.arrival_s
    timed = req.window_s is not None and arrival is not None
    if req.window_s is not None and arrival is None:
        warnings.append("--window-s: the workload has no arrival times, so it is planned as one window of "
                        f"{req.window_s:g} s")
    zeta = req.chosen_zeta
    out = plan_inventory(problem, classes.query_class, fleet, zeta, req.settings, groups=groups,
                         arrival_s=arrival if timed else None, window_s=req.window_s if timed else None,
                         max_change=req.max_replica_change, price_j=req.replica_change_j)
    if req.max_wait_s is not None:
        added = add_headroom(out, problem, fleet, req.max_wait_s, timed)
        if added:
            warnings.append(f"--max-wait-s {req.max_wait_s:g}: {added} replica(s) added over the plan's capacity "
                            "so that the M/G/c (Allen-Cunneen) mean wait predicted from the runtime model fits")
    sol = combined_solution(problem, out, zeta)
    fleet_doc = fleet_summary(req, problem, fleet, out, sol, zeta)
    if arrival is not None:
        service = problem.runtime_s[classes.query_class, out.dep]  # a batch's runtime, on one of b slots per replica
        # (the replay's and the M/G/c wait's servers are replicas x batch, as route's slots are)
        fleet_doc["replay"] = replay_stats(arrival, service, out.dep, out.replicas * problem.batch_sizes, out.window,
                                           req.latency_limit_s).to_dict()
    windows = [window_summary(problem.names, wp, fleet) for wp in out.windows] if timed else None
    return InventoryResult(solution=sol, outcome=out, fleet=fleet_doc, windows=windows, dep=out.dep)


def combined_solution(p: PlanProblem, out: InventoryOutcome, zeta: float):
    """One PlanSolution for all windows: sums of objectives and bounds (same units), the worst status."""
    sols = [wp.plan.solution for wp in out.windows if wp.plan.solution is not None]
    obj = p.objective(out.x, zeta)
    bound = float(sum(s.bound for s in sols))
    status = "time_limit" if any(wp.plan.status != "optimal" for wp in out.windows) else "optimal"
    return replace(sols[0], x=out.x, objective=obj, lp_bound=float(sum(s.lp_bound for s in sols)), bound=bound,
                   gap=max(obj - bound, 0.0) / max(abs(obj), 1e-12), status=status,
                   lp_integral=all(s.lp_integral for s in sols), solve_s=sum(wp.plan.solve_s for wp in out.windows),
                   build_s=sum(s.build_s for s in sols), rounds=sum(s.rounds for s in sols),
                   master_classes=max(s.master_classes for s in sols), master_columns=max(s.master_columns for s in sols),
                   metrics=p.metrics(out.x), duals=None,
                   method=f"{sols[0].method}; replicas per deployment decided first (inventory)")


def add_headroom(out: InventoryOutcome, p: PlanProblem, fleet, max_wait_s: float, timed: bool) -> int:
    """Add replicas (within the inventory) until each deployment's predicted mean wait (M/G/c,
    Allen-Cunneen, arrivals at the window's mean rate, service time mean and CV from the plan's
    predicted runtimes) is at most ``max_wait_s``. Returns the replicas added."""
    added, slots = 0, p.batch_sizes
    for wi, wp in enumerate(out.windows):
        if wp.plan.solution is None:
            continue
        x, rows = wp.plan.solution.x, wp.rows
        y = wp.plan.replicas.copy()
        for k in np.flatnonzero(x.sum(axis=0) > 0):
            rate, mean, cv2 = _service(x[:, k], p.runtime_s[rows, k], fleet.window_s)
            while erlang_c_wait(rate, mean, cv2, int(y[k] * slots[k])) > max_wait_s and \
                    y[k] < fleet.max_replicas[k] and \
                    fleet.nodes_used(y)[fleet.type_of[k]] + fleet.replica_nodes[k] <= fleet.type_nodes[fleet.type_of[k]]:
                y[k] += 1
                added += 1
        extra = float((fleet.idle_j * (y - wp.plan.replicas)).sum())
        wp.plan = replace(wp.plan, replicas=y, idle_energy_j=wp.plan.idle_energy_j + extra)
        out.replicas[wi] = y
    return added


def _service(n: np.ndarray, r: np.ndarray, window_s: float) -> tuple[float, float, float]:
    total = float(n.sum())
    mean = float((n * r).sum() / total)
    var = float((n * (r - mean) ** 2).sum() / total)
    return total / window_s, mean, var / mean**2 if mean > 0 else 0.0


def predicted_waits(p: PlanProblem, out: InventoryOutcome, fleet) -> dict[str, float]:
    """The largest predicted M/G/c mean wait over the windows, per deployment (s)."""
    worst, slots = np.zeros(p.n_deployments), p.batch_sizes
    for wp in out.windows:
        if wp.plan.solution is None:
            continue
        x = wp.plan.solution.x
        for k in np.flatnonzero(x.sum(axis=0) > 0):
            rate, mean, cv2 = _service(x[:, k], p.runtime_s[wp.rows, k], fleet.window_s)
            worst[k] = max(worst[k], erlang_c_wait(rate, mean, cv2, int(wp.plan.replicas[k] * slots[k])))
    return {n: (float(v) if math.isfinite(v) else None) for n, v in zip(p.names, worst)}


def fleet_summary(req, p: PlanProblem, fleet, out: InventoryOutcome, sol, zeta: float) -> dict[str, Any]:
    """summary.json's ``fleet``: the inventory, replicas (peak over windows), idle and total energy, the
    replica MIP's stage 1, the proven bound and gap of the whole (queries + keep-on energy)."""
    peak = out.replicas.max(axis=0)
    plans = [wp.plan for wp in out.windows]
    exact = all(fp.exact for fp in plans)
    objective = sum(fp.objective for fp in plans)
    bound = sum(fp.bound for fp in plans if fp.bound is not None) if exact and all(
        fp.bound is not None for fp in plans if fp.solution is not None) else None
    return {
        "window_s": fleet.window_s, "windows": len(out.windows), "utilisation": fleet.utilisation,
        "max_wait_s": req.max_wait_s, "min_share": p.min_share,
        "node_types": {t: {"nodes": int(fleet.type_nodes[i]), "used_peak": int(fleet.nodes_used(peak)[i])}
                       for i, t in enumerate(fleet.types)},
        "idle_w": dict(zip(p.names, map(float, fleet.idle_w))), "replicas": dict(zip(p.names, map(int, peak))),
        "idle_energy_j": out.idle_energy_j, "energy_total_j": sol.metrics["energy_j"] + out.idle_energy_j,
        "objective": objective, "bound": bound,
        "gap": None if bound is None else max(objective - bound, 0.0) / max(abs(objective), 1e-12),
        "stage1": "exact classes" if exact else f"groups of classes (<= {max(fp.classes for fp in plans)})",
        "replica_changes": out.changes, "max_replica_change": req.max_replica_change,
        "replica_change_j": req.replica_change_j, "predicted_wait_s": predicted_waits(p, out, fleet),
        "status": "time_limit" if any(fp.status != "optimal" for fp in plans) else "optimal"}


def window_summary(names, wp, fleet) -> dict[str, Any]:
    """One entry of summary.json's ``windows``."""
    fp = wp.plan
    sol = fp.solution
    return {"index": wp.index, "start_s": wp.start_s, "end_s": wp.end_s, "queries": int(len(wp.queries)),
            "replicas": dict(zip(names, map(int, fp.replicas))), "changes": fp.changes,
            "energy_j": 0.0 if sol is None else float(sol.metrics["energy_j"]), "idle_energy_j": fp.idle_energy_j,
            "objective": fp.objective, "gap": fp.gap, "status": fp.status, "stage1_classes": fp.classes}
