"""Fit per-deployment energy and runtime models (statsmodels), choose forms by held-out error.

* ``paper``: ``y = a0*tin + a1*tout + a2*tin*tout``, OLS with no intercept on the requested token counts,
  exactly as Wilkins et al. fit it. Its R^2 is the *uncentered* one (what a no-intercept OLS reports
  and what the paper quotes); the centered R^2 is reported beside it.
* Physically motivated forms, fitted for *relative* error (energy spans four orders of magnitude on
  the paper's grid, so ordinary least squares lets the largest cells decide everything): each row
  is divided by its y, and the coefficients are constrained non-negative (NNLS). Every term of
  :mod:`llm_energy.fit.terms` is non-negative and non-decreasing in tin, tout and batch, so every such
  fit predicts non-negative values that never fall as tokens or batch grow. The statistics come from
  statsmodels WLS (weights 1/y^2) on the terms NNLS kept, which is the same solution.

  - ``affine``: 1, tin, tout, tin*tout: fixed cost plus the paper's terms;
  - ``kv-decode``: + tout^2: with a KV cache, step j attends over tin + j tokens;
  - ``attn-prefill``: + tin^2: attention over the prompt in prefill (with kv-decode's terms: the
    KV-cache form, a per-step weights floor plus attention over tin + j);
  - ``no-kv``: + tout^2 + tin^2*tout;
  - ``no-kv-full``: the whole expansion of the no-KV-cache sum: every decode step j reprocesses
    L = tin + j tokens, so sum_j (1, L, L^2) brings tout, tin*tout, tout^2, tin^2*tout, tin*tout^2 and
    tout^3 (with 1, tin, tin^2);
  - ``roofline``: each step costs max(memory floor, compute(L)): m*tout + a*sum_j(L-K)+ +
    b*sum_j((L-K)+)^2, the knot K (where compute overtakes the floor) chosen by least squares over
    a grid of knots on the training rows;
  - ``spline``: each step's cost a convex piecewise-linear function of L plus an attention term:
    m*tout + sum_K a_K*sum_j(L-K)+ (hinges at :data:`SPLINE_KNOTS`) + b*sum_j L^2. Several knots
    because the regime changes in stages (the memory floor, compute taking over, power rising to
    its cap: falcon-40b's mean power climbs from 300 to 570 W between L = 128 and 1024); NNLS keeps
    the hinges it needs, and a hinge beyond the training rows' L is a zero column (coefficient 0);
  - pooled over batch sizes (``--pool-batch``), forms with batch terms: ``batched`` (1, tout, tout^2,
    batch x (tin, tout, tin*tout)), ``batched-kv`` (a weights floor per step plus per-sequence
    prefill and attention: 1, batch, batch*tin, batch*tin^2, tout, batch*tout, batch*tin*tout,
    batch*tout^2), ``batched-roofline`` (each step the larger of the weights floor and a compute
    term in the batch: tout*(batch-K)+ for batch*tout) and ``batched-step`` (per-sequence prefill,
    and each step the larger of a floor and a term in the batch's tokens of context, batch x L:
    tout + sum_j(batch*(tin+j)-K)+; an eager backend's step is host-bound at every batch measured;
    a runtime form only, :data:`RUNTIME_ONLY`).
* Held-out error: K-fold cross-validation over *cells* (all repeats of a (tin, tout, batch) cell
  stay in one fold), seeded; relative error |pred - y| / y, median and p90.
* ``auto`` (the default) picks, per deployment and target, the physically sane candidate with the
  lowest held-out median relative error (p90 breaks ties). When a deployment's trials span batch
  sizes, only forms with a batch term can be chosen, for runtime only those whose batch work is
  floored and for energy only the additive ones (:data:`NOT_FOR`; the others are still reported).
* Prediction intervals: :mod:`llm_energy.fit.intervals` (split-conformal on the held-out ratios).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel, context_tokens, deployment_key_expr
from llm_energy.fit.intervals import conformal_interval
from llm_energy.fit.records import Candidate, CVResult, FitRange, FitStats
from llm_energy.fit.terms import design_matrix, knotted
from llm_energy.trials.errata import errata

SPLINE_KNOTS = (0, 128, 256, 512, 1024, 2048)  # the spline form's hinges (tokens of context)
FORMS: dict[str, list[str]] = {
    "paper": ["tin", "tout", "tin*tout"],
    "affine": ["1", "tin", "tout", "tin*tout"],
    "kv-decode": ["1", "tin", "tout", "tin*tout", "tout^2"],
    "attn-prefill": ["1", "tin", "tin^2", "tout", "tin*tout", "tout^2"],
    "no-kv": ["1", "tin", "tout", "tin*tout", "tout^2", "tin^2*tout"],
    "no-kv-full": ["1", "tin", "tin^2", "tout", "tin*tout", "tout^2", "tin^2*tout", "tin*tout^2", "tout^3"],
    "roofline": ["1", "tin", "tout", "sum_j(tin+j-{K})+", "sum_j(tin+j-{K})+^2"],
    "spline": ["1", "tin", "tout", *(f"sum_j(tin+j-{k})+" for k in SPLINE_KNOTS), "sum_j(tin+j-0)+^2"],
    "batched": ["1", "tout", "tout^2", "batch", "batch*tin", "batch*tout", "batch*tin*tout"],
    "batched-kv": ["1", "batch", "batch*tin", "batch*tin^2", "tout", "batch*tout", "batch*tin*tout", "batch*tout^2"],
    "batched-roofline": ["1", "batch*tin", "batch*tin^2", "tout", "tout*(batch-{K})+", "batch*tin*tout",
                         "batch*tout^2"],
    "batched-step": ["1", "batch*tin", "batch*tin^2", "tout", "sum_j(batch*(tin+j)-{K})+"],
}
POOLED_ONLY = {"batched", "batched-kv", "batched-roofline", "batched-step"}
# Pooled forms ``auto`` may not choose for a target (still fitted and reported, ``eligible: false``;
# ``--form`` fits any form to both). A step's time is the larger of its floor (the weights' traffic,
# or an eager backend's host time) and its work, so runtime takes the forms whose batch work is
# floored; its energy is not floored (the work's energy is spent whether or not the step waits on
# the floor: E = P x time + e x work), so energy takes the additive forms.
NOT_FOR = {"energy_j": {"batched-step"}, "runtime_s": {"batched", "batched-kv"}}
FORM_CHOICES = ("auto", *FORMS)
SANITY_GRID = np.unique(np.round(np.geomspace(1, 32768, 31)).astype(int))
TOKEN_KNOTS = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # 0: every step compute-bound
BATCH_KNOTS = (1, 2, 4, 8, 16, 32, 64, 128)
BATCH_TOKEN_KNOTS = tuple(1024 * 2**i for i in range(8))  # batch x context tokens, 1024..131072


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


def has_batch_term(form: str) -> bool:
    return any("batch" in t for t in FORMS[form])


def _knots(form: str, tin, tout, batch) -> list[float | None]:
    """The knots a knotted form is tried at (None: the form has none), within the training data."""
    if "{K}" not in "".join(FORMS[form]):
        return [None]
    if form == "batched-roofline":
        return [k for k in BATCH_KNOTS if k < np.max(batch)] or [0]
    if form == "batched-step":
        return [0] + [k for k in BATCH_TOKEN_KNOTS if k < np.max(batch * (tin + tout))]
    return [k for k in TOKEN_KNOTS if k < np.max(tin + tout)]


ROBUST_ITERATIONS = 5  # IRLS steps from least squares towards least absolute relative error
ROBUST_DELTA = 0.02  # relative residuals below 2% weigh as 2%: the loss is quadratic there


def _nnls_weighted(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """min ||w (X c - y) / y|| over c >= 0 (columns scaled for conditioning); (coef, residual norm)."""
    from scipy.optimize import nnls

    A = X * (w / y)[:, None]
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    beta, rnorm = nnls(A / scale, w, maxiter=50 * X.shape[1])
    return beta / scale, float(rnorm)


def _nnls_robust(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative fit for relative error, made robust by iteratively reweighted least squares
    (weights 1/sqrt(max(|r|, delta)): towards the median relative error the forms are chosen by, so
    a few noisy cells do not pull every prediction). Returns (coef, the final row weights)."""
    w = np.ones_like(y)
    coef, _ = _nnls_weighted(X, y, w)
    for _ in range(ROBUST_ITERATIONS):
        w = 1.0 / np.sqrt(np.maximum(np.abs(X @ coef - y) / y, ROBUST_DELTA))
        coef, _ = _nnls_weighted(X, y, w)
    return coef, w


def solve_form(form: str, tin, tout, batch, y) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The terms, coefficients and row weights of one form fitted to one target (no statistics):
    OLS without an intercept for the paper form (weights 1), robust relative NNLS for the others
    (a knotted form at the knot whose least-squares fit is best)."""
    if form == "paper":
        X = design_matrix(FORMS[form], tin, tout, batch)
        return list(FORMS[form]), np.linalg.lstsq(X, y, rcond=None)[0], np.ones_like(y)
    best: tuple[list[str], np.ndarray, float] | None = None
    for k in _knots(form, tin, tout, batch):
        terms = FORMS[form] if k is None else [knotted(t, k) for t in FORMS[form]]
        X = design_matrix(terms, tin, tout, batch)
        r = _nnls_weighted(X, y, np.ones_like(y))[1]
        if best is None or r < best[2] - 1e-12:
            best = (terms, X, r)
    coef, w = _nnls_robust(best[1], y)
    return best[0], coef, w


def fit_target(form: str, tin: np.ndarray, tout: np.ndarray, batch: np.ndarray, y: np.ndarray) -> TargetModel:
    """Fit one form to one target with its statistics (no cross-validation)."""
    import statsmodels.api as sm

    if form == "paper":
        terms = FORMS[form]
        X = design_matrix(terms, tin, tout, batch)
        res = sm.OLS(y, X).fit()
        coef = res.params
        stats = _stats(res, X, y, coef, uncentered_native=True)
        return TargetModel(form, terms, [float(c) for c in coef], method="ols-no-intercept", stats=stats)
    terms, coef, w = solve_form(form, tin, tout, batch, y)
    X = design_matrix(terms, tin, tout, batch)
    active = coef > 0
    stats = FitStats()
    if active.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.WLS(y, X[:, active], weights=(w / y) ** 2).fit()
        stats = _stats(res, X[:, active], y, coef[active], uncentered_native=False,
                       names=[t for t, a in zip(terms, active) if a])
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
    """Non-negative and non-decreasing in tin and tout over 1..32768 tokens (at each batch given)."""
    return _sane(m.terms, np.asarray(m.coef, dtype=float), batches)


def _sane(terms: list[str], coef: np.ndarray, batches) -> bool:
    ii, oo = np.meshgrid(SANITY_GRID, SANITY_GRID, indexing="ij")
    for b in batches:
        p = (design_matrix(terms, ii.ravel(), oo.ravel(), np.full(ii.size, b)) @ coef).reshape(ii.shape)
        tol = 1e-9 * np.abs(p).max()
        if (p < 0).any() or (np.diff(p, axis=0) < -tol).any() or (np.diff(p, axis=1) < -tol).any():
            return False
    return True


def fold_of(cells: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold: cells (all repeats of one together) shuffled with ``seed`` into ``folds`` groups."""
    uniq, inv = np.unique(cells, return_inverse=True)
    k = min(folds, len(uniq))
    perm = np.random.default_rng(seed).permutation(len(uniq)) % k
    return perm[inv]


def cross_validate(form: str, tin, tout, batch, y, fold: np.ndarray) -> np.ndarray:
    """Held-out predictions for every row (each fold predicted by a fit on the others)."""
    pred = np.full(len(y), np.nan)
    for f in np.unique(fold):
        test = fold == f
        train = ~test
        if train.sum() < len(FORMS[form]) + 1:
            continue
        terms, coef, _ = solve_form(form, tin[train], tout[train], batch[train], y[train])
        pred[test] = design_matrix(terms, tin[test], tout[test], batch[test]) @ coef
    return pred


def _rel_err(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y) / np.abs(y)


@dataclass
class _Scored:
    form: str
    held: np.ndarray
    median: float
    p90: float
    sane: bool
    eligible: bool


def _choose(pool: list[_Scored]) -> _Scored:
    """The candidate with the lowest held-out median relative error (p90 breaks ties)."""
    return min(pool, key=lambda r: (r.median, r.p90))


def fit_one_target(tin, tout, batch, y, cells, opts: FitOptions, forms: list[str], requested=None, *,
                   ineligible=frozenset()) -> TargetModel:
    """All candidate forms with CV; returns the chosen model with its CV summary, interval and
    candidate table. Where the rows span batch sizes only forms with a batch term can be chosen, and
    none of ``ineligible`` (:data:`NOT_FOR` the target).
    ``requested`` (tin, tout): the requested token counts the paper form is fitted on, as the paper
    did (default: the same as the others')."""
    fold = fold_of(cells, opts.folds, opts.seed)
    batches = tuple(np.unique(batch))
    scored = []

    def tokens(form):
        return requested if form == "paper" and requested is not None else (tin, tout)

    for form in forms:
        held = cross_validate(form, *tokens(form), batch, y, fold)
        ok = np.isfinite(held)
        err = _rel_err(held[ok], y[ok])
        terms, coef, _ = solve_form(form, *tokens(form), batch, y)
        scored.append(_Scored(form, held, float(np.median(err)) if err.size else np.inf,
                              float(np.quantile(err, 0.9)) if err.size else np.inf, _sane(terms, coef, batches),
                              (len(batches) == 1 or has_batch_term(form)) and form not in ineligible))
    if opts.form == "auto":
        pool = ([r for r in scored if r.sane and r.eligible] or [r for r in scored if r.eligible] or scored)
        chosen = _choose(pool)
    else:
        chosen = next(r for r in scored if r.form == opts.form)
    model = fit_target(chosen.form, *tokens(chosen.form), batch, y)
    model.interval = conformal_interval(y, chosen.held, fold, opts.level)
    model.cv = CVResult(median=chosen.median, p90=chosen.p90, folds=opts.folds, seed=opts.seed)
    model.candidates = [Candidate(form=r.form, median=r.median, p90=r.p90, sane=r.sane, chosen=r is chosen,
                                  eligible=r.eligible) for r in scored]
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
    """Validated measured trials with the fit's columns: _tin/_tout (actual tokens where known; the
    paper form is fitted on the requested tin/tout, as the paper was),
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


def cell_keys(g: pl.DataFrame) -> np.ndarray:
    """Each row's cell ("tin-tout-batch" of a :func:`_prepared` frame's actual tokens): what
    :func:`fold_of` deals into the cross-validation's folds, all repeats of a cell together."""
    return g.select(pl.concat_str([pl.col(c).cast(pl.String) for c in ("_tin", "_tout", "_batch")],
                                  separator="-")).to_series().to_numpy()


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
    tin, tout, batch = (g[c].to_numpy() for c in ("_tin", "_tout", "_batch"))
    forms = _forms_for(forms, n_cells, opts, np.unique(batch))
    if isinstance(forms, str):
        return forms
    cells = cell_keys(g)
    requested = (g["tin"].to_numpy().astype(float), g["tout"].to_numpy().astype(float))
    targets = {t: fit_one_target(tin, tout, batch, g[col].to_numpy().astype(float), cells, opts, forms, requested,
                                 ineligible=NOT_FOR[t])
               for t, col in (("energy_j", opts.energy_column), ("runtime_s", "runtime_s"))}
    first = g.row(0, named=True)
    rng = FitRange(*((float(v.min()), float(v.max())) for v in (tin, tout, batch)))
    return DeploymentFit(
        deployment=dep, model=first["model"], node_type=first["node_type"], n_gpus=int(first["n_gpus"] or 0),
        backend=first["backend"], batch="*" if opts.pool_batch else int(first["batch"]), targets=targets,
        system=first["system"] or "", energy_source=first["energy_source"] or "", n_trials=g.height, n_cells=n_cells,
        idle_w=idle_power(g), range=rng, context_tokens=context_tokens(first["model"]),
        errata=[h.key for h in errata(g)],
    )


def _forms_for(forms: list[str], n_cells: int, opts: FitOptions, batches: np.ndarray) -> list[str] | str:
    """The candidate forms a deployment with ``n_cells`` cells can take (a form needs its terms + 2
    cells, or ``min_cells``), or the reason it is skipped: too few cells for any form but the paper's,
    or a chosen ``--form`` without a batch term on trials spanning batch sizes."""
    def need(f: str) -> int:
        return opts.min_cells or len(FORMS[f]) + 2

    if opts.form not in ("auto", "paper") and len(batches) > 1 and not has_batch_term(opts.form):
        with_batch = ", ".join(f for f in FORMS if has_batch_term(f))
        return (f"--form {opts.form} has no batch term, and the trials span batch sizes "
                f"{', '.join(f'{b:g}' for b in batches)}: choose one of {with_batch} (or auto)")
    fitted = [f for f in forms if n_cells >= need(f)]
    if not [f for f in fitted if f != "paper" or opts.form == "paper"]:
        least = min(need(f) for f in forms if f != "paper" or opts.form == "paper")
        return f"{n_cells} distinct cells, fewer than the {least} the forms need"
    return fitted


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


