"""Fit per-deployment energy and runtime models (statsmodels), choose forms by held-out error.

* ``paper``: ``y = a0*tin + a1*tout + a2*tin*tout``, OLS with no intercept on the actual token counts,
  exactly as Wilkins et al. fit it. Its R^2 is the *uncentered* one (what a no-intercept OLS reports
  and what the paper quotes); the centered R^2 is reported beside it.
* Physically motivated forms, fitted for *relative* error (energy spans four orders of magnitude on
  the paper's grid, so ordinary least squares lets the largest cells decide everything): each row
  is divided by its y, and the coefficients are constrained non-negative (NNLS). Every term in
  :data:`llm_energy.fit.fits.TERMS` is non-negative and non-decreasing in tin and tout, so every such fit
  predicts non-negative energy that never falls as tokens grow. The statistics come from statsmodels
  WLS (weights 1/y^2) on the terms NNLS kept, which is the same solution.

  - ``affine``: 1, tin, tout, tin*tout: fixed cost plus the paper's terms;
  - ``kv-decode``: + tout^2: with a KV cache, step j attends over tin + j tokens;
  - ``attn-prefill``: + tin^2: attention over the prompt in prefill;
  - ``no-kv``: + tout^2 + tin^2*tout: without a KV cache every decode step reprocesses the whole
    sequence, so work grows with tout*(tin + tout/2) and attention with tout*tin^2;
  - ``batched`` (when batch sizes are pooled): 1, tout, tout^2, batch x (tin, tout, tin*tout).
* Held-out error: K-fold cross-validation over *cells* (all repeats of a (tin, tout, batch) cell
  stay in one fold), seeded; relative error |pred - y| / y, median and p90.
* ``auto`` (the default) picks, per deployment and target, the physically sane candidate with the
  lowest held-out median relative error (p90 breaks ties).
* 90% prediction intervals: split-conformal on the cross-validated relative residuals
  (pred x (1 + q05), pred x (1 + q95)).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, deployment_key_expr, design_matrix
from llm_energy.fit.records import Candidate, CVResult, FitStats, Interval

FORMS: dict[str, list[str]] = {
    "paper": ["tin", "tout", "tin*tout"],
    "affine": ["1", "tin", "tout", "tin*tout"],
    "kv-decode": ["1", "tin", "tout", "tin*tout", "tout^2"],
    "attn-prefill": ["1", "tin", "tin^2", "tout", "tin*tout", "tout^2"],
    "no-kv": ["1", "tin", "tout", "tin*tout", "tout^2", "tin^2*tout"],
    "batched": ["1", "tout", "tout^2", "batch", "batch*tin", "batch*tout", "batch*tin*tout"],
}
POOLED_ONLY = {"batched"}
FORM_CHOICES = ("auto", *FORMS)
SANITY_GRID = np.unique(np.round(np.geomspace(1, 4096, 25)).astype(int))


@dataclass
class FitOptions:
    form: str = "auto"
    folds: int = 5
    seed: int = 0
    level: float = 0.9
    pool_batch: bool = False
    energy_column: str = "energy_j"  # or energy_net_j
    min_cells: int | None = None  # default: terms + 2
    drop_invalid: bool = False  # drop trials with NaN/inf/zero/negative targets instead of skipping the deployment


def fit_target(form: str, tin: np.ndarray, tout: np.ndarray, batch: np.ndarray, y: np.ndarray) -> TargetModel:
    """Fit one form to one target (no cross-validation)."""
    import statsmodels.api as sm

    terms = FORMS[form]
    X = design_matrix(terms, tin, tout, batch)
    if form == "paper":
        res = sm.OLS(y, X).fit()
        coef = res.params
        stats = _stats(res, X, y, coef, uncentered_native=True)
        return TargetModel(form, terms, [float(c) for c in coef], method="ols-no-intercept", stats=stats)
    from scipy.optimize import nnls

    w = 1.0 / y
    scale = np.abs(X * w[:, None]).max(axis=0)
    scale[scale == 0] = 1.0
    beta, _ = nnls((X * w[:, None]) / scale, np.ones_like(y), maxiter=50 * X.shape[1])
    coef = beta / scale
    active = coef > 0
    stats = FitStats()
    if active.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.WLS(y, X[:, active], weights=w**2).fit()
        stats = _stats(res, X[:, active], y, coef[active], uncentered_native=False, names=[t for t, a in zip(terms, active) if a])
    return TargetModel(form, terms, [float(c) for c in coef], method="nnls-relative", stats=stats)


def _stats(res, X, y, coef, *, uncentered_native: bool, names=None) -> FitStats:
    pred = X @ coef
    ssr = float(np.sum((y - pred) ** 2))
    r2_unc = 1 - ssr / float(np.sum(y**2))
    r2_c = 1 - ssr / float(np.sum((y - y.mean()) ** 2)) if len(y) > 1 and np.ptp(y) > 0 else float("nan")
    ci = np.asarray(res.conf_int(0.05))
    return FitStats(
        n=int(len(y)), terms_fitted=names, se=[float(v) for v in np.asarray(res.bse)],
        ci95_lo=[float(v) for v in ci[:, 0]], ci95_hi=[float(v) for v in ci[:, 1]],
        pvalues=[float(v) for v in np.asarray(res.pvalues)],
        f=float(res.fvalue) if res.fvalue is not None and np.isfinite(res.fvalue) else None,
        f_pvalue=float(res.f_pvalue) if res.f_pvalue is not None and np.isfinite(res.f_pvalue) else None,
        r2_uncentered=r2_unc, r2_centered=r2_c,
        # statsmodels' own R^2: uncentered for a model without a constant
        r2_statsmodels=float(res.rsquared) if uncentered_native else None,
    )


def is_sane(m: TargetModel, batches=(1,)) -> bool:
    """Non-negative and non-decreasing in tin and tout over 1..4096 tokens."""
    ii, oo = np.meshgrid(SANITY_GRID, SANITY_GRID, indexing="ij")
    for b in batches:
        p = m.predict(ii.ravel(), oo.ravel(), np.full(ii.size, b)).reshape(ii.shape)
        if (p < 0).any() or (np.diff(p, axis=0) < -1e-9 * np.abs(p).max()).any() or (np.diff(p, axis=1) < -1e-9 * np.abs(p).max()).any():
            return False
    return True


def cross_validate(form: str, tin, tout, batch, y, cells: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Held-out predictions for every row (K folds over cells)."""
    uniq = np.unique(cells)
    k = min(folds, len(uniq))
    rng = np.random.default_rng(seed)
    assign = dict(zip(uniq, rng.permutation(len(uniq)) % k))
    fold = np.array([assign[c] for c in cells])
    pred = np.full(len(y), np.nan)
    for f in range(k):
        test = fold == f
        train = ~test
        if train.sum() < len(FORMS[form]) + 1:
            continue
        m = fit_target(form, tin[train], tout[train], batch[train], y[train])
        pred[test] = m.predict(tin[test], tout[test], batch[test])
    return pred


def _rel_err(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y) / np.abs(y)


def fit_one_target(tin, tout, batch, y, cells, opts: FitOptions, forms: list[str]) -> TargetModel:
    """All candidate forms with CV; returns the chosen model with its CV summary and candidate table."""
    results = []
    for form in forms:
        held = cross_validate(form, tin, tout, batch, y, cells, opts.folds, opts.seed)
        ok = np.isfinite(held)
        err = _rel_err(held[ok], y[ok])
        full = fit_target(form, tin, tout, batch, y)
        sane = is_sane(full, tuple(np.unique(batch)))
        results.append((form, full, held, float(np.median(err)) if err.size else np.inf,
                        float(np.quantile(err, 0.9)) if err.size else np.inf, sane))
    if opts.form == "auto":
        pool = [r for r in results if r[5]] or results
        chosen = min(pool, key=lambda r: (r[3], r[4]))
    else:
        chosen = next(r for r in results if r[0] == opts.form)
    form, model, held, med, p90, sane = chosen
    ok = np.isfinite(held) & (np.abs(held) > 0)
    resid = y[ok] / held[ok] - 1.0
    a = (1 - opts.level) / 2
    model.interval = Interval(level=opts.level, q_lo=float(np.quantile(resid, a)) if resid.size else None,
                              q_hi=float(np.quantile(resid, 1 - a)) if resid.size else None,
                              method="cv-conformal-relative")
    model.cv = CVResult(median=med, p90=p90, folds=opts.folds, seed=opts.seed)
    model.candidates = [Candidate(form=f, median=m_, p90=p_, sane=s_, chosen=f == form)
                        for f, _, _, m_, p_, s_ in results]
    return model


def fit_deployments(trials: pl.DataFrame, opts: FitOptions | None = None, *, source: str = "") -> FitsFile:
    """One model per deployment (model x node type x GPUs x backend x batch) and target."""
    opts = opts or FitOptions()
    if opts.form not in FORM_CHOICES:
        raise bad_value("--form", opts.form, f"choose one of {', '.join(FORM_CHOICES)}")
    if opts.form in POOLED_ONLY and not opts.pool_batch:
        raise bad_value("--form", opts.form, "needs --pool-batch (batch size is a factor of this form)")
    df = _prepared(trials, opts, source or "trials")
    forms = candidate_forms(opts)
    deps: dict[str, DeploymentFit] = {}
    skipped: list[dict[str, str]] = []
    for (dep,), g in df.sort("_dep").group_by(["_dep"], maintain_order=True):
        fit = _fit_deployment(dep, g, opts, forms)
        if isinstance(fit, str):
            skipped.append({"deployment": dep, "reason": fit})
        else:
            deps[dep] = fit
    if not deps:
        reasons = "; ".join(f"{s['deployment']}: {s['reason']}" for s in skipped)
        raise UserError(f"{source or 'trials'}: no deployment could be fitted ({reasons})")
    return FitsFile(deployments=deps, skipped=skipped, source=source, created=time.time())


def candidate_forms(opts: FitOptions) -> list[str]:
    """The forms fitted and cross-validated for every deployment (the paper form always among them)."""
    if opts.form == "auto":
        forms = [f for f in FORMS if (f in POOLED_ONLY) == opts.pool_batch or (f not in POOLED_ONLY)]
    else:
        forms = [opts.form] if opts.form == "paper" else ["paper", opts.form]
    return forms if opts.pool_batch else [f for f in forms if f not in POOLED_ONLY]


def _prepared(trials: pl.DataFrame, opts: FitOptions, source: str) -> pl.DataFrame:
    """Validated measured trials with the fit's columns: _tin/_tout (actual tokens where known),
    _batch, _dep (the deployment key) and _bad (targets that cannot be fitted)."""
    df = validate_trials(trials, source=source, energy_column=opts.energy_column).filter(~pl.col("warmup"))
    if df.height == 0:
        raise UserError(f"{source}: no measured (non-warm-up) trials to fit")
    return df.with_columns(
        pl.coalesce("tin_actual", "tin").cast(pl.Float64).alias("_tin"),
        pl.coalesce("tout_actual", "tout").cast(pl.Float64).alias("_tout"),
        pl.col("batch").cast(pl.Float64).alias("_batch"),
        deployment_key_expr(pool_batch=opts.pool_batch).alias("_dep"),
        invalid_target_rows(df, opts.energy_column).alias("_bad"),
    )


def _fit_deployment(dep: str, g: pl.DataFrame, opts: FitOptions, forms: list[str]) -> DeploymentFit | str:
    """One deployment's two target models, or the reason it was skipped."""
    bad = g.filter(pl.col("_bad"))
    if bad.height:
        r = bad.row(0, named=True)
        what = f"{bad.height} trial(s) with invalid targets, e.g. {r['trial_id'] if 'trial_id' in g.columns else '?'}: " \
               f"{opts.energy_column}={r[opts.energy_column]!r}, runtime_s={r['runtime_s']!r}"
        if not opts.drop_invalid:
            return what + " (use --drop-invalid to fit without them)"
        g = g.filter(~pl.col("_bad"))
    n_cells = g.select(pl.struct("_tin", "_tout", "_batch").n_unique()).item()
    need = opts.min_cells or max(len(FORMS[f]) for f in forms) + 2
    if n_cells < need:
        return f"{n_cells} distinct cells, fewer than the {need} the forms need"
    tin, tout, batch = (g[c].to_numpy() for c in ("_tin", "_tout", "_batch"))
    cells = g.select(pl.concat_str([pl.col("_tin").cast(pl.String), pl.col("_tout").cast(pl.String),
                                    pl.col("_batch").cast(pl.String)], separator="-")).to_series().to_numpy()
    targets = {t: fit_one_target(tin, tout, batch, g[col].to_numpy().astype(float), cells, opts, forms)
               for t, col in (("energy_j", opts.energy_column), ("runtime_s", "runtime_s"))}
    first = g.row(0, named=True)
    return DeploymentFit(
        deployment=dep, model=first["model"], node_type=first["node_type"], n_gpus=int(first["n_gpus"] or 0),
        backend=first["backend"], batch="*" if opts.pool_batch else int(first["batch"]), targets=targets,
        system=first["system"] or "", energy_source=first["energy_source"] or "", n_trials=g.height, n_cells=n_cells,
        idle_w=idle_power(g),
    )


def idle_power(trials: pl.DataFrame) -> float | None:
    """A deployment's idle power (W): the median over its sweeps of each sweep's idle baseline (model
    loaded, nothing running, its devices summed); None where no trial carries one (imported data)."""
    if "idle_w" not in trials.columns:
        return None
    ok = trials.filter(pl.col("idle_w").is_finite() & (pl.col("idle_w") >= 0))
    if ok.height == 0:
        return None
    per_sweep = ok.group_by("sweep_id").agg(pl.col("idle_w").median()) if "sweep_id" in ok.columns else ok
    return float(per_sweep["idle_w"].median())


REQUIRED = ("tin", "tout", "batch", "runtime_s", "model", "node_type", "n_gpus", "backend", "warmup")


def validate_trials(df: pl.DataFrame, *, source: str, energy_column: str = "energy_j") -> pl.DataFrame:
    """Reject what would silently give a bad fit: missing columns, bad tokens, NaN/negative targets."""
    for c in (*REQUIRED, energy_column):
        if c not in df.columns:
            raise UserError(f"{source}: column {c!r} missing")
    for c in ("tin", "tout", "batch"):
        bad = df.filter(pl.col(c).is_null() | (pl.col(c) < 1))
        if bad.height:
            raise UserError(f"{source}: {c}={bad[c][0]!r} in trial {bad['trial_id'][0] if 'trial_id' in df.columns else '?'}: "
                            "token and batch counts must be positive integers")
    return df


def invalid_target_rows(df: pl.DataFrame, energy_column: str) -> pl.Expr:
    """Rows whose targets cannot be fitted: NaN, infinite, missing, zero or negative energy or runtime
    (one infinite target would make every coefficient NaN or inf)."""
    return pl.any_horizontal([pl.col(c).is_null() | ~pl.col(c).is_finite() | (pl.col(c) <= 0)
                              for c in (energy_column, "runtime_s")])


