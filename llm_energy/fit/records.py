"""Typed records of a fitted target model: statistics, cross-validation, interval, candidate forms.

They cross from the fit stage into the report tables, ``fit --json``/``--candidates``, the planner and
the benchmarks, so they are records with named fields rather than dicts read by string key. Each has
``to_dict`` (the exact objects FITS.json holds, key for key) and ``from_dict`` (lenient: unknown keys
are ignored, missing ones are None; :func:`llm_energy.fit.fits.load_fits` validates what it must).
An absent record (a published fit has no CV, no interval and no candidates) is ``None`` on the
:class:`~llm_energy.fit.fits.TargetModel` and ``{}`` in the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# FitStats keys written for every fitted model, in file order (r2_statsmodels and accuracy follow when set)
_FITTED_STATS = ("n", "terms_fitted", "se", "ci95_lo", "ci95_hi", "pvalues", "f", "f_pvalue", "r2_uncentered",
                 "r2_centered")


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(d).items() if k in names}


@dataclass
class FitStats:
    """In-sample statistics of one fit (statsmodels), per fitted term where a list.

    ``n`` is None for a model that was not fitted here (published coefficients, or NNLS keeping no
    term); ``terms_fitted`` is None for the paper form (all its terms are fitted), else the terms NNLS
    kept. ``r2_uncentered`` is what a no-intercept OLS reports (the paper's R^2); ``r2_statsmodels``
    (paper form only) is statsmodels' own, equal to it. ``accuracy`` is a published fit's accuracy.
    """

    n: int | None = None
    terms_fitted: list[str] | None = None
    se: list[float] = field(default_factory=list)
    ci95_lo: list[float] = field(default_factory=list)
    ci95_hi: list[float] = field(default_factory=list)
    pvalues: list[float] = field(default_factory=list)
    f: float | None = None
    f_pvalue: float | None = None
    r2_uncentered: float | None = None
    r2_centered: float | None = None
    r2_statsmodels: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out = {k: d[k] for k in _FITTED_STATS} if self.n is not None else {}
        out.update({k: d[k] for k in ("r2_statsmodels", "accuracy") if d[k] is not None})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FitStats":
        return cls(**_known(cls, d or {}))


@dataclass
class CVResult:
    """Held-out relative error |pred - y| / y of K-fold cross-validation over cells."""

    median: float
    p90: float
    folds: int | None = None
    seed: int | None = None
    unit: str = "relative error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CVResult | None":
        k = _known(cls, d or {})
        if k.get("median") is None and k.get("p90") is None:
            return None
        return cls(**{"median": float("nan"), "p90": float("nan"), **k})


@dataclass
class Interval:
    """A prediction interval as relative bounds: ``base x (1 + q_lo) .. base x (1 + q_hi)`` with
    ``base = max(pred, floor)``; q_lo and q_hi are both None when there were no held-out residuals to
    take them from.

    ``cv-conformal-ratio`` (this version): split-conformal quantiles of the held-out ratio y / base,
    so q_lo > -1 and the lower bound is never negative. ``floor`` (J or s; None in older files) keeps
    the base positive where a form predicts zero or less (the paper form). ``coverage_cv``: the share
    of held-out rows inside the interval when each fold's interval is taken from the other folds'
    residuals (None in older files).
    """

    level: float | None = None
    q_lo: float | None = None
    q_hi: float | None = None
    method: str | None = None
    floor: float | None = None
    coverage_cv: float | None = None

    @property
    def bounded(self) -> bool:
        return self.q_lo is not None and self.q_hi is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in ("floor", "coverage_cv") or v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Interval | None":
        return cls(**_known(cls, d)) if d else None


@dataclass
class SessionOffset:
    """One profiler session's level in a fit with the sessions as a factor (``fit --session-levels``): its
    trials' measured / fitted - 1 against the fit of the middle level (medians), per target; ``card``: the
    GPU(s) it ran on where its run recorded them (NVML UUIDs, "+"-joined)."""

    session: str
    n: int
    energy: float
    runtime: float
    card: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SessionOffset":
        return cls(**_known(cls, d))


@dataclass
class Candidate:
    """One candidate form of a (deployment, target): its held-out median and p90 relative error,
    whether it is physically sane, whether it could be chosen (``eligible``: False for a form without
    a batch term where the trials span batch sizes; True in older files) and whether it was."""

    form: str
    median: float = float("nan")
    p90: float = float("nan")
    sane: bool = False
    chosen: bool = False
    eligible: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(**_known(cls, d))


@dataclass
class FitRange:
    """What a deployment was fitted on: min and max of the (actual) input and output tokens and of the
    batch size over its trials. A query outside it is an extrapolation."""

    tin: tuple[float, float]
    tout: tuple[float, float]
    batch: tuple[float, float]

    def contains(self, tin, tout, batch):
        """Boolean array: each (tin, tout, batch) within the range (numpy broadcasting)."""
        import numpy as np

        t, o, b = (np.asarray(v, dtype=float) for v in (tin, tout, batch))
        return ((t >= self.tin[0]) & (t <= self.tin[1]) & (o >= self.tout[0]) & (o <= self.tout[1])
                & (b >= self.batch[0]) & (b <= self.batch[1]))

    def describe(self) -> str:
        def f(lo, hi):
            return f"{lo:g}..{hi:g}"

        return f"tin {f(*self.tin)}, tout {f(*self.tout)}, batch {f(*self.batch)}"

    def to_dict(self) -> dict[str, Any]:
        return {k: [float(v[0]), float(v[1])] for k, v in (("tin", self.tin), ("tout", self.tout),
                                                           ("batch", self.batch))}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FitRange | None":
        if not d:
            return None
        return cls(**{k: (float(d[k][0]), float(d[k][1])) for k in ("tin", "tout", "batch")})
