"""Baseline routings the planner's plan is compared with, all on the same predictions.

* ``only:<name>``: every query on one deployment (one per deployment);
* ``round-robin``: query i of the workload (file order) on deployment i mod K;
* ``random``: each query on a deployment drawn uniformly (seeded);
* ``greedy-energy``: each query on its lowest-predicted-energy deployment among those its SLO allows.

A model cannot serve a query longer than its context, so no baseline sends one there (else the plan's
savings would be against an impossible routing): ``only:<name>`` sends the queries beyond that
deployment's context to their lowest-energy deployment whose context takes them; ``round-robin`` skips,
for such a query, to the next deployment in cyclic order that takes it; ``random`` draws again, uniformly
among the deployments that take it (where the context is known; see :mod:`llm_energy.plan.context`).
None of them looks at the share, capacity, SLO (but ``greedy-energy``) or budget constraints; each
result says which it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_energy.plan.problem import PlanProblem


@dataclass(frozen=True)
class BaselineResult:
    """A baseline's predicted totals: ``energy_j`` (J), ``runtime_s`` (s, summed over queries),
    ``accuracy`` (token-weighted mean A_K), ``violations``: constraints of the problem it breaks."""

    name: str
    energy_j: float
    runtime_s: float
    accuracy: float
    violations: tuple[str, ...]
    x: np.ndarray

    @property
    def feasible(self) -> bool:
        return not self.violations

    def saved_pct(self, plan_energy_j: float) -> float:
        """Energy the plan saves against this baseline, in % of the baseline's energy."""
        if self.energy_j == 0:
            return 0.0
        return 100.0 * (self.energy_j - plan_energy_j) / self.energy_j


def _by_query(problem: PlanProblem, query_class: np.ndarray, dep: np.ndarray) -> np.ndarray:
    K = problem.n_deployments
    flat = np.bincount(query_class * K + dep, minlength=problem.n_classes * K)
    return flat.reshape(problem.n_classes, K)


def _result(problem: PlanProblem, name: str, x: np.ndarray) -> BaselineResult:
    m = problem.metrics(x)
    return BaselineResult(name=name, energy_j=m["energy_j"], runtime_s=m["runtime_s"], accuracy=m["accuracy"],
                          violations=tuple(problem.violations(x)), x=x)


def _single(problem: PlanProblem, name: str, dep: np.ndarray) -> BaselineResult:
    """:func:`_result` of the plan sending every query of class c to ``dep[c]``, from per-class vectors
    (53 baselines x (C, K) matrices were 0.6 s of a million-query plan with 50 deployments)."""
    p, rows = problem, np.arange(problem.n_classes)
    n = p.count.astype(np.float64)
    x = np.zeros(p.allowed.shape, dtype=np.int64)
    x[rows, dep] = p.count
    e, r = float(n @ p.energy_j[rows, dep]), p.runtime_s[rows, dep]
    tok = float(n @ p.tokens)
    acc = float((n * p.tokens) @ p.accuracy[dep] / tok) if tok else 0.0
    K = p.n_deployments
    budget_e = e if p.budget_energy_j is None else float(n @ p.budget_energy_j[rows, dep])
    violations = p.violated(int(n[~p.allowed[rows, dep]].sum()), np.bincount(dep, weights=n, minlength=K),
                            np.bincount(dep, weights=n * p.node_s[rows, dep], minlength=K), budget_e, acc)
    return BaselineResult(name=name, energy_j=e, runtime_s=float(n @ r), accuracy=acc, violations=tuple(violations),
                          x=x)


def baselines(problem: PlanProblem, query_class: np.ndarray | None = None, seed: int = 0) -> list[BaselineResult]:
    """All baselines for ``problem``; ``query_class[i]`` is query i's class (file order), else class order."""
    C, K = problem.n_classes, problem.n_deployments
    if query_class is None:
        query_class = np.repeat(np.arange(C), problem.count)
    query_class = np.asarray(query_class, dtype=np.int64)
    out = []
    ok = problem.fits_context
    for k, name in enumerate(problem.names):
        out.append(_single(problem, f"only:{name}", only_assignment(ok, problem.energy_j, k)))
    n = len(query_class)
    rr = next_eligible(np.arange(n) % K, ok, query_class)
    out.append(_result(problem, "round-robin", _by_query(problem, query_class, rr)))
    rng = np.random.default_rng(seed)
    dep = redraw_eligible(rng.integers(0, K, n), ok, query_class, rng)
    out.append(_result(problem, "random", _by_query(problem, query_class, dep)))
    e = np.where(problem.allowed, problem.energy_j, np.inf)
    out.append(_single(problem, "greedy-energy", np.argmin(e, axis=1)))
    return out


def only_assignment(ok: np.ndarray, energy_j: np.ndarray, k: int) -> np.ndarray:
    """Per class (C,) the deployment of an ``only:k`` routing: ``k``, or for a class beyond k's context
    (``ok`` (C, K) false) its lowest-energy deployment whose context takes it."""
    fallback = np.argmin(np.where(ok, energy_j, np.inf), axis=1)
    return np.where(ok[:, k], k, fallback).astype(np.int64)


def next_eligible(dep: np.ndarray, ok: np.ndarray, qclass: np.ndarray) -> np.ndarray:
    """``dep`` (N,) with each query (of class ``qclass``) whose deployment ``ok`` (C, K) does not allow
    moved to the next deployment in cyclic order that does (a round robin skipping those that cannot
    serve it). Every class must have one."""
    dep = np.asarray(dep, dtype=np.int64)
    if ok.all():
        return dep.copy()
    C, K = ok.shape
    nxt = np.full((C, K), -1, dtype=np.int64)  # per class and starting deployment, the first that takes it
    start = np.arange(K)
    for j in range(K - 1, -1, -1):  # the smallest shift wins: written last
        cand = (start + j) % K
        nxt = np.where(ok[:, cand], cand[None, :], nxt)
    return nxt[qclass, dep]


def redraw_eligible(dep: np.ndarray, ok: np.ndarray, qclass: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``dep`` (N,) drawn uniformly over all K deployments, with each query (of class ``qclass``) whose
    draw ``ok`` (C, K) does not allow drawn again uniformly among those that do: uniform over them."""
    dep = np.asarray(dep, dtype=np.int64).copy()
    bad = np.flatnonzero(~ok[qclass, dep])
    if bad.size:
        okb = ok[qclass[bad]]
        pick = np.floor(rng.random(bad.size) * okb.sum(axis=1)).astype(np.int64)
        dep[bad] = np.argmax(np.cumsum(okb, axis=1) > pick[:, None], axis=1)
    return dep
