"""The field checks of a FITS.json document (:mod:`llm_energy.fit.fits` reads it): each bad value is one
:class:`UserError` naming its path in the document (``deployments[0].targets.energy_j.coef``) and the value."""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_energy.errors import UserError
from llm_energy.fit.records import FitRange, SessionOffset
from llm_energy.fit.terms import design_matrix

# where every stored model must predict a finite number (issue 16: a 1e308 coefficient gave null energies)
FINITE_CHECK = {"tin": [1.0, 1.0, 131072.0, 131072.0], "tout": [1.0, 131072.0, 1.0, 131072.0]}


def _check_finite(terms: list[str], coef: list[float], where: str) -> None:
    """Predictions finite over 1..131072 tokens and batch 1..4096 (a huge coefficient overflows)."""
    tin, tout = np.array(FINITE_CHECK["tin"] * 2), np.array(FINITE_CHECK["tout"] * 2)
    batch = np.repeat([1.0, 4096.0], 4)
    with np.errstate(all="ignore"):
        pred = design_matrix(terms, tin, tout, batch) @ np.asarray(coef, dtype=float)
    bad = np.flatnonzero(~np.isfinite(pred))
    if bad.size:
        i = bad[0]
        raise UserError(f"{where}.coef={coef!r}: predicts a non-finite value (tin={int(tin[i])}, tout={int(tout[i])}, "
                        f"batch={int(batch[i])}); coefficients too large")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _check_interval(iv: Any, where: str) -> dict[str, Any]:
    """A target's interval: null or missing means none (predictions get null bounds, never NaN);
    otherwise q_lo and q_hi are both finite numbers with q_lo <= q_hi, or both null."""
    if iv is None:
        return {}
    if not isinstance(iv, dict):
        raise UserError(f"{where}={iv!r}: expected an object with q_lo and q_hi, or null")
    lo, hi = iv.get("q_lo"), iv.get("q_hi")
    if lo is None and hi is None:
        return dict(iv)
    for k, v in (("q_lo", lo), ("q_hi", hi)):
        if not _is_number(v):
            raise UserError(f"{where}.{k}={v!r}: expected a finite number (both q_lo and q_hi, or neither)")
    if lo > hi:
        raise UserError(f"{where}.q_lo={lo!r}: greater than q_hi={hi!r}")
    return dict(iv)


def _check_idle(w: Any, where: str) -> float | None:
    """A deployment's idle power: null or absent (unknown), else a finite number of watts >= 0."""
    if w is None:
        return None
    if not _is_number(w) or w < 0:
        raise UserError(f"{where}.idle_w={w!r}: expected idle power in W (a finite number >= 0) or null")
    return float(w)


def _check_level_card(v: Any, where: str) -> str | None:
    """``fit --level-card``'s card: absent or null (the middle level), else a non-empty string."""
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise UserError(f"{where}.level_card={v!r}: expected a card's NVML UUIDs, '+'-joined, or null")
    return v


def _check_session_levels(v: Any, where: str) -> list[SessionOffset]:
    """``fit --session-levels``' levels: absent or null (none), else a list of {session: non-empty string,
    n: int >= 0, energy, runtime: finite numbers > -1, card: string or null}."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise UserError(f"{where}.session_levels={v!r}: expected a list of session levels or null")
    out = []
    for i, s in enumerate(v):
        at = f"{where}.session_levels[{i}]"
        if not isinstance(s, dict):
            raise UserError(f"{at}={s!r}: expected an object with session, n, energy, runtime")
        if not isinstance(s.get("session"), str) or not s["session"]:
            raise UserError(f"{at}.session={s.get('session')!r}: expected a non-empty string")
        n = s.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UserError(f"{at}.n={n!r}: expected a whole number of trials >= 0")
        for k in ("energy", "runtime"):
            if not _is_number(s.get(k)) or s[k] <= -1:
                raise UserError(f"{at}.{k}={s.get(k)!r}: expected a finite number > -1 (measured / fitted - 1)")
        if s.get("card") is not None and not isinstance(s["card"], str):
            raise UserError(f"{at}.card={s['card']!r}: expected a string (NVML UUIDs) or null")
        out.append(SessionOffset.from_dict(s))
    return out


def _check_range(r: Any, where: str) -> FitRange | None:
    """A deployment's fitted range: absent or null (unknown), else {tin, tout, batch: [min, max]}."""
    if r is None:
        return None
    ok = isinstance(r, dict) and all(isinstance(r.get(k), list) and len(r[k]) == 2 and all(map(_is_number, r[k]))
                                     and r[k][0] <= r[k][1] for k in ("tin", "tout", "batch"))
    if not ok:
        raise UserError(f"{where}.range={r!r}: expected {{tin, tout, batch: [min, max]}} or null")
    return FitRange.from_dict(r)


def _check_batch(b: Any, where: str) -> int | str:
    """A deployment's batch: a positive integer, or '*' for a fit pooled over batch sizes."""
    if b == "*" or (isinstance(b, int) and not isinstance(b, bool) and b >= 1):
        return b
    raise UserError(f"{where}.batch={b!r}: expected a positive integer, or '*' for a fit pooled over batch sizes")

