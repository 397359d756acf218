"""The planning problem: which deployment serves how many queries of each class, in numpy only.

A workload's queries with the same (tin, tout) cost the same everywhere, so the problem is posed on
query *classes* (distinct pairs with integer counts) x *deployments* (the columns K, named by the
deployments file). :class:`PlanProblem` holds everything a solver needs (predicted energy and
runtime per query, accuracies A_K, the SLO mask, share bounds, capacities, an optional energy budget
and accuracy floor) and the arithmetic every stage shares: normalised costs, an assignment's totals,
the constraints it breaks. It knows nothing of Pyomo, files or fits, so tests and the online router
build one from plain arrays (:func:`make_problem`); :mod:`llm_energy.plan.costs` fills one from fits.

Besides "every query served once" (one row per class), a plan has a few *rows* (:class:`Row`): share
bounds per deployment, capacity per deployment, the budget, the floor. Their coefficients are scaled
to "one mean query" (:func:`row_coefficients`) so that slacks and duals are comparable across kinds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple, Sequence

import numpy as np

from llm_energy.errors import UserError, bad_value


class InfeasiblePlan(UserError):
    """No plan meets the constraints; the message names the constraints responsible."""


@dataclass(frozen=True)
class PlanProblem:
    """The planning problem on query classes (SI units; C classes x K deployments).

    ``count`` (C,) queries per class; ``tokens`` (C,) tin + tout; ``energy_j``/``runtime_s`` (C, K)
    predicted J and s per query (``runtime_s``: the query's latency, its batch's runtime); ``batch`` (K,)
    the batch size each deployment serves at (None: 1 everywhere), so a query uses ``node_s`` =
    runtime_s / batch of its deployment's node-seconds (what the capacity rows count; the latency is
    what the SLO masks); ``accuracy`` (K,) A_K; ``allowed`` (C, K) the pairs a query may go to
    (the SLO mask and, where ``context_tokens`` (K,) is known, tin + tout within the deployment's context);
    ``capacity_s`` (K,) node-seconds (inf: unlimited); ``energy_budget_j``: J or None;
    ``accuracy_floor``: minimum token-weighted mean A_K or None; ``min_share``: eps;
    ``budget_energy_j``: the energy per query the budget row counts where it is not the objective's
    (``--plan-on upper``: the prediction interval's upper end), else None.
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
    scales: tuple[float, float, float] | None = None  # (E_bar, A_bar, R_bar) from another problem, e.g. bins
    share_bounds: tuple[np.ndarray, np.ndarray] | None = None  # explicit (lo, hi) per deployment, else from eps
    budget_energy_j: np.ndarray | None = None  # (C, K) J per query the budget row counts (None: energy_j)
    context_tokens: tuple[int | None, ...] | None = None  # per deployment its context length (None: unknown)
    batch: tuple[int, ...] | None = None  # per deployment the batch size it serves at (None: 1 everywhere)

    @cached_property
    def batch_sizes(self) -> np.ndarray:
        """(K,) the batch size each deployment serves at (``batch``; 1 everywhere where it is None)."""
        return np.asarray(self.batch or (1,) * self.n_deployments, dtype=np.int64)

    @cached_property
    def node_s(self) -> np.ndarray:
        """(C, K) node-seconds one query uses: its runtime / its deployment's batch (a node serving batches of
        b finishes b queries per batch runtime). What capacity counts; ``runtime_s`` where every batch is 1."""
        if (self.batch_sizes == 1).all():
            return self.runtime_s
        return self.runtime_s / self.batch_sizes[None, :]

    @property
    def fits_context(self) -> np.ndarray:
        """(C, K): tin + tout within the deployment's context length (everywhere True where unknown). A
        model cannot serve a query longer than its context: ``allowed`` is False wherever this is."""
        return context_mask(self.tokens, self.context_tokens, self.n_deployments)

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def n_deployments(self) -> int:
        return len(self.names)

    @property
    def n_queries(self) -> int:
        return int(self.count.sum())

    @cached_property
    def share_lo(self) -> np.ndarray:
        """Least queries per deployment: ceil(eps N) (int64, K)."""
        if self.share_bounds is not None:
            return np.asarray(self.share_bounds[0], dtype=np.int64)
        n = self.n_queries
        return np.full(self.n_deployments, math.ceil(self.min_share * n - 1e-9), dtype=np.int64)

    @cached_property
    def share_hi(self) -> np.ndarray:
        """Most queries per deployment: floor((1 - eps) N) (int64, K)."""
        if self.share_bounds is not None:
            return np.asarray(self.share_bounds[1], dtype=np.int64)
        n = self.n_queries
        return np.full(self.n_deployments, math.floor((1.0 - self.min_share) * n + 1e-9), dtype=np.int64)

    def _mean_over_pairs(self, per_query: np.ndarray) -> float:
        """Mean of ``per_query`` (C, K) over queries and deployments (1 if not positive: a unit must be)."""
        v = float((self.count[:, None] * per_query).sum() / (self.n_queries * self.n_deployments))
        return v if v > 0 else 1.0

    @cached_property
    def energy_scale(self) -> float:
        """E_bar: mean predicted energy per query over queries and deployments (J)."""
        return self.scales[0] if self.scales else self._mean_over_pairs(self.energy_j)

    @cached_property
    def accuracy_scale(self) -> float:
        """A_bar: mean of A_K * (tin + tout) per query over queries and deployments."""
        if self.scales:
            return self.scales[1]
        v = float(self.accuracy.mean() * (self.count * self.tokens).sum() / self.n_queries)
        return v if v > 0 else 1.0

    @cached_property
    def runtime_scale(self) -> float:
        """R_bar: mean node-seconds per query (s; the runtime at batch 1), the unit of the capacity rows' slack."""
        return self.scales[2] if self.scales else self._mean_over_pairs(self.node_s)

    @property
    def budget_energy(self) -> np.ndarray:
        """(C, K) J per query as the budget row counts it: ``budget_energy_j``, else the predicted energy."""
        return self.energy_j if self.budget_energy_j is None else self.budget_energy_j

    def rows_of(self, rows: np.ndarray) -> dict:
        """The per-class fields of classes ``rows`` (for ``replace``): a sub-problem on some classes."""
        return {"tokens": self.tokens[rows], "energy_j": self.energy_j[rows], "runtime_s": self.runtime_s[rows],
                "allowed": self.allowed[rows],
                "budget_energy_j": None if self.budget_energy_j is None else self.budget_energy_j[rows]}

    def energy_norm(self) -> np.ndarray:
        return self.energy_j / self.energy_scale

    def accuracy_norm(self) -> np.ndarray:
        """A_K * tokens[c] / A_bar (C, K)."""
        return (self.tokens[:, None] * self.accuracy[None, :]) / self.accuracy_scale

    def raw_cost(self, zeta: float) -> np.ndarray:
        """Objective coefficient per query (C, K), SLO ignored: zeta E/E_bar - (1 - zeta) A_K tokens/A_bar."""
        return zeta * self.energy_norm() - (1.0 - zeta) * self.accuracy_norm()

    def cost(self, zeta: float) -> np.ndarray:
        """Objective coefficient per query (C, K); +inf where the SLO forbids the pair."""
        return np.where(self.allowed, self.raw_cost(zeta), np.inf)

    @property
    def share_only(self) -> bool:
        """Only share (and SLO) rows: a transportation problem, whose LP optimum is integral."""
        return not np.isfinite(self.capacity_s).any() and self.energy_budget_j is None and self.accuracy_floor is None

    @property
    def resolved_scales(self) -> tuple[float, float, float]:
        """(E_bar, A_bar, R_bar) as used here: a problem derived from this one (bins, a tie merge, one
        query per class) passes them as ``scales`` so its objective is in the same units."""
        return (self.energy_scale, self.accuracy_scale, self.runtime_scale)

    def metrics(self, x: np.ndarray) -> dict[str, float]:
        """Totals of an assignment ``x`` (C, K counts): energy J, runtime s, accuracies."""
        x = np.asarray(x, dtype=np.float64)
        tok = float((self.count * self.tokens).sum())
        return {
            "energy_j": float(np.einsum("ck,ck->", x, self.energy_j)),
            "runtime_s": float(np.einsum("ck,ck->", x, self.runtime_s)),
            "accuracy": float(np.einsum("ck,k,c->", x, self.accuracy, self.tokens) / tok) if tok else 0.0,
            "accuracy_per_query": float((x.sum(axis=0) * self.accuracy).sum() / max(self.n_queries, 1)),
        }

    def objective(self, x: np.ndarray, zeta: float) -> float:
        """The objective of an assignment ``x`` (C, K counts), in normalised units."""
        return float((np.asarray(x, dtype=np.float64) * self.raw_cost(zeta)).sum())

    def violations(self, x: np.ndarray, tol: float = 1e-6) -> list[str]:
        """Constraints an assignment breaks (empty: feasible), as short phrases."""
        x = np.asarray(x)
        over = (x > 0) & ~self.allowed
        beyond = (x > 0) & ~self.fits_context
        xf = np.asarray(x, dtype=np.float64)
        m = self.metrics(xf)
        budget_e = m["energy_j"] if self.budget_energy_j is None else float(
            np.einsum("ck,ck->", xf, self.budget_energy_j))
        n_beyond = int(x[beyond].sum()) if beyond.any() else 0
        return self.violated((int(x[over].sum()) if over.any() else 0) - n_beyond, x.sum(axis=0),
                             np.einsum("ck,ck->k", xf, self.node_s), budget_e, m["accuracy"], tol,
                             beyond_context=n_beyond)

    def violated(self, slo_over: int, per: np.ndarray, used: np.ndarray, budget_e: float, accuracy: float,
                 tol: float = 1e-6, beyond_context: int = 0) -> list[str]:
        """:meth:`violations` from an assignment's totals: queries over an SLO, queries and runtime per
        deployment (K,), the energy the budget row counts, the token-weighted accuracy, queries sent
        to a deployment whose context they exceed. ``used``: node-seconds (:attr:`PlanProblem.node_s`)."""
        out = [f"context ({beyond_context} queries beyond it)"] if beyond_context > 0 else []
        out += [f"SLO ({slo_over} queries over it)"] if slo_over > 0 else []
        lo, hi = self.share_lo, self.share_hi
        for k, name in enumerate(self.names):
            if per[k] < lo[k] - tol or per[k] > hi[k] + tol:
                out.append(f"share[{name}]")
            if used[k] > self.capacity_s[k] * (1 + 1e-9) + tol:
                out.append(f"capacity[{name}]")
        if self.energy_budget_j is not None and budget_e > self.energy_budget_j * (1 + 1e-9) + tol:
            out.append("energy budget")
        if self.accuracy_floor is not None and accuracy < self.accuracy_floor * (1 - 1e-9) - tol:
            out.append("accuracy floor")
        return out


def check_zeta(zeta: object) -> float:
    """``zeta`` as a float in [0, 1], else the UserError naming ``--zeta`` (the one check of it)."""
    if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and 0.0 <= zeta <= 1.0):
        raise bad_value("--zeta", zeta, "must be in [0, 1]")
    return float(zeta)


def check_min_share(eps: float, source: str = "--min-share") -> None:
    """A share bound eps must be in [0, 0.5] (each deployment gets between eps and 1 - eps of the queries)."""
    if not (math.isfinite(eps) and 0.0 <= eps <= 0.5):
        raise bad_value(source, eps, "must be in [0, 0.5]")


def make_problem(names: Sequence[str], count, tokens, energy_j, runtime_s, accuracy, *, min_share: float = 0.01,
                 slo_s: Sequence[float | None] | None = None, capacity_s: Sequence[float | None] | None = None,
                 energy_budget_j: float | None = None, accuracy_floor: float | None = None,
                 context_tokens: Sequence[int | None] | None = None, batch: Sequence[int] | None = None
                 ) -> PlanProblem:
    """A :class:`PlanProblem` from plain arrays (the model builder needs nothing else); ``context_tokens``
    (K,): each deployment's context length, a class with more tokens may not go there (None: unknown);
    ``batch`` (K,): the batch size each deployment serves at (None: 1), ``runtime_s`` being the batch's
    runtime (the SLO masks it; capacity counts runtime / batch)."""
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
    ctx = None if context_tokens is None or all(c is None for c in context_tokens) else tuple(
        None if c is None else int(c) for c in context_tokens)
    tokens = np.asarray(tokens, dtype=np.float64)
    allowed &= context_mask(tokens, ctx, k)
    cap = np.array([np.inf if c is None else float(c) for c in (capacity_s or (None,) * k)], dtype=np.float64)
    return PlanProblem(names=tuple(names), count=count, tokens=tokens, energy_j=e,
                       runtime_s=r, accuracy=np.asarray(accuracy, dtype=np.float64), allowed=allowed,
                       capacity_s=cap, min_share=float(min_share), energy_budget_j=energy_budget_j,
                       accuracy_floor=accuracy_floor, slo_s=slo, context_tokens=ctx,
                       batch=None if batch is None else tuple(int(b) for b in batch))


def context_mask(tokens: np.ndarray, context_tokens: Sequence[int | None] | None, k: int) -> np.ndarray:
    """(C, K): ``tokens`` (tin + tout per class) within each deployment's ``context_tokens`` (None:
    unknown, every class fits)."""
    tokens = np.asarray(tokens, dtype=np.float64)
    if context_tokens is None:
        return np.ones((tokens.shape[0], k), dtype=bool)
    ctx = np.array([np.inf if c is None else float(c) for c in context_tokens], dtype=np.float64)
    return tokens[:, None] <= ctx[None, :]


def check_problem(p: PlanProblem, source_share: str = "--min-share") -> None:
    """Fast checks that name the input at fault before any solver runs (raises :class:`InfeasiblePlan`)."""
    n, k = p.n_queries, p.n_deployments
    check_min_share(p.min_share, source_share)
    if n < 1:
        raise UserError("the workload has no queries")
    lo, hi = p.share_lo, p.share_hi
    if lo.sum() > n:
        raise InfeasiblePlan(f"{source_share}={p.min_share}: {k} deployments x at least {lo[0]} queries each "
                             f"= {int(lo.sum())} > {n} queries in the workload (shares cannot be met)")
    if hi.sum() < n:
        raise InfeasiblePlan(f"{source_share}={p.min_share}: {k} deployment(s) x at most {hi[0]} queries each "
                             f"cannot serve {n} queries (use --min-share 0 with a single deployment)")
    fits = p.fits_context
    beyond = ~fits.any(axis=1)
    if beyond.any():
        i = int(np.flatnonzero(beyond)[-1])
        raise InfeasiblePlan(f"{int(p.count[beyond].sum())} queries exceed every deployment's context length "
                             f"({_contexts(p)}), e.g. tin + tout = {p.tokens[i]:.0f} tokens: no deployment can serve them")
    none = ~p.allowed.any(axis=1)
    if none.any():
        i = int(np.flatnonzero(none)[0])
        slos = ", ".join(f"{nm} slo_s={s}" for nm, s in zip(p.names, p.slo_s or ()) if s is not None)
        fast = float(p.runtime_s[i][fits[i]].min())
        raise InfeasiblePlan(f"{int(p.count[none].sum())} queries exceed every deployment's SLO ({slos}); "
                             f"e.g. tokens={p.tokens[i]:.0f} needs at least {fast:.3g} s")
    for j, name in enumerate(p.names):
        can = int(p.count[p.allowed[:, j]].sum())
        if can < lo[j]:
            if not fits[:, j].all():  # a model cannot serve a query longer than its context
                slo = f" and slo_s={p.slo_s[j]}" if p.slo_s and p.slo_s[j] is not None else ""
                raise InfeasiblePlan(f"deployment {name!r}: its context length ({p.context_tokens[j]} tokens){slo} "
                                     f"admits {can} of the {n} queries but {source_share}={p.min_share} needs at "
                                     f"least {lo[j]} (drop it with --only, or lower {source_share})")
            raise InfeasiblePlan(f"deployment {name!r}: slo_s={p.slo_s[j] if p.slo_s else None} admits {can} "
                                 f"queries but {source_share}={p.min_share} needs at least {lo[j]}")
        if math.isfinite(p.capacity_s[j]) and lo[j] > 0:
            need = _cheapest_runtime(p.node_s[p.allowed[:, j], j], p.count[p.allowed[:, j]], int(lo[j]))
            if need > p.capacity_s[j] * (1 + 1e-9):
                raise InfeasiblePlan(f"deployment {name!r}: capacity {p.capacity_s[j]:.6g} s (nodes x hours x 3600) "
                                     f"cannot serve its minimum share of {lo[j]} queries ({source_share}="
                                     f"{p.min_share}), which needs at least {need:.6g} s")
    if np.all(np.isfinite(p.capacity_s)):
        rmin = np.where(p.allowed, p.node_s, np.inf).min(axis=1)
        need = float((rmin * p.count).sum())
        total = float(p.capacity_s.sum())
        if need > total * (1 + 1e-9):
            raise InfeasiblePlan(f"capacity: all deployments together have {total:.6g} s (nodes x hours x 3600) "
                                 f"but the workload needs at least {need:.6g} s on its fastest deployments")


def _contexts(p: PlanProblem) -> str:
    """'name: N tokens, ...' of the deployments whose context length is known."""
    return ", ".join(f"{nm}: {c} tokens" for nm, c in zip(p.names, p.context_tokens or ()) if c is not None)


def _cheapest_runtime(r: np.ndarray, n: np.ndarray, m: int) -> float:
    order = np.argsort(r)
    cum = np.cumsum(n[order])
    i = int(np.searchsorted(cum, m))
    if i >= len(order):
        return math.inf
    prev = int(cum[i - 1]) if i else 0
    return float((r[order[:i]] * n[order[:i]]).sum() + r[order[i]] * (m - prev))


ROW_SENSE = {"share_lo": ">=", "share_hi": "<=", "capacity": "<=", "budget": "<=", "floor": ">="}


class Row(NamedTuple):
    """One non-class constraint row: ``kind`` (a key of :data:`ROW_SENSE`) and ``deployment``, the
    column it is about (0 for the workload-wide budget and floor rows).

    A NamedTuple, so a Row *is* the (kind, deployment) pair: hashable, unpackable, and the key of
    the row duals (:class:`llm_energy.plan.solve.duals.RowDuals`) that cross from solver to bounds,
    binning and the online router.
    """

    kind: str
    deployment: int

    @property
    def sense(self) -> str:
        return ROW_SENSE[self.kind]

    def label(self, p: PlanProblem) -> str:
        """``budget``, ``floor`` or ``kind[deployment name]``."""
        return self.kind if self.kind in ("budget", "floor") else f"{self.kind}[{p.names[self.deployment]}]"

    def rhs(self, p: PlanProblem) -> float:
        """Right-hand side over the whole problem (scaled as :func:`row_coefficients`)."""
        kind, k = self
        if kind == "share_lo":
            return float(p.share_lo[k])
        if kind == "share_hi":
            return float(p.share_hi[k])
        if kind == "capacity":
            return float(p.capacity_s[k] / p.runtime_scale)
        if kind == "budget":
            return float(p.energy_budget_j / p.energy_scale)
        return float(p.accuracy_floor * (p.count * p.tokens).sum() / p.accuracy_scale)

    def describe(self, p: PlanProblem, slack: float) -> str:
        """This row violated by ``slack`` ('mean query' units), in words naming the input to change."""
        kind, k = self
        name = p.names[k]
        if kind == "share_lo":
            return (f"--min-share={p.min_share}: deployment {name!r} can take only {p.share_lo[k] - slack:.0f} of "
                    f"the {p.share_lo[k]} queries it must serve (its SLO, context length or capacity)")
        if kind == "share_hi":
            return (f"--min-share={p.min_share}: deployment {name!r} would have to take {slack:.0f} queries over "
                    f"its maximum of {p.share_hi[k]}")
        if kind == "capacity":
            need = slack * p.runtime_scale
            return (f"capacity of {name!r}: {p.capacity_s[k]:.6g} s (nodes x hours x 3600) is {need:.6g} s short "
                    f"(needs {p.capacity_s[k] + need:.6g} s)")
        if kind == "budget":
            need = slack * p.energy_scale
            return (f"--max-energy/--energy-budget={p.energy_budget_j:.6g} J is {need:.6g} J short: any plan "
                    f"meeting the other constraints needs at least {p.energy_budget_j + need:.6g} J")
        total_tok = float((p.count * p.tokens).sum())
        short = slack * p.accuracy_scale / total_tok
        return (f"--min-accuracy={p.accuracy_floor:g} is out of reach: plans meeting the other constraints reach "
                f"at most {p.accuracy_floor - short:.6g}")


def row_coefficients(p: PlanProblem) -> dict[str, np.ndarray]:
    """Coefficient matrices (C, K) of the capacity, budget and floor rows, scaled to 'one mean query'
    units (node-seconds / R_bar, energy / E_bar, A_K tokens / A_bar) so slacks and duals are comparable.
    (Share rows have coefficient 1 on their deployment's columns.)"""
    return {"capacity": p.node_s / p.runtime_scale, "budget": p.budget_energy / p.energy_scale,
            "floor": p.accuracy_norm()}


def per_query_problem(problem: PlanProblem, query_class: np.ndarray) -> PlanProblem:
    """The per-query formulation of ``problem``: one class of count 1 per query (``query_class[i]`` is
    query i's class), same constraints and scales. Only to check the class formulation against (tests
    and the benchmark): the planner itself never needs it."""
    q = np.asarray(query_class, dtype=np.int64)
    if np.bincount(q, minlength=problem.n_classes).tolist() != problem.count.tolist():
        raise ValueError("query_class does not match the problem's class counts")
    return replace(problem, count=np.ones(len(q), dtype=np.int64), **problem.rows_of(q), scales=problem.resolved_scales)
