"""``threshold``: the hybrid rule of Wilkins et al.'s companion paper (e-Energy 2024): queries whose tin
(or tout) is under a threshold go to one deployment, the rest to another.

The feature, the ordered pair of deployments and the threshold are chosen by a sweep over every split
point of the trace's classes at once (prefix sums over classes sorted by the feature): the least total
cost (the planner's objective) among the splits that give both deployments at least ``--min-share``
and, with fleet capacity on, keep each within its capacity (slot-seconds x utilisation over the trace);
when no split fits the capacity, the one with the least overload. Other deployments get no query.
"""

from __future__ import annotations

import math

import numpy as np

from llm_energy.route.policies import RouteContext, Routed, fixed


def _candidates(feature: np.ndarray, count: np.ndarray, ca: np.ndarray, cb: np.ndarray, ra: np.ndarray,
                rb: np.ndarray):
    """Every split of the classes sorted by ``feature``: threshold, counts, costs and loads of both sides."""
    order = np.argsort(feature, kind="stable")
    f, n = feature[order], count[order].astype(np.float64)
    pre = lambda v: np.r_[0.0, np.cumsum(v[order] * n)]  # noqa: E731
    cut = np.r_[0, np.flatnonzero(np.diff(f) > 0) + 1, len(f)]  # split positions between distinct values
    thr = np.r_[f, f[-1] + 1][cut]  # feature < thr goes to a
    pa, la, lb, na = pre(ca), pre(ra), pre(rb), np.r_[0.0, np.cumsum(n)]
    sb = np.r_[np.cumsum((cb[order] * n)[::-1])[::-1], 0.0]  # suffix sums: b's cost stays finite when a class
    cost = pa[cut] + sb[cut]  # b cannot take (inf: SLO, context) lies on a's side, where pb[-1] - pb[cut] was nan
    return thr, na[cut], na[-1] - na[cut], cost, la[cut], lb[-1] - lb[cut]


def choose_threshold(ctx: RouteContext) -> dict:
    f = ctx.fleet
    cost = ctx.cost_c()
    n = float(f.count.sum())
    lo = math.ceil(ctx.min_share * n - 1e-9)
    cap = ctx.capacity_s()
    best: tuple | None = None
    for fname, feat in (("tin", f.tin), ("tout", f.tout)):
        for a in range(f.n_deployments):
            for b in range(f.n_deployments):
                if a == b:
                    continue
                thr, n_a, n_b, c, l_a, l_b = _candidates(feat, f.count, cost[:, a], cost[:, b], f.runtime_s[:, a],
                                                         f.runtime_s[:, b])
                ok = (n_a >= lo) & (n_b >= lo) & np.isfinite(c)
                over = np.zeros_like(c)
                if cap is not None:
                    over = np.maximum(l_a / max(cap[a], 1e-12), l_b / max(cap[b], 1e-12))
                    over = np.where(over > 1.0, over, 0.0)
                if not ok.any():
                    continue
                key = np.where(ok, over, np.inf), np.where(ok, c, np.inf)
                i = int(np.lexsort((key[1], key[0]))[0])
                cand = (float(key[0][i]), float(key[1][i]), fname, int(thr[i]), a, b)
                if best is None or cand[:2] < best[:2]:
                    best = cand
    if best is None:
        return {}
    return {"feature": best[2], "threshold": best[3], "below": f.names[best[4]], "above": f.names[best[5]],
            "a": best[4], "b": best[5], "overload": best[0]}


def threshold(ctx: RouteContext) -> Routed:
    f = ctx.fleet
    ch = choose_threshold(ctx)
    if not ch:  # no split gives two deployments their minimum share: everything to the cheapest on average
        cost = ctx.cost_c()
        k = int(np.argmin((f.count[:, None] * np.where(np.isfinite(cost), cost, 1e30)).sum(axis=0)))
        dep_c = np.where(np.isfinite(cost[:, k]), k, np.argmin(cost, axis=1))  # a class k cannot take: its cheapest
        return fixed(ctx, dep_c[ctx.qclass].astype(np.int64), {"threshold": None})
    feat = (f.tin if ch["feature"] == "tin" else f.tout)[ctx.qclass]
    dep = np.where(feat < ch["threshold"], ch["a"], ch["b"]).astype(np.int64)
    info = {k: ch[k] for k in ("feature", "threshold", "below", "above")}
    return fixed(ctx, dep, {"threshold": info})
