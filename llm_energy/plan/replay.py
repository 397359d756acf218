"""Replay a plan on arrival times: does it meet its latency limit once queries queue?

A small discrete-event replay, independent of the planner's capacity model: each deployment runs its
replicas (per window, as planned) as FIFO servers, one query at a time each (a deployment planned at
batch b: b servers per replica, the caller's ``replicas`` x b, each query served for its batch's
runtime); a query arrives at its trace time, waits for the first free server of the deployment the
plan gave it, and is served for its predicted runtime. Latency = wait + service. (The online router's
simulator in ``route/`` does much more; the plan stage cannot import it, and this is what checking a
capacity model needs.)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReplayStats:
    """Latency over the replayed queries (s): median, p95, p99, max; waits; and the share of queries
    whose latency met ``limit_s`` (None: no limit given)."""

    queries: int
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_max_s: float
    wait_p50_s: float
    wait_p95_s: float
    service_p50_s: float
    limit_s: float | None
    met_pct: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def replay(arrival_s: np.ndarray, service_s: np.ndarray, dep: np.ndarray, replicas: np.ndarray,
           window: np.ndarray | None = None) -> np.ndarray:
    """Wait (s) of every query: ``dep[i]`` its deployment, ``replicas`` (W, K) or (K,) the servers of each
    deployment in each window, ``window[i]`` the window of query i (None: one window). When a window has
    fewer replicas than the last, the ones free last are switched off after their query."""
    rep = np.atleast_2d(np.asarray(replicas, dtype=np.int64))
    win = np.zeros(len(arrival_s), dtype=np.int64) if window is None else np.asarray(window, dtype=np.int64)
    wait = np.zeros(len(arrival_s))
    for k in range(rep.shape[1]):
        idx = np.flatnonzero(dep == k)
        idx = idx[np.argsort(arrival_s[idx], kind="stable")]
        free: list[float] = []
        w_now = -1
        for i in idx:
            if win[i] != w_now:
                w_now = int(win[i])
                free = _resize(free, int(rep[w_now, k]), float(arrival_s[i]))
            if not free:  # no replica on (the plan gave it none): served when one comes, never here
                wait[i] = np.inf
                continue
            t = heapq.heappop(free)
            start = max(t, float(arrival_s[i]))
            wait[i] = start - arrival_s[i]
            heapq.heappush(free, start + float(service_s[i]))
    return wait


def _resize(free: list[float], n: int, now: float) -> list[float]:
    if n >= len(free):
        grown = free + [now] * (n - len(free))
        heapq.heapify(grown)
        return grown
    keep = sorted(free)[:n]
    heapq.heapify(keep)
    return keep


def replay_stats(arrival_s: np.ndarray, service_s: np.ndarray, dep: np.ndarray, replicas: np.ndarray,
                 window: np.ndarray | None = None, limit_s: float | None = None) -> ReplayStats:
    """:func:`replay` summarised (:class:`ReplayStats`)."""
    wait = replay(arrival_s, service_s, dep, replicas, window)
    lat = wait + service_s
    q = np.percentile(lat, [50, 95, 99]) if len(lat) else np.zeros(3)
    met = None if limit_s is None else float(100.0 * np.mean(lat <= limit_s))
    return ReplayStats(queries=int(len(lat)), latency_p50_s=float(q[0]), latency_p95_s=float(q[1]),
                       latency_p99_s=float(q[2]), latency_max_s=float(lat.max(initial=0.0)),
                       wait_p50_s=float(np.median(wait)), wait_p95_s=float(np.percentile(wait, 95)),
                       service_p50_s=float(np.median(service_s)), limit_s=limit_s, met_pct=met)


def erlang_c_wait(rate: float, mean_s: float, cv2: float, servers: int) -> float:
    """Mean queueing delay of an M/G/c queue (Allen-Cunneen: Erlang-C x (1 + CV^2) / 2), s; inf if overloaded."""
    if servers <= 0 or rate <= 0:
        return 0.0 if rate <= 0 else float("inf")
    a = rate * mean_s
    rho = a / servers
    if rho >= 1:
        return float("inf")
    erlang_b = 1.0  # Erlang B by its recursion: a / i summed as powers overflowed past ~700 servers (replicas x batch)
    for i in range(1, servers + 1):
        erlang_b = a * erlang_b / (i + a * erlang_b)
    pw = erlang_b / (1 - rho * (1 - erlang_b))  # Erlang C
    return float(pw * mean_s / (servers * (1 - rho)) * (1 + cv2) / 2)
