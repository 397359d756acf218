"""Whether the profiler sessions pooled in one deployment's fit measured at the same level.

A deployment's trials may come from several profiler runs (``session``: a resumed sweep, a store grown over
days), and those runs from different machines of one kind. The lent H200s are not one card: at the same
ms/step, whole sessions drew about 10% less or more power than the others (``docs/h200.md``, "Eleventh and
twelfth sessions"). A fit pooled over them carries that as error, and a comparison of two stores measured in
different sessions carries it as a difference. Per deployment and session, the median of measured / fitted -
1 shows it: one level for every session is what a pooled fit assumes.

The sessions may have measured different cells, so a form that misses some cells shows up here too; the
runtime's medians are the control (a session whose energy is off the fit while its runtime is on it drew a
different power for the same work).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from llm_energy.fit.fits import TARGETS, FitsFile, predict
from llm_energy.fit.forms import FitOptions, _prepared

# sessions of fewer trials are left out (a median of one or two trials says little); a spread of the
# sessions' energy medians above this is reported
MIN_TRIALS = 3
SPREAD_LIMIT = 0.05


@dataclass(frozen=True)
class SessionLevel:
    """One session's trials of one deployment against the deployment's fit: median measured / fitted - 1."""

    session: str
    n: int
    energy: float
    runtime: float


@dataclass(frozen=True)
class SessionSpread:
    """A deployment's sessions (at least two of ``MIN_TRIALS`` trials or more), in their first trial's order."""

    deployment: str
    levels: tuple[SessionLevel, ...]

    def spread(self, target: str = "energy") -> float:
        v = [getattr(s, target) for s in self.levels]
        return max(v) - min(v)

    def line(self) -> str:
        per = ", ".join(f"{s.session} {100 * s.energy:+.1f}% ({s.n} trials; runtime {100 * s.runtime:+.1f}%)"
                        for s in self.levels)
        return (f"{self.deployment}: its sessions measured {100 * self.spread('energy'):.1f}% apart in energy "
                f"(median measured / fitted - 1: {per}); a fit pooled over them carries that as error, and "
                f"stores of different sessions compare within it")


def session_spreads(trials: pl.DataFrame, fits: FitsFile, opts: FitOptions | None = None) -> list[SessionSpread]:
    """Every fitted deployment whose trials come from two or more sessions of ``MIN_TRIALS`` trials or more."""
    opts = opts or FitOptions()
    if "session" not in trials.columns:
        return []
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad") & pl.col("session").is_not_null())
    out = []
    for (dep,), g in df.sort("t_start" if "t_start" in df.columns else "session").group_by("_dep", maintain_order=True):
        if dep not in fits.deployments or g["session"].n_unique() < 2:
            continue
        fitted = _fitted(fits, dep, g)
        g = g.with_columns(_re=_ratio(g[opts.energy_column], fitted["energy_j"]),
                           _rr=_ratio(g["runtime_s"], fitted["runtime_s"]))
        levels = (g.group_by("session", maintain_order=True)
                  .agg(pl.col("_re").is_not_null().sum().alias("n"), pl.col("_re").median().alias("e"),
                       pl.col("_rr").median().alias("r"))
                  .filter(pl.col("n") >= MIN_TRIALS))
        if levels.height >= 2:
            out.append(SessionSpread(dep, tuple(SessionLevel(s, int(n), float(e), float(r))
                                                for s, n, e, r in levels.iter_rows())))
    return out


def _fitted(fits: FitsFile, dep: str, g: pl.DataFrame) -> dict[str, np.ndarray]:
    """Each target's fitted value per trial, on the tokens its form was fitted on (the paper form: the
    requested ones, as fit_deployments does); one prediction per set of tokens."""
    d = fits.deployments[dep]
    tokens = {t: ("tin", "tout") if d.targets[t].form == "paper" else ("_tin", "_tout") for t in TARGETS}
    batch = g["_batch"].to_numpy().astype(np.int64) if d.batch == "*" else None
    pred = {c: predict(fits, dep, g[c[0]].to_numpy().astype(float), g[c[1]].to_numpy().astype(float), batch)
            for c in set(tokens.values())}
    return {t: pred[c][t].to_numpy() for t, c in tokens.items()}


def _ratio(measured: pl.Series, fitted: np.ndarray) -> pl.Series:
    """measured / fitted - 1 per trial; null where the fitted value is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = measured.to_numpy().astype(float) / fitted - 1.0
    return pl.Series(np.where(fitted > 0, r, np.nan)).fill_nan(None)


def session_warnings(spreads: list[SessionSpread], limit: float = SPREAD_LIMIT) -> list[str]:
    """One line per deployment whose sessions' energy medians lie more than ``limit`` apart."""
    return [s.line() for s in spreads if s.spread("energy") > limit]
