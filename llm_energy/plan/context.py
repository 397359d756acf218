"""Context lengths: a model cannot serve a query whose tin + tout exceeds its context length.

:func:`context_limits` says each deployment's context length: the deployments file's ``context_tokens``,
else its fit's (:attr:`llm_energy.fit.fits.DeploymentFit.context_limit`: the fits file's
``context_tokens``, or for older and published files the shipped preset's ``max_position_embeddings``
of its model), else unknown (None: no limit, nothing changes). ``plan`` and ``route`` make every
(query, deployment) pair beyond it ineligible (:attr:`llm_energy.plan.problem.PlanProblem.allowed`,
``route.fleet.Fleet.allowed``); queries beyond *every* deployment's context can be served by none:
:func:`split_servable` takes them out of the plan (or the routed trace), counted in a
:class:`ContextReport` (summary.json ``beyond_context``) with one warning line, or, with
``--out-of-range refuse``, refuses the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


def context_limits(fits: Any, deployments: Any) -> tuple[int | None, ...]:
    """Per deployment (a DeploymentsFile's, in order) its context length in tokens, or None if unknown."""
    fitted = getattr(fits, "deployments", None)
    out = []
    for d in deployments.deployments:
        ctx = d.context_tokens
        if ctx is None and isinstance(fitted, dict) and d.fit in fitted:
            ctx = getattr(fitted[d.fit], "context_limit", None)
        out.append(None if ctx is None else int(ctx))
    return tuple(out)


@dataclass(frozen=True)
class ContextReport:
    """``context_tokens`` {deployment: tokens or None (unknown)}; ``excluded`` {deployment: queries of the
    workload beyond its context, which it is never given}; ``unservable``: queries beyond every
    deployment's context (not planned, not routed), ``examples`` of them as (tin, tout); ``queries``:
    the workload's queries."""

    queries: int
    context_tokens: dict[str, int | None]
    excluded: dict[str, int]
    unservable: int = 0
    examples: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "context_tokens": self.context_tokens, "excluded": self.excluded,
                "unservable": self.unservable, "examples": [{"tin": a, "tout": b} for a, b in self.examples]}

    def warning(self, what: str = "planned") -> str | None:
        """One line when some queries fit no deployment's context (None otherwise)."""
        if not self.unservable:
            return None
        ctx = ", ".join(f"{n}: {c}" for n, c in self.context_tokens.items() if c is not None)
        ex = ", ".join(f"tin={a},tout={b}" for a, b in self.examples[:3])
        return (f"{self.unservable} of {self.queries} queries exceed every deployment's context length ({ctx} "
                f"tokens), e.g. {ex}: no deployment can serve them, so they are not {what} "
                f"(beyond_context in summary.json)")


def split_servable(names: Sequence[str], contexts: Sequence[int | None], tin: np.ndarray, tout: np.ndarray,
                   ) -> tuple[ContextReport | None, np.ndarray]:
    """The report and a mask (N,) of the queries some deployment's context takes; (None, all True) where
    no context length is known."""
    tin, tout = np.asarray(tin), np.asarray(tout)
    keep = np.ones(tin.shape[0], dtype=bool)
    if all(c is None for c in contexts):
        return None, keep
    tokens = tin.astype(np.int64) + tout.astype(np.int64)
    excluded = {n: int((tokens > c).sum()) if c is not None else 0 for n, c in zip(names, contexts)}
    if any(c is None for c in contexts):
        bad = np.zeros_like(keep)
    else:
        bad = tokens > max(int(c) for c in contexts)
    pairs = sorted({(int(a), int(b)) for a, b in zip(tin[bad], tout[bad])}, key=lambda q: (-(q[0] + q[1]), q))
    report = ContextReport(queries=int(tin.shape[0]), context_tokens=dict(zip(names, contexts)), excluded=excluded,
                           unservable=int(bad.sum()), examples=pairs[:3])
    return report, ~bad
