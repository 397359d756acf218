"""The solver adapter: GLPK or HiGHS through Pyomo, one call in, one :class:`SolveResult` out.

Everything solver-specific lives here (factory names, option spellings, what a termination condition
means, reading values and duals back), so the column-generation loop never sees Pyomo's result
objects. :class:`SolveSettings` is the planner's "how to solve" (solver, method, limits), checked
once when it is made.
"""

from __future__ import annotations

import math
import re
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
DEFAULT_STAGE2_TIME_LIMIT_S = 10.0


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
    smaller problems on the Pyomo master. GLPK's MIPs of at most ``glpk_cuts_below`` columns are solved
    with its cuts and pseudocost branching (:data:`GLPK_SMALL_MIP_OPTIONS`). An inventory window's
    second stage (the class plan on the replicas stage 1 fixed, :func:`.fleet.plan_fleet`) gets at most
    ``stage2_time_limit_s`` (and at most ``time_limit_s``): GLPK's branch and bound can stall on that
    capacity MIP, which then returns its best plan with status ``time_limit``.

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
    glpk_cuts_below: int = 2000
    stage2_time_limit_s: float = DEFAULT_STAGE2_TIME_LIMIT_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise bad_value("--time-limit", self.time_limit_s, "must be > 0 seconds")
        if not (math.isfinite(self.stage2_time_limit_s) and self.stage2_time_limit_s > 0):
            raise bad_value("--stage2-time-limit", self.stage2_time_limit_s, "must be > 0 seconds")
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


# glpsol's options for a small MIP: all its cuts (Gomory, MIR, cover, clique) and pseudocost branching.
# On the small capacity MIPs whose optimum is further from the LP bound than --mip-gap (those GLPK stalls
# on) they halve the time and the time-outs (benchmarks/bench_planner.py --glpk-cuts)
GLPK_SMALL_MIP_OPTIONS = {"cuts": None, "pcost": None}
# glp_iocp.tol_obj: GLPK prunes a node whose bound is within tol_obj (1 + |incumbent|) of the incumbent,
# so an emptied tree proves the incumbent optimal to that much, not exactly
GLPK_TOL_OBJ = 1e-7
# glpsol's branch-and-bound progress lines: '+ N: mip = X >= Y  gap% (...)' (or '>>>>>' for 'mip =' where a
# new incumbent was just found), X the incumbent, Y the best bound of the nodes left
_GLPK_PROGRESS = re.compile(r"(?:mip =|>>>>>)\s+(\S+)\s+>=\s+(tree is empty|\S+)")


@dataclass
class PyomoRun:
    """One Pyomo solver call: the results, the wall time, the termination condition and (GLPK) its log."""

    res: object
    wall_s: float
    tc: object
    log: str = ""


def run_pyomo(m, solver: str, time_limit_s: float, mip_gap: float, glpk_options: dict | None = None) -> PyomoRun:
    """Solve the Pyomo model ``m``: GLPK through ``SolverFactory('glpk')`` (``--tmlim``, ``--mipgap``, any
    ``glpk_options`` (None: a flag); its log kept, for :func:`mip_bound`) or HiGHS (appsi). Solutions are
    not loaded."""
    import tempfile

    import pyomo.environ as pyo

    opt = pyo.SolverFactory("glpk" if solver == "glpk" else "appsi_highs")
    t0 = time.perf_counter()
    log = ""
    if solver == "glpk":
        with tempfile.TemporaryDirectory(prefix="llm_energy_glpk_") as d:
            path = f"{d}/glpsol.log"
            res = opt.solve(m, options={"tmlim": glpk_tmlim(time_limit_s), "mipgap": mip_gap, **(glpk_options or {})},
                            load_solutions=False, logfile=path)
            try:
                with open(path) as f:
                    log = f.read()
            except OSError:
                log = ""
    else:
        opt.config.time_limit = max(time_limit_s, 0.1)
        opt.config.mip_gap = mip_gap
        res = opt.solve(m, load_solutions=False)
    return PyomoRun(res, time.perf_counter() - t0, res.solver.termination_condition, log)


def glpk_tmlim(time_limit_s: float) -> int:
    """glpsol's --tmlim (whole seconds, at least 1) for a time limit."""
    return max(1, int(math.ceil(time_limit_s)))


def glpk_timed_out(run: PyomoRun, time_limit_s: float) -> bool:
    """Whether a GLPK MIP ran to --tmlim. Pyomo reads GLPK's "TIME EXCEEDED" from the log but then
    overwrites it with the solution file's "feasible", so the log (or the wall time) tells."""
    from pyomo.opt import TerminationCondition as TC

    if run.tc == TC.maxTimeLimit or "TIME LIMIT EXCEEDED" in run.log:
        return True
    return run.tc == TC.feasible and math.isfinite(time_limit_s) and run.wall_s >= glpk_tmlim(time_limit_s) - 0.05


def mip_bound(run: PyomoRun, obj: float, solver: str, mip_gap: float) -> float | None:
    """The lower bound the solver proved on the MIP's optimum (minimising), incumbent ``obj``; None: unknown.

    HiGHS reports its best bound. GLPK reports none in its solution file; its log's last progress line has
    it: ``tree is empty`` (every node pruned: optimal to :data:`GLPK_TOL_OBJ`), or the best active node's
    bound Y, printed to 10 digits, so Y less 1e-9 |Y| (and nodes pruned within the tolerance bound too).
    Without a log line, a search that stopped at --mipgap proves incumbent - mipgap |incumbent|, GLPK's own
    relative gap (to the incumbent, not to our bound)."""
    from pyomo.opt import TerminationCondition as TC

    if solver == "highs":
        try:
            lb = float(run.res.problem.lower_bound)
        except (TypeError, ValueError):
            lb = math.nan
        return lb if math.isfinite(lb) and lb <= obj else None
    pruned = obj - GLPK_TOL_OBJ * (1.0 + abs(obj))
    found = _GLPK_PROGRESS.findall(run.log)
    if found and found[-1][1] == "tree is empty":
        return pruned
    if found:
        try:
            y = float(found[-1][1])
        except ValueError:  # '-inf': no bound yet
            return None
        return min(y - 1e-9 * abs(y), pruned) if math.isfinite(y) else None
    if run.tc == TC.optimal:
        return pruned
    return None if glpk_timed_out(run, math.inf) else obj - mip_gap * abs(obj)  # no log: the stop rule


def solve_master(master: Master, solver: str, time_limit_s: float, mip_gap: float, cuts_below: int = 0
                 ) -> SolveResult:
    """Solve the master through :func:`run_pyomo`; ``mip_gap`` is the solver's own relative gap (on the
    master's objective, which leaves out the fixed classes); a GLPK MIP of at most ``cuts_below`` columns
    with :data:`GLPK_SMALL_MIP_OPTIONS`."""
    import pyomo.environ as pyo
    from pyomo.opt import TerminationCondition as TC

    m = master.model
    # duals exist only for an LP: a MIP asked for them fails in HiGHS (and means nothing in GLPK)
    m.dual.direction = pyo.Suffix.LOCAL if master.integer else pyo.Suffix.IMPORT
    small = master.integer and master.n_columns <= cuts_below
    run = run_pyomo(m, solver, time_limit_s, mip_gap, GLPK_SMALL_MIP_OPTIONS if small else None)
    res, wall, tc = run.res, run.wall_s, run.tc
    # GLPK ends a MIP at the --mipgap tolerance with an integer solution marked feasible: optimal within the gap.
    status = {TC.optimal: "optimal", TC.maxTimeLimit: "time_limit", TC.infeasible: "infeasible"}.get(tc, str(tc))
    if tc == TC.feasible and master.integer:
        status = "time_limit" if solver == "glpk" and glpk_timed_out(run, time_limit_s) else "optimal"
    if status not in ("optimal", "time_limit") or len(res.solution) == 0:
        return SolveResult(status if status != "time_limit" else "time_limit_no_solution",
                           np.zeros(master.n_columns), np.zeros(len(master.rows)), None, None, wall)
    m.solutions.load_from(res)
    x = np.fromiter((v.value or 0.0 for v in m.x.values()), dtype=np.float64, count=master.n_columns)
    slack = np.fromiter((v.value or 0.0 for v in m.s.values()), dtype=np.float64, count=len(master.rows))
    du = dr = obj = bound = None
    if master.integer:
        obj = float(pyo.value(m.obj))
        bound = mip_bound(run, obj, solver, mip_gap)  # at the time limit too: the best bound so far
    else:
        du = np.fromiter((m.dual.get(c, 0.0) for c in m.supply.values()), dtype=np.float64,
                         count=len(master.classes))
        dr = np.fromiter((m.dual.get(c, 0.0) for c in m.rows.values()), dtype=np.float64, count=len(master.rows))
    return SolveResult(status, x, slack, du, dr, wall, obj, bound)


def row_duals(master: Master, res: SolveResult) -> RowDuals:
    """The master's LP duals of its non-class rows, by :class:`~llm_energy.plan.problem.Row`."""
    return RowDuals({row: float(y) for row, y in zip(master.rows, res.duals_rows)})
