"""The plan pipeline as one library call: :func:`run` (a :class:`PlanRequest`) -> :class:`PlanOutcome`.

Load the deployments, fits and workload; aggregate the queries into classes; predict every class on
every deployment; solve (exactly, or on bins with a bounded error; with an optional zeta sweep);
compare with the baselines; write the plan directory. The CLI (``llm-energy plan``), the benchmarks,
the Ray jobs and the demo all call this, so they all plan the same way.

A :class:`PlanRequest` is checked once, when it is made: every later step trusts it. (Only what
needs the files, e.g. ``--only`` naming a deployment the file lacks, is checked when they are read.)
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from llm_energy.errors import UserError, bad_value
from llm_energy.plan.costs import NegativePredictions, check_negative_policy, predicted_costs, problem_from_fits
from llm_energy.plan.outputs import (
    assignment_frame,
    pareto_frame,
    per_query_frame,
    with_unplanned,
    write_plan_dir,
)
from llm_energy.plan.problem import PlanProblem, check_min_share, check_zeta
from llm_energy.plan.solve.solvers import DEFAULT_STAGE2_TIME_LIMIT_S, SolveSettings
from llm_energy.plan.summary import (
    BaselineSummary,
    ConstraintsSummary,
    Normalisation,
    ParetoPoint,
    PlanSummary,
    WorkloadSummary,
    deployment_summaries,
    formulation_text,
)

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.fit.fits import FitsFile
    from llm_energy.plan.binning import BinningReport, Bins
    from llm_energy.plan.context import ContextReport
    from llm_energy.plan.deployments import DeploymentsFile
    from llm_energy.plan.solve.planner import PlanSolution
    from llm_energy.plan.workload import Workload, WorkloadClasses

MODES = ("zeta", "min-accuracy", "max-energy")


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan needs, as the ``plan`` flags state it (see the CLI for meanings and units).

    ``zeta`` None means the default 0.5, or what ``min_accuracy`` (zeta = 1: least energy above the
    floor) or ``max_energy`` (zeta = 0: most accuracy within the budget) set; ``pareto_steps`` None: no
    sweep. Checked here, once, with messages naming the flags (:class:`~llm_energy.errors.UserError`);
    ``settings`` is the checked :class:`SolveSettings`.
    """

    fits: str | FitsFile  # a fits file (or the paper's coefficients.json), or one in memory
    deployments: str | DeploymentsFile  # a deployments YAML, or one in memory
    workload: str | Workload  # a workload file, or queries in memory
    out: str
    columns: str | None = None
    only: tuple[str, ...] | None = None
    zeta: float | None = None
    pareto_steps: int | None = None
    min_accuracy: float | None = None
    max_energy: float | None = None
    energy_budget: float | None = None
    min_share: float | None = None  # None: 0.01, or 0 with an inventory (a deployment may be off)
    solver: str = "glpk"
    method: str = "reduced"
    time_limit_s: float = 60.0
    mip_gap: float = 1e-4
    stage2_time_limit_s: float = DEFAULT_STAGE2_TIME_LIMIT_S  # inventory: each window's stage 2 (replicas fixed)
    bins: int | None = None
    negative: str = "clip"
    per_query: bool = False
    seed: int = 0
    out_of_range: str = "warn"  # issue 15: queries planned outside their fit's range: warn | refuse
    window_s: float | None = None  # inventory: the window (timed trace: consecutive windows of this length)
    time_column: str | None = None  # the arrival-time column (default: TIMESTAMP, timestamp, arrival_s...)
    max_replica_change: int | None = None  # between windows, per deployment
    replica_change_j: float = 0.0  # price of switching one replica on or off, J
    utilisation: float = 1.0  # share of the window a replica may be busy (headroom below 1)
    max_wait_s: float | None = None  # add replicas until the predicted M/G/c mean wait is at most this
    latency_limit_s: float | None = None  # the replay reports the share of queries within it
    plan_on: str = "point"  # capacity and budget rows on the point predictions, or on the interval's upper end
    settings: SolveSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_objective()
        if self.min_share is not None:
            check_min_share(self.min_share)
        self._check_fleet()
        if self.pareto_steps is not None and self.pareto_steps < 2:
            raise bad_value("--pareto-steps", self.pareto_steps, "must be >= 2")
        if self.min_accuracy is not None and not math.isfinite(self.min_accuracy):
            raise bad_value("--min-accuracy", self.min_accuracy, "must be a finite number")
        for flag, v in (("--max-energy", self.max_energy), ("--energy-budget", self.energy_budget)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise bad_value(flag, v, "must be a positive number of joules")
        if self.energy_budget is not None and self.max_energy is not None:
            raise UserError("--max-energy is already a budget; drop --energy-budget")
        if self.bins is not None and self.bins < 1:
            raise bad_value("--bins", self.bins, "must be >= 1")
        check_negative_policy(self.negative)
        if self.out_of_range not in ("warn", "refuse"):
            raise bad_value("--out-of-range", self.out_of_range, "expected warn or refuse")
        if Path(self.out).exists() and not Path(self.out).is_dir():  # before the solve, not after it
            raise bad_value("--out", self.out, "is a file; the plan is a directory")
        object.__setattr__(self, "settings", SolveSettings(solver=self.solver, method=self.method,
                                                           time_limit_s=self.time_limit_s, mip_gap=self.mip_gap,
                                                           stage2_time_limit_s=self.stage2_time_limit_s))

    def _check_fleet(self) -> None:
        for flag, v in (("--window-s", self.window_s), ("--max-wait-s", self.max_wait_s),
                        ("--latency-limit-s", self.latency_limit_s)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise bad_value(flag, v, "must be a positive number of seconds")
        if not (math.isfinite(self.utilisation) and 0 < self.utilisation <= 1):
            raise bad_value("--utilisation", self.utilisation, "must be in (0, 1]")
        if self.max_replica_change is not None and self.max_replica_change < 0:
            raise bad_value("--max-replica-change", self.max_replica_change, "must be >= 0")
        if self.plan_on not in ("point", "upper"):
            raise bad_value("--plan-on", self.plan_on, "expected point or upper")
        if not (math.isfinite(self.replica_change_j) and self.replica_change_j >= 0):
            raise bad_value("--replica-change-j", self.replica_change_j, "must be >= 0 J")

    def share_for(self, inventory: bool) -> float:
        """--min-share as given, else 0.01 (the paper's shares), or 0 with an inventory."""
        return self.min_share if self.min_share is not None else (0.0 if inventory else 0.01)

    def _check_objective(self) -> None:
        modes = [n for n, v in (("--min-accuracy", self.min_accuracy), ("--max-energy", self.max_energy))
                 if v is not None]
        if len(modes) > 1:
            raise UserError("--min-accuracy and --max-energy exclude each other: choose one")
        if modes and self.zeta is not None:
            raise UserError(f"{modes[0]} sets the objective itself; drop --zeta")
        if modes and self.pareto_steps is not None:
            raise UserError(f"{modes[0]} and --pareto exclude each other")
        if self.zeta is not None:
            check_zeta(self.zeta)

    @property
    def sources(self) -> tuple[str, str, str]:
        """Where the fits, deployments and workload came from (a path, or what the object says)."""
        f, d, w = self.fits, self.deployments, self.workload
        return (f if isinstance(f, str) else f.source or "<fits in memory>",
                d if isinstance(d, str) else d.path, w if isinstance(w, str) else w.source)

    @property
    def mode(self) -> str:
        """zeta | min-accuracy | max-energy."""
        return "min-accuracy" if self.min_accuracy is not None else "max-energy" if self.max_energy is not None \
            else "zeta"

    @property
    def chosen_zeta(self) -> float:
        """The zeta of the plan: as given (default 0.5); 1 for min-accuracy, 0 for max-energy."""
        return {"min-accuracy": 1.0, "max-energy": 0.0}.get(self.mode, 0.5 if self.zeta is None else self.zeta)

    @property
    def energy_budget_j(self) -> float | None:
        """The energy budget row's J: ``max_energy`` in max-energy mode, else ``energy_budget``."""
        return self.max_energy if self.mode == "max-energy" else self.energy_budget

    def sweep_zetas(self) -> list[float]:
        """The Pareto sweep's zetas (empty without one), the chosen zeta among them."""
        if not self.pareto_steps:
            return []
        zetas = list(np.linspace(0.0, 1.0, self.pareto_steps))
        if min(abs(z - self.chosen_zeta) for z in zetas) > 1e-12:
            zetas = sorted(zetas + [self.chosen_zeta])  # the chosen point is on the front it is shown on
        return zetas


@dataclass
class PlanOutcome:
    """The result of :func:`run`: ``summary`` (as written to summary.json), ``files`` written by kind,
    and what was solved: the ``problem`` on the exact classes, its ``classes``, the ``solution`` of the
    solve (on bins with ``--bins``) and ``x`` (C, K), the plan on the exact classes."""

    summary: PlanSummary
    files: dict[str, str]
    problem: PlanProblem
    classes: WorkloadClasses
    solution: PlanSolution
    x: np.ndarray


@dataclass
class _Inputs:
    deployments: DeploymentsFile
    fits: object
    workload: Workload  # the queries planned: the file's, less those no deployment's context takes
    context: ContextReport | None = None  # None: no context length known
    dropped: Workload | None = None  # the queries beyond every deployment's context (None: none)
    kept: np.ndarray | None = None  # the file's row of each planned query (None: every row)


@dataclass
class _Solved:
    solution: PlanSolution
    x: np.ndarray
    binning: BinningReport | None
    pareto: list[ParetoPoint] = field(default_factory=list)
    dep: np.ndarray | None = None  # each query's deployment, where windows decide it (else from x)


class _Timer(dict):
    """Seconds per stage, in the order the stages ran (summary.json's ``timings_s``)."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t1 = time.perf_counter()
        yield
        self[name] = time.perf_counter() - t1


def _load(req: PlanRequest) -> _Inputs:
    from llm_energy.fit.fits import load_fits_any
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.plan.workload import load_workload, parse_column_mapping

    deps = load_deployments(req.deployments) if isinstance(req.deployments, str) else req.deployments
    if req.only:
        deps = deps.select(list(req.only), "--only")
    fits = load_fits_any(req.fits) if isinstance(req.fits, str) else req.fits
    times = req.time_column or (deps.inventory is not None or req.window_s is not None)
    workload = (load_workload(req.workload, parse_column_mapping(req.columns), times=times)
                if isinstance(req.workload, str) else req.workload)
    return _beyond_context(req, _Inputs(deps, fits, workload))


def _beyond_context(req: PlanRequest, inputs: _Inputs) -> _Inputs:
    """Queries longer than every deployment's context cannot be served by any: they are taken out of the
    plan and counted (``beyond_context``; a warning), or with ``--out-of-range refuse`` refused."""
    from llm_energy.plan.context import context_limits, split_servable
    from llm_energy.plan.workload import Workload

    wl, deps = inputs.workload, inputs.deployments
    inputs.context, keep = split_servable(deps.names, context_limits(inputs.fits, deps), wl.tin, wl.tout)
    if keep.all():
        return inputs
    line = inputs.context.warning()
    if req.out_of_range == "refuse":
        raise UserError(f"--out-of-range refuse: {line}")
    if not keep.any():
        raise UserError(f"{req.sources[2]}: {line}; nothing is left to plan")

    def part(m: np.ndarray) -> Workload:
        return Workload(wl.tin[m], wl.tout[m], wl.source, None if wl.arrival_s is None else wl.arrival_s[m])

    inputs.workload, inputs.dropped, inputs.kept = part(keep), part(~keep), np.flatnonzero(keep)
    return inputs


def _input_warnings(req: PlanRequest, inputs: _Inputs, neg: NegativePredictions) -> list[str]:
    warnings = []
    w = neg.warning(inputs.workload.n_queries)
    if w:
        warnings.append(w)
    if inputs.context is not None and inputs.context.unservable:
        warnings.append(inputs.context.warning())
    from llm_energy.fit.fits import FitsFile, errata_warning

    if isinstance(inputs.fits, FitsFile):
        erratum = errata_warning(inputs.fits, {d.fit for d in inputs.deployments.deployments})
        if erratum:
            warnings.append(f"{req.sources[0]}: {erratum}")
    from llm_energy.plan.costs import batch_warnings, plan_batches

    warnings += batch_warnings(inputs.fits, inputs.deployments, plan_batches(inputs.fits, inputs.deployments,
                                                                             req.sources[0]))
    no_hours = [d.name for d in inputs.deployments.deployments if d.nodes is not None and d.hours is None]
    if no_hours:
        warnings.append(f"{req.sources[1]}: {', '.join(no_hours)}: nodes without hours sets no capacity limit "
                        f"(capacity = nodes x hours x 3600 s); add hours to limit them")
    return warnings


def _solve(req: PlanRequest, problem: PlanProblem, bins: Bins | None, warnings: list[str]) -> _Solved:
    """The plan for the chosen zeta and the sweep, on bins if asked (realised on the exact classes)."""
    from llm_energy.plan.solve.planner import Planner

    planner = Planner(problem if bins is None else bins.problem, req.settings)
    zetas, zeta = req.sweep_zetas(), req.chosen_zeta
    if zetas:
        planner.prepare(zetas + [zeta])
    sol = planner.solve(zeta)
    out = _Solved(solution=sol, x=sol.x, binning=None)
    if bins is not None:
        out.x, moves = bins.realise(sol.x, zeta)
        out.binning = bins.report(out.x, sol.x, zeta, moves, sol.duals)
        broken = problem.violations(out.x)
        if broken:
            warnings.append(f"--bins {req.bins}: the binned plan, checked on exact predictions, breaks "
                            f"{', '.join(broken)}")
    for z in map(float, zetas):
        s = planner.solve(z)
        xs = s.x if bins is None else bins.realise(s.x, z)[0]
        m = problem.metrics(xs)
        out.pareto.append(ParetoPoint(zeta=z, status=s.status, objective=problem.objective(xs, z),
                                      energy_j=m["energy_j"], accuracy=m["accuracy"], runtime_s=m["runtime_s"],
                                      gap=s.gap))
    return out


def _summary(req: PlanRequest, problem: PlanProblem, solved: _Solved, baselines, neg: NegativePredictions,
             warnings: list[str], n_queries: int, n_classes: int) -> PlanSummary:
    sol, x = solved.solution, solved.x
    metrics = problem.metrics(x)
    if sol.status != "optimal":
        warnings.append(f"solver status {sol.status}: the plan is the best found, within {sol.gap:.3g} of its proven "
                        f"bound; raise --time-limit (or try --solver highs) to prove optimality")
    objective = sol.objective if solved.binning is None else problem.objective(x, req.chosen_zeta)
    return PlanSummary(
        status=sol.status, objective=objective, objective_per_query=objective / n_queries, lp_bound=sol.lp_bound,
        gap=sol.gap, energy_j=metrics["energy_j"], accuracy=metrics["accuracy"],
        accuracy_per_query=metrics["accuracy_per_query"], runtime_s=metrics["runtime_s"],
        deployments=deployment_summaries(problem, x, n_queries), solver=sol.solver, solve_s=sol.solve_s,
        build_s=sol.build_s, method=sol.method, formulation=formulation_text(problem, sol, req.mip_gap),
        mip_gap=req.mip_gap, time_limit_s=req.time_limit_s, solver_calls=sol.rounds,
        master_classes=sol.master_classes, master_columns=sol.master_columns, zeta=req.chosen_zeta,
        mode=req.mode, constraints=ConstraintsSummary.of(problem), normalisation=Normalisation.of(problem),
        workload=WorkloadSummary(source=req.sources[2], queries=n_queries, classes=n_classes),
        negative_predictions=neg, binning=solved.binning,
        baselines=[BaselineSummary.of(b, metrics["energy_j"]) for b in baselines], warnings=warnings,
        pareto=solved.pareto or None, bound=sol.bound)


def _solve_inventory(req: PlanRequest, problem: PlanProblem, classes: WorkloadClasses, inputs: _Inputs,
                     warnings: list[str]):
    """The inventory path (:mod:`llm_energy.plan.inventory_run`): replicas and queries, per window."""
    from llm_energy.plan.binning import context_pattern
    from llm_energy.plan.inventory_run import solve_inventory
    from llm_energy.plan.workload import bin_classes

    for flag, v in (("--bins", req.bins), ("--pareto", req.pareto_steps)):
        if v is not None:
            raise UserError(f"{flag} is not available with an inventory (the replicas are decided per zeta); drop it")
    groups = bin_classes(classes, 12, split=context_pattern(problem)).class_bin  # a group fits the same contexts
    res = solve_inventory(req, problem, classes, inputs, groups, warnings)
    return _Solved(solution=res.solution, x=res.outcome.x, binning=None, dep=res.dep), res


def _upper(req: PlanRequest, inputs: _Inputs, problem: PlanProblem, classes: WorkloadClasses, inventory: bool):
    """The upper ends of the prediction intervals (energy, runtime, deployments without one, level) where a
    plan has capacity or budget rows to risk, or is asked to plan on them; else None."""
    from llm_energy.plan.uncertainty import upper_predictions

    rows = inventory or np.isfinite(problem.capacity_s).any() or problem.energy_budget_j is not None
    if not rows and req.plan_on == "point":
        return None
    return upper_predictions(inputs.fits, inputs.deployments, classes.tin, classes.tout, problem.energy_j,
                             problem.runtime_s, problem.batch)


def _risk(req: PlanRequest, problem: PlanProblem, x: np.ndarray, point_runtime: np.ndarray, upper, inv) -> dict:
    from llm_energy.plan.uncertainty import risk_report

    cap = problem.capacity_s
    if inv is not None:  # the replicas' service seconds over all windows
        fl = inv.fleet
        cap = inv.outcome.replicas.sum(axis=0) * fl["utilisation"] * fl["window_s"]
    per_node = problem.batch_sizes[None, :]
    return risk_report(problem, x, point_runtime / per_node, upper[1] / per_node, problem.energy_j, upper[0], cap,
                       req.plan_on, upper[3], upper[2])  # loads in node-seconds (runtime / batch), as capacity counts


def _fleet_summary(summary: PlanSummary, inv) -> None:
    """The inventory plan's replicas, keep-on energy, fleet and windows, into the summary."""
    summary.deployments = {n: replace(d, replicas=inv.fleet["replicas"][n]) for n, d in summary.deployments.items()}
    summary.idle_energy_j = inv.outcome.idle_energy_j
    summary.fleet = inv.fleet
    summary.windows = inv.windows


def _write(req: PlanRequest, summary: PlanSummary, problem: PlanProblem, classes: WorkloadClasses,
           inputs: _Inputs, solved: _Solved, plot_pareto: Callable[[PlanSummary, str], None] | None,
           stage: Path) -> dict[str, str]:
    """The plan directory's tables, written into ``stage`` (:func:`write_plan_dir`: the directory takes
    the place of ``--out`` once whole; summary.json is written last, by :func:`run`). Lists final paths."""
    out = Path(req.out)
    files = {"assignment": str(out / "assignment.parquet"), "summary": str(out / "summary.json")}
    assignment_frame(classes.tin, classes.tout, classes.count, problem.names, solved.x, problem.energy_j,
                     problem.runtime_s).write_parquet(stage / "assignment.parquet")
    if req.per_query:
        files["assignment_per_query"] = str(out / "assignment_per_query.parquet")
        wl = inputs.workload
        frame = per_query_frame(wl.tin, wl.tout, classes.query_class, problem.names, solved.x, solved.dep)
        if inputs.kept is not None:  # the file's rows; those beyond every context with no deployment
            frame = with_unplanned(frame, inputs.kept, inputs.dropped.tin, inputs.dropped.tout)
        frame.write_parquet(stage / "assignment_per_query.parquet")
    if solved.pareto:
        files["pareto"] = str(out / "pareto.parquet")
        pareto_frame(solved.pareto, req.chosen_zeta).write_parquet(stage / "pareto.parquet")
        if plot_pareto is not None:
            files["pareto_png"] = str(out / "pareto.png")
            plot_pareto(summary, str(stage / "pareto.png"))
    return files


def _fitted_range(req: PlanRequest, inputs: _Inputs, problem: PlanProblem, classes: WorkloadClasses,
                  x: np.ndarray, warnings: list[str]) -> dict | None:
    """Issue 15 (fit's range report): the planned queries, and their share of predicted energy, outside
    the range their deployment's fit was fitted on or beyond its context length; a warning, or with
    ``out_of_range="refuse"`` a UserError. None where the fits are not a FitsFile."""
    from llm_energy.fit.fits import FitsFile
    from llm_energy.fit.ranges import range_report

    if not isinstance(inputs.fits, FitsFile):
        return None
    rr = range_report(inputs.fits, inputs.deployments.deployments, classes.tin, classes.tout, problem.batch,
                      assignment=x, energy_j=problem.energy_j,  # x: (C, K) query counts
                      context_tokens=problem.context_tokens)
    w = rr.warning()
    if w and req.out_of_range == "refuse":
        raise UserError(f"--out-of-range refuse: {w}")
    if w:
        warnings.append(w)
    return rr.to_dict()


def run(req: PlanRequest, *, plot_pareto: Callable[[PlanSummary, str], None] | None = None) -> PlanOutcome:
    """Load, aggregate, predict, solve, compare and write: a whole plan, without printing.

    ``plot_pareto(summary, path)`` draws ``pareto.png`` for a sweep (the plan stage draws nothing
    itself: figures belong to the report, e.g. :func:`llm_energy.report.plan_views.plot_pareto`);
    without it no figure is written or listed.
    """
    from llm_energy.plan.baselines import baselines
    from llm_energy.plan.binning import make_bins
    from llm_energy.plan.workload import aggregate

    timer = _Timer()
    inputs = _load(req)
    timer["load"] = time.perf_counter() - timer.t0
    with timer.stage("aggregate"):
        classes = aggregate(inputs.workload)
    with timer.stage("predict"):
        inventory = inputs.deployments.inventory is not None
        problem, neg = problem_from_fits(classes, inputs.deployments, inputs.fits, min_share=req.share_for(inventory),
                                         energy_budget_j=req.energy_budget_j, accuracy_floor=req.min_accuracy,
                                         negative=req.negative, fits_source=req.sources[0])
        if inventory:  # capacity comes from the replicas the plan switches on
            problem = replace(problem, capacity_s=np.full(problem.n_deployments, np.inf))
        upper = _upper(req, inputs, problem, classes, inventory)
        point_runtime = problem.runtime_s
        if upper is not None and req.plan_on == "upper":  # runtime is only in the capacity rows (and SLO mask)
            problem = replace(problem, runtime_s=upper[1],  # and the budget row counts the upper energies
                              budget_energy_j=upper[0] if problem.energy_budget_j is not None else None)
    warnings = _input_warnings(req, inputs, neg)
    with timer.stage("solve"):
        def costs(tin, tout, count):
            return predicted_costs(inputs.fits, inputs.deployments, tin, tout, count, req.negative, req.sources[0])[:2]

        if inventory:
            solved, inv = _solve_inventory(req, problem, classes, inputs, warnings)
        else:
            bins = make_bins(problem, classes, req.bins, costs) if req.bins else None
            solved, inv = _solve(req, problem, bins, warnings), None
    with timer.stage("baselines"):
        bl = baselines(problem, classes.query_class, req.seed)
    with write_plan_dir(req.out) as stage:  # issue 16: the plan directory whole or not at all
        with timer.stage("write"):
            fitted_range = _fitted_range(req, inputs, problem, classes, solved.x, warnings)  # issue 15
            summary = _summary(req, problem, solved, bl, neg, warnings, inputs.workload.n_queries, classes.n_classes)
            summary.fitted_range = fitted_range
            summary.beyond_context = None if inputs.context is None else inputs.context.to_dict()
            if inv is not None:
                _fleet_summary(summary, inv)
            if upper is not None:
                summary.uncertainty = _risk(req, problem, solved.x, point_runtime, upper, inv)
            files = _write(req, summary, problem, classes, inputs, solved, plot_pareto, stage)
            summary.files = files
        timer["total"] = time.perf_counter() - timer.t0
        summary.timings_s = dict(timer)
        summary.save(stage / "summary.json")
    return PlanOutcome(summary=summary, files=files, problem=problem, classes=classes, solution=solved.solution,
                       x=solved.x)
