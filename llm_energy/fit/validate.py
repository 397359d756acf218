"""Honest figures for a fitting procedure: everything the procedure decides (form, knot, interval) is
decided again without the rows it is scored on.

* :func:`nested_holdout`: outer K-fold over cells, per deployment; each outer fold's trials are fitted
  with the whole procedure (its own inner cross-validation choosing the form and making the
  interval), then the held-out cells are predicted. Relative errors and interval coverage per
  deployment and target.
* :func:`batch_holdout`: a fit pooled over batch sizes, each batch size held out in turn (trained on
  the others, its cells predicted).
* :func:`repeat_spread`: the noise floor those errors are to be read against: how far a repeat of a
  cell lies from the mean of the cell's other repeats, scaled to what a perfect model of the cell's
  mean would miss by (no model can predict one trial better than its own repeats agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from llm_energy.fit.fits import TARGETS, predict
from llm_energy.fit.forms import FitOptions, _prepared, fit_deployments, fold_of


@dataclass
class HoldoutErrors:
    """Held-out relative errors (pred / y - 1) and whether each held-out row was inside its interval,
    per (deployment, target)."""

    errors: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    inside: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)  # repeat_spread: cells measured more than once
    forms: dict[str, str] = field(default_factory=dict)  # batch_holdout: the form chosen per target

    def add(self, dep: str, target: str, err: np.ndarray, inside: np.ndarray) -> None:
        k = (dep, target)
        self.errors[k] = np.concatenate([self.errors.get(k, np.empty(0)), err])
        self.inside[k] = np.concatenate([self.inside.get(k, np.empty(0, dtype=bool)), inside])

    def summary(self, dep: str | None, target: str) -> dict[str, float]:
        """Median and p90 of |error|, coverage and n, for one deployment (None: all pooled)."""
        keys = [k for k in self.errors if k[1] == target and (dep is None or k[0] == dep)]
        if not keys:
            nan = float("nan")
            return {"median": nan, "p90": nan, "max": nan, "coverage": nan, "n": 0}
        e = np.abs(np.concatenate([self.errors[k] for k in keys]))
        ins = np.concatenate([self.inside[k] for k in keys])
        return {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)), "max": float(e.max()),
                "coverage": float(ins.mean()) if ins.size else float("nan"), "n": int(e.size)}

    @property
    def deployments(self) -> list[str]:
        return sorted({k[0] for k in self.errors})


def fitted_values(fits, dep: str, g: pl.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each target's fitted value and interval bounds per row of ``g`` (a :func:`_prepared` frame of one
    deployment), on the tokens its form was fitted on: the paper form on the requested tin, tout (as
    fit_deployments fits it), the others on the actual ones (``_tin``, ``_tout``). One prediction per set of
    tokens; bounds are NaN where the model has no interval."""
    d = fits.deployments[dep]
    tokens = {t: ("tin", "tout") if d.targets[t].form == "paper" else ("_tin", "_tout") for t in TARGETS}
    batch = g["_batch"].to_numpy().astype(np.int64) if d.batch == "*" else None
    pred = {c: predict(fits, dep, g[c[0]].to_numpy().astype(float), g[c[1]].to_numpy().astype(float), batch)
            for c in set(tokens.values())}
    return {t: tuple(pred[c][k].cast(pl.Float64).fill_null(float("nan")).to_numpy() for k in (t, f"{t}_lo", f"{t}_hi"))
            for t, c in tokens.items()}


def _score(fits, test: pl.DataFrame, out: HoldoutErrors, energy_column: str) -> None:
    """Predict each held-out row on its deployment (on the tokens its form was fitted on) and record the errors."""
    for (dep,), g in test.group_by(["_dep"], maintain_order=True):
        if dep not in fits.deployments:
            continue
        p = fitted_values(fits, dep, g)
        for t, col in zip(TARGETS, (energy_column, "runtime_s")):
            y = g[col].to_numpy()
            pred, lo, hi = p[t]
            out.add(g["_as"][0] if "_as" in g.columns else dep, t, pred / y - 1.0, (lo <= y) & (y <= hi))


def repeat_spread(trials: pl.DataFrame, opts: FitOptions | None = None) -> HoldoutErrors:
    """Per deployment and target, over the cells (requested tin, tout, batch) measured more than once:
    each trial's relative deviation y_i / mean(other repeats) - 1, divided by sqrt(1 + 1/(n-1)) (n
    repeats) so that, for independent noise, it estimates the error of a perfect model of the cell's
    mean on one trial. ``HoldoutErrors.summary`` gives its median and p90 (coverage: NaN); the number
    of cells is ``cells``. Repeats measured in different sessions (stores) count as repeats: their
    spread is the drift a fit over those stores has to live with."""
    opts = opts or FitOptions()
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad"))
    out = HoldoutErrors()
    for t, col in zip(TARGETS, (opts.energy_column, "runtime_s")):
        g = (df.group_by("_dep", "tin", "tout", "_batch").agg(pl.col(col).alias("_y"))
             .filter(pl.col("_y").list.len() >= 2).sort("_dep", "tin", "tout", "_batch"))
        for dep, ys in zip(g["_dep"].to_list(), g["_y"].to_list()):
            y = np.asarray(ys, dtype=float)
            n = y.size
            others = (y.sum() - y) / (n - 1)
            out.add(dep, t, (y / others - 1.0) / np.sqrt(1.0 + 1.0 / (n - 1)), np.empty(0, dtype=bool))
        out.cells.update({dep: int(c) for dep, c in zip(*np.unique(g["_dep"].to_numpy(), return_counts=True))})
    return out


def nested_holdout(trials: pl.DataFrame, opts: FitOptions | None = None, *, folds: int = 5,
                   seed: int = 1) -> HoldoutErrors:
    """Outer ``folds``-fold cross-validation over each deployment's cells of the whole fitting procedure."""
    opts = opts or FitOptions()
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad"))
    cell = pl.concat_str([pl.col("_dep"), pl.col("_tin").cast(pl.String), pl.col("_tout").cast(pl.String),
                          pl.col("_batch").cast(pl.String)], separator="|")
    df = df.with_columns(cell.alias("_cell"))
    fold = np.empty(df.height, dtype=np.int64)
    deps = df["_dep"].to_numpy()
    for dep in np.unique(deps):
        rows = deps == dep
        fold[rows] = fold_of(df["_cell"].to_numpy()[rows], folds, seed)
    df = df.with_columns(pl.Series("_outer", fold))
    out = HoldoutErrors()
    for f in range(folds):
        train, test = df.filter(pl.col("_outer") != f), df.filter(pl.col("_outer") == f)
        if test.height == 0:
            continue
        fits = fit_deployments(train.drop([c for c in train.columns if c.startswith("_")]), opts)
        _score(fits, test, out, opts.energy_column)
    return out


def batch_holdout(trials: pl.DataFrame, opts: FitOptions | None = None, *,
                  cells: pl.DataFrame | None = None) -> dict[int, HoldoutErrors]:
    """For each batch size b of the trials: a fit pooled over the other batch sizes, scored on b's cells
    (keyed by deployment). With ``cells`` (a frame of tin, tout: e.g. a batch sweep's cells) the scores
    are keyed "cells" (b's trials at those tin, tout) and "all" (every trial of b) instead. Each
    result's ``forms`` says which form the fit chose per target."""
    opts = opts or FitOptions()
    opts = FitOptions(**{**opts.__dict__, "pool_batch": True})
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad"))
    res = {}
    for b in sorted(int(v) for v in df["_batch"].unique()):
        train, test = df.filter(pl.col("_batch") != b), df.filter(pl.col("_batch") == b)
        fits = fit_deployments(train.drop([c for c in train.columns if c.startswith("_")]), opts)
        res[b] = HoldoutErrors(forms={t: "/".join(sorted({d.targets[t].form for d in fits.deployments.values()}))
                                      for t in TARGETS})
        if cells is None:
            _score(fits, test, res[b], opts.energy_column)
            continue
        for key, part in (("cells", test.join(cells.select("tin", "tout").unique(), on=["tin", "tout"])), ("all", test)):
            _score(fits, part.with_columns(pl.lit(key).alias("_as")), res[b], opts.energy_column)
    return res
