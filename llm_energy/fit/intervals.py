"""Prediction intervals that mean what they say: split-conformal on cross-validated ratios.

Every row's held-out prediction comes from a fit that did not see its cell (K-fold over cells). The
interval is ``base x r_lo .. base x r_hi`` with ``base = max(pred, floor)`` and r_lo, r_hi the
conformal order statistics of the held-out ratios y / base (at the 1-based positions (n+1) a and
(n+1)(1 - a), a = (1 - level) / 2, interpolated between neighbours). A ratio of positive numbers is
positive, so the lower bound is never negative and never above the upper one; ``floor`` (a
thousandth of the smallest measured value) keeps the base positive where a form predicts zero or
less, as the paper form does for short requests. Stored as relative bounds (q = r - 1).

Coverage is checked the same way, per deployment: each fold's rows against the interval taken from
the other folds' ratios only (``Interval.coverage_cv``).
"""

from __future__ import annotations

import math

import numpy as np

from llm_energy.fit.records import Interval

FLOOR_FRACTION = 1e-3


def conformal_ratios(r: np.ndarray, level: float) -> tuple[float, float]:
    """The split-conformal lower and upper bounds of the ratios ``r`` at ``level``: the order
    statistics at the 1-based positions (n+1)·a and (n+1)·(1-a), a = (1 - level) / 2, interpolated
    between neighbours (so a new exchangeable ratio falls inside with probability ``level``; the
    integer positions, floor and ceil, would make it >= level and on 81 cells about 92%)."""
    s = np.sort(np.asarray(r, dtype=float))
    n = s.size
    a = (1.0 - level) / 2.0

    def at(pos: float) -> float:
        pos = min(max(pos, 1.0), float(n))
        k = math.floor(pos)
        return float(s[k - 1] if k >= n else s[k - 1] + (pos - k) * (s[k] - s[k - 1]))

    return at((n + 1) * a), at((n + 1) * (1.0 - a))


def conformal_interval(y: np.ndarray, held: np.ndarray, fold: np.ndarray, level: float) -> Interval:
    """The interval of a target from its held-out predictions ``held`` (NaN: not predicted)."""
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(held)
    if not ok.any():
        return Interval(level=level, q_lo=None, q_hi=None, method="cv-conformal-ratio")
    floor = FLOOR_FRACTION * float(np.min(y))
    r = y[ok] / np.maximum(held[ok], floor)
    lo, hi = conformal_ratios(r, level)
    return Interval(level=level, q_lo=lo - 1.0, q_hi=hi - 1.0, method="cv-conformal-ratio", floor=floor,
                    coverage_cv=cv_coverage(r, fold[ok], level))


def cv_coverage(r: np.ndarray, fold: np.ndarray, level: float) -> float | None:
    """Share of rows inside the interval made from the other folds' ratios (None with one fold)."""
    folds = np.unique(fold)
    if folds.size < 2:
        return None
    inside = 0
    for f in folds:
        test = fold == f
        lo, hi = conformal_ratios(r[~test], level)
        inside += int(((r[test] >= lo) & (r[test] <= hi)).sum())
    return inside / r.size
