"""Seeding: which columns the first master holds, so that the solver sees a small problem.

The LP optimum of the share-only problem is fixed by K deployment prices: each class goes to the
deployment minimising cost - price. Estimating those prices in numpy (:func:`dual_prices`, the
entropy-smoothed Lagrangian dual) tells us which classes sit near a tie (:func:`near_ties`): only
they need to be master rows; every other class is fixed to its best column. A share-feasible repair
(:func:`share_repair`) adds the columns that make the first master feasible without slack. Nothing
here affects *correctness*: the loop certifies optimality and prices in whatever is missing; the
seed only decides how much work that takes. :func:`single_threaded_blas` exists because these many
tiny numpy calls were 5-10x slower with OpenBLAS's thread pools spinning on a small, busy machine.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from itertools import takewhile

import numpy as np

from llm_energy.plan.problem import PlanProblem, Row, row_coefficients
from llm_energy.plan.solve.duals import RowDuals, lagrangian_costs


@contextmanager
def single_threaded_blas():
    """Run a block with the OpenBLAS libraries numpy and scipy bundle limited to one thread.

    dual_prices makes hundreds of tiny BLAS calls (inside L-BFGS-B); on a small, busy machine OpenBLAS's
    thread pools spin and slow them 5-10x (measured on 2 shared cores). Found through the process's
    loaded libraries with ctypes; a no-op where they cannot be found (threadpoolctl would do the same).
    """
    import ctypes

    libs = []
    try:
        with open("/proc/self/maps") as f:
            paths = {fields[-1] for fields in map(str.split, f)
                     if len(fields) >= 6 and "openblas" in fields[-1] and ".so" in fields[-1]}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            for get, put in (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                             ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                             ("openblas_get_num_threads", "openblas_set_num_threads")):
                if hasattr(lib, get) and hasattr(lib, put):
                    n = int(getattr(lib, get)())
                    getattr(lib, put)(ctypes.c_int(1))
                    libs.append((getattr(lib, put), n))
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for put, n in libs:
            put(ctypes.c_int(n))


def _dual_rows(p: PlanProblem) -> list[Row]:
    """The non-class rows :func:`dual_prices` prices, in its variable order."""
    K = p.n_deployments
    rows = [Row("share_lo", k) for k in range(K) if p.share_lo[k] > 0]
    rows += [Row("share_hi", k) for k in range(K)]
    rows += [Row("capacity", int(k)) for k in np.flatnonzero(np.isfinite(p.capacity_s))]
    rows += [Row("budget", 0)] if p.energy_budget_j is not None else []
    rows += [Row("floor", 0)] if p.accuracy_floor is not None else []
    return rows


class _SmoothedDual:
    """The entropy-smoothed Lagrangian dual of ``p`` under ``cost``, over v = |y| >= 0 (one per row)."""

    def __init__(self, p: PlanProblem, cost: np.ndarray, rows: list[Row]) -> None:
        self.cost, self.K = cost, p.n_deployments
        n = float(p.count.sum())
        self.sign = np.array([1.0 if r.sense == ">=" else -1.0 for r in rows])
        self.b = np.array([r.rhs(p) for r in rows]) / n
        self.dep = np.array([r.deployment for r in rows])
        self.kinds = np.array([r.kind for r in rows])
        self.is_share = np.isin(self.kinds, ("share_lo", "share_hi"))
        self.is_cap = self.kinds == "capacity"
        self.coefs = row_coefficients(p)
        fin = np.where(np.isfinite(cost), cost, np.nan)
        spread = float(np.nanmedian(np.nanmax(fin, axis=1) - np.nanmin(fin, axis=1)))
        self.spread = spread if spread > 0 else 1.0

    def maximise(self, rows: np.ndarray, w: np.ndarray, tau: float, v0: np.ndarray, maxiter: int) -> np.ndarray:
        """L-BFGS-B from ``v0`` on classes ``rows`` (weights ``w``) at temperature tau x the cost spread."""
        from scipy.optimize import minimize

        r = minimize(self._negated(rows, w, tau * self.spread), v0, jac=True, method="L-BFGS-B",
                     bounds=[(0, None)] * len(v0), options={"maxiter": maxiter, "gtol": 1e-12, "ftol": 1e-15})
        return r.x

    def _negated(self, rows: np.ndarray, w: np.ndarray, t: float):
        """-dual and its gradient in v, for the minimiser."""
        sign, b, dep, kinds, is_share, is_cap, K = (self.sign, self.b, self.dep, self.kinds, self.is_share,
                                                   self.is_cap, self.K)
        c = self.cost[rows]
        rn = self.coefs["capacity"][rows] if is_cap.any() else None
        en = self.coefs["budget"][rows] if "budget" in kinds else None
        an = self.coefs["floor"][rows] if "floor" in kinds else None

        def f(v: np.ndarray):
            y = sign * v
            share = np.bincount(dep[is_share], weights=y[is_share], minlength=K)
            term = np.broadcast_to(share, c.shape)
            if rn is not None:
                cap = np.zeros(K)
                cap[dep[is_cap]] = y[is_cap]
                term = term + cap[None, :] * rn
            if en is not None:
                term = term + y[kinds == "budget"][0] * en
            if an is not None:
                term = term + y[kinds == "floor"][0] * an
            a = (term - c) / t
            m = a.max(axis=1)
            e = np.exp(a - m[:, None])
            s = e.sum(axis=1)
            pi = e * (w / s)[:, None]  # count-weighted assignment probabilities
            # elementwise sums, not BLAS: a multithreaded gemv leaves OpenBLAS threads spinning on
            # 2 busy cores and slowed this loop 5-10x
            g = -t * float(np.sum(w * (m + np.log(s)))) + float(np.sum(y * b))
            grad_y = b.copy()
            nk = pi.sum(axis=0)
            grad_y[is_share] -= nk[dep[is_share]]
            if rn is not None:
                grad_y[is_cap] -= (pi * rn).sum(axis=0)[dep[is_cap]]
            if en is not None:
                grad_y[kinds == "budget"] -= (pi * en).sum()
            if an is not None:
                grad_y[kinds == "floor"] -= (pi * an).sum()
            return -g, -(sign * grad_y)

        return f


def dual_prices(p: PlanProblem, cost: np.ndarray, *, sample: int = 2000, seed: int = 0) -> RowDuals:
    """Estimated duals of every non-class row (share, capacity, budget, floor): a starting point only.

    Maximises the entropy-smoothed Lagrangian dual
    sum_c n_c softmin_tau(cost[c, :] - (y A)[c, :]) + y b over y with each row's sign (>= rows y >= 0,
    <= rows y <= 0), by L-BFGS-B with bounds while annealing tau down to 1e-4 of the typical cost
    spread (first on a count-weighted sample of at most ``sample`` classes, then on all). The solver's
    duals or :func:`share_certificate` certify optimality afterwards; these only choose what it sees.
    """
    C, K = cost.shape
    rows = _dual_rows(p)
    if C == 0 or (K == 1 and len(rows) <= 2):
        return RowDuals({row: 0.0 for row in rows})
    dual = _SmoothedDual(p, cost, rows)
    n = float(p.count.sum())
    v = np.zeros(len(rows))
    taus: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    with single_threaded_blas():
        if C > sample:
            idx = np.random.default_rng(seed).choice(C, sample, replace=False, p=p.count / n)
            for tau in taus[:3]:
                v = dual.maximise(idx, np.full(sample, 1.0 / sample), tau, v, 200)
            taus = taus[2:]
        for tau in taus:
            v = dual.maximise(np.arange(C), p.count / n, tau, v, 40 if C > sample else 300)
    return RowDuals({row: float(sg * vi) for row, sg, vi in zip(rows, dual.sign, v)})


def seed_from_prices(p: PlanProblem, zeta: float, min_classes: int) -> np.ndarray:
    """A zeta's starting columns (C, K bool): each class's near ties under estimated duals (at least
    ``min_classes`` classes with two candidates), plus the columns of a share-feasible repair, so the
    first master is small and starts feasible."""
    cost = p.cost(zeta)
    red = lagrangian_costs(p, cost, dual_prices(p, cost), clip=False)
    return near_ties(red, min_classes) | (share_repair(red, p.count, p.share_lo, p.share_hi) > 0)


def near_ties(red: np.ndarray, min_classes: int) -> np.ndarray:
    """Candidate columns (C, K bool): each class's best column(s) under ``red``, plus every column within
    delta of it, delta the least gap giving at least ``min_classes`` classes two candidates."""
    C, K = red.shape
    best = red.min(axis=1)
    gap = red - best[:, None]
    scale = float(np.abs(red[np.isfinite(red)]).max(initial=0.0))
    delta = 1e-9 * (scale + 1.0)
    if K > 1 and C and min_classes > 0:
        second = np.partition(gap, 1, axis=1)[:, 1]
        finite = second[np.isfinite(second)]
        m = min(finite.size, min_classes)
        if m > 0:
            delta = max(delta, float(np.partition(finite, m - 1)[m - 1]))
    return gap <= delta


def share_repair(red: np.ndarray, count: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """An assignment (C, K counts) meeting the share bounds, near argmin_K ``red`` (reduced costs).

    Starts from each class on its best column; then every deployment below its lower bound takes
    queries from deployments above theirs, and every deployment over its upper bound gives queries to
    deployments below theirs, cheapest moves (least increase in ``red``) first. Its columns seed the
    master so the solver starts from a feasible point (the elastic slacks stay at 0).
    """
    C, K = red.shape
    x = np.zeros((C, K), dtype=np.int64)
    best = np.argmin(red, axis=1)
    x[np.arange(C), best] = count
    n = x.sum(axis=0)
    for k in np.argsort(n):
        need = int(lo[k] - n[k])
        if need <= 0:
            continue
        src = np.argmax(x, axis=1)  # each class's main deployment
        move = red[:, k] - red[np.arange(C), src]
        ok = np.isfinite(move) & (src != k)
        order = np.flatnonzero(ok)[np.argsort(move[ok], kind="stable")]
        _transfer(x, n, ((c, src[c], k) for c in order), need, lambda j, _: int(n[j] - lo[j]))
    for k in np.argsort(-n):
        extra = int(n[k] - hi[k])
        if extra <= 0:
            continue
        rows = np.flatnonzero(x[:, k])
        alt = np.where(np.arange(K)[None, :] == k, np.inf, red[rows])
        dest = np.argmin(alt, axis=1)
        move = alt[np.arange(len(rows)), dest] - red[rows, k]
        order = takewhile(lambda i: np.isfinite(move[i]), np.argsort(move, kind="stable"))
        _transfer(x, n, ((rows[i], k, dest[i]) for i in order), extra, lambda _, j: int(hi[j] - n[j]))
    return x


def _transfer(x: np.ndarray, n: np.ndarray, moves, amount: int, room) -> None:
    """Move up to ``amount`` queries along ``moves`` ((class, from, to), cheapest first), each move at most
    what the class has at ``from`` and ``room(from, to)``; ``x`` and the per-deployment totals ``n`` in place."""
    for c, j, k in moves:
        take = min(amount, int(x[c, j]), room(j, k))
        if take <= 0:
            continue
        x[c, j] -= take
        x[c, k] += take
        n[j] -= take
        n[k] += take
        amount -= take
        if amount == 0:
            break


def round_lp(p: PlanProblem, x_lp: np.ndarray, cost: np.ndarray) -> np.ndarray | None:
    """An integer plan near an LP optimum ``x_lp`` (C, K), or None if this simple rounding breaks a row.

    Every value is rounded down; each class's remaining queries go, one at a time, to its cheapest
    allowed deployment with capacity left for them, or, where none has, to one made room on by moving
    one query of another class from it to a deployment with room (the cheapest such exchange). It is
    the MIP's first incumbent: within --mip-gap of the bound it is the plan, and otherwise what a
    time-limited plan returns when the solver found no integer plan of its own.
    """
    x = np.floor(x_lp + 1e-9)
    rest = (p.count - x.sum(axis=1)).astype(np.int64)
    left = p.capacity_s - (x * p.node_s).sum(axis=0)
    c_ok = np.where(p.allowed, cost, np.inf)
    per = x.sum(axis=0)
    for c in np.flatnonzero(rest > 0):
        while rest[c] > 0:
            fits = p.allowed[c] & (p.node_s[c] <= left + 1e-9) & (per < p.share_hi)
            if fits.any():
                short = fits & (per < p.share_lo)  # deployments still under their share first
                k = int(np.argmin(np.where(short if short.any() else fits, cost[c], np.inf)))
            else:
                k = _make_room(p, x, left, c, c_ok)
                if k is None:
                    return None
            x[c, k] += 1
            per[k] += 1
            left[k] -= p.node_s[c, k]
            rest[c] -= 1
    if p.violations(x):
        return None
    return x


def _make_room(p: PlanProblem, x: np.ndarray, left: np.ndarray, c: int, c_ok: np.ndarray) -> int | None:
    """Move one query of some class c2 off a deployment k (to a j with room) so class c fits on k: the
    cheapest such exchange (x and left updated); k, or None if there is none."""
    best = None
    for k in np.flatnonzero(p.allowed[c]):
        need = p.node_s[c, k] - left[k]
        c2 = np.flatnonzero((x[:, k] > 0) & (p.node_s[:, k] >= need - 1e-9))
        if not c2.size:
            continue
        room = p.allowed[c2] & (p.node_s[c2] <= left[None, :] + 1e-9)
        room[:, k] = False
        delta = np.where(room, c_ok[c2] - c_ok[c2, k][:, None], np.inf)
        i, j = np.unravel_index(np.argmin(delta), delta.shape)
        if np.isfinite(delta[i, j]) and (best is None or delta[i, j] + c_ok[c, k] < best[0]):
            best = (delta[i, j] + c_ok[c, k], int(c2[i]), int(k), int(j))
    if best is None:
        return None
    _, c2, k, j = best
    x[c2, k] -= 1
    x[c2, j] += 1
    left[k] += p.node_s[c2, k]
    left[j] -= p.node_s[c2, j]
    return k


def fill_capacity(p: PlanProblem, x: np.ndarray, cost: np.ndarray, max_moves: int = 300, max_swaps: int = 30,
                  swap_pairs: int = 50000) -> np.ndarray:
    """An integer plan ``x`` improved by moving queries into the capacity its rounding left idle.

    Rounding an LP optimum with capacity rows leaves each binding deployment a little idle capacity (its
    fractional queries did not fit whole); the LP used it. Repeatedly the most profitable move of whole
    queries of one class from their deployment a to a deployment b whose idle capacity takes them (SLO,
    shares and capacity kept; a's capacity freed) is made, until none gains; then, on problems of at most
    ``swap_pairs`` allowed pairs (where GLPK's branch and bound stalls), the best exchange
    (:func:`_best_swap`: one query out of b makes room for others), and single moves again. At most
    ``max_moves`` moves and ``max_swaps`` exchanges. Share and capacity rows only (``x`` unchanged
    otherwise). An incumbent, nothing more: the MIP's bound judges it.
    """
    if p.energy_budget_j is not None or p.accuracy_floor is not None or not np.isfinite(p.capacity_s).any():
        return x
    x = np.array(x, dtype=np.float64)
    r, lo, hi = p.node_s, p.share_lo, p.share_hi
    c_ok = np.where(p.allowed, cost, np.inf)
    left = p.capacity_s - np.einsum("ck,ck->k", x, r)
    per = x.sum(axis=0)
    scale = float(np.abs(c_ok[np.isfinite(c_ok)]).max(initial=1.0))
    def move(c: int, a: int, b: int, n: float) -> None:
        x[c, a] -= n
        x[c, b] += n
        per[a] -= n
        per[b] += n
        left[a] += n * r[c, a]
        left[b] -= n * r[c, b]

    swaps = max_swaps if int(p.allowed.sum()) <= swap_pairs else 0
    capped = np.isfinite(p.capacity_s)  # idle capacity is what rounding left on the capacitated ones
    for _ in range(max_moves):
        best = (1e-12 * scale, -1, -1, -1)
        for b in np.flatnonzero(capped & (left > 0) & (per < hi)):
            fits = p.allowed[:, b] & (r[:, b] <= left[b] + 1e-9)
            with np.errstate(invalid="ignore"):  # inf - inf where a pair is barred: masked out
                gain = np.where((x > 0.5) & fits[:, None] & (per > lo)[None, :], c_ok - c_ok[:, b:b + 1], -np.inf)
            gain[:, b] = -np.inf
            c, a = np.unravel_index(np.argmax(gain), gain.shape)
            if gain[c, a] > best[0]:
                best = (float(gain[c, a]), int(c), int(a), int(b))
        _, c, a, b = best
        if c < 0:
            swap = _best_swap(p, x, c_ok, left, per, 1e-12 * scale) if swaps > 0 else None
            if swap is None:
                break
            swaps -= 1
            (c1, b, d), (c2, a, n2) = swap
            move(c1, b, d, 1.0)
            move(c2, a, b, n2)
            continue
        room = math.floor((left[b] + 1e-9) / r[c, b]) if r[c, b] > 0 else x[c, a]
        move(c, a, b, min(x[c, a], per[a] - lo[a], hi[b] - per[b], room))
    return x


def _best_swap(p: PlanProblem, x: np.ndarray, c_ok: np.ndarray, left: np.ndarray, per: np.ndarray, tol: float,
               tries: int = 16):
    """The best exchange on a deployment b with a capacity: one query of a class c1 leaves b for a
    deployment d with room, and the capacity it frees (with b's idle capacity) takes whole queries of a
    class c2 moved in from a. ``((c1, b, d), (c2, a, n2))`` when it gains more than ``tol``, else None;
    the ``tries`` cheapest departures from each b are tried."""
    r, lo, hi = p.node_s, p.share_lo, p.share_hi
    best, found = tol, None
    for b in np.flatnonzero(np.isfinite(p.capacity_s) & (per > 0.5) & (per - 1 >= lo)):
        room = p.allowed & (r <= left[None, :] + 1e-9) & (per < hi)[None, :]
        room[:, b] = False
        with np.errstate(invalid="ignore"):
            out = np.where(room, c_ok - c_ok[:, b:b + 1], np.inf)  # moving one query of each class off b to d
        out[x[:, b] < 0.5] = np.inf
        d_of = np.argmin(out, axis=1)
        loss = out[np.arange(len(d_of)), d_of]
        for c1 in np.argsort(loss)[:tries]:
            if not np.isfinite(loss[c1]):
                break
            free = left[b] + r[c1, b]
            n2 = np.floor((free + 1e-9) / np.maximum(r[:, b:b + 1], 1e-300)) * np.ones_like(x)
            n2 = np.minimum(np.minimum(n2, x), np.minimum(per - lo, hi[b] - per[b] + 1)[None, :])
            with np.errstate(invalid="ignore"):
                gain = np.where((n2 >= 1) & p.allowed[:, b:b + 1], n2 * (c_ok - c_ok[:, b:b + 1]), -np.inf)
            gain[:, b] = -np.inf
            gain[c1, :] = -np.inf
            c2, a = np.unravel_index(np.argmax(gain), gain.shape)
            if gain[c2, a] - loss[c1] > best:
                best = float(gain[c2, a] - loss[c1])
                found = ((int(c1), int(b), int(d_of[c1])), (int(c2), int(a), float(n2[c2, a])))
    return found
