"""The term vocabulary of fitted models: each term is a function of (tin, tout, batch) that is
non-negative and non-decreasing in all three, so a model with non-negative coefficients predicts
non-negative values that never fall as tokens or batch grow.

Fixed terms are in :data:`TERMS`. Two families carry a knot ``K`` in their name (a number), so a
fitted roofline is stored as data like every other term:

* ``sum_j(tin+j-K)+`` and ``sum_j(tin+j-K)+^2``: over the decode steps j = 0..tout-1 (each
  reprocessing L = tin + j tokens when there is no KV cache), the sum of max(0, L - K) and of its
  square. A step costing max(m, a*L + b*L^2) is exactly m + a'*(L-K)+ + b*((L-K)+)^2 with K where the
  compute line crosses the floor m, so ``m*tout + a'*sum_j(..)+ + b*sum_j(..)+^2`` is the roofline.
* ``tout*(batch-K)+``: per decode step, max(0, batch - K): a step whose cost is the larger of the
  weights' memory floor and a compute term proportional to the batch.
* ``sum_j(batch*(tin+j)-K)+``: over the decode steps, max(0, batch x L - K), L = tin + j: a step
  whose cost is the larger of a floor (the weights' memory traffic, or the host's launch time in an
  eager backend) and the work that grows with the batch's tokens of context (its KV-cache traffic).
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

Term = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

TERMS: dict[str, Term] = {
    "1": lambda i, o, b: np.ones_like(i),
    "tin": lambda i, o, b: i,
    "tout": lambda i, o, b: o,
    "tin*tout": lambda i, o, b: i * o,
    "tin^2": lambda i, o, b: i * i,
    "tout^2": lambda i, o, b: o * o,
    "tin^2*tout": lambda i, o, b: i * i * o,
    "tin*tout^2": lambda i, o, b: i * o * o,
    "tout^3": lambda i, o, b: o * o * o,
    "batch": lambda i, o, b: b,
    "batch*tin": lambda i, o, b: b * i,
    "batch*tin^2": lambda i, o, b: b * i * i,
    "batch*tout": lambda i, o, b: b * o,
    "batch*tin*tout": lambda i, o, b: b * i * o,
    "batch*tout^2": lambda i, o, b: b * o * o,
}

_NUM = r"(\d+(?:\.\d+)?)"
_KNOTTED = {
    re.compile(rf"^sum_j\(tin\+j-{_NUM}\)\+$"): lambda k: lambda i, o, b: _hinge_sum(i, o, k, 1),
    re.compile(rf"^sum_j\(tin\+j-{_NUM}\)\+\^2$"): lambda k: lambda i, o, b: _hinge_sum(i, o, k, 2),
    re.compile(rf"^tout\*\(batch-{_NUM}\)\+$"): lambda k: lambda i, o, b: o * np.maximum(b - k, 0.0),
    re.compile(rf"^sum_j\(batch\*\(tin\+j\)-{_NUM}\)\+$"): lambda k: lambda i, o, b: _batch_hinge_sum(i, o, b, k),
}


def _power_sum(n: np.ndarray, p: int) -> np.ndarray:
    """sum_{e=1..n} e^p for n >= 0 (0 for n < 1)."""
    n = np.maximum(n, 0.0)
    return n * (n + 1) / 2 if p == 1 else n * (n + 1) * (2 * n + 1) / 6


def _hinge_sum(tin: np.ndarray, tout: np.ndarray, k: float, p: int) -> np.ndarray:
    """sum over j = 0..tout-1 of max(0, tin + j - k)^p, in closed form (tokens may be non-integers:
    the excess runs from tin - k to tin + tout - 1 - k in steps of 1)."""
    first = tin - k  # excess of step 0
    last = first + tout - 1
    # steps with a positive excess: those from max(0, ceil-ish) to last; with integer tin, tout, k exact
    lo = np.maximum(first, 0.0)
    n_pos = np.where(last >= lo, np.floor(last - lo) + 1, 0.0)
    # sum of (lo + m)^p for m = 0..n_pos-1 == S_p(lo + n_pos - 1) - S_p(lo - 1) when lo is an integer
    top = lo + n_pos - 1
    return np.where(n_pos > 0, _power_sum(top, p) - _power_sum(lo - 1, p), 0.0)


def _batch_hinge_sum(tin: np.ndarray, tout: np.ndarray, batch: np.ndarray, k: float) -> np.ndarray:
    """sum over j = 0..tout-1 of max(0, batch (tin + j) - k), in closed form: the steps j >= j0 (the
    first with a positive excess) contribute batch (tin + j) - k each."""
    n = np.maximum(tout, 0.0)
    j0 = np.clip(np.floor(k / batch - tin) + 1.0, 0.0, None)
    m = np.maximum(n - j0, 0.0)
    return np.where(m > 0, batch * (m * tin + (j0 + n - 1.0) * m / 2.0) - k * m, 0.0)


def term_function(name: str) -> Term | None:
    """The function of a term name (fixed or knotted), or None for an unknown name."""
    if name in TERMS:
        return TERMS[name]
    for pat, make in _KNOTTED.items():
        m = pat.match(name)
        if m:
            return make(float(m.group(1)))
    return None


def knotted(template: str, k: float) -> str:
    """A knotted term's name: ``template`` with ``{K}`` replaced by the knot (integers without '.0')."""
    return template.replace("{K}", f"{k:g}")


def design_matrix(terms: list[str], tin, tout, batch=None) -> np.ndarray:
    i = np.asarray(tin, dtype=float)
    o = np.asarray(tout, dtype=float)
    b = np.ones_like(i) if batch is None else np.asarray(batch, dtype=float) * np.ones_like(i)
    cols = []
    for t in terms:
        f = term_function(t)
        if f is None:
            raise KeyError(t)
        cols.append(f(i, o, b))
    return np.column_stack(cols) if cols else np.empty((i.size, 0))
