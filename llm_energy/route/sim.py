"""The discrete-event simulator: a FIFO queue per deployment served by ``replicas x max_batch`` slots.

Service times are known when a query arrives (the fitted runtime), so a FIFO multi-server queue needs
no event list: the k-th query sent to a deployment starts at max(its arrival, the earliest time one of
the deployment's slots is free) and holds that slot for its service time (the Kiefer-Wolfowitz
recursion). A min-heap of slot free-times per deployment gives that in O(log slots) per query, in
arrival order; with one slot it is Lindley's recursion, vectorised as a running maximum. The
result is the same as an event-driven simulation with arrival and departure events
(:func:`llm_energy.route.reference.simulate_events` checks it). Slot ``s`` of a deployment belongs to
replica ``s // max_batch``.

:func:`serve_fixed` serves an assignment decided in advance (static policies, ``offline``);
:func:`serve_online` asks a policy for each query in arrival order, showing it the slots' state.
"""

from __future__ import annotations

import heapq
from typing import Callable

import numpy as np


def serve_fixed(arrival: np.ndarray, service: np.ndarray, dep: np.ndarray, slots: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, slot) of every query for a fixed assignment ``dep`` (arrival order)."""
    n = len(arrival)
    start = np.empty(n)
    end = np.empty(n)
    slot = np.zeros(n, dtype=np.int64)
    for k in range(len(slots)):
        idx = np.flatnonzero(dep == k)
        if not idx.size:
            continue
        a, s = arrival[idx], service[idx]
        if slots[k] == 1:
            cum = np.cumsum(s)
            prev = cum - s
            e = cum + np.maximum.accumulate(a - prev)
            start[idx], end[idx] = e - s, e
            continue
        st, en, sl = _heap_serve(a.tolist(), s.tolist(), int(slots[k]))
        start[idx], end[idx], slot[idx] = st, en, sl
    return start, end, slot


def _heap_serve(a: list[float], s: list[float], c: int) -> tuple[list[float], list[float], list[int]]:
    heap = [(0.0, i) for i in range(c)]
    push, pop = heapq.heappush, heapq.heappop
    st, en, sl = [0.0] * len(a), [0.0] * len(a), [0] * len(a)
    for i, (t, d) in enumerate(zip(a, s)):
        free, j = pop(heap)
        b = t if t > free else free
        e = b + d
        push(heap, (e, j))
        st[i], en[i], sl[i] = b, e, j
    return st, en, sl


Chooser = Callable[[int, float, list], int]


def serve_online(arrival: np.ndarray, qclass: np.ndarray, service_c: np.ndarray, slots: np.ndarray,
                 choose: Chooser, *, need_counts: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Route query by query: ``choose(q, t, state)`` returns the deployment of query q arriving at t.

    ``state.free[k]`` is the earliest time a slot of k is free (a new query there waits
    max(0, free[k] - t)); with ``need_counts``, ``state.in_system[k]`` counts k's queries not yet done at t.
    ``service_c`` is (C, K) per class, ``qclass`` (N,) each query's class. Returns (dep, start, end, slot).
    """
    n, kk = len(arrival), service_c.shape[1]
    heaps = [[(0.0, i) for i in range(int(c))] for c in slots]
    state = _State([0.0] * kk, [0] * kk, heaps)
    ends: list[list[float]] = [[] for _ in range(kk)]
    dep, st, en, sl = [0] * n, [0.0] * n, [0.0] * n, [0] * n
    svc, qc = service_c.tolist(), qclass.tolist()
    push, pop = heapq.heappush, heapq.heappop
    free = state.free
    for q, t in enumerate(arrival.tolist()):
        if need_counts:
            for k in range(kk):
                h = ends[k]
                while h and h[0] <= t:
                    pop(h)
                state.in_system[k] = len(h)
        k = choose(q, t, state)
        h = heaps[k]
        f, j = pop(h)
        b = t if t > f else f
        e = b + svc[qc[q]][k]
        push(h, (e, j))
        free[k] = h[0][0]
        if need_counts:
            push(ends[k], e)
        dep[q], st[q], en[q], sl[q] = k, b, e, j
    return np.array(dep, np.int64), np.array(st), np.array(en), np.array(sl, np.int64)


class _State:
    """What a chooser sees: ``free[k]`` earliest free slot time, ``in_system[k]`` (with need_counts),
    ``heaps[k]`` the (free time, slot) heap of every slot of k (read only)."""

    __slots__ = ("free", "in_system", "heaps")

    def __init__(self, free: list[float], in_system: list[int], heaps: list) -> None:
        self.free = free
        self.in_system = in_system
        self.heaps = heaps

    def backlog_s(self, t: float) -> list[float]:
        """Per deployment the slot-seconds of work still to do after t (queued and in service)."""
        return [sum(f - t for f, _ in h if f > t) for h in self.heaps]


def busy_union(start: np.ndarray, end: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per group (e.g. replica), the length of the union of its [start, end) intervals."""
    if not len(start):
        return np.zeros(0)
    order = np.lexsort((start, group))
    g, s, e = group[order], start[order], end[order]
    n_groups = int(group.max()) + 1
    out = np.zeros(n_groups)
    first = np.r_[True, g[1:] != g[:-1]]
    # running max of end within each group: offset groups so one global running max works
    span = float(max(e.max(), 1.0)) * 2.0 + 1.0
    off = g.astype(np.float64) * span
    run = np.maximum.accumulate(e + off) - off
    prev_end = np.r_[0.0, run[:-1]]
    prev_end[first] = -np.inf
    covered = np.maximum(0.0, e - np.maximum(s, prev_end))
    np.add.at(out, g, covered)
    return out
