"""Costs: every query class's predicted energy and runtime on every deployment, from the fits.

The planner only sees numbers (:class:`~llm_energy.plan.problem.PlanProblem`); this module is where
they come from: ``fits.predict`` for each deployment's ``fit`` key (:func:`predict_matrix`), then the
one judgement the fits force on us, what to do where a fit predicts a *negative* energy or runtime
(the paper's published fits do for long prompts with short outputs): clip to 0, keep, or refuse
(:func:`handle_negative`, reported as :class:`NegativePredictions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from llm_energy.errors import UserError, bad_value
from llm_energy.plan.problem import PlanProblem, make_problem

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.deployments import DeploymentsFile
    from llm_energy.plan.workload import WorkloadClasses

NEGATIVE_POLICIES = ("clip", "keep", "error")


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

    def to_dict(self) -> dict:
        """As in summary.json: the examples as {tin, tout} records."""
        return {"queries_energy": self.queries_energy, "queries_runtime": self.queries_runtime,
                "by_deployment": self.by_deployment, "policy": self.policy,
                "examples": [{"tin": a, "tout": b} for a, b in self.examples]}

    @classmethod
    def from_dict(cls, d: dict) -> NegativePredictions:
        return cls(queries_energy=d["queries_energy"], queries_runtime=d["queries_runtime"],
                   by_deployment=d["by_deployment"], policy=d["policy"],
                   examples=[(e["tin"], e["tout"]) for e in d["examples"]])

    def warning(self, n_queries: int) -> str | None:
        """One line for the plan's warnings (None when nothing was negative)."""
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


def _fit_of(fits, key: str):
    """The fit ``key`` names in ``fits`` (None where ``fits`` is not a FitsFile-like mapping)."""
    deps = getattr(fits, "deployments", None)
    return deps.get(key) if isinstance(deps, dict) else None


def plan_batches(fits, deployments: DeploymentsFile, fits_source: str = "FITS.json") -> list[int]:
    """The batch size each deployment is planned at: its ``batch`` from the deployments file, else its
    fit's own batch (1 for a fit pooled over batch sizes, ``/b*``). A ``batch`` other than the batch a
    fit was made at (not pooled) is a UserError naming the file, the field and the value."""
    keys = _fit_keys(fits)
    out = []
    for j, d in enumerate(deployments.deployments):
        if keys is not None and d.fit not in keys:
            raise UserError(f"{deployments.path}: deployments[{j}].fit={d.fit!r}: not in {fits_source} "
                            f"(it has {sorted(keys)})")
        dep = _fit_of(fits, d.fit)
        fb = getattr(dep, "batch", 1)
        pooled = fb == "*"
        if d.batch is None:
            out.append(1 if pooled else int(fb))
            continue
        if not pooled and d.batch != fb:
            raise bad_value(f"deployments[{j}].batch", d.batch, f"its fit {d.fit!r} was fitted at batch {fb} only "
                            f"(plan it at batch {fb}, or fit with --pool-batch to plan other batch sizes)",
                            source=deployments.path)
        out.append(int(d.batch))
    return out


def batch_warnings(fits, deployments: DeploymentsFile, batches: Sequence[int]) -> list[str]:
    """One line per deployment planned at a batch outside the batch sizes its (pooled) fit was fitted on:
    an extrapolation (its queries are counted in ``fitted_range`` too)."""
    out = []
    for j, (d, b) in enumerate(zip(deployments.deployments, batches)):
        rng = getattr(_fit_of(fits, d.fit), "range", None)
        if rng is not None and not rng.batch[0] <= b <= rng.batch[1]:
            out.append(f"{deployments.path}: deployments[{j}].batch={b}: outside the batch sizes its fit {d.fit!r} "
                       f"was fitted on ({rng.batch[0]:g}..{rng.batch[1]:g}): its predictions extrapolate")
    return out


def predict_matrix(fits, deployments: DeploymentsFile, tin: np.ndarray, tout: np.ndarray,
                   fits_source: str = "FITS.json") -> tuple[np.ndarray, np.ndarray]:
    """Predicted energy (J/query) and runtime (s/query), each (C, K), from a FitsFile via ``fits.predict``,
    at each deployment's planned batch b (:func:`plan_batches`): energy = the batch's energy / b (one
    request's share), runtime = the batch's runtime (each request waits for the whole batch).

    A deployment whose ``fit`` key is not in the fits file is a UserError naming it and the keys there.
    """
    from llm_energy.fit.fits import predict

    batches = plan_batches(fits, deployments, fits_source)
    e = np.empty((len(tin), len(deployments.deployments)))
    r = np.empty_like(e)
    for j, d in enumerate(deployments.deployments):
        pooled = getattr(_fit_of(fits, d.fit), "batch", None) == "*"
        pf = predict(fits, d.fit, np.asarray(tin, dtype=np.float64), np.asarray(tout, dtype=np.float64),
                     batch=batches[j] if pooled else None, per_request=True)  # J per request: batch energy / b
        e[:, j] = pf["energy_j"].to_numpy()
        r[:, j] = pf["runtime_s"].to_numpy()
    return e, r


def _fit_keys(fits) -> set[str] | None:
    """The fit keys a fits object holds (None: unknown, let ``predict`` decide)."""
    deps = getattr(fits, "deployments", None)
    if isinstance(deps, dict):
        return set(deps)
    if isinstance(deps, (list, tuple)):
        return {getattr(d, "key", getattr(d, "deployment", None)) for d in deps}
    return None


def check_negative_policy(policy: str) -> None:
    """``policy`` must be one of :data:`NEGATIVE_POLICIES` (the flag is ``--negative-energy``)."""
    if policy not in NEGATIVE_POLICIES:
        raise bad_value("--negative-energy", policy, f"expected one of {', '.join(NEGATIVE_POLICIES)}")


def handle_negative(names: Sequence[str], tin: np.ndarray, tout: np.ndarray, count: np.ndarray,
                    energy_j: np.ndarray, runtime_s: np.ndarray, policy: str = "clip",
                    ) -> tuple[np.ndarray, np.ndarray, NegativePredictions]:
    """Find negative predictions; ``clip`` raises them to 0, ``keep`` leaves them, ``error`` refuses."""
    check_negative_policy(policy)
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
    elif policy == "keep" and idx.size:
        _check_kept_means(count, energy_j, runtime_s, report)
    return energy_j, runtime_s, report


def _check_kept_means(count: np.ndarray, energy_j: np.ndarray, runtime_s: np.ndarray,
                      report: NegativePredictions) -> None:
    """``keep``: the objective is normalised by the mean predicted energy (and capacity slacks by the
    mean runtime) per query; when negative predictions make a mean <= 0 there is no unit to plan in
    (it used to be set to 1 J silently, giving plans of negative energy reported optimal): refuse."""
    n = float(count.sum()) * energy_j.shape[1]
    for what, unit, m in (("energy", "J", energy_j), ("runtime", "s", runtime_s)):
        mean = float((count[:, None] * m).sum() / n)
        if not mean > 0:
            raise UserError(f"--negative-energy=keep: the mean predicted {what} per query and deployment is "
                            f"{mean:.6g} {unit} (<= 0), so the objective has no {what} unit to plan in; "
                            f"use --negative-energy clip (or error). "
                            + (report.warning(int(count.sum())) or ""))


def predicted_costs(fits, deployments: DeploymentsFile, tin: np.ndarray, tout: np.ndarray, count: np.ndarray,
                    negative: str = "clip", fits_source: str = "FITS.json",
                    ) -> tuple[np.ndarray, np.ndarray, NegativePredictions]:
    """Energy and runtime (C, K) of (tin, tout) pairs (``count`` queries each) with the ``negative``
    policy applied: what both the exact classes and the bins of ``--bins`` are costed by."""
    e, r = predict_matrix(fits, deployments, tin, tout, fits_source)
    return handle_negative(deployments.names, tin, tout, count, e, r, negative)


def problem_from_fits(classes: WorkloadClasses, deployments: DeploymentsFile, fits, *, min_share: float = 0.01,
                      energy_budget_j: float | None = None, accuracy_floor: float | None = None,
                      negative: str = "clip", fits_source: str = "FITS.json",
                      ) -> tuple[PlanProblem, NegativePredictions]:
    """Predict every class on every deployment and build the :class:`PlanProblem` (plus the negatives report);
    a class beyond a deployment's context length (:func:`~llm_energy.plan.context.context_limits`) may not go there;
    each deployment at its planned batch (:func:`plan_batches`: capacity counts runtime / batch per query)."""
    from llm_energy.plan.context import context_limits

    e, r, neg = predicted_costs(fits, deployments, classes.tin, classes.tout, classes.count, negative, fits_source)
    ds = deployments.deployments
    prob = make_problem(deployments.names, classes.count, classes.tokens, e, r, [d.accuracy for d in ds], min_share=min_share,
                        slo_s=[d.slo_s for d in ds], capacity_s=[d.capacity_s for d in ds],
                        energy_budget_j=energy_budget_j, accuracy_floor=accuracy_floor,
                        context_tokens=context_limits(fits, deployments),
                        batch=plan_batches(fits, deployments, fits_source))
    return prob, neg
