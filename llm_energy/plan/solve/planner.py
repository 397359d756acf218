"""The planner: the exact LP / MIP / column-generation loop, and :class:`Planner`, what callers use.

The problem (:mod:`llm_energy.plan.problem`) is the class formulation

    min  sum_{c,K} x[c,K] * (zeta * E[c,K] / E_bar  -  (1 - zeta) * A_K * tokens[c] / A_bar)
    s.t. sum_K x[c,K] = n[c]                              (every query served once)
         ceil(eps N) <= sum_c x[c,K] <= floor((1 - eps) N)  (shares; --min-share eps)
         sum_c R[c,K] x[c,K] <= nodes_K * hours_K * 3600  (capacity, where hours are given)
         sum E[c,K] x[c,K] <= budget                      (optional energy budget)
         sum A_K tokens[c] x[c,K] >= floor * sum n[c] tokens[c]   (optional accuracy floor)
         x[c,K] = 0 where R[c,K] > slo_K;  x integer >= 0

solved exactly, with the solver seeing a small problem. With share/SLO rows only the constraint
matrix is a transportation problem's (totally unimodular): the LP optimum at a vertex is integral, so
we solve the LP, not a MIP. One plan (:meth:`ColumnGeneration.solve`) is:

1. seed the master (:mod:`.seeding`): the classes near a tie under estimated prices, plus a
   share-feasible repair; every other class is fixed to its single best column (:mod:`.master`);
2. column generation (:meth:`ColumnGeneration._lp`): solve the master LP, then certify: price out
   *every* (class, deployment) pair with its duals, or (share rows only) find deployment prices for
   the whole assembled plan (:func:`.duals.share_certificate`); add the columns that price negatively
   and repeat until certified. A positive slack left at the end means infeasible: :meth:`diagnose`
   names the rows;
3. the proven lower bound is the Lagrangian bound of the final duals (:func:`.duals.lagrangian_bound`);
   an integral LP optimum is the plan;
4. otherwise (capacity/budget/floor rows break total unimodularity) a MIP on the master after
   reduced-cost fixing against that bound (a column whose reduced cost exceeds incumbent - bound
   cannot be in a better integer plan), with the gap stated (:meth:`ColumnGeneration._mip`).

:class:`Planner` adds what a caller needs around that: the settings checked once, the problem checked
before any solver runs, tied deployments handled by :mod:`.ties`, a zeta sweep on one model.
:func:`solve` is the one-call form (used by the online router).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from llm_energy.errors import UserError
from llm_energy.plan.problem import InfeasiblePlan, PlanProblem, check_problem, check_zeta
from llm_energy.plan.solve.duals import RowDuals, lagrangian_bound, share_certificate, share_duals
from llm_energy.plan.solve.master import Master, RestrictedMaster, set_integer
from llm_energy.plan.solve.seeding import fill_capacity, round_lp, seed_from_prices
from llm_energy.plan.solve.solvers import SolveResult, SolveSettings, row_duals, solve_master
from llm_energy.plan.solve.ties import merge_ties, split_ties, tie_labels

INTEGRAL_TOL = 1e-6


class TimeLimitReached(UserError):
    """--time-limit ran out before a solver call (a MIP returns its best plan instead)."""


class NoIntegerPlanInTime(UserError):
    """The time limit ran out before any integer plan met the rows (none found, none proven impossible)."""


SLACK_TOL = 1e-6


@dataclass
class PlanSolution:
    """The optimal (or best found) plan for one zeta.

    ``x`` (C, K) integer queries per class and deployment; ``objective`` in normalised units (sum over
    queries of zeta E/E_bar - (1 - zeta) A_K tokens/A_bar); ``lp_bound`` a proven lower bound on every
    plan (the Lagrangian bound of the final duals, equal to the LP optimum up to solver tolerances);
    ``bound``: the best proven lower bound (``lp_bound``, or for a MIP the solver's bound once the master
    holds every column that could improve); ``gap`` = (objective - bound) / |objective|, the gap achieved
    (proven); ``status``: optimal, or time_limit (the best integer plan found); ``lp_integral``: the LP
    optimum was integral, so no MIP was needed; ``master_classes``/``master_columns``: the largest
    problem the solver saw; ``rounds``: solver calls; ``solve_s``: wall time of the solver calls
    (writing, solving and reading the model); ``build_s``: Pyomo model building; ``duals``: the row
    duals behind ``lp_bound`` (None after a tie merge: they price the merged deployments).
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
    duals: RowDuals | None = None
    bound: float | None = None  # the best proven lower bound (the LP bound, or the MIP's own where tighter)

    def __post_init__(self) -> None:
        if self.bound is None:
            self.bound = self.lp_bound

    @property
    def per_deployment(self) -> np.ndarray:
        """Queries per deployment (K,)."""
        return self.x.sum(axis=0)

    @property
    def shares(self) -> np.ndarray:
        """Fraction of the queries per deployment (K,)."""
        n = self.x.sum()
        return self.per_deployment / max(n, 1)


@dataclass
class _Clock:
    """One plan's time budget and solver tallies: calls, seconds, the largest master."""

    t_start: float
    time_limit_s: float
    rounds: int = 0
    solve_s: float = 0.0
    biggest: tuple[int, int] = (0, 0)


class ColumnGeneration:
    """The exact solve of one problem whose deployments are not tied (steps 1-4 of the module docstring).

    It keeps, between the zetas of a sweep, the master's columns and each zeta's seed
    (:class:`RestrictedMaster`); ``penalty`` (of the elastic slacks) only ever rises, when it proved too small.
    """

    fix_first = True  # a MIP first tries its LP's fractional classes alone (:meth:`_fix_and_solve`)

    def __init__(self, problem: PlanProblem, settings: SolveSettings) -> None:
        self.p, self.settings = problem, settings
        small = int(problem.allowed.sum()) <= settings.full_below
        self.method = "full" if (settings.method == "full" or small) else "reduced"
        self.min_master = settings.min_master if settings.min_master is not None else max(32, 4 * problem.n_deployments)
        # the slack penalty must outweigh any cost a slack could save (1e3 x the largest cost), and the
        # pricing tolerance sit far below any real cost difference (1e-7 x the same scale)
        en, an = problem.energy_norm(), problem.accuracy_norm()
        scale = float(np.abs(en[problem.allowed]).max() + np.abs(an[problem.allowed]).max()) + 1.0
        self.penalty = 1e3 * scale
        self.tol = 1e-7 * scale
        self.master = RestrictedMaster(problem, full=self.method == "full", max_shared=settings.max_shared,
                                       seed=lambda zeta: seed_from_prices(problem, zeta, self.min_master),
                                       arrays=self._arrays(problem, settings))

    @staticmethod
    def _arrays(problem: PlanProblem, settings: SolveSettings) -> str | None:
        """Which solves use the array master: HiGHS always; GLPK's LPs from ``arrays_above`` allowed pairs."""
        if settings.solver == "highs":
            return "highs"
        return "glpk" if int(problem.allowed.sum()) >= settings.arrays_above else None

    def _call(self, master: Master, clock: _Clock, *, zeta: float, weight: float, penalty: float,
              integer: bool, mip_gap: float | None = None) -> SolveResult:
        """One solver call on the master within what is left of the time limit (a MIP at the solver's own
        relative gap ``mip_gap``, default --mip-gap)."""
        mip_gap = self.settings.mip_gap if mip_gap is None else mip_gap
        left = clock.time_limit_s - (time.perf_counter() - clock.t_start)
        if left <= 0:
            raise TimeLimitReached(f"--time-limit={clock.time_limit_s:g} s reached before the plan was proven optimal")
        if not isinstance(master, Master):  # the array master (:mod:`.arrays`)
            res = master.solve(zeta=zeta, weight=weight, penalty=penalty, integer=integer, time_limit_s=left,
                               mip_gap=mip_gap)
        else:
            set_integer(master, integer)
            m = master.model
            m.zeta.set_value(zeta)
            m.weight.set_value(weight)
            m.penalty.set_value(penalty)
            res = solve_master(master, self.settings.solver, left, mip_gap, self.settings.glpk_cuts_below)
        clock.rounds += 1
        clock.solve_s += res.wall_s
        clock.biggest = max(clock.biggest, (len(master.classes), master.n_columns))
        return res

    def _lp(self, cost: np.ndarray, zeta: float, weight: float, penalty: float, clock: _Clock
            ) -> tuple[Master, SolveResult, RowDuals]:
        """Column generation to the full LP's optimum: (master, its result, the row duals that certify it).

        Each round solves the master LP; the assembled plan is optimal for the full LP when either the
        master's duals price every column non-negatively, or (share rows only) :func:`share_certificate`
        finds deployment prices that do. Otherwise each class with a negative reduced cost gets its most
        negative column (the most negative classes first, at most as many as the master holds).
        """
        share_only = self.p.share_only and weight > 0
        while True:
            master = self.master.model(self.penalty)
            res = self._call(master, clock, zeta=zeta, weight=weight, penalty=penalty, integer=False)
            if res.status != "optimal" or res.duals_supply is None:
                raise UserError(f"solver {self.settings.solver} stopped with status {res.status} on the LP "
                                f"({len(master.classes)} classes, {master.n_columns} columns); raise --time-limit "
                                f"(now {self.settings.time_limit_s:g} s) or try --solver highs")
            red = self.master.reduced_costs(cost, master, res)
            add = (red < -self.tol) & ~self.master.cols
            if not add.any():
                return master, res, row_duals(master, res)
            if share_only and res.slack.sum() <= SLACK_TOL:
                x = self.master.assemble(master, res.x)
                prices = share_certificate(cost, x, self.p.share_lo, self.p.share_hi, self.tol)
                if prices is not None:
                    return master, res, share_duals(self.p, prices)
            rows = np.flatnonzero(add.any(axis=1))
            best = np.argmin(np.where(add[rows], red[rows], np.inf), axis=1)
            keep = np.argsort(red[rows, best])[: max(self.min_master, len(self.master.classes))]
            self.master.add(rows[keep], best[keep])

    def _feasible_lp(self, cost: np.ndarray, zeta: float, clock: _Clock) -> tuple[Master, SolveResult, RowDuals]:
        """:meth:`_lp` with the slacks at 0: a positive slack is diagnosed (InfeasiblePlan naming the rows),
        or, when nothing is infeasible, means the penalty was too small: raised and solved again."""
        for _ in range(4):
            master, res, y = self._lp(cost, zeta, 1.0, self.penalty, clock)
            if res.slack.sum() <= SLACK_TOL:
                return master, res, y
            why = self.diagnose(clock)
            if why:
                raise InfeasiblePlan("infeasible: " + "; ".join(why))
            self.penalty *= 1e4
        raise InfeasiblePlan("no feasible plan found (numerical trouble); relax the constraints")

    def _mip(self, zeta: float, bound: float, d: np.ndarray, x_lp: np.ndarray, clock: _Clock
             ) -> tuple[str, np.ndarray, float]:
        """The integer plan on the master: (status, x, the best proven lower bound). The Lagrangian bound
        proves the gap of every integer plan: within --mip-gap we stop; otherwise reduced-cost fixing adds
        the only columns that could still improve the plan (reduced cost ``d`` <= incumbent - bound),
        cheapest first, and the MIP is solved again. Once the master holds all of them, the solver's own
        MIP bound (plus the fixed classes) is a bound on the whole problem too. At the time limit the
        best integer plan found so far is returned with status ``time_limit``."""
        p, status, best = self.p, "feasible", bound
        x0 = self._fix_and_solve(x_lp, zeta)
        x0 = round_lp(p, x_lp, p.cost(zeta)) if x0 is None else x0  # the incumbent if the solver finds none in time
        if x0 is not None:  # the capacity the rounding left idle, filled (a better incumbent: less left to prove)
            x1 = fill_capacity(p, x0, p.cost(zeta))
            x0 = x1 if not p.violations(x1) and p.objective(x1, zeta) < p.objective(x0, zeta) else x0
        found = None if x0 is None else (None, None, x0)
        if x0 is not None and p.objective(x0, zeta) - bound <= self.settings.mip_gap * max(abs(p.objective(x0, zeta)), 1e-12):
            return "optimal", x0, bound  # the rounded LP is already within --mip-gap of the bound
        for _ in range(8):
            master = self.master.model(self.penalty, integer=True)
            try:
                mres = self._call(master, clock, zeta=zeta, weight=1.0, penalty=self.penalty, integer=True,
                                  mip_gap=self._solver_gap(master, zeta, bound))
            except TimeLimitReached:
                if found is None:
                    raise
                status = "time_limit"
                break
            if mres.status not in ("optimal", "time_limit"):
                if mres.status == "time_limit_no_solution" and found is not None:
                    status = "time_limit"
                    break
                raise UserError(f"solver {self.settings.solver} stopped with status {mres.status} on the MIP "
                                f"({len(master.classes)} classes); raise --time-limit "
                                f"(now {self.settings.time_limit_s:g} s)")
            x_int = self.master.assemble(master, mres.x)
            z_int = p.objective(x_int, zeta) + self.penalty * float(mres.slack.sum())
            if found is not None and found[0] is None and mres.status == "time_limit" and p.objective(found[2], zeta) < z_int:
                status = "time_limit"  # the rounding beat the solver's incumbent
                break
            found = (master, mres, x_int)
            room = (d <= (z_int - bound) + self.tol) & ~self.master.cols
            if not room.any() and mres.bound is not None and mres.objective is not None:
                best = max(bound, mres.bound + (z_int - mres.objective))  # + the fixed classes' cost
            if mres.slack.sum() <= SLACK_TOL and (z_int - best) <= self.settings.mip_gap * max(abs(z_int), 1e-12):
                status = "optimal"
                break
            if mres.status == "time_limit":
                status = "time_limit"
                break
            if not room.any():
                status = "optimal"  # the master holds every column that could improve: its MIP optimum is exact
                break
            r, k = np.nonzero(room)
            keep = np.argsort(d[r, k], kind="stable")[: max(2000, master.n_columns)]
            self.master.add(r[keep], k[keep])
        master, mres, x_int = found
        if mres is not None and mres.slack.sum() > SLACK_TOL:
            bad = [row.label(p) for row, s in zip(master.rows, mres.slack) if s > SLACK_TOL]
            if status == "time_limit":  # not proven infeasible: the search stopped first
                raise NoIntegerPlanInTime(
                    f"solver {self.settings.solver} reached the time limit ({self.settings.time_limit_s:g} s) "
                    f"before an integer plan met {', '.join(bad)} ({len(master.classes)} classes in the "
                    "MIP); raise --time-limit or try --solver highs")
            raise InfeasiblePlan("infeasible in whole queries: the LP relaxation fits but no integer plan meets "
                                 f"{', '.join(bad)}; relax them by about one query's worth")
        return status, np.rint(x_int), best

    def _solver_gap(self, master: Master, zeta: float, bound: float) -> float:
        """The relative gap to ask the solver for, so that the gap we report is within --mip-gap.

        The solver stops when (incumbent - its bound) < g |incumbent| on the *master's* objective, which
        leaves out the fixed classes' cost F (Pyomo master); we report (z - bound') / |z| with z = incumbent
        + F and bound' = its bound + F. With X = bound - F the master's part of the LP bound (the
        incumbent is within g |incumbent| of it), g = mip_gap (1 - 2 mip_gap) |bound| / (|X| + mip_gap |bound|)
        keeps the reported gap within mip_gap. It is tighter than --mip-gap only where the master's part
        outweighs the whole (costs of both signs); never looser (a plan's optimality stays as asked for)."""
        g = self.settings.mip_gap
        if not isinstance(master, Master) or g == 0:
            return g  # the array master holds every class: its objective is the whole
        fixed = self.p.objective(self.master.assemble(master, np.zeros(master.n_columns)), zeta)
        if fixed == 0.0:
            return g  # nothing fixed: the master's objective is the whole
        part = abs(bound - fixed) + g * abs(bound)
        return float(min(g, g * (1 - 2 * g) * abs(bound) / max(part, 1e-300)))

    def _fix_and_solve(self, x_lp: np.ndarray, zeta: float) -> np.ndarray | None:
        """An integer plan from the LP optimum: its integral classes kept, the few fractional ones (at most
        one per binding row) solved as a tiny MIP in the capacity and shares left. Capacity and share rows
        only (None otherwise, or when the rest cannot be placed)."""
        p = self.p
        frac = np.flatnonzero((np.abs(x_lp - np.rint(x_lp)) > INTEGRAL_TOL).any(axis=1))
        if not self.fix_first or p.energy_budget_j is not None or p.accuracy_floor is not None or not frac.size \
                or frac.size > 200:
            return None
        x = np.rint(x_lp)
        x[frac] = 0
        per = x.sum(axis=0)
        lo = np.maximum(p.share_lo - per, 0)
        hi = p.share_hi - per
        cap = p.capacity_s - (x * p.node_s).sum(axis=0)
        if (hi < 0).any() or lo.sum() > p.count[frac].sum():
            return None
        sub = replace(p, count=p.count[frac], **p.rows_of(frac), capacity_s=np.maximum(cap, 0.0),
                      share_bounds=(lo, hi), scales=p.resolved_scales)
        try:
            inner = ColumnGeneration(sub, replace(self.settings, method="full"))
            inner.fix_first = False  # its own MIP goes straight to the solver
            xs = inner.solve(zeta).x
        except UserError:
            return None
        x[frac] = xs
        return x if not p.violations(x) else None

    def solve(self, zeta: float) -> PlanSolution:
        """The optimal plan for ``zeta`` (steps 1-4 of the module docstring)."""
        self.master.install(zeta)
        p = self.p
        clock = _Clock(time.perf_counter(), self.settings.time_limit_s)
        build0 = self.master.build_s
        cost = p.cost(zeta)
        master, res, y = self._feasible_lp(cost, zeta, clock)
        x_lp = self.master.assemble(master, res.x)
        bound, d = lagrangian_bound(p, cost, y)
        integral = np.abs(x_lp - np.rint(x_lp)).max(initial=0.0) <= INTEGRAL_TOL
        status, x, best = ("optimal", np.rint(x_lp), bound) if integral else self._mip(zeta, bound, d, x_lp, clock)
        obj = p.objective(x, zeta)
        return PlanSolution(
            zeta=zeta, status=status, x=x.astype(np.int64), objective=obj, lp_bound=bound,
            gap=max(obj - best, 0.0) / max(abs(obj), 1e-12), lp_integral=bool(integral), bound=best,
            solver=self.settings.solver, method=self.method, solve_s=clock.solve_s,
            build_s=self.master.build_s - build0, rounds=clock.rounds, master_classes=clock.biggest[0],
            master_columns=clock.biggest[1], mip_gap=self.settings.mip_gap, time_limit_s=self.settings.time_limit_s,
            metrics=p.metrics(x), duals=y)

    def diagnose(self, clock: _Clock | None = None) -> list[str]:
        """Least total violation of the non-class rows (x cost 0): the rows that stay violated, in words."""
        clock = clock or _Clock(time.perf_counter(), self.settings.time_limit_s)
        zero = np.where(self.p.allowed, 0.0, np.inf)
        master, res, _ = self._lp(zero, 0.0, 0.0, 1.0, clock)
        return [row.describe(self.p, float(s)) for row, s in zip(master.rows, res.slack) if s > SLACK_TOL]


class Planner:
    """Solves a :class:`PlanProblem` exactly for any zeta, keeping the master model between solves.

    ``settings`` (or the same as keywords: ``solver``, ``method``, ``time_limit_s``, ``mip_gap``,
    ``full_below``, ``min_master``, ``max_shared``; see :class:`SolveSettings`) are checked once here,
    and the problem before any solver runs (:func:`check_problem`: InfeasiblePlan naming the input).
    A zeta whose deployments tie is solved by :mod:`.ties` on the merged problem (one
    :class:`ColumnGeneration` per tie pattern, kept for the sweep).
    """

    def __init__(self, problem: PlanProblem, settings: SolveSettings | None = None, **options) -> None:
        if settings is not None and options:
            raise TypeError("give either settings or keyword options, not both")
        self.settings = settings if settings is not None else SolveSettings(**options)
        check_problem(problem)
        self.p = problem
        self.exact = ColumnGeneration(problem, self.settings)
        self._merged: dict[tuple[int, ...], ColumnGeneration] = {}

    @property
    def method(self) -> str:
        """``full`` or ``reduced``, as used for this problem (small problems are solved in full)."""
        return self.exact.method

    @property
    def builds(self) -> int:
        """Pyomo models built for this problem's own (untied) solves."""
        return self.exact.master.builds

    def prepare(self, zetas: Sequence[float]) -> None:
        """Seed one master for the untied zetas of a coming sweep (see :meth:`RestrictedMaster.prepare`)."""
        self.exact.master.prepare([z for z in zetas if tie_labels(self.p, self.p.cost(z)) is None])

    def seed_columns(self, x: np.ndarray, zetas: Sequence[float] = ()) -> None:
        """Warm start from the columns of an assignment ``x`` (see :meth:`RestrictedMaster.seed_columns`)."""
        self.exact.master.seed_columns(x, zetas)

    def solve(self, zeta: float) -> PlanSolution:
        """The optimal plan for ``zeta``.

        Deployments whose objective columns are identical for this zeta (e.g. one model on two node types
        at zeta = 0: same accuracy) are interchangeable: they are merged into one with the summed share
        bounds (an exact reduction), and the merged deployment's queries are then split among its
        members by the other term (least energy; most accuracy at zeta = 1) under their own bounds.
        """
        zeta = check_zeta(zeta)
        labels = tie_labels(self.p, self.p.cost(zeta))
        if labels is None:
            sol = self.exact.solve(zeta)
        else:
            merge = merge_ties(self.p, labels)
            key = tuple(int(v) for v in labels)
            if key not in self._merged:
                check_problem(merge.problem)  # the members' bounds together, e.g. under a shared SLO
                self._merged[key] = ColumnGeneration(merge.problem, self.settings)
            sol = split_ties(merge, self._merged[key].solve(zeta), zeta, self._solve_part)
        if zeta in (0.0, 1.0) and self.p.share_only:
            sol = self._break_ties(sol, zeta)
        return sol

    def _break_ties(self, sol: PlanSolution, zeta: float) -> PlanSolution:
        """At zeta = 0 (1) the plan of least energy (most accuracy) among all optimal plans, as documented.

        An LP's optimal plans are exactly the feasible plans that use only columns of zero reduced cost
        under one optimal dual and keep every row with a non-zero dual tight (complementary slackness).
        The deployment prices proving ``sol`` optimal (:func:`share_certificate`) give that face; the
        other term is then optimised over it, a transportation problem again.
        """
        p = self.p
        cost = p.cost(zeta)
        prices = share_certificate(cost, sol.x, p.share_lo, p.share_hi, self.exact.tol)
        if prices is None:
            return sol
        red = np.where(p.allowed, cost - prices[None, :], np.inf)
        face = (red <= red.min(axis=1, keepdims=True) + 10 * self.exact.tol) | (sol.x > 0)
        lo, hi = p.share_lo.copy(), p.share_hi.copy()
        per = sol.x.sum(axis=0)
        tight = np.abs(prices) > 10 * self.exact.tol
        lo[tight], hi[tight] = per[tight], per[tight]
        if (face.sum(axis=1) == 1).all():
            return sol  # one optimal plan only
        sub = replace(p, allowed=face, share_bounds=(lo, hi), scales=p.resolved_scales)
        other = ColumnGeneration(sub, self.settings).solve(1.0 - zeta)
        x = other.x
        obj = p.objective(x, zeta)
        if obj > sol.objective + 10 * self.exact.tol * max(1.0, abs(sol.objective)):
            return sol  # numerical trouble: keep the certified plan
        word = "least energy" if zeta == 0.0 else "most accuracy"
        return replace(sol, x=x, objective=obj, gap=max(obj - sol.bound, 0.0) / max(abs(obj), 1e-12),
                       method=f"{sol.method}; {word} among the optimal plans", rounds=sol.rounds + other.rounds,
                       solve_s=sol.solve_s + other.solve_s, metrics=p.metrics(x))

    def _solve_part(self, problem: PlanProblem, zeta: float) -> PlanSolution:
        """A part of a tied solve (a merged group's split), free of ties at ``zeta``, on its own master."""
        check_problem(problem)
        return ColumnGeneration(problem, self.settings).solve(zeta)

    def sweep(self, zetas: Sequence[float]) -> list[PlanSolution]:
        """Solve every zeta on one master model (built once, unless pricing adds columns)."""
        self.prepare(list(zetas))
        return [self.solve(z) for z in zetas]


def solve(problem: PlanProblem, zeta: float, settings: SolveSettings | None = None) -> PlanSolution:
    """The optimal plan of ``problem`` for ``zeta``: ``x`` (C, K), ``shares``, ``duals`` (the row duals,
    :class:`RowDuals`), the proven ``lp_bound`` and ``gap``. One call, one fresh :class:`Planner`."""
    return Planner(problem, settings).solve(zeta)

