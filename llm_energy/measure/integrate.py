"""Raw power samples -> energy per measurement window, as vectorised Polars pipelines.

Two estimators per (window, device, source):

* **counter** (rows with ``joules``; NVML's total-energy counter, RAPL): the counter only changes at
  the meter's update period (~100 ms on NVML). Polled every ~20 ms, each first reading of a new value
  is an *update point* (time, cumulative J). Cumulative energy at any instant is interpolated linearly
  between the update points around it, so the energy of a window is E(t_end) - E(t_start) with an
  error of a fraction of one update period's energy, not a whole period's worth at each edge.
* **trapezoid** (rows with ``watts``): the trapezoid rule over the samples inside the window, with
  the first and last readings held to the window's edges. A window with no sample inside uses the
  nearest earlier reading times the window's duration (``n_samples`` = 0 says so).

Input schemas: ``samples`` follows :data:`llm_energy.trials.schema.SAMPLE_SCHEMA`; ``windows`` has
``trial_id`` (str), ``node`` (str), ``session`` (str, optional), ``t_start_mono``, ``t_end_mono``
(float s, the node's monotonic clock in that session); the windows of one node and session must not
overlap (a sample belongs to at most one window). Output (:data:`ENERGY_SCHEMA`): one row per window x device x source.
"""

from __future__ import annotations

import polars as pl

ENERGY_SCHEMA: dict[str, pl.DataType] = {
    "trial_id": pl.String,
    "node": pl.String,
    "device": pl.String,
    "source": pl.String,
    "method": pl.String,  # "counter" | "trapezoid"
    "energy_j": pl.Float64,
    "n_samples": pl.UInt32,  # power samples inside the window (trapezoid) / update points (counter)
    "mean_w": pl.Float64,
    "peak_w": pl.Float64,  # null for counters
}

_KEYS = ["node", "session", "device", "source"]
_STREAM = ["node", "session"]  # one node's monotonic clock in one profiler run


def window_energy(samples: pl.DataFrame | pl.LazyFrame, windows: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Energy of each window for every device/source that has samples (see module docstring)."""
    s = _with_session(samples.lazy())
    w = (
        _with_session(windows.lazy())
        .select("trial_id", "node", "session", pl.col("t_start_mono").cast(pl.Float64), pl.col("t_end_mono").cast(pl.Float64))
        .with_columns(duration=pl.col("t_end_mono") - pl.col("t_start_mono"))
    )
    power = _trapezoid(s.filter(pl.col("watts").is_not_null()), w)
    counter = _counter(s.filter(pl.col("joules").is_not_null()), w)
    out = pl.concat([power, counter], how="vertical_relaxed").collect()
    return out.select([pl.col(k).cast(t) for k, t in ENERGY_SCHEMA.items()]).sort("trial_id", "device", "source")


def _trapezoid(p: pl.LazyFrame, w: pl.LazyFrame) -> pl.LazyFrame:
    # Sorted once by time (the as-of join needs it); the join keeps that order and group_by keeps
    # the order within each group, so the samples of a window stay in time order without a re-sort.
    p = p.select(*_KEYS, "t_mono", "watts").sort("t_mono")
    ws = w.sort("t_start_mono")
    # Assign each sample to the window that started last before it (windows of a stream never overlap).
    inside = (
        p.join_asof(ws, left_on="t_mono", right_on="t_start_mono", by=_STREAM, strategy="backward", check_sortedness=False)
        .filter(pl.col("trial_id").is_not_null() & (pl.col("t_mono") <= pl.col("t_end_mono")))
    )
    t, x = pl.col("t_mono"), pl.col("watts")
    agg = inside.group_by("trial_id", *_KEYS).agg(
        energy_j=((x + x.shift(1)) / 2 * t.diff()).sum()
        + x.first() * (t.first() - pl.col("t_start_mono").first())
        + x.last() * (pl.col("t_end_mono").first() - t.last()),
        n_samples=pl.len(),
        peak_w=x.max(),
        duration=pl.col("duration").first(),
    )
    # Windows with no sample inside: nearest earlier reading x duration.
    series = p.select(*_KEYS).unique()
    wanted = ws.join(series, on=_STREAM)
    empty = wanted.join(agg.select("trial_id", *_KEYS), on=["trial_id", *_KEYS], how="anti")
    nearest = (
        empty.sort("t_start_mono")
        .join_asof(p.rename({"t_mono": "t_s"}), left_on="t_start_mono", right_on="t_s", by=_KEYS, strategy="backward", check_sortedness=False)
        .filter(pl.col("watts").is_not_null())
        .select(
            "trial_id", *_KEYS,
            energy_j=pl.col("watts") * pl.col("duration"),
            n_samples=pl.lit(0, pl.UInt32),
            peak_w=pl.col("watts"),
            duration=pl.col("duration"),
        )
    )
    both = pl.concat([agg.with_columns(pl.col("n_samples").cast(pl.UInt32)), nearest], how="vertical_relaxed")
    return both.select(
        "trial_id", *_KEYS,
        method=pl.lit("trapezoid"),
        energy_j="energy_j",
        n_samples="n_samples",
        mean_w=pl.col("energy_j") / pl.col("duration"),
        peak_w="peak_w",
    )


def _counter(c: pl.LazyFrame, w: pl.LazyFrame) -> pl.LazyFrame:
    c = c.select(*_KEYS, "t_mono", "joules").sort(*_KEYS, "t_mono")
    # Update points: the first reading of each new counter value.
    upd = c.filter(
        (pl.col("joules") != pl.col("joules").shift(1).over(_KEYS)) | pl.col("joules").shift(1).over(_KEYS).is_null()
    ).sort("t_mono")
    series = c.select(*_KEYS).unique()
    bounds = (
        w.join(series, on=_STREAM)
        .unpivot(index=["trial_id", *_KEYS, "duration"], on=["t_start_mono", "t_end_mono"], variable_name="edge", value_name="t")
        .sort("t")
    )
    prev = upd.rename({"t_mono": "t_prev", "joules": "c_prev"})
    nxt = upd.rename({"t_mono": "t_next", "joules": "c_next"})
    at = (
        bounds.join_asof(prev, left_on="t", right_on="t_prev", by=_KEYS, strategy="backward", check_sortedness=False)
        .sort("t")
        .join_asof(nxt, left_on="t", right_on="t_next", by=_KEYS, strategy="forward", allow_exact_matches=False, check_sortedness=False)
        .with_columns(
            e=pl.when(pl.col("c_prev").is_not_null() & pl.col("c_next").is_not_null())
            .then(
                pl.col("c_prev")
                + (pl.col("c_next") - pl.col("c_prev")) * (pl.col("t") - pl.col("t_prev")) / (pl.col("t_next") - pl.col("t_prev"))
            )
            .otherwise(pl.coalesce("c_prev", "c_next"))
        )
    )
    per = at.group_by("trial_id", *_KEYS).agg(
        e_start=pl.col("e").filter(pl.col("edge") == "t_start_mono").first(),
        e_end=pl.col("e").filter(pl.col("edge") == "t_end_mono").first(),
        duration=pl.col("duration").first(),
    )
    n_upd = (
        upd.join_asof(w.sort("t_start_mono"), left_on="t_mono", right_on="t_start_mono", by=_STREAM, strategy="backward", check_sortedness=False)
        .filter(pl.col("trial_id").is_not_null() & (pl.col("t_mono") <= pl.col("t_end_mono")))
        .group_by("trial_id", *_KEYS)
        .agg(n_samples=pl.len().cast(pl.UInt32))
    )
    return (
        per.join(n_upd, on=["trial_id", *_KEYS], how="left")
        .filter(pl.col("e_start").is_not_null() & pl.col("e_end").is_not_null())
        .select(
            "trial_id", *_KEYS,
            method=pl.lit("counter"),
            energy_j=pl.col("e_end") - pl.col("e_start"),
            n_samples=pl.col("n_samples").fill_null(0),
            mean_w=(pl.col("e_end") - pl.col("e_start")) / pl.col("duration"),
            peak_w=pl.lit(None, pl.Float64),
        )
    )


def _with_session(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Frames without a session column (or with nulls) are one session."""
    if "session" not in lf.collect_schema().names():
        return lf.with_columns(pl.lit("").alias("session"))
    return lf.with_columns(pl.col("session").fill_null(""))


def counter_total(samples: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """First-to-last counter delta per node/session/device/source (for closure checks)."""
    return (
        _with_session(samples.lazy())
        .filter(pl.col("joules").is_not_null())
        .sort("t_mono")
        .group_by(*_KEYS)
        .agg(
            energy_j=pl.col("joules").last() - pl.col("joules").first(),
            t_first=pl.col("t_mono").first(),
            t_last=pl.col("t_mono").last(),
        )
        .sort(_KEYS)
        .collect()
    )
