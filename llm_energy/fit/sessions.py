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

from llm_energy.fit.fits import FitsFile
from llm_energy.fit.forms import FitOptions, _prepared
from llm_energy.fit.validate import fitted_values
from llm_energy.measure.quality import short_card

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
    card: str | None = None  # the GPU(s) that measured it: NVML UUIDs as the run recorded them, "+"-joined

    def label(self) -> str:
        return f"{self.session} on {short_card(self.card)}" if self.card else self.session


@dataclass(frozen=True)
class SessionSpread:
    """A deployment's sessions (at least two of ``MIN_TRIALS`` trials or more), in their first trial's order."""

    deployment: str
    levels: tuple[SessionLevel, ...]

    def spread(self, target: str = "energy") -> float:
        v = [getattr(s, target) for s in self.levels]
        return max(v) - min(v)

    def line(self) -> str:
        per = ", ".join(f"{s.label()} {100 * s.energy:+.1f}% ({s.n} trials; runtime {100 * s.runtime:+.1f}%)"
                        for s in self.levels)
        return (f"{self.deployment}: its sessions measured {100 * self.spread('energy'):.1f}% apart in energy "
                f"(median measured / fitted - 1: {per}); a fit pooled over them carries that as error, and "
                f"stores of different sessions compare within it")


def session_cards(dirs: list[str]) -> dict[str, str]:
    """Per profiler session of the stores in ``dirs``: the GPU card(s) its run recorded (NVML UUIDs, "+"-joined
    over the run's GPUs); sessions recorded before the UUID was are absent."""
    from llm_energy.trials.store import open_store

    out: dict[str, str] = {}
    for d in dirs:
        for info in open_store(d).sweeps().values():
            for run in info.runs:
                meters = run.get("meters") or {}
                ids = [m["uuid"] for dev, m in sorted(meters.items()) if isinstance(m, dict) and m.get("uuid")]
                if ids and run.get("session"):
                    out[run["session"]] = "+".join(ids)
    return out


def session_spreads(trials: pl.DataFrame, fits: FitsFile, opts: FitOptions | None = None,
                    cards: dict[str, str] | None = None) -> list[SessionSpread]:
    """Every fitted deployment whose trials come from two or more sessions of ``MIN_TRIALS`` trials or more;
    ``cards`` (:func:`session_cards`) names the card of each session that recorded it."""
    opts = opts or FitOptions()
    if "session" not in trials.columns:
        return []
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad") & pl.col("session").is_not_null())
    out = []
    for (dep,), g in df.sort("t_start" if "t_start" in df.columns else "session").group_by("_dep", maintain_order=True):
        if dep not in fits.deployments or g["session"].n_unique() < 2:
            continue
        fitted = fitted_values(fits, dep, g)
        g = g.with_columns(_re=_ratio(g[opts.energy_column], fitted["energy_j"][0]),
                           _rr=_ratio(g["runtime_s"], fitted["runtime_s"][0]))
        levels = (g.group_by("session", maintain_order=True)
                  .agg(pl.col("_re").is_not_null().sum().alias("n"), pl.col("_re").median().alias("e"),
                       pl.col("_rr").median().alias("r"))
                  .filter(pl.col("n") >= MIN_TRIALS))
        if levels.height >= 2:
            out.append(SessionSpread(dep, tuple(SessionLevel(s, int(n), float(e), float(r), (cards or {}).get(s))
                                                for s, n, e, r in levels.iter_rows())))
    return out


def _ratio(measured: pl.Series, fitted: np.ndarray) -> pl.Series:
    """measured / fitted - 1 per trial; null where the fitted value is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = measured.to_numpy().astype(float) / fitted - 1.0
    return pl.Series(np.where(fitted > 0, r, np.nan)).fill_nan(None)


def session_warnings(spreads: list[SessionSpread], limit: float = SPREAD_LIMIT) -> list[str]:
    """One line per deployment whose sessions' energy medians lie more than ``limit`` apart."""
    return [s.line() for s in spreads if s.spread("energy") > limit]
