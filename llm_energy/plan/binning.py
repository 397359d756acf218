"""Binning (``--bins N``): solve on N x N log-spaced (tin, tout) bins, realise on the exact classes, bound the error.

A trace of a million queries can have ~10^5 distinct (tin, tout) classes; merging them into bins
(representatives: the count-weighted means, see :func:`llm_energy.plan.workload.bin_classes`) makes
the solve tiny. The price is an error in the objective, which is *bounded*, not guessed: every
query's cost moves by at most its bin's spread, and the bin solve's duals give a Lagrangian lower
bound on the exact problem (:class:`BinningReport`).

Steps: :func:`make_bins` (bins costed like the exact classes, the exact problem's constraints and
scales), solve ``bins.problem``, :meth:`Bins.realise` the bin plan on the exact classes, then
:meth:`Bins.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from llm_energy.plan.problem import PlanProblem, context_mask
from llm_energy.plan.solve.duals import RowDuals, lagrangian_bound

if TYPE_CHECKING:  # pragma: no cover
    from llm_energy.plan.workload import WorkloadClasses

# (tin, tout, count) of the bins -> their (energy_j, runtime_s), (C, K) each: how the exact classes were costed
CostFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


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

    @classmethod
    def from_dict(cls, d: dict) -> BinningReport:
        return cls(**d)


@dataclass(frozen=True)
class Bins:
    """The exact problem's classes merged into bins: ``problem`` is what the solver sees, ``class_bin[c]``
    the bin of exact class c, ``n_bins`` the bins per axis asked for."""

    exact: PlanProblem
    problem: PlanProblem
    class_bin: np.ndarray
    n_bins: int

    def realise(self, x_bins: np.ndarray, zeta: float) -> tuple[np.ndarray, int]:
        """The bin plan on the exact classes: (x (C, K), queries moved past their SLO); see :func:`realise_bins`."""
        return realise_bins(self.exact, self.class_bin, x_bins, zeta)

    def report(self, x: np.ndarray, x_bins: np.ndarray, zeta: float, slo_moves: int,
               duals: RowDuals | None = None) -> BinningReport:
        """The error bound of the realised plan ``x`` (see :func:`binning_report`)."""
        return binning_report(self.exact, self.problem, self.class_bin, x, x_bins, zeta, self.n_bins, slo_moves,
                              duals)


def make_bins(exact: PlanProblem, classes: WorkloadClasses, n_bins: int, costs: CostFunction) -> Bins:
    """Bin ``classes`` (those of ``exact``) n_bins x n_bins and cost the bins' representatives (rounded to
    whole tokens) with ``costs``, the function the exact classes were costed with."""
    from llm_energy.plan.workload import bin_classes

    binned = bin_classes(classes, n_bins, split=context_pattern(exact))
    tin, tout = np.rint(binned.bins.tin), np.rint(binned.bins.tout)
    energy_j, runtime_s = costs(tin, tout, binned.bins.count)
    problem = binned_problem(exact, binned.bins.count, binned.bins.tokens, energy_j, runtime_s)
    return Bins(exact=exact, problem=problem, class_bin=binned.class_bin, n_bins=n_bins)


def binned_problem(exact: PlanProblem, bins_count: np.ndarray, bins_tokens: np.ndarray, energy_j: np.ndarray,
                   runtime_s: np.ndarray) -> PlanProblem:
    """The problem on bins: representative predictions, the exact problem's constraints and scales. Bins
    split by :func:`context_pattern` hold classes that fit the same deployments' contexts, and so does
    their mean (tin + tout), so a bin is allowed on a deployment only where all its classes are."""
    allowed = context_mask(bins_tokens, exact.context_tokens, exact.n_deployments)
    for j, s in enumerate(exact.slo_s or ()):
        if s is not None:
            allowed[:, j] &= runtime_s[:, j] <= s
    return replace(exact, count=np.asarray(bins_count, dtype=np.int64), tokens=np.asarray(bins_tokens, float),
                   energy_j=energy_j, runtime_s=runtime_s, allowed=allowed, budget_energy_j=None,
                   scales=exact.resolved_scales)  # a budget on upper energies is re-checked on the exact classes


def context_pattern(p: PlanProblem) -> np.ndarray | None:
    """(C,) a label per class of the deployments whose context it fits, None where every class fits all
    (what ``bin_classes(split=...)`` and the fleet's stage-1 groups keep apart)."""
    fits = p.fits_context
    if fits.all():
        return None
    return np.unique(fits, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


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
    raw = exact.raw_cost(zeta)
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
                   duals: RowDuals | None = None) -> BinningReport:
    """The error bound of a binned plan (see :class:`BinningReport`). With the bin solve's ``duals`` the
    bound also uses their Lagrangian bound on the *exact* problem (valid for any duals), usually far tighter."""
    ce, cb = exact.raw_cost(zeta), binned.raw_cost(zeta)
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
