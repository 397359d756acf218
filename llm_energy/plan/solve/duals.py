"""Row duals and what they prove: reduced costs, the Lagrangian lower bound, share-price certificates.

Why the planner is exact without handing the solver every class: any prices y of the non-class rows
(:class:`RowDuals`, with each row's sign) give a *proven* lower bound on every feasible plan
(:func:`lagrangian_bound`, weak duality), and a plan meeting that bound is optimal. The solver's LP
duals are such prices; so are deployment prices found by a negative-cycle test on the assembled
plan (:func:`share_certificate`, share rows only). The same prices are what an online router needs:
a new query goes to the deployment of least reduced cost (:func:`lagrangian_costs`).
"""

from __future__ import annotations

import numpy as np

from llm_energy.plan.problem import ROW_SENSE, PlanProblem, Row, row_coefficients


class RowDuals(dict):
    """Prices of a plan's non-class rows: {:class:`~llm_energy.plan.problem.Row`: y}.

    Sign convention (minimisation): y >= 0 on >= rows (share_lo, floor), y <= 0 on <= rows (share_hi,
    capacity, budget); units: objective units per unit of the row's scaled coefficient (one query for
    share rows, one mean query's runtime, energy or accuracy for the others; see
    :func:`~llm_energy.plan.problem.row_coefficients`). The reduced cost of sending a query of class c
    to deployment K is cost[c, K] - sum_rows y_row a_row[c, K] (:func:`lagrangian_costs`).
    A dict subclass, so it is passed, compared and iterated as the mapping it is.
    """

    def share_prices(self, n_deployments: int) -> np.ndarray:
        """Per deployment, the sum of its share-row duals: what the share rows add to each query's cost
        there (with share rows only, a query's reduced cost is cost - this)."""
        out = np.zeros(n_deployments)
        for (kind, k), y in self.items():
            if kind in ("share_lo", "share_hi"):
                out[k] += y
        return out

    def named(self, names) -> dict[str, float]:
        """{``share_lo[name]`` | ``capacity[name]`` | ``budget`` | ``floor``: y}, e.g. for JSON."""
        return {(kind if kind in ("budget", "floor") else f"{kind}[{names[k]}]"): float(y)
                for (kind, k), y in self.items()}


def _clip_sign(kind: str, y: float) -> float:
    return max(y, 0.0) if ROW_SENSE[kind] == ">=" else min(y, 0.0)


def lagrangian_costs(p: PlanProblem, cost: np.ndarray, y: RowDuals, *, clip: bool
                     ) -> np.ndarray:
    """cost - sum_rows y_row * coefficient, (C, K), +inf where the SLO forbids the pair.

    ``clip`` first projects each dual on its sign (>= rows: y >= 0; <= rows: y <= 0), as
    :func:`lagrangian_bound` needs.
    """
    K = p.n_deployments
    share, cap = np.zeros(K), np.zeros(K)
    other = {"budget": 0.0, "floor": 0.0}
    for (kind, k), v in y.items():
        v = _clip_sign(kind, v) if clip else v
        if kind in ("share_lo", "share_hi"):
            share[k] += v
        elif kind == "capacity":
            cap[k] += v
        else:
            other[kind] += v
    coefs = row_coefficients(p)
    red = cost - share[None, :]
    if cap.any():
        red = red - cap[None, :] * coefs["capacity"]
    for kind, v in other.items():
        if v:
            red = red - v * coefs[kind]
    return np.where(p.allowed, red, np.inf)


def lagrangian_bound(p: PlanProblem, cost: np.ndarray, y: RowDuals) -> tuple[float, np.ndarray]:
    """A proven lower bound on every feasible plan's objective, from any row duals ``y``, and the
    non-negative reduced costs (C, K) it leaves.

    For a feasible x: cost.x = (cost - y A).x + y A x >= sum_c n_c min_K (cost - y A)[c, K] + y b, since
    y A x >= y b row by row when y has the row's sign (weak Lagrangian duality). So a plan whose
    objective meets this bound is optimal, and a column whose reduced cost exceeds
    (incumbent - bound) cannot be in a better plan.
    """
    red = lagrangian_costs(p, cost, y, clip=True)
    best = red.min(axis=1)
    const = sum(_clip_sign(kind, v) * Row(kind, k).rhs(p) for (kind, k), v in y.items())
    return float((p.count * best).sum() + const), red - best[:, None]


def share_duals(p: PlanProblem, prices: np.ndarray) -> RowDuals:
    """Deployment prices as share-row duals: p > 0 on the lower bound row, p < 0 on the upper one."""
    y = RowDuals()
    for k, v in enumerate(prices):
        if p.share_lo[k] > 0:
            y[Row("share_lo", k)] = max(float(v), 0.0)
        y[Row("share_hi", k)] = min(float(v), 0.0)
    return y


def share_certificate(cost: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      tol: float) -> np.ndarray | None:
    """Deployment prices proving ``x`` optimal for the share-only problem, or None if there are none.

    LP duality: x (meeting the shares) is optimal iff prices p exist with every used pair (c, K) a
    minimiser of cost[c, :] - p, and p_K > 0 only where K is at its lower share bound, p_K < 0 only
    where at its upper one. Those are difference constraints p_j - p_K <= min over classes using K of
    (cost[c, j] - cost[c, K]) on K + 1 nodes (node K+1 pins p = 0 for the sign conditions): feasible iff
    that graph has no negative cycle, and then shortest-path distances are such prices.
    """
    C, K = cost.shape
    used = x > 0.5
    n_k = x.sum(axis=0)
    w = np.full((K + 1, K + 1), np.inf)
    for k in range(K):
        rows = np.flatnonzero(used[:, k])
        if rows.size:
            w[k, :K] = np.min(cost[rows] - cost[rows, k][:, None], axis=0)
        if n_k[k] > lo[k] + 0.5:
            w[K, k] = 0.0  # p_k <= p_origin
        if n_k[k] < hi[k] - 0.5:
            w[k, K] = 0.0  # p_origin <= p_k
    np.fill_diagonal(w, 0.0)
    d = w.copy()
    for m in range(K + 1):
        d = np.minimum(d, d[:, m:m + 1] + d[m:m + 1, :])
    if np.any(np.diag(d) < -tol):
        return None
    p = np.minimum(0.0, d.min(axis=0))  # distances from a virtual source linked to every node by 0
    p = p[:K] - p[K]
    red = cost - p[None, :]
    ok = red[used] <= (red.min(axis=1)[:, None] + 10 * tol).repeat(K, axis=1)[used]
    return p if ok.all() else None
