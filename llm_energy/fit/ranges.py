"""How much of a workload a fits file extrapolates: queries (and their predicted energy) outside the
tokens and batch sizes each deployment was fitted on, or beyond its model's context length.

:func:`range_report` is what ``plan`` (and ``route``) call on the queries they send to each
deployment; :class:`RangeReport` says how many and what share of the predicted energy, per deployment,
with a one-line :meth:`RangeReport.warning`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from llm_energy.fit.fits import FitsFile, find_fit, predict


@dataclass
class RangeReport:
    """Queries (weighted by count and by the share sent to each deployment) and their predicted energy
    (J) outside the fitted range, and beyond the context length; ``unknown``: deployments whose fits
    do not say what they were fitted on (older or hand-written fits files), counted in neither.

    ``beyond_context`` (and its energy, share and per-deployment count) counts what the ``assignment``
    sends past a deployment's context length. ``plan`` and ``route`` never do (the pair is infeasible,
    and the queries beyond every deployment's context are taken out first and counted in their
    summary's ``beyond_context``, :class:`llm_energy.plan.context.ContextReport`), so there it is 0 by
    construction and kept as a key; it counts for a caller's own assignment (or the default: every
    query to every deployment)."""

    queries: float
    energy_j: float
    outside: float = 0.0
    energy_outside_j: float = 0.0
    beyond_context: float = 0.0
    energy_beyond_context_j: float = 0.0
    by_deployment: dict[str, dict[str, float]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def energy_share_outside(self) -> float:
        return self.energy_outside_j / self.energy_j if self.energy_j > 0 else 0.0

    @property
    def energy_share_beyond_context(self) -> float:
        return self.energy_beyond_context_j / self.energy_j if self.energy_j > 0 else 0.0

    def warning(self) -> str | None:
        """One line when anything is extrapolated (None otherwise): the queries outside their deployment's
        fitted range, those beyond its model's context length, and the deployments whose fits record no
        range (older or hand-written files), which could not be checked."""
        if not self.outside and not self.beyond_context:
            return None
        parts = []
        if self.outside:
            by = ", ".join(f"{k}: {v['outside']:.0f}" for k, v in self.by_deployment.items() if v["outside"])
            parts.append(f"{self.outside:.0f} of {self.queries:.0f} queries ({100 * self.energy_share_outside:.1f}% of "
                         f"the predicted energy) lie outside the range their deployment was fitted on ({by})")
        if self.beyond_context:
            parts.append(f"{self.beyond_context:.0f} of {self.queries:.0f} queries "
                         f"({100 * self.energy_share_beyond_context:.1f}% of the energy) exceed the model's context length")
        tail = ": their predictions are extrapolations"
        if self.unknown:
            tail += f" (the fitted range of {', '.join(self.unknown)} is not recorded: not checked)"
        return "; ".join(parts) + tail

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["energy_share_outside"] = self.energy_share_outside
        d["energy_share_beyond_context"] = self.energy_share_beyond_context
        return d


def _pairs(deployments: Sequence[Any]) -> list[tuple[str, str]]:
    """(name, fit key) of each deployment: a key string, a (name, key) pair, or an object with
    ``name`` and ``fit`` (a plan's Deployment)."""
    out = []
    for d in deployments:
        if isinstance(d, str):
            out.append((d, d))
        elif isinstance(d, tuple):
            out.append((str(d[0]), str(d[1])))
        else:
            out.append((str(d.name), str(d.fit)))
    return out


def range_report(fits: FitsFile, deployments: Sequence[Any], tin, tout, batch=None, *, count=None,
                 assignment=None, energy_j=None, context_tokens: Sequence[int | None] | None = None) -> RangeReport:
    """Queries ``tin``, ``tout`` (C,), ``count`` each (default 1), sent to ``deployments`` (K) as
    ``assignment`` says (C, K, times ``count``: shares of each class, or with no count the planner's
    query counts; default: every query to every deployment); ``batch``: the batch
    size each deployment runs at (scalar or (K,); default its fit's own, 1 for a pooled fit);
    ``energy_j`` (C, K) the predicted energy per query (default: predicted here, per request);
    ``context_tokens`` (K,) each deployment's context length where the caller resolved it (a deployments
    file's ``context_tokens``), default its fit's :attr:`~llm_energy.fit.fits.DeploymentFit.context_limit`."""
    pairs = _pairs(deployments)
    i, o = np.asarray(tin, dtype=float), np.asarray(tout, dtype=float)
    n = np.ones_like(i) if count is None else np.asarray(count, dtype=float)
    x = np.ones((i.size, len(pairs))) if assignment is None else np.asarray(assignment, dtype=float)
    b_all = None if batch is None else np.broadcast_to(np.asarray(batch, dtype=float), (len(pairs),))
    w = n[:, None] * x
    rep = RangeReport(queries=float(w.sum()), energy_j=0.0)
    for k, (name, key) in enumerate(pairs):
        dep = find_fit(fits, key)
        b = b_all[k] if b_all is not None else (dep.batch if isinstance(dep.batch, int) else 1)
        if energy_j is None:
            e = predict(fits, key, i, o, None if dep.batch != "*" else np.full(i.size, int(b)),
                        per_request=True)["energy_j"].to_numpy()
        else:
            e = np.asarray(energy_j, dtype=float)[:, k]
        e = np.maximum(e, 0.0) * w[:, k]
        rep.energy_j += float(e.sum())
        row = {"queries": float(w[:, k].sum()), "outside": 0.0, "beyond_context": 0.0}
        if dep.range is None:
            rep.unknown.append(name)
        else:
            out = ~dep.range.contains(i, o, b)
            row["outside"] = float(w[out, k].sum())
            rep.outside += row["outside"]
            rep.energy_outside_j += float(e[out].sum())
        ctx = dep.context_limit if context_tokens is None else context_tokens[k]
        if ctx:
            beyond = i + o > ctx
            row["beyond_context"] = float(w[beyond, k].sum())
            rep.beyond_context += row["beyond_context"]
            rep.energy_beyond_context_j += float(e[beyond].sum())
        rep.by_deployment[name] = row
    return rep
