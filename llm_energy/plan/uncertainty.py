"""Planning against the prediction interval, and the risk a plan carries.

``predict`` gives each energy and runtime prediction a cross-validated interval (90% by default).
``--plan-on upper`` plans the capacity rows (nodes x hours, or the replicas of an inventory plan) and
the energy budget row (``--energy-budget``, ``--max-energy``) on the interval's upper end: runtime is not
in the objective, so planning on the upper runtimes changes only what fits, never what a query is
worth; the budget row counts each query's upper energy while the objective stays on the point
predictions (the plan's expected energy is still what is minimised or traded).

Either way :func:`risk_report` says what the plan risks: per deployment the load it carries at the
point and at the upper end of the interval against its capacity, and for a budget the plan's energy at
the upper end against it. (Interval ends of different queries are not independent: a fit that is off
is off for all of them, so the upper-end totals are the planning margin, not a tail probability.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llm_energy.plan.problem import PlanProblem

PLAN_ON = ("point", "upper")


def upper_predictions(fits, deployments, tin: np.ndarray, tout: np.ndarray, energy_j: np.ndarray,
                      runtime_s: np.ndarray, batch=None) -> tuple[np.ndarray, np.ndarray, list[str], float | None]:
    """(energy_hi, runtime_hi) (C, K): the upper ends of the fits' prediction intervals, per request at
    each deployment's planned ``batch`` (K,; None: its fit's own) as the point predictions are, the point
    prediction where a fit has none (those deployments named), and the interval level (None: none)."""
    from llm_energy.fit.fits import predict

    e_hi, r_hi = energy_j.copy(), runtime_s.copy()
    missing, levels = [], set()
    deps = getattr(fits, "deployments", None)
    for j, d in enumerate(deployments.deployments):
        pooled = isinstance(deps, dict) and getattr(deps.get(d.fit), "batch", None) == "*"
        pf = predict(fits, d.fit, np.asarray(tin, dtype=np.float64), np.asarray(tout, dtype=np.float64),
                     batch=int(batch[j]) if pooled and batch is not None else None, per_request=True)
        got = False
        for col, out in (("energy_j_hi", e_hi), ("runtime_s_hi", r_hi)):
            if col in pf.columns:
                v = pf[col].cast(float).fill_null(np.nan).to_numpy()
                ok = np.isfinite(v)
                out[ok, j] = np.maximum(v[ok], out[ok, j])
                got = got or bool(ok.any())
        if not got:
            missing.append(d.name)
        dep = getattr(fits, "deployments", {}).get(d.fit) if isinstance(getattr(fits, "deployments", None), dict) else None
        for t in getattr(dep, "targets", {}).values():
            iv = getattr(t, "interval", None)
            if iv is not None and getattr(iv, "level", None) is not None:
                levels.add(float(iv.level))
    return e_hi, r_hi, missing, (max(levels) if levels else None)


def risk_report(p: PlanProblem, x: np.ndarray, runtime_point: np.ndarray, runtime_hi: np.ndarray,
                energy_point: np.ndarray, energy_hi: np.ndarray, capacity_s: np.ndarray, plan_on: str,
                level: float | None, missing: list[str]) -> dict[str, Any]:
    """summary.json's ``uncertainty``: what the plan was planned on and, per deployment, its load at the
    point and upper predictions against its capacity (``over_at_upper``: the upper load does not fit)."""
    per = {}
    for k, name in enumerate(p.names):
        lp = float((x[:, k] * runtime_point[:, k]).sum())
        lh = float((x[:, k] * runtime_hi[:, k]).sum())
        cap = float(capacity_s[k])
        per[name] = {"load_point_s": lp, "load_upper_s": lh, "capacity_s": cap if math.isfinite(cap) else None,
                     "over_at_upper": bool(math.isfinite(cap) and lh > cap * (1 + 1e-9))}
    e_pt, e_hi = float((x * energy_point).sum()), float((x * energy_hi).sum())
    budget = p.energy_budget_j
    return {"plan_on": plan_on, "interval_level": level, "without_interval": missing, "deployments": per,
            "energy_point_j": e_pt, "energy_upper_j": e_hi, "energy_budget_j": budget,
            "budget_over_at_upper": bool(budget is not None and e_hi > budget * (1 + 1e-9)),
            "budget_rows_on": None if budget is None else plan_on,
            "budget_margin_upper_j": None if budget is None else budget - e_hi}
