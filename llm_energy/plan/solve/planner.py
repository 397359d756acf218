"""The planner: which deployment serves which queries, at least energy for the accuracy asked for.

Three layers, kept apart:

* **Problem** (:class:`PlanProblem`, numpy only): query classes (distinct (tin, tout) pairs with integer
  counts), per-class predicted energy (J/query) and runtime (s/query) on each deployment, accuracies
  A_K, SLO mask, share bounds, capacities, an optional energy budget and accuracy floor.
  :func:`problem_from_fits` fills one from FITS.json predictions; tests build one from plain arrays.
* **Model** (:func:`build_master`, Pyomo): the class formulation

      min  sum_{c,K} x[c,K] * (zeta * E[c,K] / E_bar  -  (1 - zeta) * A_K * tokens[c] / A_bar)
      s.t. sum_K x[c,K] = n[c]                              (every query served once)
           ceil(eps N) <= sum_c x[c,K] <= floor((1 - eps) N)  (shares; --min-share eps)
           sum_c R[c,K] x[c,K] <= nodes_K * hours_K * 3600  (capacity, where hours are given)
           sum E[c,K] x[c,K] <= budget                      (optional energy budget)
           sum A_K tokens[c] x[c,K] >= floor * sum n[c] tokens[c]   (optional accuracy floor)
           x[c,K] = 0 where R[c,K] > slo_K;  x integer >= 0

  ``zeta`` is a mutable Param (a sweep re-solves the same model); each non-class row carries an
  elastic slack with a large penalty, so the model is always feasible and a positive slack names the
  constraint that cannot be met.
* **Solve** (:class:`Planner`): exact, with the solver seeing a small problem. With share/SLO rows only
  the constraint matrix is a transportation problem's (totally unimodular): the LP optimum at a vertex
  is integral, so we solve the LP, not a MIP. That optimum is fixed by K deployment prices (the duals
  of the share rows): each class goes to the deployment minimising cost - price. So:

  1. estimate the prices in numpy (:func:`dual_prices`, the entropy-smoothed Lagrangian dual);
  2. hand the solver only the classes near a tie under them, plus the columns of a share-feasible
     repair (:func:`share_repair`); every other class is fixed to its single best column and folded
     into the rows' right-hand sides;
  3. certify: price out *every* (class, deployment) pair with the master's duals, or (share rows only)
     find prices for the whole assembled plan by a negative-cycle test on K + 1 nodes
     (:func:`share_certificate`); add the columns that price negatively and repeat until certified;
  4. report a proven lower bound, the Lagrangian bound of the final duals (:func:`lagrangian_bound`),
     and the gap to it.

  Capacity/budget/floor rows break total unimodularity: then the master is solved as a MIP after
  reduced-cost fixing against that bound (a column whose reduced cost exceeds incumbent - bound cannot
  be in a better integer plan), and the gap is again stated. Deployments with identical objective
  columns (one model on two node types at zeta = 0) are merged exactly and split by energy.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

import numpy as np

from llm_energy.errors import UserError, bad_value

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.deployments import DeploymentsFile
    from llm_energy.plan.workload import WorkloadClasses

SOLVERS = ("glpk", "highs")
NEGATIVE_POLICIES = ("clip", "keep", "error")
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_MIP_GAP = 1e-4
INTEGRAL_TOL = 1e-6


class InfeasiblePlan(UserError):
    """No plan meets the constraints; the message names the constraints responsible."""


# ---------------------------------------------------------------------------------------------------
# Problem (numpy)


@dataclass(frozen=True)
class NegativePredictions:
    """Queries for which a fit predicted negative energy or runtime on some deployment.

    ``queries_energy``/``queries_runtime``: queries with a negative prediction on at least one deployment;
    ``by_deployment``: {name: queries with negative energy there}; ``policy``: what the planner did.
    """

    queries_energy: int
    queries_runtime: int
    by_deployment: dict[str, int]
    policy: str
    examples: list[tuple[int, int]] = field(default_factory=list)

    def warning(self, n_queries: int) -> str | None:
        if not self.queries_energy and not self.queries_runtime:
            return None
        what = {"clip": "clipped to 0 for planning", "keep": "kept as predicted (negative)",
                "error": "refusing to plan on them"}[self.policy]
        ex = ", ".join(f"tin={a},tout={b}" for a, b in self.examples[:3])
        parts = []
        if self.queries_energy:
            by = ", ".join(f"{k}: {v}" for k, v in self.by_deployment.items() if v)
            parts.append(f"{self.queries_energy} of {n_queries} queries have negative predicted energy ({by})")
        if self.queries_runtime:
            parts.append(f"{self.queries_runtime} have negative predicted runtime")
        return "; ".join(parts) + f"; {what} (e.g. {ex}): the fits extrapolate badly there"


@dataclass(frozen=True)
class PlanProblem:
    """The planning problem on query classes (SI units; C classes x K deployments).

    ``count`` (C,) queries per class; ``tokens`` (C,) tin + tout; ``energy_j``/``runtime_s`` (C, K)
    predicted J and s per query; ``accuracy`` (K,) A_K; ``allowed`` (C, K) the SLO mask;
    ``capacity_s`` (K,) node-seconds (inf: unlimited); ``energy_budget_j``: J or None;
    ``accuracy_floor``: minimum token-weighted mean A_K or None; ``min_share``: eps.
    """

    names: tuple[str, ...]
    count: np.ndarray
    tokens: np.ndarray
    energy_j: np.ndarray
    runtime_s: np.ndarray
    accuracy: np.ndarray
    allowed: np.ndarray
    capacity_s: np.ndarray
    min_share: float = 0.01
    energy_budget_j: float | None = None
    accuracy_floor: float | None = None
    slo_s: tuple[float | None, ...] | None = None
    scales: tuple[float, float, float] | None = None  # (E_bar, A_bar, R_bar) from another problem, e.g. bins
    share_bounds: tuple[np.ndarray, np.ndarray] | None = None  # explicit (lo, hi) per deployment, else from eps

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def n_deployments(self) -> int:
        return len(self.names)

    @property
    def n_queries(self) -> int:
        return int(self.count.sum())

    @cached_property
    def share_lo(self) -> np.ndarray:
        """Least queries per deployment: ceil(eps N) (int64, K)."""
        if self.share_bounds is not None:
            return np.asarray(self.share_bounds[0], dtype=np.int64)
        n = self.n_queries
        return np.full(self.n_deployments, math.ceil(self.min_share * n - 1e-9), dtype=np.int64)

    @cached_property
    def share_hi(self) -> np.ndarray:
        """Most queries per deployment: floor((1 - eps) N) (int64, K)."""
        if self.share_bounds is not None:
            return np.asarray(self.share_bounds[1], dtype=np.int64)
        n = self.n_queries
        return np.full(self.n_deployments, math.floor((1.0 - self.min_share) * n + 1e-9), dtype=np.int64)

    @cached_property
    def energy_scale(self) -> float:
        """E_bar: mean predicted energy per query over queries and deployments (J)."""
        if self.scales:
            return self.scales[0]
        v = float((self.count[:, None] * self.energy_j).sum() / (self.n_queries * self.n_deployments))
        return v if v > 0 else 1.0

    @cached_property
    def accuracy_scale(self) -> float:
        """A_bar: mean of A_K * (tin + tout) per query over queries and deployments."""
        if self.scales:
            return self.scales[1]
        v = float(self.accuracy.mean() * (self.count * self.tokens).sum() / self.n_queries)
        return v if v > 0 else 1.0

    @cached_property
    def runtime_scale(self) -> float:
        """R_bar: mean predicted runtime per query (s), the unit of the capacity rows' slack."""
        if self.scales:
            return self.scales[2]
        v = float((self.count[:, None] * self.runtime_s).sum() / (self.n_queries * self.n_deployments))
        return v if v > 0 else 1.0

    def energy_norm(self) -> np.ndarray:
        return self.energy_j / self.energy_scale

    def accuracy_norm(self) -> np.ndarray:
        """A_K * tokens[c] / A_bar (C, K)."""
        return (self.tokens[:, None] * self.accuracy[None, :]) / self.accuracy_scale

    def cost(self, zeta: float) -> np.ndarray:
        """Objective coefficient per query (C, K); +inf where the SLO forbids the pair."""
        c = zeta * self.energy_norm() - (1.0 - zeta) * self.accuracy_norm()
        return np.where(self.allowed, c, np.inf)

    def metrics(self, x: np.ndarray) -> dict[str, float]:
        """Totals of an assignment ``x`` (C, K counts): energy J, runtime s, accuracies."""
        x = np.asarray(x, dtype=np.float64)
        tok = float((self.count * self.tokens).sum())
        return {
            "energy_j": float((x * self.energy_j).sum()),
            "runtime_s": float((x * self.runtime_s).sum()),
            "accuracy": float((x * self.tokens[:, None] * self.accuracy[None, :]).sum() / tok) if tok else 0.0,
            "accuracy_per_query": float((x.sum(axis=0) * self.accuracy).sum() / max(self.n_queries, 1)),
        }

    def objective(self, x: np.ndarray, zeta: float) -> float:
        c = zeta * self.energy_norm() - (1.0 - zeta) * self.accuracy_norm()
        return float((np.asarray(x, dtype=np.float64) * c).sum())

    def violations(self, x: np.ndarray, tol: float = 1e-6) -> list[str]:
        """Constraints an assignment breaks (empty: feasible), as short phrases."""
        out = []
        if np.any((x > 0) & ~self.allowed):
            out.append(f"SLO ({int(x[(x > 0) & ~self.allowed].sum())} queries over it)")
        per = x.sum(axis=0)
        lo, hi = self.share_lo, self.share_hi
        for k, name in enumerate(self.names):
            if per[k] < lo[k] - tol or per[k] > hi[k] + tol:
                out.append(f"share[{name}]")
            used = float((x[:, k] * self.runtime_s[:, k]).sum())
            if used > self.capacity_s[k] * (1 + 1e-9) + tol:
                out.append(f"capacity[{name}]")
        m = self.metrics(x)
        if self.energy_budget_j is not None and m["energy_j"] > self.energy_budget_j * (1 + 1e-9) + tol:
            out.append("energy budget")
        if self.accuracy_floor is not None and m["accuracy"] < self.accuracy_floor * (1 - 1e-9) - tol:
            out.append("accuracy floor")
        return out


def make_problem(names: Sequence[str], count, tokens, energy_j, runtime_s, accuracy, *, min_share: float = 0.01,
                 slo_s: Sequence[float | None] | None = None, capacity_s: Sequence[float | None] | None = None,
                 energy_budget_j: float | None = None, accuracy_floor: float | None = None) -> PlanProblem:
    """A :class:`PlanProblem` from plain arrays (the model builder needs nothing else)."""
    count = np.asarray(count, dtype=np.int64)
    e = np.asarray(energy_j, dtype=np.float64)
    r = np.asarray(runtime_s, dtype=np.float64)
    k = len(names)
    if e.shape != (len(count), k) or r.shape != e.shape:
        raise ValueError(f"energy/runtime must be ({len(count)}, {k}); got {e.shape} and {r.shape}")
    slo = tuple(slo_s) if slo_s is not None else (None,) * k
    allowed = np.ones_like(e, dtype=bool)
    for j, s in enumerate(slo):
        if s is not None:
            allowed[:, j] = r[:, j] <= s
    cap = np.array([np.inf if c is None else float(c) for c in (capacity_s or (None,) * k)], dtype=np.float64)
    return PlanProblem(names=tuple(names), count=count, tokens=np.asarray(tokens, dtype=np.float64), energy_j=e,
                       runtime_s=r, accuracy=np.asarray(accuracy, dtype=np.float64), allowed=allowed,
                       capacity_s=cap, min_share=float(min_share), energy_budget_j=energy_budget_j,
                       accuracy_floor=accuracy_floor, slo_s=slo)


def predict_matrix(fits, deployments: DeploymentsFile, tin: np.ndarray, tout: np.ndarray,
                   fits_source: str = "FITS.json") -> tuple[np.ndarray, np.ndarray]:
    """Predicted energy (J/query) and runtime (s/query), each (C, K), from a FitsFile via ``fits.predict``.

    A deployment whose ``fit`` key is not in the fits file is a UserError naming it and the keys there.
    """
    from llm_energy.fit.fits import predict

    keys = _fit_keys(fits)
    e = np.empty((len(tin), len(deployments.deployments)))
    r = np.empty_like(e)
    for j, d in enumerate(deployments.deployments):
        if keys is not None and d.fit not in keys:
            raise UserError(f"{deployments.path}: deployments[{j}].fit={d.fit!r}: not in {fits_source} "
                            f"(it has {sorted(keys)})")
        pf = predict(fits, d.fit, np.asarray(tin, dtype=np.float64), np.asarray(tout, dtype=np.float64))
        e[:, j] = pf["energy_j"].to_numpy()
        r[:, j] = pf["runtime_s"].to_numpy()
    return e, r


def _fit_keys(fits) -> set[str] | None:
    deps = getattr(fits, "deployments", None)
    if isinstance(deps, dict):
        return set(deps)
    if isinstance(deps, (list, tuple)):
        return {getattr(d, "key", getattr(d, "deployment", None)) for d in deps}
    return None


def handle_negative(names: Sequence[str], tin: np.ndarray, tout: np.ndarray, count: np.ndarray,
                    energy_j: np.ndarray, runtime_s: np.ndarray, policy: str = "clip",
                    ) -> tuple[np.ndarray, np.ndarray, NegativePredictions]:
    """Find negative predictions; ``clip`` raises them to 0, ``keep`` leaves them, ``error`` refuses."""
    if policy not in NEGATIVE_POLICIES:
        raise bad_value("--negative-energy", policy, f"expected one of {', '.join(NEGATIVE_POLICIES)}")
    neg_e, neg_r = energy_j < 0, runtime_s < 0
    any_e, any_r = neg_e.any(axis=1), neg_r.any(axis=1)
    by = {n: int(count[neg_e[:, j]].sum()) for j, n in enumerate(names)}
    idx = np.flatnonzero(any_e | any_r)
    ex = [(int(round(tin[i])), int(round(tout[i]))) for i in idx[np.argsort(-count[idx])][:3]]
    report = NegativePredictions(int(count[any_e].sum()), int(count[any_r].sum()), by, policy, ex)
    if policy == "error" and idx.size:
        raise UserError("--negative-energy=error: " + (report.warning(int(count.sum())) or ""))
    if policy == "clip":
        energy_j, runtime_s = np.maximum(energy_j, 0.0), np.maximum(runtime_s, 0.0)
    return energy_j, runtime_s, report


def problem_from_fits(classes: WorkloadClasses, deployments: DeploymentsFile, fits, *, min_share: float = 0.01,
                      energy_budget_j: float | None = None, accuracy_floor: float | None = None,
                      negative: str = "clip", fits_source: str = "FITS.json",
                      ) -> tuple[PlanProblem, NegativePredictions]:
    """Predict every class on every deployment and build the :class:`PlanProblem` (plus the negatives report)."""
    e, r = predict_matrix(fits, deployments, classes.tin, classes.tout, fits_source)
    names = deployments.names
    e, r, neg = handle_negative(names, classes.tin, classes.tout, classes.count, e, r, negative)
    ds = deployments.deployments
    prob = make_problem(names, classes.count, classes.tokens, e, r, [d.accuracy for d in ds], min_share=min_share,
                        slo_s=[d.slo_s for d in ds], capacity_s=[d.capacity_s for d in ds],
                        energy_budget_j=energy_budget_j, accuracy_floor=accuracy_floor)
    return prob, neg


def check_problem(p: PlanProblem, source_share: str = "--min-share") -> None:
    """Fast checks that name the input at fault before any solver runs (raises :class:`InfeasiblePlan`)."""
    n, k = p.n_queries, p.n_deployments
    if not 0.0 <= p.min_share <= 0.5:
        raise bad_value(source_share, p.min_share, "must be in [0, 0.5]")
    if n < 1:
        raise UserError("the workload has no queries")
    lo, hi = p.share_lo, p.share_hi
    if lo.sum() > n:
        raise InfeasiblePlan(f"{source_share}={p.min_share}: {k} deployments x at least {lo[0]} queries each "
                             f"= {int(lo.sum())} > {n} queries in the workload (shares cannot be met)")
    if hi.sum() < n:
        raise InfeasiblePlan(f"{source_share}={p.min_share}: {k} deployment(s) x at most {hi[0]} queries each "
                             f"cannot serve {n} queries (use --min-share 0 with a single deployment)")
    none = ~p.allowed.any(axis=1)
    if none.any():
        i = int(np.flatnonzero(none)[0])
        slos = ", ".join(f"{nm} slo_s={s}" for nm, s in zip(p.names, p.slo_s or ()) if s is not None)
        fast = float(p.runtime_s[i].min())
        raise InfeasiblePlan(f"{int(p.count[none].sum())} queries exceed every deployment's SLO ({slos}); "
                             f"e.g. tokens={p.tokens[i]:.0f} needs at least {fast:.3g} s")
    for j, name in enumerate(p.names):
        can = int(p.count[p.allowed[:, j]].sum())
        if can < lo[j]:
            raise InfeasiblePlan(f"deployment {name!r}: slo_s={p.slo_s[j] if p.slo_s else None} admits {can} "
                                 f"queries but {source_share}={p.min_share} needs at least {lo[j]}")
        if math.isfinite(p.capacity_s[j]) and lo[j] > 0:
            need = _cheapest_runtime(p.runtime_s[p.allowed[:, j], j], p.count[p.allowed[:, j]], int(lo[j]))
            if need > p.capacity_s[j] * (1 + 1e-9):
                raise InfeasiblePlan(f"deployment {name!r}: capacity {p.capacity_s[j]:.6g} s (nodes x hours x 3600) "
                                     f"cannot serve its minimum share of {lo[j]} queries ({source_share}="
                                     f"{p.min_share}), which needs at least {need:.6g} s")
    if np.all(np.isfinite(p.capacity_s)):
        rmin = np.where(p.allowed, p.runtime_s, np.inf).min(axis=1)
        need = float((rmin * p.count).sum())
        total = float(p.capacity_s.sum())
        if need > total * (1 + 1e-9):
            raise InfeasiblePlan(f"capacity: all deployments together have {total:.6g} s (nodes x hours x 3600) "
                                 f"but the workload needs at least {need:.6g} s on its fastest deployments")


def _cheapest_runtime(r: np.ndarray, n: np.ndarray, m: int) -> float:
    order = np.argsort(r)
    cum = np.cumsum(n[order])
    i = int(np.searchsorted(cum, m))
    if i >= len(order):
        return math.inf
    prev = int(cum[i - 1]) if i else 0
    return float((r[order[:i]] * n[order[:i]]).sum() + r[order[i]] * (m - prev))


# ---------------------------------------------------------------------------------------------------
# Model (Pyomo)


@dataclass
class Master:
    """A restricted class formulation handed to the solver, with its index maps.

    ``classes``: the problem's classes that are rows here; ``col_class``/``col_dep``: each column's
    class (position in ``classes``) and deployment; ``rows``: the (kind, deployment) of each non-class
    row, in the order of ``model.rows`` and of the slacks ``model.s``.
    """

    model: object
    classes: np.ndarray
    col_class: np.ndarray
    col_dep: np.ndarray
    rows: list[tuple[str, int]]
    integer: bool = False

    @property
    def n_columns(self) -> int:
        return int(self.col_class.shape[0])


def row_coefficients(p: PlanProblem) -> dict[str, np.ndarray]:
    """Coefficient matrices (C, K) of the capacity, budget and floor rows, scaled to 'one mean query'
    units (runtime / R_bar, energy / E_bar, A_K tokens / A_bar) so slacks and duals are comparable."""
    return {"capacity": p.runtime_s / p.runtime_scale, "budget": p.energy_norm(), "floor": p.accuracy_norm()}


def build_master(p: PlanProblem, cols: np.ndarray, master_classes: np.ndarray, *, penalty: float) -> Master:
    """Build the Pyomo model of the class formulation restricted to ``cols`` (C, K bool).

    Classes in ``master_classes`` are rows with their columns in ``cols`` as variables; every other
    class is fixed to its single column in ``cols`` and folded into the right-hand sides. With
    ``cols = allowed`` and every class in the master this is the full class formulation (and with unit
    counts, the per-query formulation). ``zeta``, ``weight`` (of the x cost) and ``penalty`` (of the
    elastic slacks, one per non-class row) are mutable Params, so changing them needs no rebuild.
    """
    import pyomo.environ as pyo
    from pyomo.core.expr.numeric_expr import LinearExpression

    K = p.n_deployments
    master_classes = np.asarray(master_classes, dtype=np.int64)
    fixed = np.ones(p.n_classes, dtype=bool)
    fixed[master_classes] = False
    fc = np.flatnonzero(fixed)
    fdep = np.argmax(cols[fc], axis=1)
    col_class, col_dep = np.nonzero(cols[master_classes])
    cls = master_classes[col_class]
    coefs = row_coefficients(p)

    def fixed_sum(mat: np.ndarray | None) -> np.ndarray:
        w = p.count[fc].astype(np.float64) * (1.0 if mat is None else mat[fc, fdep])
        return np.bincount(fdep, weights=w, minlength=K)

    specs: list[tuple[str, int, np.ndarray | None, np.ndarray, str, float]] = []
    by_dep = [np.flatnonzero(col_dep == k) for k in range(K)]
    lo, hi, f_count = p.share_lo, p.share_hi, fixed_sum(None)
    for k in range(K):
        if lo[k] > 0:
            specs.append(("share_lo", k, None, by_dep[k], ">=", float(lo[k] - f_count[k])))
        specs.append(("share_hi", k, None, by_dep[k], "<=", float(hi[k] - f_count[k])))
    if np.isfinite(p.capacity_s).any():
        f_cap = fixed_sum(coefs["capacity"])
        for k in np.flatnonzero(np.isfinite(p.capacity_s)):
            jj = by_dep[k]
            specs.append(("capacity", int(k), coefs["capacity"][cls[jj], k], jj, "<=",
                          float(p.capacity_s[k] / p.runtime_scale - f_cap[k])))
    all_j = np.arange(len(cls))
    if p.energy_budget_j is not None:
        specs.append(("budget", 0, coefs["budget"][cls, col_dep], all_j, "<=",
                      float(p.energy_budget_j / p.energy_scale - fixed_sum(coefs["budget"]).sum())))
    if p.accuracy_floor is not None:
        need = float(p.accuracy_floor * (p.count * p.tokens).sum() / p.accuracy_scale)
        specs.append(("floor", 0, coefs["floor"][cls, col_dep], all_j, ">=",
                      need - float(fixed_sum(coefs["floor"]).sum())))

    m = pyo.ConcreteModel(name="llm_energy_plan")
    m.zeta = pyo.Param(initialize=0.5, mutable=True, within=pyo.Reals)
    m.weight = pyo.Param(initialize=1.0, mutable=True, within=pyo.Reals)
    m.penalty = pyo.Param(initialize=penalty, mutable=True, within=pyo.Reals)
    m.x = pyo.Var(range(len(cls)), within=pyo.NonNegativeReals)
    m.s = pyo.Var(range(len(specs)), within=pyo.NonNegativeReals)
    xs = [m.x[j] for j in range(len(cls))]

    def lin(coef, idx) -> LinearExpression:
        idx = [int(j) for j in idx]
        c = [1.0] * len(idx) if coef is None else [float(a) for a in coef]
        return LinearExpression(constant=0.0, linear_coefs=c, linear_vars=[xs[j] for j in idx])

    starts = np.searchsorted(col_class, np.arange(len(master_classes) + 1))
    m.supply = pyo.ConstraintList()
    for i in range(len(master_classes)):
        m.supply.add(lin(None, range(starts[i], starts[i + 1])) == int(p.count[master_classes[i]]))
    m.rows = pyo.ConstraintList()
    for r, (_, _, coef, idx, sense, rhs) in enumerate(specs):
        e = lin(coef, idx)
        m.rows.add(e + m.s[r] >= rhs if sense == ">=" else e - m.s[r] <= rhs)
    en = p.energy_norm()[cls, col_dep]
    an = p.accuracy_norm()[cls, col_dep]
    m.obj = pyo.Objective(expr=m.weight * (m.zeta * lin(en, all_j) - (1 - m.zeta) * lin(an, all_j))
                          + m.penalty * pyo.quicksum(m.s[r] for r in range(len(specs))), sense=pyo.minimize)
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    return Master(model=m, classes=master_classes, col_class=col_class, col_dep=col_dep,
                  rows=[(s[0], s[1]) for s in specs])


def set_integer(master: Master, integer: bool) -> None:
    """Switch the master's x between continuous (LP) and integer (MIP) in place."""
    import pyomo.environ as pyo

    if master.integer == integer and getattr(master.model, "_domain_set", False):
        return
    dom = pyo.NonNegativeIntegers if integer else pyo.NonNegativeReals
    for v in master.model.x.values():
        v.domain = dom
    master.integer = integer
    master.model._domain_set = True


# ---------------------------------------------------------------------------------------------------
# Solve


@dataclass
class SolveResult:
    """One solver call: ``status`` (optimal, time_limit, or the solver's word), values and LP duals."""

    status: str
    x: np.ndarray
    slack: np.ndarray
    duals_supply: np.ndarray | None
    duals_rows: np.ndarray | None
    wall_s: float


def solver_available(name: str) -> bool:
    """Whether ``name`` (glpk | highs) can run here."""
    import pyomo.environ as pyo

    try:
        return bool(pyo.SolverFactory("glpk" if name == "glpk" else "appsi_highs").available(exception_flag=False))
    except Exception:  # noqa: BLE001
        return False


def check_solver(name: str) -> None:
    """UserError naming how to install ``name`` when it is unknown or missing."""
    if name not in SOLVERS:
        raise bad_value("--solver", name, f"expected one of {', '.join(SOLVERS)}")
    if not solver_available(name):
        if name == "glpk":
            raise UserError("--solver=glpk: GLPK's glpsol is not on PATH; install it with `make glpk` "
                            "(apt-get install glpk-utils) or use --solver highs")
        raise UserError("--solver=highs: highspy is not installed; `pip install highspy`, or use --solver glpk")


def solve_master(master: Master, solver: str, time_limit_s: float, mip_gap: float) -> SolveResult:
    """Solve the master: GLPK through ``SolverFactory('glpk')`` (``--tmlim``, ``--mipgap``) or HiGHS (appsi)."""
    import pyomo.environ as pyo
    from pyomo.opt import TerminationCondition as TC

    m = master.model
    opt = pyo.SolverFactory("glpk" if solver == "glpk" else "appsi_highs")
    t0 = time.perf_counter()
    if solver == "glpk":
        res = opt.solve(m, options={"tmlim": max(1, int(math.ceil(time_limit_s))), "mipgap": mip_gap},
                        load_solutions=False)
    else:
        opt.config.time_limit = max(time_limit_s, 0.1)
        opt.config.mip_gap = mip_gap
        res = opt.solve(m, load_solutions=False)
    wall = time.perf_counter() - t0
    tc = res.solver.termination_condition
    # GLPK ends a MIP at the --mipgap tolerance with an integer solution marked feasible: optimal within the gap.
    status = {TC.optimal: "optimal", TC.maxTimeLimit: "time_limit", TC.infeasible: "infeasible"}.get(tc, str(tc))
    if tc == TC.feasible and master.integer:
        status = "optimal"
    if status not in ("optimal", "time_limit") or len(res.solution) == 0:
        return SolveResult(status if status != "time_limit" else "time_limit_no_solution",
                           np.zeros(master.n_columns), np.zeros(len(master.rows)), None, None, wall)
    m.solutions.load_from(res)
    x = np.fromiter((v.value or 0.0 for v in m.x.values()), dtype=np.float64, count=master.n_columns)
    slack = np.fromiter((v.value or 0.0 for v in m.s.values()), dtype=np.float64, count=len(master.rows))
    du = dr = None
    if not master.integer:
        du = np.fromiter((m.dual.get(c, 0.0) for c in m.supply.values()), dtype=np.float64,
                         count=len(master.classes))
        dr = np.fromiter((m.dual.get(c, 0.0) for c in m.rows.values()), dtype=np.float64, count=len(master.rows))
    return SolveResult(status, x, slack, du, dr, wall)


@dataclass
class PlanSolution:
    """The optimal (or best found) plan for one zeta.

    ``x`` (C, K) integer queries per class and deployment; ``objective`` in normalised units (sum over
    queries of zeta E/E_bar - (1 - zeta) A_K tokens/A_bar); ``lp_bound`` a proven lower bound on every
    plan (the Lagrangian bound of the final duals, equal to the LP optimum up to solver tolerances);
    ``gap`` = (objective - lp_bound) / |objective|, proven; ``lp_integral``: the LP
    optimum was integral, so no MIP was needed; ``master_classes``/``master_columns``: the largest
    problem the solver saw; ``rounds``: solver calls; ``solve_s``: wall time of the solver calls
    (writing, solving and reading the model); ``build_s``: Pyomo model building.
    """

    zeta: float
    status: str
    x: np.ndarray
    objective: float
    lp_bound: float
    gap: float
    lp_integral: bool
    solver: str
    method: str
    solve_s: float
    build_s: float
    rounds: int
    master_classes: int
    master_columns: int
    mip_gap: float
    time_limit_s: float
    metrics: dict[str, float]
    duals: dict[tuple[str, int], float] | None = None  # row duals behind lp_bound (None after a tie merge)

    @property
    def per_deployment(self) -> np.ndarray:
        return self.x.sum(axis=0)


class Planner:
    """Solves a :class:`PlanProblem` exactly for any zeta, keeping the master model between solves.

    ``method``: ``reduced`` (default; column generation, the solver sees only classes near a tie) or
    ``full`` (every class and allowed pair handed to the solver). Problems with at most ``full_below``
    allowed (class, deployment) pairs are solved in full either way. ``min_master``: the least number of
    classes the first master holds (the nearest ties).
    """

    def __init__(self, problem: PlanProblem, *, solver: str = "glpk", method: str = "reduced",
                 time_limit_s: float = DEFAULT_TIME_LIMIT_S, mip_gap: float = DEFAULT_MIP_GAP,
                 full_below: int = 2000, min_master: int | None = None, max_shared: int = 1500,
                 _depth: int = 0) -> None:
        if method not in ("reduced", "full"):
            raise bad_value("--method", method, "expected reduced or full")
        if not time_limit_s > 0:
            raise bad_value("--time-limit", time_limit_s, "must be > 0")
        if not 0 <= mip_gap < 1:
            raise bad_value("--mip-gap", mip_gap, "must be in [0, 1)")
        check_solver(solver)
        check_problem(problem)
        self.p = problem
        self.solver = solver
        self.method = "full" if (method == "full" or int(problem.allowed.sum()) <= full_below) else "reduced"
        self.time_limit_s = float(time_limit_s)
        self.mip_gap = float(mip_gap)
        self.min_master = min_master if min_master is not None else max(32, 4 * problem.n_deployments)
        en, an = problem.energy_norm(), problem.accuracy_norm()
        self._scale = float(np.abs(en[problem.allowed]).max() + np.abs(an[problem.allowed]).max()) + 1.0
        self._penalty = 1e3 * self._scale
        self._tol = 1e-7 * self._scale
        self._slack_tol = 1e-6
        self._cols: np.ndarray | None = None
        self._master_cls: np.ndarray | None = None
        self._master: Master | None = None
        self._seeds: dict[float, np.ndarray] = {}
        self.max_shared = max_shared
        self._share_only = (not np.isfinite(problem.capacity_s).any() and problem.energy_budget_j is None
                            and problem.accuracy_floor is None)
        self._certified_by = ""
        self._depth = _depth
        self._merged: dict[tuple[int, ...], Planner] = {}
        self._settings = dict(solver=solver, method=method, time_limit_s=time_limit_s, mip_gap=mip_gap,
                              full_below=full_below, min_master=min_master, max_shared=max_shared)
        self.build_s = 0.0
        self.builds = 0

    # -- columns -----------------------------------------------------------------------------------

    def _seed(self, zeta: float) -> np.ndarray:
        """This zeta's starting columns: near ties under estimated duals, plus a share-feasible repair."""
        p = self.p
        cost = p.cost(zeta)
        red = lagrangian_costs(p, cost, dual_prices(p, cost), clip=False)
        return near_ties(red, self.min_master) | (share_repair(red, p.count, p.share_lo, p.share_hi) > 0)

    def prepare(self, zetas: Sequence[float]) -> None:
        """Seed the restricted columns for every zeta in ``zetas``. While the union of their masters stays
        small (``max_shared`` classes) one model serves the whole sweep (zeta is a mutable Param);
        otherwise each zeta gets its own small master when it is solved."""
        p = self.p
        if self.method == "full":
            if self._cols is None:
                self._set_columns(p.allowed.copy(), np.arange(p.n_classes))
            return
        for z in zetas:
            if z not in self._seeds and self._tie_groups(p.cost(z)) is None:
                self._seeds[z] = self._seed(z)
        seeds = [self._seeds[z] for z in zetas if z in self._seeds]
        if not seeds:
            return
        union = np.logical_or.reduce(seeds + ([self._cols] if self._cols is not None else []))
        if int((union.sum(axis=1) >= 2).sum()) <= self.max_shared:
            self._set_columns(union)

    def _install(self, zeta: float) -> None:
        """Make the master hold this zeta's seed columns: added to the current ones while the master stays
        small, else replacing them (a fresh small master)."""
        if self.method == "full":
            self.prepare([zeta])
            return
        if zeta not in self._seeds:
            self._seeds[zeta] = self._seed(zeta)
        seed = self._seeds[zeta]
        if self._cols is not None and bool(np.all(self._cols[seed])):
            return
        union = seed if self._cols is None else (self._cols | seed)
        if int((union.sum(axis=1) >= 2).sum()) > self.max_shared:
            self._cols, self._master_cls, self._master = None, None, None
            union = seed
        self._set_columns(union)

    def seed_columns(self, x: np.ndarray, zetas: Sequence[float] = ()) -> None:
        """Start the restricted master from the columns an assignment ``x`` (C, K) uses (a warm start, e.g.
        a previous plan), instead of the price heuristic for ``zetas``. Optimality is still certified."""
        if self.method == "full":
            return
        cols = (np.asarray(x) > 0) & self.p.allowed
        for z in zetas:
            self._seeds[float(z)] = cols
        self._cols, self._master_cls, self._master = None, None, None
        self._set_columns(cols)

    def _set_columns(self, cols: np.ndarray, master_classes: np.ndarray | None = None) -> None:
        multi = np.flatnonzero(cols.sum(axis=1) >= 2)
        if master_classes is not None:
            multi = np.union1d(multi, master_classes)
        if self._master_cls is not None:
            multi = np.union1d(multi, self._master_cls)
        if (self._master is not None and np.array_equal(cols, self._cols)
                and np.array_equal(multi, self._master_cls)):
            return
        self._cols, self._master_cls, self._master = cols, multi.astype(np.int64), None

    def _model(self) -> Master:
        if self._master is None:
            t0 = time.perf_counter()
            self._master = build_master(self.p, self._cols, self._master_cls, penalty=self._penalty)
            self.build_s += time.perf_counter() - t0
            self.builds += 1
        return self._master

    def _assemble(self, master: Master, xm: np.ndarray) -> np.ndarray:
        """The full (C, K) assignment: master columns' values plus fixed classes on their single column."""
        p = self.p
        x = np.zeros(p.allowed.shape, dtype=np.float64)
        fixed = np.ones(p.n_classes, dtype=bool)
        fixed[master.classes] = False
        fc = np.flatnonzero(fixed)
        x[fc, np.argmax(self._cols[fc], axis=1)] = p.count[fc]
        x[master.classes[master.col_class], master.col_dep] = xm
        return x

    def reduced_costs(self, cost: np.ndarray, master: Master, res: SolveResult) -> np.ndarray:
        """Reduced cost of every (class, deployment) pair under the master's LP duals (+inf: not allowed).

        Classes fixed outside the master get the class dual that makes their one column's reduced cost 0.
        """
        p = self.p
        red0 = lagrangian_costs(p, cost, row_duals(master, res), clip=False)
        u = np.empty(p.n_classes)
        fixed = np.ones(p.n_classes, dtype=bool)
        fixed[master.classes] = False
        fc = np.flatnonzero(fixed)
        u[fc] = red0[fc, np.argmax(self._cols[fc], axis=1)]
        u[master.classes] = res.duals_supply
        return red0 - u[:, None]

    # -- solving -----------------------------------------------------------------------------------

    def _call(self, master: Master, t_start: float) -> SolveResult:
        left = self.time_limit_s - (time.perf_counter() - t_start)
        if left <= 0:
            raise UserError(f"--time-limit={self.time_limit_s:g} s reached before the plan was proven optimal")
        res = solve_master(master, self.solver, left, self.mip_gap)
        self._rounds += 1
        self._solve_s += res.wall_s
        self._biggest = max(self._biggest, (len(master.classes), master.n_columns))
        return res

    def _lp(self, cost: np.ndarray, zeta: float, weight: float, penalty: float, t_start: float):
        """Column generation to the full LP's optimum; returns (master, result, row duals, what certified it).

        Each round solves the master LP; the assembled plan is optimal for the full LP when either the
        master's duals price every column non-negatively, or (share rows only) :func:`share_certificate`
        finds deployment prices that do. Otherwise each class with a negative reduced cost gets its most
        negative column (the most negative classes first, at most as many as the master holds).
        """
        share_only = self._share_only and weight > 0
        while True:
            master = self._model()
            set_integer(master, False)
            m = master.model
            m.zeta.set_value(zeta)
            m.weight.set_value(weight)
            m.penalty.set_value(penalty)
            res = self._call(master, t_start)
            if res.status != "optimal" or res.duals_supply is None:
                raise UserError(f"solver {self.solver} stopped with status {res.status} on the LP "
                                f"({len(master.classes)} classes, {master.n_columns} columns); raise --time-limit "
                                f"(now {self.time_limit_s:g} s) or try --solver highs")
            red = self.reduced_costs(cost, master, res)
            add = (red < -self._tol) & ~self._cols
            if not add.any():
                return master, res, row_duals(master, res), "duals"
            if share_only and res.slack.sum() <= self._slack_tol:
                x = self._assemble(master, res.x)
                prices = share_certificate(cost, x, self.p.share_lo, self.p.share_hi, self._tol)
                if prices is not None:
                    return master, res, share_duals(self.p, prices), "prices"
            rows = np.flatnonzero(add.any(axis=1))
            best = np.argmin(np.where(add[rows], red[rows], np.inf), axis=1)
            worst_first = np.argsort(red[rows, best])
            keep = worst_first[: max(self.min_master, len(master.classes))]
            new = self._cols.copy()
            new[rows[keep], best[keep]] = True
            self._set_columns(new, rows[keep])

    def _tie_groups(self, cost: np.ndarray) -> np.ndarray | None:
        """Group label of each deployment when some have identical cost columns (share rows only), else None."""
        if not self._share_only or self.p.n_deployments < 2:
            return None
        _, labels = np.unique(cost.T, axis=0, return_inverse=True)
        labels = labels.reshape(-1)
        return labels if len(np.unique(labels)) < self.p.n_deployments else None

    def solve(self, zeta: float) -> PlanSolution:
        """The optimal plan for ``zeta`` (see the module docstring for why it is exact).

        Deployments whose objective columns are identical for this zeta (e.g. one model on two node types
        at zeta = 0: same accuracy) are interchangeable: they are merged into one with the summed share
        bounds (an exact reduction), and the merged deployment's queries are then split among its
        members by the other term (least energy; most accuracy at zeta = 1) under their own bounds.
        """
        if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and 0.0 <= zeta <= 1.0):
            raise bad_value("--zeta", zeta, "must be in [0, 1]")
        zeta = float(zeta)
        labels = self._tie_groups(self.p.cost(zeta))
        if labels is not None:
            return self._solve_merged(zeta, labels)
        return self._solve_direct(zeta)

    def _solve_merged(self, zeta: float, labels: np.ndarray) -> PlanSolution:
        p = self.p
        groups = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)]
        first = np.array([g[0] for g in groups])
        lo, hi = p.share_lo, p.share_hi
        key = tuple(int(v) for v in labels)
        if key not in self._merged:
            sub = replace(p, names=tuple("+".join(p.names[k] for k in g) for g in groups),
                          energy_j=p.energy_j[:, first], runtime_s=p.runtime_s[:, first], accuracy=p.accuracy[first],
                          allowed=p.allowed[:, first], capacity_s=p.capacity_s[first], slo_s=None,
                          share_bounds=(np.array([lo[g].sum() for g in groups]),
                                        np.array([hi[g].sum() for g in groups])),
                          scales=(p.energy_scale, p.accuracy_scale, p.runtime_scale))
            self._merged[key] = Planner(sub, **self._settings, _depth=self._depth + 1)
        sol = self._merged[key].solve(zeta)
        x = np.zeros(p.allowed.shape, dtype=np.int64)
        rounds, solve_s = sol.rounds, sol.solve_s
        z2 = 0.0 if zeta == 1.0 else 1.0
        for gi, g in enumerate(groups):
            rows = np.flatnonzero(sol.x[:, gi] > 0)
            if len(g) == 1 or not rows.size:
                x[:, g[0]] = sol.x[:, gi]
                continue
            sub = replace(p, names=tuple(p.names[k] for k in g), count=sol.x[rows, gi], tokens=p.tokens[rows],
                          energy_j=p.energy_j[np.ix_(rows, g)], runtime_s=p.runtime_s[np.ix_(rows, g)],
                          accuracy=p.accuracy[g], allowed=p.allowed[np.ix_(rows, g)], capacity_s=p.capacity_s[g],
                          slo_s=None, share_bounds=(lo[g], hi[g]),
                          scales=(p.energy_scale, p.accuracy_scale, p.runtime_scale))
            if self._depth >= 1:  # identical in both terms: any split within the bounds is as good
                xs = fill_split(sub.count, lo[g], hi[g])
            else:
                s2 = Planner(sub, **self._settings, _depth=self._depth + 1).solve(z2)
                xs, rounds, solve_s = s2.x, rounds + s2.rounds, solve_s + s2.solve_s
            x[np.ix_(rows, g)] = xs
        obj = p.objective(x, zeta)
        return replace(sol, x=x, objective=obj, gap=max(obj - sol.lp_bound, 0.0) / max(abs(obj), 1e-12),
                       method=f"{sol.method}; {p.n_deployments - len(groups)} tied deployment(s) merged", duals=None,
                       rounds=rounds, solve_s=solve_s, metrics=p.metrics(x))

    def _solve_direct(self, zeta: float) -> PlanSolution:
        self._install(zeta)
        p = self.p
        self._rounds, self._solve_s, self._biggest = 0, 0.0, (0, 0)
        build0 = self.build_s
        t_start = time.perf_counter()
        cost = p.cost(zeta)
        for _ in range(4):
            master, res, y, self._certified_by = self._lp(cost, zeta, 1.0, self._penalty, t_start)
            if res.slack.sum() <= self._slack_tol:
                break
            why = self.diagnose(t_start)
            if why:
                raise InfeasiblePlan("infeasible: " + "; ".join(why))
            self._penalty *= 1e4  # the penalty was too small to force feasibility: raise it and redo
        else:
            raise InfeasiblePlan("no feasible plan found (numerical trouble); relax the constraints")
        x_lp = self._assemble(master, res.x)
        bound, d = lagrangian_bound(p, cost, y)
        if np.abs(x_lp - np.rint(x_lp)).max(initial=0.0) <= INTEGRAL_TOL:
            return self._finish(zeta, "optimal", np.rint(x_lp), bound, True, build0, y)
        # MIP on the master. The Lagrangian bound proves the gap of every integer plan: within --mip-gap we
        # stop; otherwise reduced-cost fixing adds the only columns that could still improve the plan
        # (reduced cost <= incumbent - bound), cheapest first, and the MIP is solved again.
        status = "feasible"
        for _ in range(8):
            master = self._model()
            set_integer(master, True)
            m = master.model
            m.zeta.set_value(zeta)
            m.weight.set_value(1.0)
            m.penalty.set_value(self._penalty)
            mres = self._call(master, t_start)
            if mres.status not in ("optimal", "time_limit"):
                raise UserError(f"solver {self.solver} stopped with status {mres.status} on the MIP "
                                f"({len(master.classes)} classes); raise --time-limit (now {self.time_limit_s:g} s)")
            x_int = self._assemble(master, mres.x)
            z_int = p.objective(x_int, zeta) + self._penalty * float(mres.slack.sum())
            feasible = mres.slack.sum() <= self._slack_tol
            if feasible and (z_int - bound) <= self.mip_gap * max(abs(z_int), 1e-12):
                status = "optimal"
                break
            if mres.status == "time_limit":
                status = "time_limit"
                break
            room = (d <= (z_int - bound) + self._tol) & ~self._cols
            if not room.any():
                status = "optimal"  # the master holds every column that could improve: its MIP optimum is exact
                break
            r, k = np.nonzero(room)
            keep = np.argsort(d[r, k], kind="stable")[: max(2000, master.n_columns)]
            new = self._cols.copy()
            new[r[keep], k[keep]] = True
            self._set_columns(new, np.unique(r[keep]))
        if mres.slack.sum() > self._slack_tol:
            bad = [kind if kind in ("budget", "floor") else f"{kind}[{p.names[k]}]"
                   for (kind, k), s in zip(master.rows, mres.slack) if s > self._slack_tol]
            raise InfeasiblePlan("infeasible in whole queries: the LP relaxation fits but no integer plan meets "
                                 f"{', '.join(bad)}; relax them by about one query's worth")
        return self._finish(zeta, status, np.rint(x_int), bound, False, build0, y)

    def diagnose(self, t_start: float | None = None) -> list[str]:
        """Least total violation of the non-class rows (x cost 0): the rows that stay violated, in words."""
        t_start = time.perf_counter() if t_start is None else t_start
        zero = np.where(self.p.allowed, 0.0, np.inf)
        master, res, _, _ = self._lp(zero, 0.0, 0.0, 1.0, t_start)
        x = self._assemble(master, res.x)
        return [describe_row(self.p, kind, k, float(s), x) for (kind, k), s in zip(master.rows, res.slack)
                if s > self._slack_tol]

    def _finish(self, zeta: float, status: str, x: np.ndarray, lp_bound: float, lp_integral: bool,
                build0: float, duals: dict | None = None) -> PlanSolution:
        p = self.p
        obj = p.objective(x, zeta)
        gap = max(obj - lp_bound, 0.0) / max(abs(obj), 1e-12)
        return PlanSolution(zeta=zeta, status=status, x=x.astype(np.int64), objective=obj, lp_bound=lp_bound,
                            gap=gap, lp_integral=lp_integral, solver=self.solver, method=self.method,
                            solve_s=self._solve_s, build_s=self.build_s - build0, rounds=self._rounds,
                            master_classes=self._biggest[0], master_columns=self._biggest[1], mip_gap=self.mip_gap,
                            time_limit_s=self.time_limit_s, metrics=p.metrics(x), duals=duals)

    def sweep(self, zetas: Sequence[float]) -> list[PlanSolution]:
        """Solve every zeta on one master model (built once, unless pricing adds columns)."""
        self.prepare(list(zetas))
        return [self.solve(z) for z in zetas]


def row_duals(master: Master, res: SolveResult) -> dict[tuple[str, int], float]:
    """The master's duals of its non-class rows by (kind, deployment)."""
    return {key: float(y) for key, y in zip(master.rows, res.duals_rows)}


ROW_SENSE = {"share_lo": ">=", "share_hi": "<=", "capacity": "<=", "budget": "<=", "floor": ">="}


def _row_rhs(p: PlanProblem, kind: str, k: int) -> float:
    """Right-hand side of a row over the whole problem (scaled as :func:`row_coefficients`)."""
    if kind == "share_lo":
        return float(p.share_lo[k])
    if kind == "share_hi":
        return float(p.share_hi[k])
    if kind == "capacity":
        return float(p.capacity_s[k] / p.runtime_scale)
    if kind == "budget":
        return float(p.energy_budget_j / p.energy_scale)
    return float(p.accuracy_floor * (p.count * p.tokens).sum() / p.accuracy_scale)


def _clip_sign(kind: str, y: float) -> float:
    return max(y, 0.0) if ROW_SENSE[kind] == ">=" else min(y, 0.0)


def lagrangian_costs(p: PlanProblem, cost: np.ndarray, y: dict[tuple[str, int], float], *, clip: bool
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


def lagrangian_bound(p: PlanProblem, cost: np.ndarray, y: dict[tuple[str, int], float]) -> tuple[float, np.ndarray]:
    """A proven lower bound on every feasible plan's objective, from any row duals ``y``, and the
    non-negative reduced costs (C, K) it leaves.

    For a feasible x: cost.x = (cost - y A).x + y A x >= sum_c n_c min_K (cost - y A)[c, K] + y b, since
    y A x >= y b row by row when y has the row's sign (weak Lagrangian duality). So a plan whose
    objective meets this bound is optimal, and a column whose reduced cost exceeds
    (incumbent - bound) cannot be in a better plan.
    """
    red = lagrangian_costs(p, cost, y, clip=True)
    best = red.min(axis=1)
    const = sum(_clip_sign(kind, v) * _row_rhs(p, kind, k) for (kind, k), v in y.items())
    return float((p.count * best).sum() + const), red - best[:, None]


def share_duals(p: PlanProblem, prices: np.ndarray) -> dict[tuple[str, int], float]:
    """Deployment prices as share-row duals: p > 0 on the lower bound row, p < 0 on the upper one."""
    y: dict[tuple[str, int], float] = {}
    for k, v in enumerate(prices):
        if p.share_lo[k] > 0:
            y[("share_lo", k)] = max(float(v), 0.0)
        y[("share_hi", k)] = min(float(v), 0.0)
    return y


def fill_split(count: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Split classes (``count``) over interchangeable deployments so each gets between lo and hi queries:
    every deployment is filled to its lower bound first, then up to its upper bound, in order."""
    target = lo.astype(np.int64).copy()
    rest = int(count.sum() - target.sum())
    for k in range(len(target)):
        add = min(rest, int(hi[k] - target[k]))
        target[k] += add
        rest -= add
    x = np.zeros((len(count), len(target)), dtype=np.int64)
    cum_t = np.concatenate([[0], np.cumsum(target)])
    cum_c = np.concatenate([[0], np.cumsum(count)])
    for k in range(len(target)):  # overlap of class intervals with deployment k's interval
        x[:, k] = np.clip(np.minimum(cum_c[1:], cum_t[k + 1]) - np.maximum(cum_c[:-1], cum_t[k]), 0, None)
    return x


def describe_row(p: PlanProblem, kind: str, k: int, slack: float, x: np.ndarray) -> str:
    """A violated row (slack in 'mean query' units) in words, naming the input to change."""
    name = p.names[k]
    if kind == "share_lo":
        return (f"--min-share={p.min_share}: deployment {name!r} can take only {p.share_lo[k] - slack:.0f} of the "
                f"{p.share_lo[k]} queries it must serve (its SLO or capacity)")
    if kind == "share_hi":
        return (f"--min-share={p.min_share}: deployment {name!r} would have to take {slack:.0f} queries over its "
                f"maximum of {p.share_hi[k]}")
    if kind == "capacity":
        need = slack * p.runtime_scale
        return (f"capacity of {name!r}: {p.capacity_s[k]:.6g} s (nodes x hours x 3600) is {need:.6g} s short "
                f"(needs {p.capacity_s[k] + need:.6g} s)")
    if kind == "budget":
        need = slack * p.energy_scale
        return (f"--max-energy/--energy-budget={p.energy_budget_j:.6g} J is {need:.6g} J short: any plan meeting the "
                f"other constraints needs at least {p.energy_budget_j + need:.6g} J")
    total_tok = float((p.count * p.tokens).sum())
    short = slack * p.accuracy_scale / total_tok
    return (f"--min-accuracy={p.accuracy_floor:g} is out of reach: plans meeting the other constraints reach at "
            f"most {p.accuracy_floor - short:.6g}")


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


def dual_prices(p: PlanProblem, cost: np.ndarray, *, sample: int = 2000, seed: int = 0
                ) -> dict[tuple[str, int], float]:
    """Estimated duals of every non-class row (share, capacity, budget, floor): a starting point only.

    Maximises the entropy-smoothed Lagrangian dual
    sum_c n_c softmin_tau(cost[c, :] - (y A)[c, :]) + y b over y with each row's sign (>= rows y >= 0,
    <= rows y <= 0), by L-BFGS-B with bounds while annealing tau down to 1e-4 of the typical cost
    spread (first on a count-weighted sample of at most ``sample`` classes, then on all). The solver's
    duals or :func:`share_certificate` certify optimality afterwards; these only choose what it sees.
    """
    from scipy.optimize import minimize

    C, K = cost.shape
    keys: list[tuple[str, int]] = [("share_lo", k) for k in range(K) if p.share_lo[k] > 0]
    keys += [("share_hi", k) for k in range(K)]
    keys += [("capacity", int(k)) for k in np.flatnonzero(np.isfinite(p.capacity_s))]
    keys += [("budget", 0)] if p.energy_budget_j is not None else []
    keys += [("floor", 0)] if p.accuracy_floor is not None else []
    if C == 0 or (K == 1 and len(keys) <= 2):
        return {key: 0.0 for key in keys}
    n = float(p.count.sum())
    sign = np.array([1.0 if ROW_SENSE[kind] == ">=" else -1.0 for kind, _ in keys])
    b = np.array([_row_rhs(p, kind, k) for kind, k in keys]) / n
    dep = np.array([k for _, k in keys])
    kinds = np.array([kind for kind, _ in keys])
    is_share = np.isin(kinds, ("share_lo", "share_hi"))
    is_cap = kinds == "capacity"
    coefs = row_coefficients(p)
    fin = np.where(np.isfinite(cost), cost, np.nan)
    spread = float(np.nanmedian(np.nanmax(fin, axis=1) - np.nanmin(fin, axis=1)))
    spread = spread if spread > 0 else 1.0

    def run(rows: np.ndarray, w: np.ndarray, tau: float, v0: np.ndarray, maxiter: int) -> np.ndarray:
        c = cost[rows]
        rn = coefs["capacity"][rows] if is_cap.any() else None
        en = coefs["budget"][rows] if "budget" in kinds else None
        an = coefs["floor"][rows] if "floor" in kinds else None
        t = tau * spread

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

        r = minimize(f, v0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(keys),
                     options={"maxiter": maxiter, "gtol": 1e-12, "ftol": 1e-15})
        return r.x

    v = np.zeros(len(keys))
    taus: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    with single_threaded_blas():
        if C > sample:
            idx = np.random.default_rng(seed).choice(C, sample, replace=False, p=p.count / n)
            for tau in taus[:3]:
                v = run(idx, np.full(sample, 1.0 / sample), tau, v, 200)
            taus = taus[2:]
        for tau in taus:
            v = run(np.arange(C), p.count / n, tau, v, 40 if C > sample else 300)
    return {key: float(sg * vi) for key, sg, vi in zip(keys, sign, v)}


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
        for c in np.flatnonzero(ok)[np.argsort(move[ok], kind="stable")]:
            j = src[c]
            take = min(need, int(x[c, j]), int(n[j] - lo[j]))
            if take <= 0:
                continue
            x[c, j] -= take
            x[c, k] += take
            n[j] -= take
            n[k] += take
            need -= take
            if need == 0:
                break
    for k in np.argsort(-n):
        extra = int(n[k] - hi[k])
        if extra <= 0:
            continue
        rows = np.flatnonzero(x[:, k])
        alt = np.where(np.arange(K)[None, :] == k, np.inf, red[rows])
        dest = np.argmin(alt, axis=1)
        move = alt[np.arange(len(rows)), dest] - red[rows, k]
        for i in np.argsort(move, kind="stable"):
            c, j = rows[i], dest[i]
            if not np.isfinite(move[i]):
                break
            take = min(extra, int(x[c, k]), int(hi[j] - n[j]))
            if take <= 0:
                continue
            x[c, k] -= take
            x[c, j] += take
            n[k] -= take
            n[j] += take
            extra -= take
            if extra == 0:
                break
    return x


# ---------------------------------------------------------------------------------------------------
# Binning: solve on log-spaced (tin, tout) bins, realise on the exact classes, bound the error


@dataclass(frozen=True)
class BinningReport:
    """What ``--bins`` cost. Objective units as :attr:`PlanSolution.objective`.

    ``delta``: sum over queries of max_K |cost(query, K) - cost(its bin's representative, K)|, so any
    plan's objective moves by at most delta between exact and binned costs; hence the realised binned
    plan is within ``bound_a_priori`` = 2 delta of the exact optimum. ``bound`` is the tightest of that,
    objective (exact costs) - objective (binned costs) + delta, and objective - L, L the Lagrangian
    lower bound that the bin solve's duals give on the exact problem.
    ``energy_delta_j``: the same sum for energy alone, in J.
    """

    n_bins: int
    classes: int
    bin_classes: int
    delta: float
    bound_a_priori: float
    bound: float
    bound_rel: float
    energy_delta_j: float
    slo_moves: int

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def binned_problem(exact: PlanProblem, bins_count: np.ndarray, bins_tokens: np.ndarray, energy_j: np.ndarray,
                   runtime_s: np.ndarray) -> PlanProblem:
    """The problem on bins: representative predictions, the exact problem's constraints and scales."""
    allowed = np.ones_like(energy_j, dtype=bool)
    for j, s in enumerate(exact.slo_s or ()):
        if s is not None:
            allowed[:, j] = runtime_s[:, j] <= s
    return replace(exact, count=np.asarray(bins_count, dtype=np.int64), tokens=np.asarray(bins_tokens, float),
                   energy_j=energy_j, runtime_s=runtime_s, allowed=allowed,
                   scales=(exact.energy_scale, exact.accuracy_scale, exact.runtime_scale))


def realise_bins(exact: PlanProblem, class_bin: np.ndarray, x_bins: np.ndarray, zeta: float) -> tuple[np.ndarray, int]:
    """Spread each bin's per-deployment counts over its exact classes (C, K); returns (x, SLO moves).

    A bin on one deployment sends all its classes there; a split bin hands its quotas out greedily,
    classes with the most to lose first, each to its cheapest deployment with quota left that its SLO
    allows (else the cheapest with quota left, counted in SLO moves).
    """
    C, K = exact.n_classes, exact.n_deployments
    x = np.zeros((C, K), dtype=np.int64)
    n_dep = (x_bins > 0).sum(axis=1)
    single = n_dep[class_bin] == 1
    dep = np.argmax(x_bins, axis=1)[class_bin]
    x[np.flatnonzero(single), dep[single]] = exact.count[single]
    cost = exact.cost(zeta)
    raw = zeta * exact.energy_norm() - (1 - zeta) * exact.accuracy_norm()
    slo_moves = int(exact.count[single & ~exact.allowed[np.arange(C), dep]].sum())
    for b in np.flatnonzero(n_dep > 1):
        quota = x_bins[b].astype(np.int64).copy()
        members = np.flatnonzero(class_bin == b)
        srt = np.sort(np.where(np.isfinite(cost[members]), cost[members], 1e300), axis=1)
        regret = srt[:, 1] - srt[:, 0] if K > 1 else np.zeros(len(members))
        for c in members[np.argsort(-regret, kind="stable")]:
            left = int(exact.count[c])
            while left:
                ok = quota > 0
                pref = np.where(ok & exact.allowed[c], cost[c], np.inf)
                if not np.isfinite(pref).any():
                    pref = np.where(ok, raw[c], np.inf)
                    k = int(np.argmin(pref))
                    slo_moves += min(left, int(quota[k]))
                else:
                    k = int(np.argmin(pref))
                take = min(left, int(quota[k]))
                x[c, k] += take
                quota[k] -= take
                left -= take
    return x, slo_moves


def binning_report(exact: PlanProblem, binned: PlanProblem, class_bin: np.ndarray, x_exact: np.ndarray,
                   x_bins: np.ndarray, zeta: float, n_bins: int, slo_moves: int,
                   duals: dict[tuple[str, int], float] | None = None) -> BinningReport:
    """The error bound of a binned plan (see :class:`BinningReport`). With the bin solve's ``duals`` the
    bound also uses their Lagrangian bound on the *exact* problem (valid for any duals), usually far tighter."""
    ce = zeta * exact.energy_norm() - (1 - zeta) * exact.accuracy_norm()
    cb = zeta * binned.energy_norm() - (1 - zeta) * binned.accuracy_norm()
    delta = float((exact.count * np.abs(ce - cb[class_bin]).max(axis=1)).sum())
    e_delta = float((exact.count * np.abs(exact.energy_j - binned.energy_j[class_bin]).max(axis=1)).sum())
    f_exact = exact.objective(x_exact, zeta)
    f_bins = binned.objective(x_bins, zeta)
    bound = min(max(0.0, f_exact - f_bins + delta), 2 * delta)
    if duals is not None:
        lower, _ = lagrangian_bound(exact, exact.cost(zeta), duals)
        bound = min(bound, max(0.0, f_exact - lower))
    return BinningReport(n_bins=n_bins, classes=exact.n_classes, bin_classes=binned.n_classes, delta=delta,
                         bound_a_priori=2 * delta, bound=bound, bound_rel=bound / max(abs(f_exact), 1e-12),
                         energy_delta_j=e_delta, slo_moves=slo_moves)


def per_query_problem(problem: PlanProblem, query_class: np.ndarray) -> PlanProblem:
    """The per-query formulation of ``problem``: one class of count 1 per query (``query_class[i]`` is
    query i's class), same constraints and scales. Only to check the class formulation against."""
    q = np.asarray(query_class, dtype=np.int64)
    if np.bincount(q, minlength=problem.n_classes).tolist() != problem.count.tolist():
        raise ValueError("query_class does not match the problem's class counts")
    return replace(problem, count=np.ones(len(q), dtype=np.int64), tokens=problem.tokens[q],
                   energy_j=problem.energy_j[q], runtime_s=problem.runtime_s[q], allowed=problem.allowed[q],
                   scales=(problem.energy_scale, problem.accuracy_scale, problem.runtime_scale))
