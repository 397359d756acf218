"""Baseline routings the planner's plan is compared with, all on the same predictions.

* ``only:<name>``: every query on one deployment (one per deployment);
* ``round-robin``: query i of the workload (file order) on deployment i mod K;
* ``random``: each query on a deployment drawn uniformly (seeded);
* ``greedy-energy``: each query on its lowest-predicted-energy deployment among those its SLO allows.

None of them looks at the share, capacity or budget constraints; each result says which it breaks.
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
                            np.bincount(dep, weights=n * r, minlength=K), budget_e, acc)
    return BaselineResult(name=name, energy_j=e, runtime_s=float(n @ r), accuracy=acc, violations=tuple(violations),
                          x=x)


def baselines(problem: PlanProblem, query_class: np.ndarray | None = None, seed: int = 0) -> list[BaselineResult]:
    """All baselines for ``problem``; ``query_class[i]`` is query i's class (file order), else class order."""
    C, K = problem.n_classes, problem.n_deployments
    if query_class is None:
        query_class = np.repeat(np.arange(C), problem.count)
    query_class = np.asarray(query_class, dtype=np.int64)
    out = []
    for k, name in enumerate(problem.names):
        out.append(_single(problem, f"only:{name}", np.full(C, k)))
    n = len(query_class)
    out.append(_result(problem, "round-robin", _by_query(problem, query_class, np.arange(n) % K)))
    rng = np.random.default_rng(seed)
    out.append(_result(problem, "random", _by_query(problem, query_class, rng.integers(0, K, n))))
    e = np.where(problem.allowed, problem.energy_j, np.inf)
    out.append(_single(problem, "greedy-energy", np.argmin(e, axis=1)))
    return out
