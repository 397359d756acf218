"""Routing policies, one interface: ``POLICIES[name](ctx) -> Routed`` (deployment, start, end, slot per query).

Costs are the planner's: zeta E/E_bar - (1 - zeta) A_K (tin + tout)/A_bar per query (see docs/planner.md).
Static policies decide every query up front and are served by :func:`serve_fixed`; online ones see the
queues (:func:`serve_online`). ``greedy``, ``greedy-queue``, ``jsq`` and ``dual`` respect the
deployments' own ``slo_s`` (predicted runtime); ``greedy-queue`` and ``dual`` also avoid, where a
deployment can, the end-to-end ``--slo-s``: a query goes to the best deployment whose predicted
latency (wait for a slot + runtime) meets it, else to the one with the least predicted latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from llm_energy.errors import UserError, bad_value
from llm_energy.route.fleet import Fleet
from llm_energy.route.sim import serve_fixed, serve_online

STATIC = ("greedy", "round-robin", "random", "threshold")
ONLINE = ("greedy-queue", "jsq", "dual")
POLICY_NAMES = ("offline", "dual", "greedy", "greedy-queue", "jsq", "threshold", "round-robin", "random")


@dataclass
class RouteContext:
    """What every policy sees: the fleet, arrival times (arrival order) and the options."""

    fleet: Fleet
    arrival: np.ndarray
    zeta: float = 0.5
    min_share: float = 0.01
    slo_s: float | None = None
    seed: int = 0
    queue_weight: float = 1.0
    window_s: float = 300.0
    history_windows: int | None = 3  # dual: solve on the last H windows (None: every query so far)
    price_bins: int | None = None  # dual: the price LP on (tin, tout) log bins of classes (None: exact classes)
    utilisation: float | None = 0.9  # None: no fleet capacity rows in offline/dual
    solver: str = "glpk"
    time_limit_s: float = 60.0
    _cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        none = ~self.fleet.fits_context.any(axis=1)
        if none.any():  # a policy must never pick a deployment that cannot serve the query
            raise UserError(f"{int(self.fleet.count[none].sum())} queries exceed every deployment's context length "
                            f"({', '.join(f'{n}: {c}' for n, c in zip(self.fleet.names, self.fleet.context))} tokens): "
                            "no policy can route them (route.run.drop_beyond_context takes them out first)")

    @property
    def qclass(self) -> np.ndarray:
        return self.fleet.qclass

    @property
    def span_s(self) -> float:
        return float(self.arrival[-1] - self.arrival[0]) if len(self.arrival) else 0.0

    def cost_c(self) -> np.ndarray:
        """(C, K) cost, +inf where a deployment's own slo_s forbids the class or its context is too short
        for it (a class no slo_s admits keeps the deployments whose context takes it: latency is
        soft in routing, the context is not)."""
        if "cost" not in self._cache:
            ok, fits = self.fleet.allowed, self.fleet.fits_context
            ok = np.where(ok.any(axis=1)[:, None], ok, fits)
            self._cache["cost"] = np.where(ok, self.fleet.cost(self.zeta), np.inf)
        return self._cache["cost"]

    def eligible(self) -> list[list[int]]:
        """Per class the deployments whose context takes it, in index order (the SLO fallbacks' choice)."""
        if "eligible" not in self._cache:
            self._cache["eligible"] = [np.flatnonzero(row).tolist() for row in self.fleet.fits_context]
        return self._cache["eligible"]

    def capacity_s(self) -> np.ndarray | None:
        """Per deployment the slot-seconds offline may load it with over the trace (inf: no limit;
        None: no capacity at all), see :func:`llm_energy.route.offline.offline_capacity`."""
        from llm_energy.route.offline import offline_capacity

        if "capacity" not in self._cache:
            cap = offline_capacity(self.fleet, self.span_s, self.utilisation)
            arr = np.array([np.inf if c is None else float(c) for c in cap])
            self._cache["capacity"] = None if np.isinf(arr).all() else arr
        return self._cache["capacity"]


@dataclass
class Routed:
    dep: np.ndarray
    start: np.ndarray
    end: np.ndarray
    slot: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def fixed(ctx: RouteContext, dep_q: np.ndarray, info: dict | None = None) -> Routed:
    svc = ctx.fleet.runtime_s[ctx.qclass, dep_q]
    st, en, sl = serve_fixed(ctx.arrival, svc, dep_q, ctx.fleet.slots)
    return Routed(dep_q.astype(np.int64), st, en, sl, info or {})


def greedy(ctx: RouteContext) -> Routed:
    """The seed's first rule: each query to its least-cost deployment (no look at the queues)."""
    best = np.argmin(ctx.cost_c(), axis=1)
    return fixed(ctx, best[ctx.qclass])


def round_robin(ctx: RouteContext) -> Routed:
    """Query i to deployment i mod K, or, beyond that one's context, the next in cyclic order that takes it."""
    from llm_energy.plan.baselines import next_eligible

    return fixed(ctx, next_eligible(np.arange(len(ctx.arrival)) % ctx.fleet.n_deployments, ctx.fleet.fits_context,
                                    ctx.qclass))


def random_policy(ctx: RouteContext) -> Routed:
    """Each query to a deployment drawn uniformly among those whose context takes it (seeded)."""
    from llm_energy.plan.baselines import redraw_eligible

    rng = np.random.default_rng(ctx.seed)
    return fixed(ctx, redraw_eligible(rng.integers(0, ctx.fleet.n_deployments, len(ctx.arrival)),
                                      ctx.fleet.fits_context, ctx.qclass, rng))


def only(name: str) -> Callable[[RouteContext], Routed]:
    """Every query to ``name``; those beyond its context to their lowest-energy deployment that takes
    them (as ``plan``'s ``only:NAME`` baseline)."""
    from llm_energy.plan.baselines import only_assignment

    def run(ctx: RouteContext) -> Routed:
        f = ctx.fleet
        return fixed(ctx, only_assignment(f.fits_context, f.energy_j, f.index(name))[ctx.qclass])
    return run


def _slo_pick(order: list[int], free: list[float], t: float, svc: list[float], slo: float) -> int:
    """First deployment in ``order`` whose predicted latency meets ``slo``, else the least-latency one."""
    best, bk = math.inf, order[0]
    for k in order:
        w = free[k] - t
        lat = (w if w > 0 else 0.0) + svc[k]
        if lat <= slo:
            return k
        if lat < best:
            best, bk = lat, k
    return bk


def greedy_queue(ctx: RouteContext) -> Routed:
    """The seed's second rule: cost + queue_weight x (predicted wait / mean runtime); SLO-avoiding."""
    f = ctx.fleet
    cost = ctx.cost_c()
    r_bar = float((f.count[:, None] * f.runtime_s).sum() / (f.count.sum() * f.n_deployments)) or 1.0
    cl, sv, qc = cost.tolist(), f.runtime_s.tolist(), ctx.qclass.tolist()
    elig, wq, slo = ctx.eligible(), ctx.queue_weight / r_bar, ctx.slo_s

    def choose(q: int, t: float, st) -> int:
        c, s, free, kk = cl[qc[q]], sv[qc[q]], st.free, elig[qc[q]]
        best, bk, ok_best, ok_k = math.inf, kk[0], math.inf, -1
        for k in kk:
            w = free[k] - t
            w = w if w > 0 else 0.0
            v = c[k] + wq * w
            if v < best:
                best, bk = v, k
            if slo is not None and w + s[k] <= slo and v < ok_best:
                ok_best, ok_k = v, k
        if slo is None or ok_k == bk:
            return bk
        return ok_k if ok_k >= 0 else _slo_pick(kk, free, t, s, -1.0)

    dep, st, en, sl = serve_online(ctx.arrival, ctx.qclass, f.runtime_s, f.slots, choose)
    return Routed(dep, st, en, sl)


def jsq(ctx: RouteContext) -> Routed:
    """Join the shortest queue: fewest queries in the system per slot; ties to the cheaper deployment."""
    f = ctx.fleet
    cl, qc, slots = ctx.cost_c().tolist(), ctx.qclass.tolist(), f.slots.tolist()
    kk = range(f.n_deployments)

    def choose(q: int, t: float, st) -> int:
        c, n = cl[qc[q]], st.in_system
        return min((k for k in kk if c[k] < math.inf), key=lambda k: (n[k] / slots[k], c[k]))

    dep, st, en, sl = serve_online(ctx.arrival, ctx.qclass, f.runtime_s, f.slots, choose, need_counts=True)
    return Routed(dep, st, en, sl)


def get_policy(name: str) -> Callable[[RouteContext], Routed]:
    """The policy called ``name`` (``only:NAME`` for one deployment); unknown names are a UserError."""
    from llm_energy.route.dual import dual
    from llm_energy.route.offline import offline_policy
    from llm_energy.route.threshold import threshold

    table = {"greedy": greedy, "greedy-queue": greedy_queue, "jsq": jsq, "round-robin": round_robin,
             "random": random_policy, "threshold": threshold, "dual": dual, "offline": offline_policy}
    if name.startswith("only:"):
        return only(name[len("only:"):])
    if name not in table:
        raise bad_value("--policy", name, f"unknown policy; expected one of {', '.join(POLICY_NAMES)}, "
                        "only:NAME or all")
    return table[name]


def parse_policies(spec: str, names: tuple[str, ...]) -> list[str]:
    """``all`` -> every policy (offline first, then only:NAME for each deployment); else a comma list."""
    if spec == "all":
        return list(POLICY_NAMES) + [f"only:{n}" for n in names]
    out = [p.strip() for p in spec.split(",") if p.strip()]
    if not out:
        raise bad_value("--policy", spec, "names no policy")
    for p in out:
        get_policy(p)
        if p.startswith("only:") and p[5:] not in names:
            raise bad_value("--policy", p, f"unknown deployment; the deployments are {', '.join(names)}")
    if "offline" not in out:
        out.insert(0, "offline")  # the yardstick every regret is measured against
    return out
