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
* **Solve** (:class:`Planner`): exact column generation. Only share rows -> the constraint matrix is that
  of a transportation problem (totally unimodular), so the LP optimum at a vertex is integral and we
  solve the LP, not a MIP. The LP's optimum is fixed by K deployment prices: a class goes to the
  deployment minimising cost - price. We estimate prices in numpy, hand the solver only the classes
  near a tie (all others are fixed to their single best column and folded into the rows' right-hand
  sides), then price out *every* column with the solver's duals and add any with negative reduced
  cost until none is left: primal feasible + dual feasible + complementary slack = the full LP's
  optimum, certified for every (class, deployment) pair. Capacity/budget/floor rows break total
  unimodularity; then a MIP is solved on the master after reduced-cost fixing (a column whose reduced
  cost exceeds incumbent - LP bound cannot be in a better integer solution), and the proven gap to the
  LP bound is reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from llm_energy.errors import UserError, bad_value

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.deployments import DeploymentsFile
    from llm_energy.workload import BinnedClasses, WorkloadClasses

SOLVERS = ("glpk", "highs")
NEGATIVE_POLICIES = ("clip", "keep", "error")
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_MIP_GAP = 1e-6
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
        what = {"clip": "clipped to 0 for planning", "keep": "kept as predicted (negative)"}[self.policy]
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

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def n_deployments(self) -> int:
        return len(self.names)

    @property
    def n_queries(self) -> int:
        return int(self.count.sum())

    @property
    def share_lo(self) -> np.ndarray:
        """Least queries per deployment: ceil(eps N) (int64, K)."""
        n = self.n_queries
        return np.full(self.n_deployments, math.ceil(self.min_share * n - 1e-9), dtype=np.int64)

    @property
    def share_hi(self) -> np.ndarray:
        """Most queries per deployment: floor((1 - eps) N) (int64, K)."""
        n = self.n_queries
        return np.full(self.n_deployments, math.floor((1.0 - self.min_share) * n + 1e-9), dtype=np.int64)

    @property
    def energy_scale(self) -> float:
        """E_bar: mean predicted energy per query over queries and deployments (J)."""
        v = float((self.count[:, None] * self.energy_j).sum() / (self.n_queries * self.n_deployments))
        return v if v > 0 else 1.0

    @property
    def accuracy_scale(self) -> float:
        """A_bar: mean of A_K * (tin + tout) per query over queries and deployments."""
        v = float(self.accuracy.mean() * (self.count * self.tokens).sum() / self.n_queries)
        return v if v > 0 else 1.0

    @property
    def runtime_scale(self) -> float:
        """R_bar: mean predicted runtime per query (s), the unit of the capacity rows' slack."""
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
    from llm_energy.fits import predict

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
    status = {TC.optimal: "optimal", TC.maxTimeLimit: "time_limit", TC.infeasible: "infeasible"}.get(tc, str(tc))
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
    queries of zeta E/E_bar - (1 - zeta) A_K tokens/A_bar); ``lp_bound`` the full LP's optimum (a lower
    bound on any plan); ``gap`` = (objective - lp_bound) / |lp_bound|, proven; ``lp_integral``: the LP
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
                 full_below: int = 2000, min_master: int | None = None) -> None:
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
        self._prepared: set[float] = set()
        self._share_only = (not np.isfinite(problem.capacity_s).any() and problem.energy_budget_j is None
                            and problem.accuracy_floor is None)
        self._certified_by = ""
        self.build_s = 0.0
        self.builds = 0

    # -- columns -----------------------------------------------------------------------------------

    def prepare(self, zetas: Sequence[float]) -> None:
        """Seed the restricted columns with each zeta's near-tie columns (one model for a whole sweep)."""
        p = self.p
        if self.method == "full":
            if self._cols is None:
                self._set_columns(p.allowed.copy(), np.arange(p.n_classes))
            self._prepared.update(zetas)
            return
        cols = np.zeros_like(p.allowed) if self._cols is None else self._cols.copy()
        for z in zetas:
            if z in self._prepared:
                continue
            cost = p.cost(z)
            red = cost - share_prices(cost, p.count, p.share_lo, p.share_hi)[None, :]
            cols |= near_ties(red, self.min_master)
            cols |= share_repair(red, p.count, p.share_lo, p.share_hi) > 0
            self._prepared.add(z)
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
        K = p.n_deployments
        share, cap = np.zeros(K), np.zeros(K)
        other = {"budget": 0.0, "floor": 0.0}
        for (kind, k), y in zip(master.rows, res.duals_rows):
            if kind in ("share_lo", "share_hi"):
                share[k] += y
            elif kind == "capacity":
                cap[k] = y
            else:
                other[kind] = y
        coefs = row_coefficients(p)
        rowterm = np.broadcast_to(share[None, :], p.allowed.shape).copy()
        if cap.any():
            rowterm += cap[None, :] * coefs["capacity"]
        for kind, y in other.items():
            if y:
                rowterm += y * coefs[kind]
        red0 = np.where(p.allowed, cost - rowterm, np.inf)
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
        """Column generation to the full LP's optimum; returns (master, result, reduced costs, certificate).

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
                return master, res, red, "duals"
            if share_only and res.slack.sum() <= self._slack_tol:
                x = self._assemble(master, res.x)
                prices = share_certificate(cost, x, self.p.share_lo, self.p.share_hi, self._tol)
                if prices is not None:
                    u = np.min(cost - prices[None, :], axis=1)
                    return master, res, cost - prices[None, :] - u[:, None], "prices"
            rows = np.flatnonzero(add.any(axis=1))
            best = np.argmin(np.where(add[rows], red[rows], np.inf), axis=1)
            worst_first = np.argsort(red[rows, best])
            keep = worst_first[: max(self.min_master, len(master.classes))]
            new = self._cols.copy()
            new[rows[keep], best[keep]] = True
            self._set_columns(new, rows[keep])

    def solve(self, zeta: float) -> PlanSolution:
        """The optimal plan for ``zeta`` (see the module docstring for why it is exact)."""
        if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and 0.0 <= zeta <= 1.0):
            raise bad_value("--zeta", zeta, "must be in [0, 1]")
        zeta = float(zeta)
        self.prepare([zeta])
        p = self.p
        self._rounds, self._solve_s, self._biggest = 0, 0.0, (0, 0)
        build0 = self.build_s
        t_start = time.perf_counter()
        cost = p.cost(zeta)
        for _ in range(4):
            master, res, red, self._certified_by = self._lp(cost, zeta, 1.0, self._penalty, t_start)
            if res.slack.sum() <= self._slack_tol:
                break
            why = self.diagnose(t_start)
            if why:
                raise InfeasiblePlan("infeasible: " + "; ".join(why))
            self._penalty *= 1e4  # the penalty was too small to force feasibility: raise it and redo
        else:
            raise InfeasiblePlan("no feasible plan found (numerical trouble); relax the constraints")
        x_lp = self._assemble(master, res.x)
        lp_bound = p.objective(x_lp, zeta)
        if np.abs(x_lp - np.rint(x_lp)).max(initial=0.0) <= INTEGRAL_TOL:
            return self._finish(zeta, "optimal", np.rint(x_lp), lp_bound, True, build0)
        # MIP on the master; reduced-cost fixing against the full LP's duals keeps it exact.
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
            room = (red <= (z_int - lp_bound) + self._tol) & ~self._cols
            if not room.any() or mres.status != "optimal":
                break
            self._set_columns(self._cols | room, np.flatnonzero(room.any(axis=1)))
        if mres.slack.sum() > self._slack_tol:
            bad = [kind if kind in ("budget", "floor") else f"{kind}[{p.names[k]}]"
                   for (kind, k), s in zip(master.rows, mres.slack) if s > self._slack_tol]
            raise InfeasiblePlan("infeasible in whole queries: the LP relaxation fits but no integer plan meets "
                                 f"{', '.join(bad)}; relax them by about one query's worth")
        return self._finish(zeta, mres.status, np.rint(x_int), lp_bound, False, build0)

    def diagnose(self, t_start: float | None = None) -> list[str]:
        """Least total violation of the non-class rows (x cost 0): the rows that stay violated, in words."""
        t_start = time.perf_counter() if t_start is None else t_start
        zero = np.where(self.p.allowed, 0.0, np.inf)
        master, res, _, _ = self._lp(zero, 0.0, 0.0, 1.0, t_start)
        x = self._assemble(master, res.x)
        return [describe_row(self.p, kind, k, float(s), x) for (kind, k), s in zip(master.rows, res.slack)
                if s > self._slack_tol]

    def _finish(self, zeta: float, status: str, x: np.ndarray, lp_bound: float, lp_integral: bool,
                build0: float) -> PlanSolution:
        p = self.p
        obj = p.objective(x, zeta)
        gap = 0.0 if lp_integral else max(obj - lp_bound, 0.0) / max(abs(lp_bound), 1e-12)
        return PlanSolution(zeta=zeta, status=status, x=x.astype(np.int64), objective=obj, lp_bound=lp_bound,
                            gap=gap, lp_integral=lp_integral, solver=self.solver, method=self.method,
                            solve_s=self._solve_s, build_s=self.build_s - build0, rounds=self._rounds,
                            master_classes=self._biggest[0], master_columns=self._biggest[1], mip_gap=self.mip_gap,
                            time_limit_s=self.time_limit_s, metrics=p.metrics(x))

    def sweep(self, zetas: Sequence[float]) -> list[PlanSolution]:
        """Solve every zeta on one master model (built once, unless pricing adds columns)."""
        self.prepare(list(zetas))
        return [self.solve(z) for z in zetas]


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


def share_prices(cost: np.ndarray, count: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, sample: int = 2000,
                 seed: int = 0) -> np.ndarray:
    """Deployment prices p (K,) near the optimal duals of the share rows (a starting point only).

    Maximises the entropy-smoothed Lagrangian dual of the share-only problem,
    sum_c n_c softmin_tau(cost[c, :] - p) + sum_K (lo_K mu_K - hi_K nu_K) with p = mu - nu, mu, nu >= 0,
    with L-BFGS-B while annealing tau down to 1e-4 of the typical cost spread (first on a
    count-weighted sample of at most ``sample`` classes, then on all). The solver's duals or
    :func:`share_certificate` certify optimality afterwards; these prices only choose what it sees.
    """
    from scipy.optimize import minimize

    C, K = cost.shape
    if K == 1 or C == 0:
        return np.zeros(K)
    n = float(count.sum())
    fin = np.where(np.isfinite(cost), cost, np.nan)
    spread = float(np.nanmedian(np.nanmax(fin, axis=1) - np.nanmin(fin, axis=1)))
    spread = spread if spread > 0 else 1.0
    lo_, hi_ = lo / n, hi / n

    def run(c: np.ndarray, w: np.ndarray, tau: float, v0: np.ndarray, maxiter: int) -> np.ndarray:
        t = tau * spread

        def f(v: np.ndarray):
            a = (v[:K] - v[K:])[None, :] - c
            a /= t
            m = a.max(axis=1)
            e = np.exp(a - m[:, None])
            s = e.sum(axis=1)
            nk = (w / s) @ e
            g = -t * (w @ (m + np.log(s))) + lo_ @ v[:K] - hi_ @ v[K:]
            return -g, -np.concatenate([lo_ - nk, nk - hi_])

        r = minimize(f, v0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * K),
                     options={"maxiter": maxiter, "gtol": 1e-12, "ftol": 1e-15})
        return r.x

    v = np.zeros(2 * K)
    taus: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    if C > sample:
        idx = np.random.default_rng(seed).choice(C, sample, replace=False, p=count / n)
        for tau in taus[:3]:
            v = run(cost[idx], np.full(sample, 1.0 / sample), tau, v, 200)
        taus = taus[2:]
    for tau in taus:
        v = run(cost, count / n, tau, v, 40 if C > sample else 300)
    return v[:K] - v[K:]


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
