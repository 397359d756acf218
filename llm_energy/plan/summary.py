"""The plan summary: one typed record for what ``summary.json``, ``plan --json``, the tables and the demo read.

:class:`PlanSummary` is the plan stage's answer in words and numbers: status and proven gap, totals,
per-deployment figures, the constraints and normalisation it was solved under, the negative
predictions met, the binning error bound, the baselines, the Pareto sweep, the files written and the
time each stage took. ``to_dict()`` is *exactly* the JSON of ``summary.json`` (keys, order, values);
:meth:`PlanSummary.load` / :meth:`PlanSummary.from_dict` read one back, so readers use attributes,
not string keys, and a renamed field fails where it is read, not silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_energy.errors import UserError
from llm_energy.io import json_default
from llm_energy.plan.binning import BinningReport
from llm_energy.plan.costs import NegativePredictions

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.baselines import BaselineResult
    from llm_energy.plan.problem import PlanProblem
    from llm_energy.plan.solve.planner import PlanSolution

OBJECTIVE_TEXT = "sum over queries of zeta * E_K(q) / E_bar - (1 - zeta) * A_K * (tin + tout) / A_bar"
ACCURACY_TEXT = "token-weighted mean of A_K: sum_q A_K(q) (tin+tout) / sum_q (tin+tout)"


class _Flat:
    """A record of plain fields: to_dict in field order, from_dict by name."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**d)


@dataclass(frozen=True)
class DeploymentSummary(_Flat):
    """One deployment's part of the plan: ``count`` queries (``share`` of all), their predicted
    ``energy_j`` and ``runtime_s`` (summed latencies: each query's batch runtime), its A_K, ``capacity_s``
    (None: unlimited) and ``slo_s``; ``batch``: the batch size it was planned at; ``node_s``: the
    node-seconds its queries use (runtime / batch each: what ``capacity_s`` limits; None in files
    written before batches were planned, where it equals ``runtime_s``)."""

    count: int
    share: float
    energy_j: float
    runtime_s: float
    accuracy: float
    capacity_s: float | None
    slo_s: float | None
    replicas: int | None = None  # inventory plans: replicas switched on (the peak over windows)
    batch: int = 1
    node_s: float | None = None


@dataclass(frozen=True)
class ConstraintsSummary(_Flat):
    """The constraints solved under: ``min_share`` eps and the query bounds it gives (per deployment),
    the energy budget (J) and the accuracy floor, where set."""

    min_share: float
    share_lo: int
    share_hi: int
    energy_budget_j: float | None
    accuracy_floor: float | None

    @classmethod
    def of(cls, p: PlanProblem) -> ConstraintsSummary:
        return cls(min_share=p.min_share, share_lo=int(p.share_lo[0]), share_hi=int(p.share_hi[0]),
                   energy_budget_j=p.energy_budget_j, accuracy_floor=p.accuracy_floor)


@dataclass(frozen=True)
class Normalisation(_Flat):
    """What the objective's units are: E_bar (J per query) and A_bar (A_K tokens per query)."""

    objective: str
    energy_j_per_query: float
    accuracy_tokens_per_query: float
    accuracy: str

    @classmethod
    def of(cls, p: PlanProblem) -> Normalisation:
        return cls(objective=OBJECTIVE_TEXT, energy_j_per_query=p.energy_scale,
                   accuracy_tokens_per_query=p.accuracy_scale, accuracy=ACCURACY_TEXT)


@dataclass(frozen=True)
class WorkloadSummary(_Flat):
    """The workload planned: its ``source`` (file), queries and distinct (tin, tout) classes."""

    source: str
    queries: int
    classes: int


@dataclass(frozen=True)
class BaselineSummary(_Flat):
    """A baseline routing on the same predictions, and the energy the plan saves against it (%)."""

    name: str
    energy_j: float
    accuracy: float
    runtime_s: float
    saved_pct: float
    feasible: bool
    violations: list[str]

    @classmethod
    def of(cls, b: BaselineResult, plan_energy_j: float) -> BaselineSummary:
        return cls(name=b.name, energy_j=b.energy_j, accuracy=b.accuracy, runtime_s=b.runtime_s,
                   saved_pct=b.saved_pct(plan_energy_j), feasible=b.feasible, violations=list(b.violations))


@dataclass(frozen=True)
class ParetoPoint(_Flat):
    """One optimal plan of the zeta sweep (totals of the plan as realised on the exact classes)."""

    zeta: float
    status: str
    objective: float
    energy_j: float
    accuracy: float
    runtime_s: float
    gap: float


def deployment_summaries(p: PlanProblem, x, n_queries: int) -> dict[str, DeploymentSummary]:
    """Per deployment name, its part of the assignment ``x`` (C, K)."""
    per = x.sum(axis=0)
    out = {}
    for k, name in enumerate(p.names):
        cap = float(p.capacity_s[k])
        out[name] = DeploymentSummary(
            count=int(per[k]), share=float(per[k] / max(n_queries, 1)),
            energy_j=float((x[:, k] * p.energy_j[:, k]).sum()), runtime_s=float((x[:, k] * p.runtime_s[:, k]).sum()),
            accuracy=float(p.accuracy[k]), capacity_s=cap if math.isfinite(cap) else None,
            slo_s=(p.slo_s or (None,) * p.n_deployments)[k], batch=int(p.batch_sizes[k]),
            node_s=float((x[:, k] * p.node_s[:, k]).sum()))
    return out


def formulation_text(p: PlanProblem, sol: PlanSolution, mip_gap: float) -> str:
    """Why the plan is exact: an integral LP (and why), or a MIP with its gaps."""
    if sol.lp_integral and p.share_only:
        return ("LP: with share/SLO rows only this is a transportation problem (totally unimodular), so "
                "the LP optimum is integral and no MIP is needed")
    if sol.lp_integral:
        return "LP: the LP optimum came out integral, so no MIP was needed"
    stop = "stopped at --time-limit" if sol.status == "time_limit" else f"asked for a relative MIP gap of {mip_gap:g}"
    return (f"MIP (capacity/budget/accuracy rows break total unimodularity): {stop}; gap achieved "
            f"{sol.gap:.3g} (proven, to the bound {sol.bound:.10g}; the LP bound is {sol.lp_bound:.10g})")


@dataclass
class PlanSummary:
    """A plan in summary (see the module docstring; field order is summary.json's key order).

    ``objective`` (normalised units, of the plan as realised on the exact classes) and its
    ``objective_per_query``; ``lp_bound``/``gap``: the proven lower bound and relative gap of the solve;
    ``energy_j``/``accuracy`` (token-weighted mean A_K)/``accuracy_per_query``/``runtime_s``: predicted
    totals; ``solve_s``/``build_s``: solver and Pyomo time; ``solver_calls``; ``master_classes``/
    ``master_columns``: the largest problem the solver saw; ``zeta`` and ``mode`` (zeta | min-accuracy |
    max-energy) as asked; ``pareto``: the sweep (None without ``--pareto``); ``files``: what was
    written, by kind; ``timings_s``: seconds per stage.
    """

    status: str
    objective: float
    objective_per_query: float
    lp_bound: float
    gap: float
    energy_j: float
    accuracy: float
    accuracy_per_query: float
    runtime_s: float
    deployments: dict[str, DeploymentSummary]
    solver: str
    solve_s: float
    build_s: float
    method: str
    formulation: str
    mip_gap: float
    time_limit_s: float
    solver_calls: int
    master_classes: int
    master_columns: int
    zeta: float
    mode: str
    constraints: ConstraintsSummary
    normalisation: Normalisation
    workload: WorkloadSummary
    negative_predictions: NegativePredictions
    binning: BinningReport | None
    baselines: list[BaselineSummary]
    warnings: list[str]
    pareto: list[ParetoPoint] | None = None
    files: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    bound: float | None = None  # the best proven lower bound behind ``gap`` (>= lp_bound)
    idle_energy_j: float = 0.0  # keep-on energy of the replicas switched on (inventory plans), J
    fleet: dict[str, Any] | None = None  # inventory plans: node types, window, utilisation, replica MIP
    windows: list[dict[str, Any]] | None = None  # --window-s: replicas per window and the changes
    uncertainty: dict[str, Any] | None = None  # loads at the prediction interval's upper end (plan.uncertainty)
    fitted_range: dict[str, Any] | None = None  # issue 15: queries outside their fit's range (fit.ranges)
    # context lengths (plan.context.ContextReport): per deployment its context and the queries beyond it
    # (never assigned there), and the queries beyond every one (not planned); None where none is known
    beyond_context: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary.json document (``pareto`` only when swept)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("pareto", "fitted_range", "beyond_context") and v is None:
                continue
            if isinstance(v, dict):
                v = {k: (e.to_dict() if hasattr(e, "to_dict") else e) for k, e in v.items()}
            elif isinstance(v, list):
                v = [e.to_dict() if hasattr(e, "to_dict") else e for e in v]
            elif hasattr(v, "to_dict"):
                v = v.to_dict()
            out[f.name] = v
        return out

    def to_json(self) -> str:
        """summary.json's text (as ``plan --json`` prints it)."""
        return json.dumps(self.to_dict(), indent=1, default=json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanSummary:
        """A summary from its summary.json document (inverse of :meth:`to_dict`)."""
        d = dict(d)
        d["deployments"] = {k: DeploymentSummary.from_dict(v) for k, v in d["deployments"].items()}
        d["constraints"] = ConstraintsSummary.from_dict(d["constraints"])
        d["normalisation"] = Normalisation.from_dict(d["normalisation"])
        d["workload"] = WorkloadSummary.from_dict(d["workload"])
        d["negative_predictions"] = NegativePredictions.from_dict(d["negative_predictions"])
        d["binning"] = None if d.get("binning") is None else BinningReport.from_dict(d["binning"])
        d["baselines"] = [BaselineSummary.from_dict(b) for b in d["baselines"]]
        if d.get("pareto") is not None:
            d["pareto"] = [ParetoPoint.from_dict(r) for r in d["pareto"]]
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> PlanSummary:
        """Read a plan's summary.json (or a plan directory holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "summary.json"
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except FileNotFoundError:
            raise UserError(f"{p}: no such file") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{p}: not a plan summary ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> None:
        """Write summary.json (whole or not at all)."""
        from llm_energy.io import write_text_atomic

        write_text_atomic(path, self.to_json(), what="plan summary")
