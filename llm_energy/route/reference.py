"""A plain-Python event-driven simulator: the yardstick the vectorised one is checked and timed against.

Events (arrival, departure) in a heap; a FIFO deque per deployment; an idle-slot count per deployment;
each query's energy and runtime evaluated in Python from the fitted coefficients when it arrives;
departures before arrivals at the same instant. Nothing here is vectorised on purpose.
"""

from __future__ import annotations

import heapq
from collections import deque


def py_predict(terms: list[str], coef: list[float], tin: float, tout: float, batch: float = 1.0) -> float:
    """One prediction in plain Python (the same terms as llm_energy.fit.terms, the knotted ones as
    explicit loops over the decode steps)."""
    v = {"1": 1.0, "tin": tin, "tout": tout, "tin*tout": tin * tout, "tin^2": tin * tin, "tout^2": tout * tout,
         "tin^2*tout": tin * tin * tout, "tin*tout^2": tin * tout * tout, "tout^3": tout ** 3, "batch": batch,
         "batch*tin": batch * tin, "batch*tin^2": batch * tin * tin, "batch*tout": batch * tout,
         "batch*tin*tout": batch * tin * tout, "batch*tout^2": batch * tout * tout}
    return sum(c * (v[t] if t in v else _py_knotted(t, tin, tout, batch)) for t, c in zip(terms, coef))


def _py_knotted(term: str, tin: float, tout: float, batch: float) -> float:
    """A knotted term (``sum_j(tin+j-K)+``, its square, ``tout*(batch-K)+``, ``sum_j(batch*(tin+j)-K)+``)."""
    head, k = term.rsplit("-", 1)
    k = float(k.split(")")[0])
    if head == "tout*(batch":
        return tout * max(batch - k, 0.0)
    steps = range(int(tout))
    if head == "sum_j(batch*(tin+j)":
        return sum(max(batch * (tin + j) - k, 0.0) for j in steps)
    power = 2 if term.endswith("^2") else 1
    return sum(max(tin + j - k, 0.0) ** power for j in steps)


def simulate_events(arrival: list[float], service: list[list[float]], slots: list[int],
                    choose) -> tuple[list[int], list[float], list[float]]:
    """Event-driven FIFO multi-server simulation; ``choose(q)`` gives query q's deployment.

    ``service[q][k]``: service time of q on k. Returns (dep, start, end) per query.
    """
    n = len(arrival)
    events: list[tuple[float, int, int]] = [(t, 1, q) for q, t in enumerate(arrival)]  # 0 = departure first
    heapq.heapify(events)
    idle = list(slots)
    queues = [deque() for _ in slots]
    dep, start, end = [-1] * n, [0.0] * n, [0.0] * n
    while events:
        t, kind, q = heapq.heappop(events)
        if kind == 1:
            k = choose(q)
            dep[q] = k
            if idle[k] > 0:
                idle[k] -= 1
                start[q], end[q] = t, t + service[q][k]
                heapq.heappush(events, (end[q], 0, q))
            else:
                queues[k].append(q)
        else:
            k = dep[q]
            if queues[k]:
                nq = queues[k].popleft()
                start[nq], end[nq] = t, t + service[nq][k]
                heapq.heappush(events, (end[nq], 0, nq))
            else:
                idle[k] += 1
    return dep, start, end


def reference_greedy(arrival: list[float], tin: list[int], tout: list[int], models: list[dict], slots: list[int],
                     zeta: float, e_bar: float, a_bar: float) -> tuple[list[int], list[float], list[float], float]:
    """Greedy (least zeta-weighted predicted cost) routed and served in plain Python, predictions per query.

    ``models[k]`` = {"e": (terms, coef), "r": (terms, coef), "accuracy": A_K}. Returns (dep, start, end, energy_j).
    """
    service: list[list[float]] = []
    energy: list[list[float]] = []
    for i, o in zip(tin, tout):
        service.append([max(py_predict(*m["r"], i, o), 0.0) for m in models])
        energy.append([max(py_predict(*m["e"], i, o), 0.0) for m in models])

    def choose(q: int) -> int:
        tok = tin[q] + tout[q]
        best, bk = float("inf"), 0
        for k, m in enumerate(models):
            c = zeta * energy[q][k] / e_bar - (1.0 - zeta) * m["accuracy"] * tok / a_bar
            if c < best:
                best, bk = c, k
        return bk

    dep, start, end = simulate_events(arrival, service, slots, choose)
    return dep, start, end, sum(energy[q][dep[q]] for q in range(len(dep)))
