"""The solver adapter: GLPK or HiGHS through Pyomo, one call in, one :class:`SolveResult` out.

Everything solver-specific lives here (factory names, option spellings, what a termination condition
means, reading values and duals back), so the column-generation loop never sees Pyomo's result
objects. :class:`SolveSettings` is the planner's "how to solve" (solver, method, limits), checked
once when it is made.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llm_energy.errors import UserError, bad_value
from llm_energy.plan.solve.duals import RowDuals

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.solve.master import Master

SOLVERS = ("glpk", "highs")
METHODS = ("reduced", "full")
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_MIP_GAP = 1e-4


@dataclass(frozen=True)
class SolveSettings:
    """How to solve: ``solver`` (glpk | highs), ``method`` (``reduced``: column generation, the solver
    sees only classes near a tie; ``full``: every class and allowed pair handed to the solver),
    ``time_limit_s`` for one plan, ``mip_gap`` (relative, when a MIP is needed). Problems with at most
    ``full_below`` allowed (class, deployment) pairs are solved in full either way; ``min_master`` is
    the least number of classes the first master holds (None: max(32, 4 K)); while a sweep's masters
    together share at most ``max_shared`` classes, one model serves every zeta. HiGHS solves on the
    array master (:mod:`.arrays`: in memory, columns added in place, warm-started); so do GLPK's LPs on
    problems of at least ``arrays_above`` allowed pairs (glpsol from the last basis), its MIPs and
    smaller problems on the Pyomo master.

    Validated here, once, with the messages naming the ``plan`` flags; the solver must be installed.
    """

    solver: str = "glpk"
    method: str = "reduced"
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    mip_gap: float = DEFAULT_MIP_GAP
    full_below: int = 2000
    min_master: int | None = None
    max_shared: int = 1500
    arrays_above: int = 20000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise bad_value("--time-limit", self.time_limit_s, "must be > 0 seconds")
        if not 0 <= self.mip_gap < 1:
            raise bad_value("--mip-gap", self.mip_gap, "must be in [0, 1)")
        if self.method not in METHODS:
            raise bad_value("--method", self.method, "expected reduced or full")
        check_solver(self.solver)


@dataclass
class SolveResult:
    """One solver call: ``status`` (optimal, time_limit, or the solver's word), values and LP duals."""

    status: str
    x: np.ndarray
    slack: np.ndarray
    duals_supply: np.ndarray | None
    duals_rows: np.ndarray | None
    wall_s: float
    objective: float | None = None  # the master's objective at x (as the solver reports it)
    bound: float | None = None  # a lower bound on the master's MIP optimum the solver proved (None: unknown)


def solver_available(name: str) -> bool:
    """Whether ``name`` (glpk | highs) can run here."""
    if name == "highs":  # solved in memory through highspy (:mod:`.arrays`)
        try:
            import highspy  # noqa: F401
        except ImportError:
            return False
        return True
    import pyomo.environ as pyo

    try:
        return bool(pyo.SolverFactory("glpk").available(exception_flag=False))
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
    # duals exist only for an LP: a MIP asked for them fails in HiGHS (and means nothing in GLPK)
    m.dual.direction = pyo.Suffix.LOCAL if master.integer else pyo.Suffix.IMPORT
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
    # Pyomo reads GLPK's "TIME EXCEEDED" from the log but then overwrites it with the solution file's
    # "feasible", so a feasible MIP that ran to --tmlim is told apart by its wall time.
    tmlim = max(1, int(math.ceil(time_limit_s)))
    if tc == TC.feasible and master.integer:
        status = "time_limit" if solver == "glpk" and wall >= tmlim - 0.05 else "optimal"
    if status not in ("optimal", "time_limit") or len(res.solution) == 0:
        return SolveResult(status if status != "time_limit" else "time_limit_no_solution",
                           np.zeros(master.n_columns), np.zeros(len(master.rows)), None, None, wall)
    m.solutions.load_from(res)
    x = np.fromiter((v.value or 0.0 for v in m.x.values()), dtype=np.float64, count=master.n_columns)
    slack = np.fromiter((v.value or 0.0 for v in m.s.values()), dtype=np.float64, count=len(master.rows))
    du = dr = None
    obj, bound = _objective_and_bound(res, float(pyo.value(m.obj)), solver, status, mip_gap) if master.integer \
        else (None, None)
    if not master.integer:
        du = np.fromiter((m.dual.get(c, 0.0) for c in m.supply.values()), dtype=np.float64,
                         count=len(master.classes))
        dr = np.fromiter((m.dual.get(c, 0.0) for c in m.rows.values()), dtype=np.float64, count=len(master.rows))
    return SolveResult(status, x, slack, du, dr, wall, obj, bound)


def _objective_and_bound(res, obj: float, solver: str, status: str, mip_gap: float
                         ) -> tuple[float | None, float | None]:
    """The MIP's incumbent objective and the lower bound the solver proved: HiGHS reports its best bound;
    GLPK reports none, but stopping 'optimal' at --mipgap proves incumbent - mipgap |incumbent|."""
    if solver == "highs":
        try:
            lb = float(res.problem.lower_bound)
        except (TypeError, ValueError):
            lb = math.nan
        return obj, (lb if math.isfinite(lb) and lb <= obj else None)
    return obj, (obj - mip_gap * abs(obj) if status == "optimal" else None)


def row_duals(master: Master, res: SolveResult) -> RowDuals:
    """The master's LP duals of its non-class rows, by :class:`~llm_energy.plan.problem.Row`."""
    return RowDuals({row: float(y) for row, y in zip(master.rows, res.duals_rows)})
