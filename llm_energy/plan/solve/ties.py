"""Tied deployments: merged exactly, solved once, then split by the other term.

Deployments whose objective columns are identical for a zeta (one model on two node types at
zeta = 0: same accuracy, different energy) are interchangeable in the objective, and a solver facing
them returns an arbitrary split (degenerate LP). So, with share rows only, a tied solve is three
explicit steps instead of one:

1. :func:`merge_ties`: each group of identical columns becomes one deployment with the summed share
   bounds (an exact reduction: any plan of the merged problem splits into one of the original with
   the same objective, and back);
2. solve the merged problem (the caller's solver);
3. :func:`split_ties`: hand each merged deployment's queries to its members by the *other* term (least
   energy at zeta = 0; most accuracy at zeta = 1) under their own bounds, one small problem per group
   (:func:`split_group`). Members identical in both terms (truly duplicate deployments) are then tied
   again: any split within their bounds is as good (:func:`fill_split`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from llm_energy.plan.problem import PlanProblem

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.solve.planner import PlanSolution

# solves a problem (free of ties at that zeta) for a zeta: how steps 2 and 3 reach the solver
Solve = Callable[[PlanProblem, float], "PlanSolution"]


def tie_labels(p: PlanProblem, cost: np.ndarray) -> np.ndarray | None:
    """Group label of each deployment when some have identical cost columns (share rows only), else None."""
    if not p.share_only or p.n_deployments < 2:
        return None
    _, labels = np.unique(cost.T, axis=0, return_inverse=True)
    labels = labels.reshape(-1)
    return labels if len(np.unique(labels)) < p.n_deployments else None


@dataclass(frozen=True)
class TieMerge:
    """``original`` with each group of tied deployments (``groups[g]``: their indices) merged into
    deployment g of ``problem`` (named ``a+b``; share bounds summed; the original's scales)."""

    original: PlanProblem
    groups: list[np.ndarray]
    problem: PlanProblem


def merge_ties(p: PlanProblem, labels: np.ndarray) -> TieMerge:
    """Step 1: one deployment per group of identical columns (see the module docstring)."""
    groups = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)]
    first = np.array([g[0] for g in groups])
    lo, hi = p.share_lo, p.share_hi
    merged = replace(p, names=tuple("+".join(p.names[k] for k in g) for g in groups),
                     energy_j=p.energy_j[:, first], runtime_s=p.runtime_s[:, first], accuracy=p.accuracy[first],
                     allowed=p.allowed[:, first], capacity_s=p.capacity_s[first], slo_s=None,
                     context_tokens=_columns(p.context_tokens, first), batch=_columns(p.batch, first),
                     share_bounds=(np.array([lo[g].sum() for g in groups]), np.array([hi[g].sum() for g in groups])),
                     scales=p.resolved_scales)
    return TieMerge(original=p, groups=groups, problem=merged)


def _columns(v: tuple | None, cols: np.ndarray) -> tuple | None:
    """A per-deployment tuple (e.g. ``context_tokens``) on the deployments ``cols``."""
    return None if v is None else tuple(v[int(k)] for k in cols)


def _group_problem(p: PlanProblem, g: np.ndarray, rows: np.ndarray, count: np.ndarray) -> PlanProblem:
    """The queries ``count`` of classes ``rows`` that a merged deployment got, over its members ``g``."""
    return replace(p, names=tuple(p.names[k] for k in g), count=count, tokens=p.tokens[rows],
                   energy_j=p.energy_j[np.ix_(rows, g)], runtime_s=p.runtime_s[np.ix_(rows, g)],
                   accuracy=p.accuracy[g], allowed=p.allowed[np.ix_(rows, g)], capacity_s=p.capacity_s[g],
                   slo_s=None, context_tokens=_columns(p.context_tokens, g), batch=_columns(p.batch, g),
                   share_bounds=(p.share_lo[g], p.share_hi[g]), scales=p.resolved_scales)


def split_group(sub: PlanProblem, zeta: float, solve: Solve) -> tuple[np.ndarray, int, float]:
    """One merged deployment's queries over its members at ``zeta`` (the other term): (x, solver calls,
    solver seconds). Members still tied there are merged once more and split by :func:`fill_split`."""
    labels = tie_labels(sub, sub.cost(zeta))
    if labels is None:
        s = solve(sub, zeta)
        return s.x, s.rounds, s.solve_s
    merge = merge_ties(sub, labels)
    s = solve(merge.problem, zeta)
    x = np.zeros(sub.allowed.shape, dtype=np.int64)
    for gi, g in enumerate(merge.groups):
        rows = np.flatnonzero(s.x[:, gi] > 0)
        if len(g) == 1 or not rows.size:
            x[:, g[0]] = s.x[:, gi]
        else:  # identical in both terms: any split within the bounds is as good
            x[np.ix_(rows, g)] = fill_split(s.x[rows, gi], sub.share_lo[g], sub.share_hi[g])
    return x, s.rounds, s.solve_s


def split_ties(merge: TieMerge, sol: PlanSolution, zeta: float, solve: Solve) -> PlanSolution:
    """Step 3: the merged plan ``sol`` (at ``zeta``) as a plan of the original deployments."""
    p = merge.original
    x = np.zeros(p.allowed.shape, dtype=np.int64)
    rounds, solve_s = sol.rounds, sol.solve_s
    other = 0.0 if zeta == 1.0 else 1.0
    for gi, g in enumerate(merge.groups):
        rows = np.flatnonzero(sol.x[:, gi] > 0)
        if len(g) == 1 or not rows.size:
            x[:, g[0]] = sol.x[:, gi]
            continue
        xs, n, s = split_group(_group_problem(p, g, rows, sol.x[rows, gi]), other, solve)
        x[np.ix_(rows, g)] = xs
        rounds, solve_s = rounds + n, solve_s + s
    obj = p.objective(x, zeta)
    return replace(sol, x=x, objective=obj, gap=max(obj - sol.lp_bound, 0.0) / max(abs(obj), 1e-12),
                   method=f"{sol.method}; {p.n_deployments - len(merge.groups)} tied deployment(s) merged",
                   duals=None, rounds=rounds, solve_s=solve_s, metrics=p.metrics(x))


def fill_split(count: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Split classes (``count``) over interchangeable deployments so each gets between lo and hi queries:
    every deployment is filled to its lower bound first, then up to its upper bound, in order."""
    target = lo.astype(np.int64).copy()
    rest = int(count.sum() - target.sum())
    for k in range(len(target)):
        add = min(rest, int(hi[k] - target[k]))
        target[k] += add
        rest -= add
    x = np.zeros((len(count), len(target)), dtype=np.int64)
    cum_t = np.concatenate([[0], np.cumsum(target)])
    cum_c = np.concatenate([[0], np.cumsum(count)])
    for k in range(len(target)):  # overlap of class intervals with deployment k's interval
        x[:, k] = np.clip(np.minimum(cum_c[1:], cum_t[k + 1]) - np.maximum(cum_c[:-1], cum_t[k]), 0, None)
    return x
