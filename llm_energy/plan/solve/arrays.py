"""The master as arrays: HiGHS in memory (highspy) or GLPK from a file we write, columns added in place.

The Pyomo master (:mod:`.master`) is rebuilt, written out and read back on every column-generation
round; on a million queries x 50 deployments that cost more than the solver itself. This master holds
the same formulation as arrays, kept across rounds: for HiGHS in one live ``highspy.Highs`` object; for
GLPK written straight from the arrays in GLPK's own format and solved by glpsol from the last round's
basis (``--ini``):

* every class is a row (sum_K x[c, K] = n[c]); a class with one column simply has its value fixed by
  its row, so no right-hand side depends on which classes are "in" the master, and adding a column
  (pricing, reduced-cost fixing) appends it (``addCols`` on the live HiGHS model; a non-basic column in
  GLPK's starting basis): the next solve starts from the last basis instead of from scratch;
* the non-class rows (:class:`~llm_energy.plan.problem.Row`: shares, capacity, budget, floor) carry
  the same elastic slacks, scaled coefficients and sign conventions as :func:`.master.build_master`,
  so duals, slacks and objectives read exactly as from the Pyomo master (:class:`.solvers.SolveResult`);
* zeta, the cost weight and the slack penalty only change column costs (``changeColsCost``); LP and
  MIP differ only in the columns' integrality.

It presents the :class:`.master.Master` interface (``classes``, ``col_class``, ``col_dep``, ``rows``,
``n_columns``, ``integer``), so the loop, assembling and pricing are shared with the Pyomo path.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from llm_energy.plan.problem import PlanProblem, Row, row_coefficients
from llm_energy.plan.solve.master import _row_specs
from llm_energy.plan.solve.solvers import SolveResult


class ArrayMaster:
    """The class formulation restricted to columns ``cols`` (C, K bool), every class a row.

    ``extend(cols)`` adds the columns of ``cols`` not yet held; ``solve(...)`` runs the LP or MIP from
    the last basis and returns a :class:`SolveResult` (duals for an LP; objective and the proven bound
    for a MIP). ``solver``: ``highs`` (a live highspy model) or ``glpk`` (LPs only: glpsol on a file).
    """

    def __init__(self, p: PlanProblem, cols: np.ndarray, penalty: float, solver: str = "highs") -> None:
        self.p, self.solver = p, solver
        C, K = p.allowed.shape
        self.classes = np.arange(C, dtype=np.int64)
        self.held = np.zeros((C, K), dtype=bool)
        self.integer = False
        self._zeta = self._weight = self._penalty = None
        col_class, col_dep = np.nonzero(cols)
        specs = _row_specs(p, cols, self.classes, col_class, col_dep)
        self.rows: list[Row] = [s[0] for s in specs]
        self._row_index = {row: C + i for i, row in enumerate(self.rows)}
        self._coefs = row_coefficients(p)
        self._en, self._an = p.energy_norm(), p.accuracy_norm()
        senses = np.array([s[3] for s in specs])
        rhs = np.array([s[4] for s in specs], dtype=np.float64)
        self._ge = np.concatenate([np.zeros(C, dtype=bool), senses == ">="])  # else <= (classes: =)
        self._rhs = np.concatenate([p.count.astype(np.float64), rhs])
        m = len(specs)  # the slacks, columns 0..m-1: +s on >= rows, -s on <= rows
        self._slack = np.arange(m, dtype=np.int32)
        self._chunks = [(np.arange(m, dtype=np.int32), np.arange(C, C + m, dtype=np.int32),
                         np.where(senses == ">=", 1.0, -1.0))]  # per column: its (start, rows, values)
        self._basis: tuple[np.ndarray, np.ndarray] | None = None  # GLPK: last row and column statuses
        self.h = self._new_highs(penalty) if solver == "highs" else None
        self.col_class = np.zeros(0, dtype=np.int64)
        self.col_dep = np.zeros(0, dtype=np.int64)
        self._xcol = np.zeros(0, dtype=np.int32)
        self._add(col_class, col_dep)

    def _new_highs(self, penalty: float):
        import highspy

        h = _quiet(highspy.Highs)
        h.setOptionValue("output_flag", False)
        h.setOptionValue("presolve", "off")  # warm starts across rounds need the model as given
        inf = highspy.kHighsInf
        eq = np.arange(len(self._rhs)) < self.p.n_classes
        lo = np.where(eq | self._ge, self._rhs, -inf)
        hi = np.where(eq | ~self._ge, self._rhs, inf)
        h.addRows(len(lo), lo, hi, 0, np.zeros(1, np.int32), np.zeros(0, np.int32), np.zeros(0))
        m = len(self._slack)
        starts, idx, val = self._chunks[0]
        h.addCols(m, np.full(m, penalty), np.zeros(m), np.full(m, inf), m, starts, idx, val)
        return h

    @property
    def n_columns(self) -> int:
        return int(self.col_class.shape[0])

    def can_extend(self, cols: np.ndarray) -> bool:
        """Whether ``cols`` holds every column held here (then :meth:`extend` reaches it)."""
        return bool(np.all(cols[self.held]))

    def extend(self, cols: np.ndarray) -> None:
        """Add the columns of ``cols`` not yet held (at cost for the last zeta; integral if a MIP)."""
        c, k = np.nonzero(cols & ~self.held)
        self._add(c, k)

    def _entries(self, c: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column-wise (starts, row indices, values) of columns (c[i], k[i]) in every row they enter."""
        K = self.p.n_deployments
        ri = self._row_index
        lo_row = np.array([ri.get(Row("share_lo", j), -1) for j in range(K)])
        hi_row = np.array([ri.get(Row("share_hi", j), -1) for j in range(K)])
        cap_row = np.array([ri.get(Row("capacity", j), -1) for j in range(K)])
        n = len(c)
        idx = np.stack([c, lo_row[k], hi_row[k], cap_row[k], np.full(n, ri.get(Row("budget", 0), -1)),
                        np.full(n, ri.get(Row("floor", 0), -1))], axis=1)
        val = np.stack([np.ones(n), np.ones(n), np.ones(n), self._coefs["capacity"][c, k],
                        self._coefs["budget"][c, k], self._coefs["floor"][c, k]], axis=1)
        mask = idx >= 0
        starts = np.concatenate([[0], np.cumsum(mask.sum(axis=1))[:-1]]).astype(np.int32)
        return starts, idx[mask].astype(np.int32), val[mask].astype(np.float64)

    def _add(self, c: np.ndarray, k: np.ndarray) -> None:
        if not len(c):
            return
        starts, idx, val = self._entries(c, k)
        first = len(self._slack) + self.n_columns
        n = len(c)
        new = np.arange(first, first + n, dtype=np.int32)
        if self.h is not None:
            import highspy

            cost = self._x_cost(c, k) if self._zeta is not None else np.zeros(n)
            self.h.addCols(n, cost, np.zeros(n), np.full(n, highspy.kHighsInf), len(idx), starts, idx, val)
            if self.integer:
                self.h.changeColsIntegrality(n, new, np.full(n, highspy.HighsVarType.kInteger, dtype=np.uint8))
        else:
            self._chunks.append((starts, idx, val))
        self.col_class = np.concatenate([self.col_class, c])
        self.col_dep = np.concatenate([self.col_dep, k])
        self._xcol = np.concatenate([self._xcol, new])
        self.held[c, k] = True

    def _x_cost(self, c: np.ndarray, k: np.ndarray) -> np.ndarray:
        z, w = self._zeta, self._weight
        return w * (z * self._en[c, k] - (1.0 - z) * self._an[c, k])

    def _configure(self, zeta: float, weight: float, penalty: float, integer: bool) -> None:
        if self.h is None:
            if integer:
                raise ValueError("the GLPK array master solves LPs only")
            self._zeta, self._weight, self._penalty = zeta, weight, penalty
            return
        import highspy

        if (zeta, weight) != (self._zeta, self._weight):
            self._zeta, self._weight = zeta, weight
            self.h.changeColsCost(self.n_columns, self._xcol, self._x_cost(self.col_class, self.col_dep))
        if penalty != self._penalty:
            self._penalty = penalty
            self.h.changeColsCost(len(self._slack), self._slack, np.full(len(self._slack), float(penalty)))
        if integer != self.integer:
            kind = highspy.HighsVarType.kInteger if integer else highspy.HighsVarType.kContinuous
            self.h.changeColsIntegrality(self.n_columns, self._xcol, np.full(self.n_columns, kind, dtype=np.uint8))
            self.integer = integer

    def solve(self, *, zeta: float, weight: float, penalty: float, integer: bool, time_limit_s: float,
              mip_gap: float) -> SolveResult:
        """Solve the LP (``integer`` False) or the MIP from the last basis within ``time_limit_s``."""
        self._configure(zeta, weight, penalty, integer)
        if self.h is None:
            return self._solve_glpk(time_limit_s)
        import highspy

        h = self.h
        h.setOptionValue("time_limit", float(max(time_limit_s, 0.1)))
        h.setOptionValue("mip_rel_gap", float(mip_gap))
        # LPs restart from the last basis as the model stands; a MIP wants presolve (the single-column
        # classes fold away, as in the Pyomo master) and has no basis to keep
        h.setOptionValue("presolve", "on" if integer else "off")
        t0 = time.perf_counter()
        h.run()
        wall = time.perf_counter() - t0
        ms = h.getModelStatus()
        MS = highspy.HighsModelStatus
        sol = h.getSolution()
        status = {MS.kOptimal: "optimal", MS.kTimeLimit: "time_limit", MS.kInfeasible: "infeasible"}.get(
            ms, h.modelStatusToString(ms))
        if status not in ("optimal", "time_limit") or not sol.value_valid or (status == "time_limit" and not integer):
            return self._failed(status, wall)
        values = np.asarray(sol.col_value)
        x, slack = values[self._xcol], values[self._slack]
        if integer:
            info = h.getInfo()
            obj = float(info.objective_function_value)
            lb = float(info.mip_dual_bound)
            return SolveResult(status, x, slack, None, None, wall, obj,
                               lb if math.isfinite(lb) and lb <= obj + 1e-9 * max(1.0, abs(obj)) else None)
        duals = np.asarray(sol.row_dual)
        C = self.p.n_classes
        return SolveResult(status, x, slack, duals[:C].copy(), duals[C:].copy(), wall)

    def _failed(self, status: str, wall: float) -> SolveResult:
        status = "time_limit_no_solution" if status == "time_limit" else status
        return SolveResult(status, np.zeros(self.n_columns), np.zeros(len(self.rows)), None, None, wall)

    # -- GLPK: the model in GLPK's format, glpsol from the last basis ---------------------------------------

    def _glp_text(self) -> str:
        """The LP in GLPK's own format (``glpsol --glp``): rows, the objective and matrix entries. The rows'
        and the held columns' entries are formatted once (they never change); only the objective and the
        columns added since are formatted again."""
        n_rows, m = len(self._rhs), len(self._slack)
        n_cols = m + self.n_columns
        if not hasattr(self, "_text"):
            kind = np.where(np.arange(n_rows) < self.p.n_classes, "s", np.where(self._ge, "l", "u"))
            self._rows_text = "\n".join(f"i {i + 1} {t} {r!r}" for i, (t, r) in enumerate(zip(
                kind.tolist(), self._rhs.tolist())))
            self._text, self._text_col, self._nnz = [], 0, 0
        for starts, idx, val in self._chunks[len(self._text):]:  # columns added since the last write
            col = self._text_col + np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(idx))))
            self._text.append("\n".join(f"a {i + 1} {j + 1} {v!r}" for i, j, v in zip(
                idx.tolist(), col.tolist(), val.tolist())))
            self._text_col += len(starts)
            self._nnz += len(idx)
        cost = np.concatenate([np.full(m, float(self._penalty)), self._x_cost(self.col_class, self.col_dep)])
        nz = np.flatnonzero(cost)
        objective = "\n".join(f"a 0 {j + 1} {v!r}" for j, v in zip(nz.tolist(), cost[nz].tolist()))
        return "\n".join([f"p lp min {n_rows} {n_cols} {self._nnz}", self._rows_text, objective, *self._text,
                          "e o f\n"])

    def _ini_text(self) -> str:
        """The last round's basis, the columns added since non-basic at 0 (``glpsol --ini``)."""
        rows, cols = self._basis
        cols = np.concatenate([cols, np.full(len(self._slack) + self.n_columns - len(cols), "l")])
        lines = [f"s bas {len(rows)} {len(cols)} u u 0"]
        lines += [f"i {i + 1} {s} 0 0" for i, s in enumerate(rows.tolist())]
        lines += [f"j {j + 1} {s} 0 0" for j, s in enumerate(cols.tolist())]
        lines.append("e o f\n")
        return "\n".join(lines)

    def _solve_glpk(self, time_limit_s: float) -> SolveResult:
        with tempfile.TemporaryDirectory(prefix="llm_energy_glpk_") as d:
            d = Path(d)
            (d / "m.glp").write_text(self._glp_text())
            cmd = ["glpsol", "--glp", str(d / "m.glp"), "-w", str(d / "s.txt"),
                   "--tmlim", str(max(1, int(math.ceil(time_limit_s))))]
            if self._basis is not None:
                (d / "b.txt").write_text(self._ini_text())
                cmd += ["--ini", str(d / "b.txt")]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if self._basis is not None and ("OPTIMAL LP SOLUTION FOUND" not in r.stdout
                                            and "TIME LIMIT EXCEEDED" not in r.stdout):
                self._basis = None  # glpsol refused the starting basis: solve from its own
                return self._solve_glpk(max(time_limit_s - wall, 0.1))
            if "OPTIMAL LP SOLUTION FOUND" not in r.stdout or not (d / "s.txt").exists():
                infeasible = "NO PRIMAL FEASIBLE" in r.stdout or "PROBLEM HAS NO" in r.stdout
                limited = "TIME LIMIT EXCEEDED" in r.stdout
                return self._failed("infeasible" if infeasible else "time_limit" if limited else "error", wall)
            text = (d / "s.txt").read_text()
        n_rows, n_cols = len(self._rhs), len(self._slack) + self.n_columns
        # after the comment lines: "s bas m n pst dst obj", then "i|j index status primal dual" per row/column
        tok = np.array(text[text.index("\ns bas"):].split()[7:7 + 5 * (n_rows + n_cols)]).reshape(-1, 5)
        status, value, dual = tok[:, 2], tok[:, 3].astype(np.float64), tok[:, 4].astype(np.float64)
        self._basis = (status[:n_rows], status[n_rows:])
        x, C = value[n_rows:], self.p.n_classes
        return SolveResult("optimal", x[self._xcol], x[self._slack], dual[:C], dual[C:n_rows], wall)


def _quiet(make):
    """``make()`` with file descriptor 1 sent to /dev/null meanwhile: highspy's Highs() prints its banner on
    the process's stdout from C++, before any option can be set, and ``plan --json`` must stay JSON."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
