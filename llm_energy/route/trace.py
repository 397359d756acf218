"""Arrival traces for ``route``: queries (tin, tout) with arrival times, from a file or synthetic.

A trace file has the token columns :func:`llm_energy.plan.workload.load_workload` reads (``tin``/``tout``,
the Azure traces' ``ContextTokens``/``GeneratedTokens``, ...) plus an arrival column: the Azure
``TIMESTAMP`` (date-times, e.g. ``2023-11-16 18:15:46.6805900``) or seconds (``arrival_s``,
``arrival``, ``timestamp``, or any name through ``arrival=COL`` in ``--columns``). Arrivals are
shifted so the first is at 0 s, then divided by ``--rate-scale`` (2 = twice the arrival rate).

Synthetic arrivals (``--arrivals poisson|gamma``) put a workload's queries, in file order, on a
renewal process at ``--rate`` queries/s: exponential gaps (Poisson), or Gamma gaps with coefficient of
variation ``--cv`` (shape 1/cv^2, scale cv^2/rate; cv 1 is Poisson, > 1 burstier, < 1 smoother). This is
vLLM's ``benchmark_serving.py`` process with its ``burstiness`` = 1/cv^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value

ARRIVAL_COLUMNS = ("arrival_s", "arrival", "TIMESTAMP", "timestamp", "time_s")
ARRIVAL_KINDS = ("trace", "poisson", "gamma")


@dataclass(frozen=True)
class Trace:
    """Queries in arrival order: ``arrival_s`` (float64, non-decreasing, first at 0), ``tin``/``tout`` (int64)."""

    tin: np.ndarray
    tout: np.ndarray
    arrival_s: np.ndarray
    source: str = "<memory>"

    @property
    def n_queries(self) -> int:
        return int(self.tin.shape[0])

    @property
    def span_s(self) -> float:
        """Last arrival minus first (s)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if self.n_queries else 0.0

    def scaled(self, rate_scale: float) -> Trace:
        """The same queries with arrivals compressed ``rate_scale`` times (arrival rate x rate_scale)."""
        check_rate_scale(rate_scale)
        return Trace(self.tin, self.tout, self.arrival_s / float(rate_scale), f"{self.source} x{rate_scale:g}")


def check_rate_scale(x: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
        raise bad_value("--rate-scale", x, "must be a finite number > 0 (2 = twice the arrival rate)")
    return float(x)


def parse_rate_scales(spec: str | float | None) -> list[float]:
    """``"0.5,1,2,4"`` -> [0.5, 1.0, 2.0, 4.0]; every value > 0, none twice."""
    if spec is None:
        return [1.0]
    if isinstance(spec, (int, float)):
        return [check_rate_scale(spec)]
    out: list[float] = []
    for part in str(spec).split(","):
        try:
            v = float(part.strip())
        except ValueError:
            raise bad_value("--rate-scale", part.strip(), "must be a number > 0, or a comma-separated list") from None
        check_rate_scale(v)
        if v in out:
            raise bad_value("--rate-scale", part.strip(), "given twice")
        out.append(v)
    return out


def split_columns(spec: str | None) -> tuple[str | None, str | None]:
    """``--columns`` minus its ``arrival=COL`` part: (token mapping for load_workload, arrival column)."""
    if not spec:
        return None, None
    if spec == "azure":
        return "azure", "TIMESTAMP"
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    arrival = [p.partition("=")[2].strip() for p in parts if p.startswith("arrival=")]
    rest = ",".join(p for p in parts if not p.startswith("arrival="))
    if arrival and not arrival[0]:
        raise bad_value("--columns", spec, "arrival= needs a column name")
    return (rest or None), (arrival[0] if arrival else None)


def arrival_seconds(s: pl.Series, path: str) -> np.ndarray:
    """An arrival column as seconds from its first value: date-time strings or numbers."""
    name = s.name
    if s.dtype == pl.String:
        try:
            dt = s.str.to_datetime(time_unit="ns", strict=False)
        except Exception:  # noqa: BLE001 (polars raises several kinds for unparseable formats)
            dt = pl.Series(name, [None] * len(s), dtype=pl.Datetime("ns"))
        num = s.cast(pl.Float64, strict=False)
        parsed = dt if dt.null_count() <= num.null_count() else num
        bad = parsed.is_null() & s.is_not_null()
        if bad.any():
            i = int(bad.arg_max())
            raise UserError(f"{path}: row {i}: {name}={s[i]!r}: not a date-time or a number of seconds")
        s = parsed
    if s.dtype.is_temporal():
        if s.null_count():
            i = int(s.is_null().arg_max())
            raise UserError(f"{path}: row {i}: {name}=null: missing timestamp ({s.null_count()} such rows)")
        ns = s.cast(pl.Datetime("ns")).cast(pl.Int64).to_numpy()
        return (ns - ns[0]).astype(np.float64) / 1e9 if len(ns) else ns.astype(np.float64)
    if not s.dtype.is_numeric():
        raise UserError(f"{path}: column {name!r}: expected date-times or seconds, got {s.dtype}")
    v = s.cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{path}: row {i}: {name}={v[i]}: missing or non-finite timestamp ({int(bad.sum())} such rows)")
    neg = v < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise UserError(f"{path}: row {i}: {name}={v[i]:g}: negative timestamp ({int(neg.sum())} such rows)")
    return v


def check_sorted(t: np.ndarray, path: str, name: str) -> None:
    down = np.flatnonzero(np.diff(t) < 0)
    if down.size:
        i = int(down[0]) + 1
        raise UserError(f"{path}: row {i}: {name}: timestamps are not sorted (arrival {t[i]:.6g} s after "
                        f"{t[i - 1]:.6g} s; {down.size} such rows): sort the trace by time")


def load_trace(path: str | Path, columns: str | None = None) -> Trace:
    """A trace file with token and arrival columns (see the module docstring); every problem is a
    one-line UserError naming file, row, column and value."""
    from llm_energy.plan.workload import load_workload, parse_column_mapping

    tok_spec, arrival_col = split_columns(columns)
    wl = load_workload(path, parse_column_mapping(tok_spec))
    head = _columns(Path(path))
    if arrival_col is None:
        arrival_col = next((c for c in ARRIVAL_COLUMNS if c in head), None)
        if arrival_col is None:
            raise bad_value("--trace", str(path), f"no arrival column (looked for {', '.join(ARRIVAL_COLUMNS)}; "
                            f"columns are {head}): name one with --columns arrival=COL, or use --arrivals "
                            "poisson|gamma with --rate")
    elif arrival_col not in head:
        raise bad_value("--columns", f"arrival={arrival_col}", f"no such column in {path}; columns are {head}")
    from llm_energy.plan.workload import _scan

    s = _scan(Path(path)).select(pl.col(arrival_col)).collect()[arrival_col]
    t = arrival_seconds(s, str(path))
    check_sorted(t, str(path), arrival_col)
    return Trace(wl.tin, wl.tout, t - t[0], str(path))


def _columns(path: Path) -> list[str]:
    from llm_energy.plan.workload import _scan

    return _scan(path).collect_schema().names()


def synthetic_arrivals(n: int, rate: float, kind: str = "poisson", cv: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` arrival times (s, first at 0) of a renewal process at ``rate`` per second."""
    if kind not in ("poisson", "gamma"):
        raise bad_value("--arrivals", kind, "expected trace, poisson or gamma")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise bad_value("--rate", rate, "must be a number of queries per second > 0")
    if not (math.isfinite(cv) and cv > 0):
        raise bad_value("--cv", cv, "must be > 0 (1 = Poisson, > 1 burstier)")
    rng = np.random.default_rng(seed)
    if kind == "poisson" or cv == 1.0:
        gaps = rng.exponential(1.0 / rate, n)
    else:
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    t = np.cumsum(gaps)
    return t - t[0] if n else t


def synthetic_trace(path: str | Path, rate: float, kind: str, cv: float, seed: int, columns: str | None = None) -> Trace:
    """A workload file's queries (file order) on synthetic arrivals."""
    from llm_energy.plan.workload import load_workload, parse_column_mapping

    tok_spec, _ = split_columns(columns)
    wl = load_workload(path, parse_column_mapping(tok_spec))
    t = synthetic_arrivals(wl.n_queries, rate, kind, cv, seed)
    return Trace(wl.tin, wl.tout, t, f"{path} ({kind} {rate:g}/s cv {cv:g} seed {seed})")
