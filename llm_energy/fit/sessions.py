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

import math
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.fits import TARGETS, FitsFile, deployment_key_expr
from llm_energy.fit.forms import FitOptions, _prepared, cell_keys, fit_deployments, fold_of
from llm_energy.fit.records import CVResult, SessionOffset
from llm_energy.fit.validate import fitted_values
from llm_energy.measure.quality import short_card

# sessions of fewer trials are left out (a median of one or two trials says little); a spread of the
# sessions' energy medians above this is reported
MIN_TRIALS = 3
SPREAD_LIMIT = 0.05
# fit_session_levels: rounds of (levels against the fit, fit of the levelled trials); the levels settle in two
LEVEL_ROUNDS = 4
INTERVAL_METHOD = "cv-conformal-ratio+session-levels"


@dataclass(frozen=True)
class SessionLevel:
    """One session's trials of one deployment against the deployment's fit: median measured / fitted - 1."""

    session: str
    n: int
    energy: float
    runtime: float
    card: str | None = None  # the GPU(s) that measured it: NVML UUIDs as the run recorded them, "+"-joined


def _per_session(levels) -> str:
    """Each session's figures, for the warning and the levels line (``SessionLevel`` or ``SessionOffset``)."""
    return ", ".join(f"{s.session + ' on ' + short_card(s.card) if s.card else s.session} {100 * s.energy:+.1f}% "
                     f"({s.n} trials; runtime {100 * s.runtime:+.1f}%)" for s in levels)


@dataclass(frozen=True)
class SessionSpread:
    """A deployment's sessions (at least two of ``MIN_TRIALS`` trials or more), in their first trial's order."""

    deployment: str
    levels: tuple[SessionLevel, ...]

    def spread(self, target: str = "energy") -> float:
        v = [getattr(s, target) for s in self.levels]
        return max(v) - min(v)

    def line(self) -> str:
        return (f"{self.deployment}: its sessions measured {100 * self.spread('energy'):.1f}% apart in energy "
                f"(median measured / fitted - 1: {_per_session(self.levels)}); a fit pooled over them carries that as error, and "
                f"stores of different sessions compare within it")


def session_cards(dirs: list[str]) -> dict[str, str]:
    """Per profiler session of the stores in ``dirs``: the GPU card(s) its run recorded (NVML UUIDs, "+"-joined
    over the run's GPUs); sessions recorded before the UUID was are absent."""
    from llm_energy.measure.closure import run_cards
    from llm_energy.trials.store import open_store

    out: dict[str, str] = {}
    for d in dirs:
        for info in open_store(d).sweeps().values():
            for run in info.runs:
                cards = run_cards(run)
                if cards and run.get("session"):
                    out[run["session"]] = "+".join(cards[dev] for dev in sorted(cards, key=_device_order))
    return out


def _device_order(device: str) -> tuple[str, int]:
    """gpu2 before gpu10: the device's name, then its index."""
    name = device.rstrip("0123456789")
    return name, int(device[len(name):] or 0)


def session_spreads(trials: pl.DataFrame, fits: FitsFile, opts: FitOptions | None = None,
                    cards: dict[str, str] | None = None) -> list[SessionSpread]:
    """Every fitted deployment whose trials come from two or more sessions of ``MIN_TRIALS`` trials or more;
    ``cards`` (:func:`session_cards`) names the card of each session that recorded it."""
    opts = opts or FitOptions()
    if "session" not in trials.columns:
        return []
    out = []
    for (dep,), g in _session_trials(trials, opts).group_by("_dep", maintain_order=True):
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
            # a runtime median is null where no trial's fitted runtime was positive: no level (0) for it
            out.append(SessionSpread(dep, tuple(SessionLevel(s, int(n), float(e), float(r) if r is not None else 0.0,
                                                             (cards or {}).get(s))
                                                for s, n, e, r in levels.iter_rows())))
    return out


def _session_trials(trials: pl.DataFrame, opts: FitOptions) -> pl.DataFrame:
    """The fitted trials (:func:`_prepared`, targets valid) of a session, in measurement order (by session
    where there is no ``t_start``): what the spreads and the session counts read."""
    df = _prepared(trials, opts, "trials").filter(~pl.col("_bad") & pl.col("session").is_not_null())
    return df.sort("t_start" if "t_start" in df.columns else "session")


def _ratio(measured: pl.Series, fitted: np.ndarray) -> pl.Series:
    """measured / fitted - 1 per trial; null where the fitted value is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = measured.to_numpy().astype(float) / fitted - 1.0
    return pl.Series(np.where(fitted > 0, r, np.nan)).fill_nan(None)


def session_warnings(spreads: list[SessionSpread], limit: float = SPREAD_LIMIT) -> list[str]:
    """One line per deployment whose sessions' energy medians lie more than ``limit`` apart."""
    return [s.line() for s in spreads if s.spread("energy") > limit]


def on_card(card: str | None, reference: str) -> bool:
    """Whether a session ran on exactly the GPUs of ``reference`` (both NVML UUIDs, "+"-joined; the order of
    the GPUs does not count): a session of GPUs A+B is not on A, nor on A+C."""
    return bool(card) and bool(reference) and set(card.split("+")) == set(reference.split("+"))


def resolve_card(reference: str, cards: dict[str, str]) -> str:
    """The full card of ``reference`` (one GPU's NVML UUID or its prefix, or several "+"-joined, as the levels
    line and ``check`` print them) among the sessions' ``cards``: each part must start exactly one recorded
    GPU's UUID, and the GPUs must be one session's card. A one-line :class:`UserError` otherwise, naming the
    recorded cards."""
    known = sorted(set(cards.values()))
    gpus = sorted({g for c in known for g in c.split("+")})
    listed = ", ".join(known) or "none recorded"
    parts = reference.split("+")
    if not reference or not all(parts):
        raise bad_value("--level-card", reference, f"expected a card's NVML UUID or its prefix (cards: {listed})")
    full = []
    for part in parts:
        hits = [g for g in gpus if g.startswith(part)]
        if len(hits) != 1:
            why = "matches no GPU of these stores' sessions" if not hits else f"matches {len(hits)} GPUs: {', '.join(hits)}"
            raise bad_value("--level-card", reference, f"{part!r} {why} (cards: {listed})")
        full.append(hits[0])
    card = "+".join(full)
    match = next((c for c in known if on_card(c, card)), None)
    if match is None:
        raise bad_value("--level-card", reference, f"{card} is no session's card (cards: {listed})")
    return match


def fit_session_levels(trials: pl.DataFrame, opts: FitOptions | None = None, cards: dict[str, str] | None = None, *,
                       source: str = "", held_out: bool = True, level_card: str | None = None) -> FitsFile:
    """Fits with each deployment's sessions as a factor (``fit --session-levels``).

    Per deployment whose trials come from two or more sessions of ``MIN_TRIALS`` trials or more, each session's
    level (its trials' median measured / fitted, per target) is estimated and divided out of its trials, and the
    deployment fitted again on the levelled trials, ``LEVEL_ROUNDS`` times; the levels are centred each round
    (their geometric mean is 1), so the fit describes the middle of the sessions seen. With ``level_card`` (a
    card as ``cards`` records it, :func:`resolve_card`; ``fit --level-card``) they are centred instead on the
    levelled sessions measured on that card, so the fit describes that card: the fits of two deployments whose stores each hold
    a session on one card then compare on that card's level, not on two middles of different machines. A
    deployment with no levelled session on it stays at the middle (its ``level_card`` None). Sessions of fewer
    trials are left at the middle level. What is stored:

    * the forms, coefficients and cross-validated errors of the levelled fit: within-session figures, what the
      model misses on one machine;
    * each target's interval widened by the levels: ``(1 + q_lo) x the lowest level .. (1 + q_hi) x the highest``
      (method ``cv-conformal-ratio+session-levels``), so it spans the machines measured, not machines beyond
      them; its ``coverage_cv`` is None (the widening is not cross-checked);
    * ``session_levels``: each session's final measured / fitted - 1 per target, with its card from ``cards``;
    * each target's ``cv_levels`` (``held_out``): the held-out error of the whole procedure
      (:func:`procedure_cv`), where ``cv`` is the levelled fit's on trials levelled with levels that saw them;
    * ``level_card``: the card the model describes, where ``level_card`` was given and the deployment had a
      levelled session on it, or every one of its sessions ran on it.

    Deployments of one session are fitted exactly as :func:`fit_deployments` fits them."""
    opts, cards = opts or FitOptions(), cards or {}
    fits = fit_deployments(trials, opts, source=source)
    if "session" not in trials.columns:
        return fits
    cols = {"energy_j": opts.energy_column, "runtime_s": "runtime_s"}
    factor: dict[tuple[str, str], dict[str, float]] = {}
    counts: dict[tuple[str, str], int] = {}
    work = trials
    for _ in range(LEVEL_ROUNDS):
        spreads = session_spreads(work, fits, opts)
        if not spreads:
            break
        for s in spreads:
            ref = [lv for lv in s.levels if level_card and on_card(cards.get(lv.session), level_card)]
            for t, attr in zip(TARGETS, ("energy", "runtime")):
                centre = math.exp(float(np.mean([math.log1p(getattr(lv, attr)) for lv in ref or s.levels])))
                for lv in s.levels:
                    f = factor.setdefault((s.deployment, lv.session), {u: 1.0 for u in TARGETS})
                    f[t] *= (1.0 + getattr(lv, attr)) / centre
                    counts[(s.deployment, lv.session)] = lv.n
        work = _levelled(trials, factor, cols, opts)
        fits = fit_deployments(work, opts, source=source)
    if level_card and "session" in trials.columns:  # a deployment measured on the card alone is at its level
        per = (trials.filter(~pl.col("warmup")).with_columns(deployment_key_expr(pool_batch=opts.pool_batch).alias("_dep"))
               .group_by("_dep").agg(pl.col("session").unique()))
        for dep, sess in per.iter_rows():
            if dep in fits.deployments and all(x is not None and on_card(cards.get(x), level_card) for x in sess):
                fits.deployments[dep].level_card = level_card
    if not factor:
        return fits
    final = {s.deployment: s for s in session_spreads(work, fits, opts)}
    for dep, d in fits.deployments.items():
        mine = {sess: f for (k, sess), f in factor.items() if k == dep}
        if not mine:
            continue
        rest = {lv.session: lv for lv in final[dep].levels} if dep in final else {}
        levels = []
        for sess, f in mine.items():
            lv = rest.get(sess)
            e = f["energy_j"] * (1.0 + (lv.energy if lv else 0.0)) - 1.0
            r = f["runtime_s"] * (1.0 + (lv.runtime if lv else 0.0)) - 1.0
            n = lv.n if lv else counts[(dep, sess)]
            levels.append(SessionOffset(sess, n, e, r, cards.get(sess)))
        d.session_levels = levels
        d.sessions_share_cells = _share_cells(trials, dep, set(mine), opts)
        if level_card and any(on_card(lv.card, level_card) for lv in levels):
            d.level_card = level_card
        if held_out:
            for t, cv in procedure_cv(trials, dep, opts, source=source, cards=cards, level_card=level_card).items():
                d.targets[t].cv_levels = cv
        for t, attr in zip(TARGETS, ("energy", "runtime")):
            m = d.targets[t]
            lo, hi = min(1.0 + getattr(x, attr) for x in levels), max(1.0 + getattr(x, attr) for x in levels)
            if m.interval is not None and m.interval.bounded:
                m.interval = replace(m.interval, q_lo=(1.0 + m.interval.q_lo) * min(lo, 1.0) - 1.0,
                                     q_hi=(1.0 + m.interval.q_hi) * max(hi, 1.0) - 1.0, method=INTERVAL_METHOD,
                                     coverage_cv=None)
    return fits


def procedure_cv(trials: pl.DataFrame, dep: str, opts: FitOptions | None = None, *, source: str = "",
                 cards: dict[str, str] | None = None, level_card: str | None = None) -> dict[str, CVResult]:
    """Per target, the held-out relative error of the whole ``--session-levels`` procedure on deployment
    ``dep``: the cells in ``opts.folds`` folds as the fit's cross-validation deals them (:func:`fold_of`, its
    seed); each fold's trials predicted by :func:`fit_session_levels` on the other folds' trials, times the
    level that fit gives the trial's session (1, the middle or ``level_card``'s level, for a session too small
    there to level, or none).
    The error of predicting a trial on a machine whose level is known from its other trials only. Folds whose
    training trials do not fit the deployment are left out (``folds``: those predicted); none: no entry."""
    opts = opts or FitOptions()
    mine = trials.filter(deployment_key_expr(pool_batch=opts.pool_batch) == dep).with_row_index("_row")
    prep = _prepared(mine, opts, source or "trials").filter(~pl.col("_bad"))  # the rows _fit_deployment fits
    if prep.height == 0:
        return {}
    fold = fold_of(cell_keys(prep), opts.folds, opts.seed)
    errs: dict[str, list[np.ndarray]] = {t: [] for t in TARGETS}
    scored = 0
    for f in np.unique(fold):
        test = prep.filter(pl.Series(fold == f))  # every trial of the fold's cells, of any session or none
        train = mine.filter(~pl.col("_row").is_in(test["_row"].implode())).drop("_row")
        try:
            sub = fit_session_levels(train, opts, cards, source=source, held_out=False, level_card=level_card)
        except UserError:
            continue
        if dep not in sub.deployments:
            continue
        levels = {lv.session: lv for lv in sub.deployments[dep].session_levels}  # a null session: level 1
        fitted = fitted_values(sub, dep, test)
        scored += 1
        for t, attr, col in zip(TARGETS, ("energy", "runtime"), (opts.energy_column, "runtime_s")):
            scale = np.array([1.0 + getattr(levels[x], attr) if x in levels else 1.0 for x in test["session"]])
            y = test[col].to_numpy().astype(float)
            errs[t].append(np.abs(fitted[t][0] * scale - y) / np.abs(y))
    out = {}
    for t, parts in errs.items():
        e = np.concatenate(parts) if parts else np.array([])
        e = e[np.isfinite(e)]
        if e.size:
            out[t] = CVResult(median=float(np.median(e)), p90=float(np.quantile(e, 0.9)), folds=scored,
                              seed=opts.seed)
    return out


def _share_cells(trials: pl.DataFrame, dep: str, sessions: set[str], opts: FitOptions) -> bool:
    """Whether two of ``sessions`` measured one (tin, tout, batch) cell of ``dep`` (what ties their levels to
    the machines rather than to the cells each measured)."""
    cells = (trials.filter((deployment_key_expr(pool_batch=opts.pool_batch) == dep) & pl.col("session").is_in(list(sessions))
                           & ~pl.col("warmup"))
             .group_by("tin", "tout", "batch").agg(pl.col("session").n_unique().alias("k")))
    return bool((cells["k"] >= 2).any())


def _levelled(trials: pl.DataFrame, factor: dict[tuple[str, str], dict[str, float]], cols: dict[str, str],
              opts: FitOptions) -> pl.DataFrame:
    """The trials with each (deployment, session)'s targets divided by its level."""
    f = pl.DataFrame({"_dep": [k[0] for k in factor], "session": [k[1] for k in factor],
                      **{f"_f_{t}": [v[t] for v in factor.values()] for t in TARGETS}})
    out = (trials.with_columns(deployment_key_expr(pool_batch=opts.pool_batch).alias("_dep"))
           .join(f, on=["_dep", "session"], how="left", maintain_order="left")
           .with_columns([(pl.col(c) / pl.col(f"_f_{t}").fill_null(1.0)).alias(c) for t, c in cols.items()]))
    return out.drop("_dep", *[f"_f_{t}" for t in TARGETS])


def session_counts(trials: pl.DataFrame, opts: FitOptions | None = None) -> dict[str, list[tuple[str, int]]]:
    """Per deployment, its sessions and their fitted trials, in their first trial's order."""
    opts = opts or FitOptions()
    if "session" not in trials.columns:
        return {}
    counts = _session_trials(trials, opts).group_by("_dep", "session", maintain_order=True).len()
    out: dict[str, list[tuple[str, int]]] = {}
    for dep, sess, n in counts.iter_rows():
        out.setdefault(dep, []).append((sess, int(n)))
    return out


def level_lines(fits: FitsFile, trials: pl.DataFrame | None = None, opts: FitOptions | None = None) -> list[str]:
    """One line per deployment fitted with its sessions as a factor: each session's level, and (given the
    ``trials`` fitted) the sessions left at the middle level (too few trials with a fitted value to level)."""
    counts = session_counts(trials, opts) if trials is not None else {}
    out = []
    for d in fits.deployments.values():
        if not d.session_levels:
            continue
        levelled = {lv.session for lv in d.session_levels}
        few = [(sess, n) for sess, n in counts.get(d.deployment, []) if sess not in levelled]
        at = f"the level of card {d.level_card}" if d.level_card else "the middle level"
        left = "" if not few else (
            f"; left at {at} (fewer than {MIN_TRIALS} trials): "
            + ", ".join(f"{sess} ({n} trial{'s' if n != 1 else ''})" for sess, n in few))
        iv = d.targets["energy_j"].interval
        span = f"; energy interval {100 * iv.q_lo:+.1f}%..{100 * iv.q_hi:+.1f}%" if iv is not None and iv.bounded else ""
        whole = {t: d.targets[t].cv_levels for t in TARGETS}
        if all(whole.values()):
            span += (f"; held out with the levels (the whole procedure): energy {100 * whole['energy_j'].median:.1f}%, "
                     f"runtime {100 * whole['runtime_s'].median:.1f}% median")
        apart = "" if d.sessions_share_cells is not False else (
            "; its levelled sessions share no (tin, tout, batch) cell, so a level may be the form missing the cells "
            "only one session measured")
        out.append(f"{d.deployment}: sessions as a factor, the model at {at} (measured / fitted - 1: "
                   f"{_per_session(d.session_levels)}){span}{left}{apart}")
    return out
