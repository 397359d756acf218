"""The Pyomo master: the class formulation restricted to some columns, and the columns it holds.

The solver never sees the whole problem unless it is small. :class:`RestrictedMaster` keeps the
columns (class, deployment) the solver may use; classes with one column are fixed there and folded
into the rows' right-hand sides, the others are rows of the model (:func:`build_master`). The model
is rebuilt only when the columns change (pricing added some, or another zeta needs others): zeta,
the cost weight and the slack penalty are mutable Params, so a sweep re-solves one model.

Every non-class row carries an elastic slack with a large penalty, so the model is always feasible
and a positive slack names the row (:class:`~llm_energy.plan.problem.Row`) that cannot be met.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from llm_energy.plan.problem import PlanProblem, Row, row_coefficients
from llm_energy.plan.solve.duals import lagrangian_costs
from llm_energy.plan.solve.solvers import row_duals

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.solve.solvers import SolveResult


@dataclass
class Master:
    """A restricted class formulation handed to the solver, with its index maps.

    ``classes``: the problem's classes that are rows here; ``col_class``/``col_dep``: each column's
    class (position in ``classes``) and deployment; ``rows``: the :class:`Row` of each non-class
    row, in the order of ``model.rows`` and of the slacks ``model.s``.
    """

    model: object
    classes: np.ndarray
    col_class: np.ndarray
    col_dep: np.ndarray
    rows: list[Row]
    integer: bool = False

    @property
    def n_columns(self) -> int:
        return int(self.col_class.shape[0])


# (row, coefficients or None for all ones, column indices, sense, right-hand side less the fixed classes)
RowSpec = tuple[Row, "np.ndarray | None", np.ndarray, str, float]


def _row_specs(p: PlanProblem, cols: np.ndarray, master_classes: np.ndarray, col_class: np.ndarray,
               col_dep: np.ndarray) -> list[RowSpec]:
    """The master's non-class rows over its columns, the fixed classes folded into the right-hand sides."""
    K = p.n_deployments
    fixed = np.ones(p.n_classes, dtype=bool)
    fixed[master_classes] = False
    fc = np.flatnonzero(fixed)
    fdep = np.argmax(cols[fc], axis=1)
    cls = master_classes[col_class]
    coefs = row_coefficients(p)

    def fixed_sum(mat: np.ndarray | None) -> np.ndarray:
        w = p.count[fc].astype(np.float64) * (1.0 if mat is None else mat[fc, fdep])
        return np.bincount(fdep, weights=w, minlength=K)

    specs: list[RowSpec] = []
    by_dep = [np.flatnonzero(col_dep == k) for k in range(K)]
    lo, hi, f_count = p.share_lo, p.share_hi, fixed_sum(None)
    for k in range(K):
        if lo[k] > 0:
            specs.append((Row("share_lo", k), None, by_dep[k], ">=", float(lo[k] - f_count[k])))
        specs.append((Row("share_hi", k), None, by_dep[k], "<=", float(hi[k] - f_count[k])))
    if np.isfinite(p.capacity_s).any():
        f_cap = fixed_sum(coefs["capacity"])
        for k in np.flatnonzero(np.isfinite(p.capacity_s)):
            jj = by_dep[k]
            specs.append((Row("capacity", int(k)), coefs["capacity"][cls[jj], k], jj, "<=",
                          float(p.capacity_s[k] / p.runtime_scale - f_cap[k])))
    all_j = np.arange(len(cls))
    if p.energy_budget_j is not None:
        specs.append((Row("budget", 0), coefs["budget"][cls, col_dep], all_j, "<=",
                      float(p.energy_budget_j / p.energy_scale - fixed_sum(coefs["budget"]).sum())))
    if p.accuracy_floor is not None:
        need = float(p.accuracy_floor * (p.count * p.tokens).sum() / p.accuracy_scale)
        specs.append((Row("floor", 0), coefs["floor"][cls, col_dep], all_j, ">=",
                      need - float(fixed_sum(coefs["floor"]).sum())))
    return specs


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

    master_classes = np.asarray(master_classes, dtype=np.int64)
    col_class, col_dep = np.nonzero(cols[master_classes])
    cls = master_classes[col_class]
    specs = _row_specs(p, cols, master_classes, col_class, col_dep)
    all_j = np.arange(len(cls))

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
    for r, (_, coef, idx, sense, rhs) in enumerate(specs):
        e = lin(coef, idx)
        m.rows.add(e + m.s[r] >= rhs if sense == ">=" else e - m.s[r] <= rhs)
    en = p.energy_norm()[cls, col_dep]
    an = p.accuracy_norm()[cls, col_dep]
    m.obj = pyo.Objective(expr=m.weight * (m.zeta * lin(en, all_j) - (1 - m.zeta) * lin(an, all_j))
                          + m.penalty * pyo.quicksum(m.s[r] for r in range(len(specs))), sense=pyo.minimize)
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    return Master(model=m, classes=master_classes, col_class=col_class, col_dep=col_dep,
                  rows=[s[0] for s in specs])


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


class RestrictedMaster:
    """The columns the solver may use (``cols``, C x K bool), the classes that are master rows, and the
    Pyomo model over them, built on first use after the columns change.

    ``full``: every allowed column, every class a row (small problems, ``--method full``). Otherwise
    each zeta starts from its ``seed(zeta)`` columns (computed once, kept in ``seeds``): added to the
    columns held while at most ``max_shared`` classes have two or more, else replacing them.
    A class is a master row when it has two or more columns, or was named when columns were added (a
    class pricing added a column to stays a row); the master's classes only grow until :meth:`clear`.
    ``builds``/``build_s`` count the model building this cost.
    """

    def __init__(self, problem: PlanProblem, *, full: bool, seed: Callable[[float], np.ndarray],
                 max_shared: int, arrays: str | None = None) -> None:
        self.p, self.full, self._seed_of, self.max_shared = problem, full, seed, max_shared
        # the array master (:mod:`.arrays`, kept and extended in place): "highs" for every solve, "glpk"
        # for the LPs (its MIPs stay on the Pyomo master, which folds the single-column classes away)
        self.arrays = arrays
        self._array = None
        self.seeds: dict[float, np.ndarray] = {}
        self.cols: np.ndarray | None = None
        self.classes: np.ndarray | None = None
        self._master: Master | None = None
        self.builds = 0
        self.build_s = 0.0

    # -- which columns, for which zeta -----------------------------------------------------------------

    def _seed(self, zeta: float) -> np.ndarray:
        if zeta not in self.seeds:
            self.seeds[zeta] = self._seed_of(zeta)
        return self.seeds[zeta]

    @staticmethod
    def _shared(cols: np.ndarray) -> int:
        return int((cols.sum(axis=1) >= 2).sum())

    def prepare(self, zetas: Sequence[float]) -> None:
        """Seed the columns of every zeta in ``zetas``. While the union of their masters stays small
        (``max_shared`` classes) one model serves the whole sweep (zeta is a mutable Param); otherwise
        each zeta gets its own small master when it is solved."""
        if self.full:
            if self.cols is None:
                self.set(self.p.allowed.copy(), np.arange(self.p.n_classes))
            return
        seeds = [self._seed(z) for z in zetas]
        if not seeds:
            return
        union = np.logical_or.reduce(seeds + ([self.cols] if self.cols is not None else []))
        if self._shared(union) <= self.max_shared:
            self.set(union)

    def install(self, zeta: float) -> None:
        """Hold this zeta's seed before it is solved (see the class docstring)."""
        if self.full:
            self.prepare([zeta])
            return
        seed = self._seed(zeta)
        if self.covers(seed):
            return
        union = seed if self.cols is None else (self.cols | seed)
        if self._shared(union) > self.max_shared:
            self.clear()
            union = seed
        self.set(union)

    def seed_columns(self, x: np.ndarray, zetas: Sequence[float] = ()) -> None:
        """Start from the columns an assignment ``x`` (C, K) uses (a warm start, e.g. a previous plan)
        instead of the seeds of ``zetas``. Optimality is still certified by the loop."""
        if self.full:
            return
        cols = (np.asarray(x) > 0) & self.p.allowed
        for z in zetas:
            self.seeds[float(z)] = cols
        self.clear()
        self.set(cols)

    # -- the columns and the model ---------------------------------------------------------------------

    def clear(self) -> None:
        """Forget the columns (the next :meth:`set` starts a fresh, small master)."""
        self.cols, self.classes, self._master, self._array = None, None, None, None

    def covers(self, cols: np.ndarray) -> bool:
        """Whether every column of ``cols`` is already held."""
        return self.cols is not None and bool(np.all(self.cols[cols]))

    def set(self, cols: np.ndarray, classes: np.ndarray | None = None) -> None:
        """Hold ``cols``, with ``classes`` (and every class with two or more columns) as master rows;
        the model is dropped only if that changes anything."""
        multi = np.flatnonzero(cols.sum(axis=1) >= 2)
        if classes is not None:
            multi = np.union1d(multi, classes)
        if self.classes is not None:
            multi = np.union1d(multi, self.classes)
        if self._master is not None and np.array_equal(cols, self.cols) and np.array_equal(multi, self.classes):
            return
        self.cols, self.classes, self._master = cols, multi.astype(np.int64), None

    def add(self, classes: np.ndarray, deployments: np.ndarray) -> None:
        """Add the columns (classes[i], deployments[i]); their classes become master rows."""
        new = self.cols.copy()
        new[classes, deployments] = True
        self.set(new, np.unique(classes))

    def model(self, penalty: float, integer: bool = False) -> Master:
        """The master over the current columns: the Pyomo model (built now if they changed), or the
        array master (:attr:`arrays`), extended in place when it only gained columns."""
        use_arrays = self.arrays == "highs" or (self.arrays == "glpk" and not integer)
        if self._master is None or isinstance(self._master, Master) == use_arrays:
            t0 = time.perf_counter()
            if not use_arrays:
                self._master = build_master(self.p, self.cols, self.classes, penalty=penalty)
                self.builds += 1
            elif self._array is not None and self._array.can_extend(self.cols):
                self._array.extend(self.cols)
                self._master = self._array
            else:
                from llm_energy.plan.solve.arrays import ArrayMaster

                self._master = self._array = ArrayMaster(self.p, self.cols, penalty, self.arrays)
                self.builds += 1
            self.build_s += time.perf_counter() - t0
        return self._master

    def _fixed(self, master: Master) -> tuple[np.ndarray, np.ndarray]:
        """The classes outside the master and the one column each is fixed to."""
        fixed = np.ones(self.p.n_classes, dtype=bool)
        fixed[master.classes] = False
        fc = np.flatnonzero(fixed)
        return fc, np.argmax(self.cols[fc], axis=1)

    def assemble(self, master: Master, xm: np.ndarray) -> np.ndarray:
        """The full (C, K) assignment: master columns' values plus fixed classes on their single column."""
        x = np.zeros(self.p.allowed.shape, dtype=np.float64)
        fc, fdep = self._fixed(master)
        x[fc, fdep] = self.p.count[fc]
        x[master.classes[master.col_class], master.col_dep] = xm
        return x

    def reduced_costs(self, cost: np.ndarray, master: Master, res: SolveResult) -> np.ndarray:
        """Reduced cost of every (class, deployment) pair under the master's LP duals (+inf: not allowed).

        Classes fixed outside the master get the class dual that makes their one column's reduced cost 0.
        """
        red0 = lagrangian_costs(self.p, cost, row_duals(master, res), clip=False)
        u = np.empty(self.p.n_classes)
        fc, fdep = self._fixed(master)
        u[fc] = red0[fc, fdep]
        u[master.classes] = res.duals_supply
        return red0 - u[:, None]
