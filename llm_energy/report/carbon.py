"""Carbon (gCO2e) from energy and a grid's carbon intensity: a constant, or a per-hour series.

``grams = energy_j / 3.6e6 * gco2_per_kwh`` (1 kWh = 3.6e6 J). The names follow the tools users of this
field already read: intensity in gCO2e/kWh (Electricity Maps' ``carbonIntensity``, CodeCarbon's and
Zeus's unit), emissions in grams of CO2-equivalent (Zeus's ``*_carbon_emission`` are gCO2eq; CodeCarbon
writes ``emissions`` in kg).

A series file is a CSV with two columns (docs/report.md):

- ``hour``: when the row's intensity starts; ISO 8601 (``2026-11-25T14:00:00Z``, an offset, or naive =
  UTC) or epoch seconds. Strictly increasing.
- ``gco2_per_kwh``: the grid's intensity, a finite number >= 0.

A row holds from its ``hour`` until the next row's, and for at most one hour (so half-hourly data works
and a gap in the series is a gap, not the previous hour stretched). Measured energy takes the
intensity of the hour its trial started in (``t_start``); a predicted plan or route, which is tied to
no clock time, takes the series' mean (the intensity of a kWh drawn at a random hour of the series),
with the cleanest and dirtiest hours beside it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from llm_energy.errors import UserError, bad_value

J_PER_KWH = 3.6e6
HOUR_S = 3600.0
COLUMNS = ("hour", "gco2_per_kwh")


def grams_co2e(energy_j, gco2_per_kwh):
    """gCO2e of ``energy_j`` joules at ``gco2_per_kwh`` (scalars or arrays)."""
    return np.asarray(energy_j, dtype=float) / J_PER_KWH * np.asarray(gco2_per_kwh, dtype=float)


@dataclass(frozen=True)
class GridIntensity:
    """A grid's carbon intensity: ``constant`` gCO2e/kWh, or a series of ``starts`` (epoch s) and
    ``values`` (gCO2e/kWh) read from ``source``."""

    source: str
    constant: float | None = None
    starts: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def of_constant(cls, value: float, source: str = "--grid-gco2-per-kwh") -> GridIntensity:
        v = _number(value, lambda: bad_value(source, value, "expected a number of gCO2e/kWh"))
        if not math.isfinite(v) or v < 0:
            raise bad_value(source, value, "must be a finite number >= 0 (gCO2e/kWh)")
        return cls(source=source, constant=v)

    @property
    def hourly(self) -> bool:
        return self.constant is None

    @property
    def mean(self) -> float:
        """The intensity a plan or route is charged at: the constant, or the series' mean."""
        return self.constant if self.constant is not None else float(np.mean(self.values))

    @property
    def low(self) -> float:
        return self.constant if self.constant is not None else float(min(self.values))

    @property
    def high(self) -> float:
        return self.constant if self.constant is not None else float(max(self.values))

    def describe(self) -> str:
        """One line for the report: what intensity was used and how."""
        if self.constant is not None:
            return f"{self.constant:g} gCO2e/kWh (constant, {self.source})"
        first, last = _iso(self.starts[0]), _iso(self.starts[-1])
        return (f"{len(self.values)} hourly values from {self.source} ({first} .. {last}; mean {self.mean:.1f}, "
                f"min {self.low:.1f}, max {self.high:.1f} gCO2e/kWh)")

    def at(self, t_epoch, *, what: list[str] | None = None) -> np.ndarray:
        """The intensity at each time ``t_epoch`` (epoch s); NaN times (no timestamp) take the mean. A
        time the series does not cover is a UserError naming the file and the first such time
        (``what``: a label per time, e.g. trial ids, for that message)."""
        t = np.asarray(t_epoch, dtype=float)
        if self.constant is not None:
            return np.full(t.shape, self.constant)
        starts, values = np.asarray(self.starts), np.asarray(self.values)
        ends = np.minimum(np.append(starts[1:], np.inf), starts + HOUR_S)
        i = np.searchsorted(starts, t, side="right") - 1
        known = np.isfinite(t)
        ok = known & (i >= 0) & (t < ends[np.clip(i, 0, None)])
        if (known & ~ok).any():
            j = int(np.flatnonzero(known & ~ok)[0])
            label = f"{what[j]} at " if what else ""
            raise UserError(f"{self.source}: no intensity for {label}{_iso(t[j])}: the hours cover "
                            f"{_iso(starts[0])} .. {_iso(ends[-1])} with {len(starts)} rows (each at most one hour)")
        return np.where(known, values[np.clip(i, 0, None)], self.mean)


def load_grid_csv(path: str | Path) -> GridIntensity:
    """The series of a CSV with columns ``hour`` and ``gco2_per_kwh`` (see the module docstring); any
    bad input is a one-line UserError naming the file, row, field and value."""
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise UserError(f"{p}: no such file (--grid-intensity)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{p}: cannot read the grid intensity CSV ({getattr(e, 'strerror', None) or e})") from None
    if not rows:
        raise UserError(f"{p}: empty file; expected a header with columns {', '.join(COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    for c in COLUMNS:
        if c not in header:
            raise UserError(f"{p}: column {c!r} missing (columns: {', '.join(header) or 'none'}); "
                            f"expected {', '.join(COLUMNS)}")
    ih, iv = header.index("hour"), header.index("gco2_per_kwh")
    starts, values = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise UserError(f"{p}: row {n}: {len(row)} fields, the header has {len(header)}")
        t = _hour(row[ih].strip(), lambda: bad_value("hour", row[ih], "not an ISO 8601 time or epoch seconds",
                                                      source=f"{p}: row {n}"))
        v = _number(row[iv].strip(), lambda: bad_value("gco2_per_kwh", row[iv], "not a number",
                                                       source=f"{p}: row {n}"))
        if not math.isfinite(v) or v < 0:
            raise bad_value("gco2_per_kwh", row[iv], "must be a finite number >= 0", source=f"{p}: row {n}")
        if starts and t <= starts[-1]:
            raise bad_value("hour", row[ih], f"not after the row before ({_iso(starts[-1])}): hours must increase",
                            source=f"{p}: row {n}")
        starts.append(t)
        values.append(v)
    if not starts:
        raise UserError(f"{p}: no rows after the header")
    return GridIntensity(source=str(p), starts=tuple(starts), values=tuple(values))


def grid_from_args(constant: float | None, series: str | None) -> GridIntensity | None:
    """The CLI's ``--grid-gco2-per-kwh`` / ``--grid-intensity`` (at most one), or None."""
    if constant is not None and series is not None:
        raise UserError("give --grid-gco2-per-kwh or --grid-intensity, not both")
    if series is not None:
        return load_grid_csv(series)
    return None if constant is None else GridIntensity.of_constant(constant)


def _number(text, err) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise err() from None


def _hour(text: str, err) -> float:
    try:
        t = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(t):
            raise err()
        return t
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise err() from None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
