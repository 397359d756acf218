"""``dual``: route by prices read off the planner's LP duals, re-solved every ``--window-s``.

By LP duality the planner's optimum is described by one price per share row and capacity row of each
deployment: every class goes to the deployment minimising cost - share_price - capacity_price x
runtime / R_bar (:mod:`llm_energy.route.offline`). Online, each arriving query is routed by that rule
with the prices of the last solve (the online-LP scheme of learning prices on the queries seen, then
pricing the next ones): the first window is a warm-up routed greedily (no prices yet); at the end of
every window the planner's LP is solved on the queries that arrived in the last ``--history-windows``
H windows (default 3; 0: every query so far), each deployment's capacity being its slot-seconds over
that time x ``--utilisation``, and its duals price the next window, so the prices follow the workload
as it drifts. The share and capacity rows are
elastic (:data:`PRICE_PENALTY`), so a burst beyond the fleet still gives prices (``elastic_windows``);
a window with more work than the whole fleet can do in its time, or whose exact LP takes over
:data:`PRICE_TIME_S`, is priced on (tin, tout) log bins of classes instead (``binned_windows``).
With ``--slo-s``, a query whose predicted latency (wait for a slot + runtime) on the priced choice
breaks the SLO goes to the next deployment by reduced cost that meets it, else the fastest.
The normalisation E_bar, A_bar, R_bar (zeta's units) is the trace's, as in ``offline``.
"""

from __future__ import annotations

import time

import numpy as np

from llm_energy.errors import UserError
from llm_energy.route.offline import log_bins, lp_prices, offline_capacity
from llm_energy.route.policies import RouteContext, Routed, _slo_pick
from llm_energy.route.sim import serve_online

PRICE_PENALTY = 10.0  # objective units per unit of share/capacity violation in a window's price LP
PRICE_TIME_S = 0.5  # an exact price LP taking longer (elastic, overloaded windows) is redone on bins
FALLBACK_BINS = 24  # (tin, tout) log bins per axis for that


class _Pricer:
    """The current prices, as per-class preferences and orders, re-solved at window boundaries."""

    def __init__(self, ctx: RouteContext) -> None:
        f = self.f = ctx.fleet
        self.ctx = ctx
        self.cost = ctx.cost_c()
        n, k = float(f.count.sum()), f.n_deployments
        e_bar, a_bar = f.scales()
        r_bar = float((f.count[:, None] * f.runtime_s).sum() / (n * k)) or 1.0
        self.scales = (e_bar, a_bar, r_bar)
        span = ctx.span_s
        cap = offline_capacity(f, span, ctx.utilisation)
        self.cap_rate = None if all(c is None for c in cap) else [None if c is None else c / max(span, 1e-12)
                                                                     for c in cap]
        self.bins = None if not ctx.price_bins else log_bins(f.tin, f.tout, ctx.price_bins)
        self.fallback_bins = log_bins(f.tin, f.tout, FALLBACK_BINS)
        self.fits = f.fits_context
        self.n_fit = None if self.fits.all() else self.fits.sum(axis=1).tolist()
        self.windows = self.infeasible = self.binned = 0
        self.solve_s = 0.0
        self.prices: list[dict] = []
        self.set_prices(np.zeros(k), np.zeros(k), r_bar)

    def set_prices(self, share: np.ndarray, cap: np.ndarray, r_scale: float) -> None:
        red = self.cost - share[None, :] - cap[None, :] * self.f.runtime_s / r_scale
        self.pref = np.argmin(red, axis=1).tolist()
        if self.n_fit is None:
            self.order = np.argsort(red, axis=1).tolist()
        else:  # the SLO fallback never picks a deployment whose context is too short: those sort last, cut off
            order = np.argsort(np.where(self.fits, red, np.inf), axis=1).tolist()
            self.order = [row[:n] for row, n in zip(order, self.n_fit)]

    def resolve(self, q0: int, q1: int, length_s: float) -> None:
        """Prices from the LP of queries q0..q1-1, which arrived over ``length_s`` seconds: each
        deployment's capacity is its slot-seconds over that time x utilisation (elastic rows: see
        :func:`llm_energy.route.offline.lp_prices`)."""
        f, ctx = self.f, self.ctx
        cnt = np.bincount(f.qclass[q0:q1], minlength=len(f.count))
        rows = np.flatnonzero(cnt)
        cap = None if self.cap_rate is None else [None if c is None else c * length_s for c in self.cap_rate]
        t0 = time.perf_counter()
        kw = dict(zeta=ctx.zeta, min_share=ctx.min_share, capacity_s=cap, scales=self.scales, penalty=PRICE_PENALTY,
                  solver=ctx.solver)
        need = float((cnt[rows] * f.runtime_s[rows].min(axis=1)).sum())
        over = cap is not None and all(c is not None for c in cap) and need > sum(cap)
        try:
            if over:  # more work than the whole fleet can do in the time: the exact LP is elastic and slow
                raise UserError("overloaded")
            res = lp_prices(f, cnt[rows], rows, time_limit_s=min(ctx.time_limit_s, PRICE_TIME_S), bins=self.bins, **kw)
        except UserError:  # overloaded, or the exact LP ran past PRICE_TIME_S: price on bins instead
            self.binned += 1
            res = lp_prices(f, cnt[rows], rows, time_limit_s=ctx.time_limit_s, bins=self.fallback_bins, **kw)
        self.infeasible += res.status != "optimal"
        self.solve_s += time.perf_counter() - t0
        self.windows += 1
        self.prices.append({"share": res.share_price.tolist(), "capacity": res.capacity_price.tolist()})
        self.set_prices(res.share_price, res.capacity_price, res.runtime_scale)


def dual(ctx: RouteContext) -> Routed:
    f = ctx.fleet
    pr = _Pricer(ctx)
    arrival = ctx.arrival
    window = float(ctx.window_s)
    t0 = float(arrival[0]) if len(arrival) else 0.0
    # window boundaries as query indices: queries of window j are bounds[j]..bounds[j+1]-1
    edges = t0 + window * np.arange(1, int((arrival[-1] - t0) // window) + 2) if len(arrival) else np.zeros(0)
    bounds = np.searchsorted(arrival, edges, side="left").tolist()
    bounds_t = edges.tolist()
    history = ctx.history_windows
    state = {"next": 0}
    sv, qc, slo = f.runtime_s.tolist(), f.qclass.tolist(), ctx.slo_s

    def choose(q: int, t: float, st) -> int:
        j = state["next"]
        if j < len(bounds) and q >= bounds[j]:
            while j < len(bounds) and q >= bounds[j]:
                j += 1
            # solve on the queries of the last `history` windows before edge j-1 (all so far: None)
            hs = -1 if history is None else j - 1 - history
            q_start, t_start = (bounds[hs], bounds_t[hs]) if hs >= 0 else (0, t0)
            if q > q_start:
                pr.resolve(q_start, q, bounds_t[j - 1] - t_start)
            state["next"] = j
        c = qc[q]
        k = pr.pref[c]
        if slo is None:
            return k
        w = st.free[k] - t
        if (w if w > 0 else 0.0) + sv[c][k] <= slo:
            return k
        return _slo_pick(pr.order[c], st.free, t, sv[c], slo)

    dep, st, en, sl = serve_online(arrival, f.qclass, f.runtime_s, f.slots, choose)
    info = {"dual": {"window_s": window, "windows_solved": pr.windows, "elastic_windows": pr.infeasible, "binned_windows": pr.binned,
                     "solve_s": pr.solve_s, "last_prices": pr.prices[-1] if pr.prices else None}}
    return Routed(dep, st, en, sl, info)
