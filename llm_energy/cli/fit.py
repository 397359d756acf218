"""``llm-energy import``, ``fit``, ``predict`` and ``report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.fit.forms import FORMS
from llm_energy.io import read_table


def register(sub: argparse._SubParsersAction) -> None:
    _register_import(sub)
    _register_fit_predict(sub)
    _register_report(sub)


def _register_import(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="import other tools' measurements into a store",
                         description="Import other tools' measurements into a trial store.")
    isub = imp.add_subparsers(dest="source", metavar="SOURCE", required=True)
    w = isub.add_parser("wilkins2024", help="files of Wilkins et al. (2024): grid, sweeps or served CSVs",
                        description="Import grid (all-stats-raw.csv), sweeps (all-*-stats.csv) or served ({vllm,mii}-*.csv) "
                                    "files of Wilkins, Keshav, Mortier (2024); the kind is detected from the header.")
    w.add_argument("csv", nargs="+", help="one or more files")
    w.add_argument("--out", required=True, help="store directory (created if missing)")
    w.add_argument("--model", help="served files: the model served (default: from the file name, "
                                   "{vllm,mii}-MODEL-GPUS.csv; the files' own model column is not trusted)")
    w.add_argument("--node-type", help="served files: the node type (default a100-80gb)")
    w.add_argument("--wait", action="store_true", help="wait for another writer of OUT to finish instead of refusing")
    w.set_defaults(func=cmd_import_wilkins)
    c = isub.add_parser("csv", help="any CSV, through a FIELD=COLUMN mapping",
                        description="Import any CSV. Required fields: tin, tout, energy_j, runtime_s. Optional: batch, "
                                    "model, node_type, system, device, n_gpus, backend, repeat, warmup, tin_actual, "
                                    "tout_actual, and the multipliers energy_scale and runtime_scale (e.g. 0.001 for "
                                    "mJ or ms). energy_j=A+B sums several columns (one per GPU, say), each kept per "
                                    "device. Without a header, COLUMN is a 0-based index. Lists are comma-separated, "
                                    "as in plan --columns: --map tin=in,tout=out,energy_j=e0+e1,runtime_s=t.")
    c.add_argument("file")
    c.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN[,FIELD=COLUMN...]",
                   help="repeatable; a comma-separated list")
    c.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE...]",
                   help="constant for a field the file lacks (e.g. --set model=llama-2-7b,node_type=h100), or a "
                        "scale (--set energy_scale=0.001)")
    c.add_argument("--no-header", action="store_true", help="the file has no header row")
    c.add_argument("--out", required=True)
    c.add_argument("--wait", action="store_true", help="wait for another writer of OUT to finish instead of refusing")
    c.set_defaults(func=cmd_import_csv)


def _register_fit_predict(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fit", help="fit per-deployment energy and runtime models",
                       description="Fit one energy model and one runtime model per deployment (model x node type x "
                                   "GPUs x backend x batch) and write FITS.json. --form paper reproduces Wilkins et al.; "
                                   "auto (default) picks the physically sane form with the lowest held-out error.")
    f.add_argument("dir", nargs="+", help="store directories")
    f.add_argument("--out", required=True, help="FITS.json to write")
    f.add_argument("--form", default="auto", help="auto (default) | " + " | ".join(FORMS))
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds over cells (default 5)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--pool-batch", action="store_true", help="one model over all batch sizes, batch as a factor")
    f.add_argument("--net", action="store_true", help="fit idle-subtracted energy (energy_net_j) instead of gross")
    f.add_argument("--drop-invalid", action="store_true",
                   help="drop trials with NaN/inf/zero/negative energy or runtime (default: skip their deployment)")
    f.add_argument("--candidates", action="store_true",
                   help="also print every candidate form's held-out median and p90 relative error, whether it is "
                        "physically sane (non-negative, non-decreasing over 1..32768 tokens), which was chosen, and each "
                        "deployment's interval coverage checked by cross-validation")
    f.add_argument("--json", action="store_true", help="print the fits as JSON")
    f.add_argument("--include-suspect", action="store_true",
                   help="also fit trials flagged suspect (quality; default: left out, with a count)")
    f.add_argument("--session-levels", action="store_true",
                   help="fit each deployment with its profiler sessions (machines) as a factor: each session's level "
                        "estimated and divided out, the model of the middle level, its interval widened to span the "
                        "levels, the levels stored (session_levels) with the whole procedure's held-out error "
                        "(cv_levels); default: sessions pooled, a warning where they "
                        "differ by more than 5%%")
    f.add_argument("--level-card", metavar="UUID",
                   help="with --session-levels: the model at the level of the sessions measured on this card (one "
                        "GPU's NVML UUID or a prefix naming only it, or a multi-GPU session's UUIDs joined by +, as "
                        "`check` and the levels line name them) instead of the middle, stored as level_card (the full "
                        "UUIDs); deployments with no session of 3 or more trials on it stay at the "
                        "middle (a line on stderr names them). Fits of stores that each hold a session on one card "
                        "then compare on that card, not on the middles of different machines")
    f.set_defaults(func=cmd_fit)

    pr = sub.add_parser("predict", help="predict energy and runtime of queries",
                        description="Predict energy (J per request: the batch's energy divided by the batch size) "
                                    "and runtime (s, the batch's), with 90% intervals, for queries on every "
                                    "deployment of a fits file (or --deployment); in_range says whether a query "
                                    "lies within the tokens and batch sizes its deployment was fitted on (a line on "
                                    "stderr counts those outside, and those beyond the model's context length, "
                                    "beyond_context). Without a batch size each "
                                    "deployment predicts at the batch size it was fitted at. With one (--batch, or a "
                                    "batch column in --queries) a query is predicted only on deployments fitted at "
                                    "its batch size or pooled over batch sizes (fit --pool-batch, keys ending /b*); "
                                    "a batch size that no deployment covers is an error. Non-finite values print "
                                    "as null with --json.")
    pr.add_argument("fits", help="FITS.json")
    pr.add_argument("--queries", help="CSV or Parquet with columns tin, tout[, batch] (positive integers)")
    pr.add_argument("--tin", type=int)
    pr.add_argument("--tout", type=int)
    pr.add_argument("--batch", type=int,
                    help="batch size (>= 1): predict only on deployments fitted at it or pooled over batch sizes; "
                         "with --queries, for a file without a batch column")
    pr.add_argument("--deployment", action="append", help="restrict to these deployments (repeatable)")
    pr.add_argument("--out", help="write CSV or Parquet (by extension)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)


def _register_report(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="Markdown + PNG report of stores and their fits",
                        description="Write a Markdown report with plots: measured vs predicted, relative residual heat "
                                    "maps, J/token against tout, and the fits table; energy per node and per "
                                    "deployment and one trial's power trace; with --plan the plan (shares, baselines, "
                                    "Pareto front, chosen point), with --route the routing policies; with a grid "
                                    "intensity, carbon (gCO2e) beside energy. See docs/report.md.")
    rp.add_argument("dir", nargs="+", help="store directories")
    rp.add_argument("--out", required=True, help="report directory")
    rp.add_argument("--fits", help="use this FITS.json instead of fitting anew")
    rp.add_argument("--plan", metavar="DIR", help="a plan directory (llm-energy plan --out DIR; --pareto for the front)")
    rp.add_argument("--route", metavar="DIR", help="a route directory (llm-energy route --out DIR): policies' energy and latency")
    g = rp.add_mutually_exclusive_group()
    g.add_argument("--grid-gco2-per-kwh", type=float, metavar="X",
                   help="grid carbon intensity, constant (gCO2e/kWh): carbon beside energy")
    g.add_argument("--grid-intensity", metavar="FILE",
                   help="hourly grid carbon intensity, CSV with columns hour (ISO 8601 or epoch s, increasing) and "
                        "gco2_per_kwh: each trial at its hour, plans and routes at the mean")
    rp.add_argument("--trace-trial", metavar="TRIAL_ID",
                    help="the trial whose power trace is drawn (default: the measured trial with the most samples)")
    rp.set_defaults(func=cmd_report)


def cmd_import_wilkins(args) -> int:
    from llm_energy.trials.importers import import_wilkins2024, store_imported

    total = 0
    for f in args.csv:
        notes: list[str] = []
        df = import_wilkins2024(f, model=args.model, node_type=args.node_type, notes=notes)
        for note in notes:
            print(f"import: {note}", file=sys.stderr)
        held = _import_lock(args)  # noqa: F841 - kept alive while it writes
        n = store_imported(df, args.out)
        total += n
        print(f"{f}: {df.height} trials ({int(df['warmup'].sum())} warm-up), {n} new -> {args.out}")
    print(f"imported {total} trials into {args.out}")
    return 0


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    """FIELD=VALUE pairs, each item a comma-separated list of them (the syntax of plan --columns)."""
    out: dict[str, str] = {}
    for it in items:
        for part in it.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise bad_value(flag, it, "expected FIELD=VALUE[,FIELD=VALUE...]")
            if k.strip() in out:
                raise bad_value(flag, it, f"{k.strip()} given twice")
            out[k.strip()] = v.strip()
    return out


def _import_lock(args):
    """OUT's writer lock for this process (refused naming the holder, or --wait) once the input parsed:
    held while the returned store lives; store_imported's own store shares it."""
    from llm_energy.trials.store import TrialStore

    return TrialStore(args.out, writer="import", wait=args.wait)


def cmd_import_csv(args) -> int:
    from llm_energy.trials.importers import import_csv, store_imported

    df = import_csv(args.file, _pairs(args.map, "--map"), has_header=not args.no_header, defaults=_pairs(args.set, "--set"))
    held = _import_lock(args)  # noqa: F841 - kept alive while it writes
    n = store_imported(df, args.out)
    print(f"{args.file}: {df.height} trials, {n} new -> {args.out}")
    return 0


def cmd_fit(args) -> int:
    from llm_energy.fit.fits import save_fits
    from llm_energy.fit.forms import FORM_CHOICES, FitOptions, fit_deployments
    from llm_energy.trials.store import load_trials

    if args.form not in FORM_CHOICES:
        raise bad_value("--form", args.form, f"choose one of {', '.join(FORM_CHOICES)}")
    if args.folds < 2:
        raise bad_value("--folds", args.folds, "must be >= 2")
    if args.level_card is not None and not args.session_levels:
        raise bad_value("--level-card", args.level_card, "needs --session-levels")
    if args.session_levels:
        from llm_energy.fit.sessions import resolve_card, session_cards

        cards = session_cards(args.dir)  # checked before the trials load (and their warnings print)
        if args.level_card is not None:
            args.level_card = resolve_card(args.level_card, cards)
    df = load_trials(args.dir)
    _warn_errata(df)
    if not args.include_suspect:
        df = _drop_suspect(df)
    opts = FitOptions(form=args.form, folds=args.folds, seed=args.seed, pool_batch=args.pool_batch,
                      energy_column="energy_net_j" if args.net else "energy_j", drop_invalid=args.drop_invalid)
    if args.session_levels:
        from llm_energy.fit.sessions import fit_session_levels, level_lines

        fits = fit_session_levels(df, opts, cards, source=",".join(args.dir), level_card=args.level_card)
    else:
        fits = fit_deployments(df, opts, source=",".join(args.dir))
    save_fits(fits, args.out)
    if args.session_levels:
        for line in level_lines(fits, df, opts):
            print(f"levels: {line}", file=sys.stderr)
        if args.level_card is not None:
            from llm_energy.fit.sessions import MIN_TRIALS

            for d in fits.deployments.values():
                if d.level_card is not None:
                    continue
                why = (f"no session of {MIN_TRIALS} or more trials on card {args.level_card}: the model at the middle "
                       "level" if d.session_levels else
                       "one level (fewer than two sessions to level), not measured on that card alone: the model at "
                       "its measuring machines' level")
                print(f"levels: {d.deployment}: {why}", file=sys.stderr)
    else:
        _warn_sessions(df, fits, opts, args.dir)
    if args.json:
        from llm_energy.io import to_json

        print(to_json(fits.to_dict()))
        return 0
    from llm_energy.report.tables import candidates_table, fits_table, stdout_console

    con = stdout_console()
    con.print(fits_table(fits))
    if args.candidates:
        con.print(candidates_table(fits))
    for line in _coverage_lines(fits):
        con.print(line)
    for s in fits.skipped:
        con.print(f"skipped {s['deployment']}: {s['reason']}")
    con.print(f"wrote {args.out}")
    return 0


def _coverage_lines(fits) -> list[str]:
    """Each deployment's intervals and their coverage checked by cross-validation, and its fitted range."""
    out = []
    for d in fits.deployments.values():
        parts = []
        for t, m in d.targets.items():
            iv = m.interval
            if iv is None or not iv.bounded:
                continue
            cov = f", CV coverage {100 * iv.coverage_cv:.0f}%" if iv.coverage_cv is not None else ""
            parts.append(f"{t} {100 * (iv.level or 0):.0f}% PI {100 * iv.q_lo:+.1f}%..{100 * iv.q_hi:+.1f}%{cov}")
        rng = f"; fitted on {d.range.describe()}" if d.range is not None else ""
        out.append(f"{d.deployment}: {'; '.join(parts) or 'no interval'}{rng}")
    return out


def _warn_sessions(df: pl.DataFrame, fits, opts, dirs: list[str]) -> None:
    """One warning line (stderr) per deployment whose profiler sessions measured at different levels, each
    session with its card where the run recorded it (llm_energy/fit/sessions.py)."""
    from llm_energy.fit.sessions import session_cards, session_spreads, session_warnings

    for line in session_warnings(session_spreads(df, fits, opts, session_cards(dirs))):
        print(f"warning: {line}", file=sys.stderr)


def _warn_errata(df: pl.DataFrame) -> None:
    """One warning line (stderr) per known defect of the trials being fitted; fits.json keeps its key per
    deployment (``errata``), so plan, route and predict can say so too."""
    from llm_energy.trials.errata import errata

    for hit in errata(df):
        print(f"warning: {hit.line()}", file=sys.stderr)


def _drop_suspect(df: pl.DataFrame) -> pl.DataFrame:
    """Trials whose meter readings were flagged suspect are left out of a fit; says how many (stderr)."""
    from llm_energy.trials.schema import drop_suspect

    kept, note = drop_suspect(df)
    if note:
        print(f"{note}; --include-suspect fits them", file=sys.stderr)
    return kept


def _positive_ints(q: pl.DataFrame, c: str, source: str, what: str) -> np.ndarray:
    """Column ``c`` as int64, or a UserError naming the file, row and value (8.5 is not truncated)."""
    v = q[c].cast(pl.Float64, strict=False)
    bad = (v.is_null() | ~v.is_finite() | (v < 1) | (v != v.floor()) | (v > 2**62)).fill_null(True)
    if bad.any():
        i = int(bad.arg_true()[0])
        raise UserError(f"{source}: {c}={q[c][i]!r} (row {i + 1}): {what} must be positive integers")
    return v.cast(pl.Int64).to_numpy()


def _queries(args) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """tin, tout and batch (None: each deployment's own) of ``predict``'s queries, and where the batch
    sizes came from (the queries file or ``--batch``), for the error naming a batch no fit covers."""
    if args.queries:
        q = read_table(args.queries)
        for c in ("tin", "tout"):
            if c not in q.columns:
                raise UserError(f"{args.queries}: column {c!r} missing")
        tin = _positive_ints(q, "tin", args.queries, "token counts")
        tout = _positive_ints(q, "tout", args.queries, "token counts")
        if "batch" in q.columns:
            if args.batch is not None:
                raise bad_value("--batch", args.batch, f"{args.queries} has a batch column; give the batch size once")
            return tin, tout, _positive_ints(q, "batch", args.queries, "batch sizes"), args.queries
        return tin, tout, (np.full(len(tin), args.batch) if args.batch is not None else None), "--batch"
    if args.tin is not None and args.tout is not None:
        if args.tin < 1 or args.tout < 1:
            raise bad_value("--tin/--tout", (args.tin, args.tout), "must be positive")
        batch = np.array([args.batch]) if args.batch is not None else None
        return np.array([args.tin]), np.array([args.tout]), batch, "--batch"
    raise UserError("give --queries FILE or --tin N --tout N")


def _write_predictions(out: pl.DataFrame, path: str) -> None:
    p = Path(path)
    blocker = next((a for a in reversed(p.parents) if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{p}: cannot write the predictions ({blocker} is a file, not a directory)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        out.write_parquet(p) if p.suffix == ".parquet" else out.write_csv(p)
    except (OSError, pl.exceptions.PolarsError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise UserError(f"{p}: cannot write the predictions ({why})") from None


def cmd_predict(args) -> int:
    from llm_energy.fit.fits import errata_warning, find_fit, load_fits, predict_all, unmatched_batches
    from llm_energy.io import to_json

    if args.batch is not None and args.batch < 1:
        raise bad_value("--batch", args.batch, "must be >= 1")
    fits = load_fits(args.fits)
    tin, tout, batch, where = _queries(args)
    selected = [find_fit(fits, d, source=args.fits) for d in args.deployment or []]
    if batch is not None:
        missing = unmatched_batches(fits, batch, args.deployment)
        if missing:
            have = [str(b) for b in sorted({d.batch for d in (selected or fits.deployments.values())})]
            what = f"--batch={missing[0]}" if where == "--batch" else f"{where}: batch={missing[0]}"
            raise UserError(f"{what}: no deployment{' selected' if args.deployment else ''} in "
                            f"{args.fits} was fitted at this batch size (fitted: {', '.join(have)}); predictions are "
                            f"made only at a fitted batch size (fit --pool-batch to model batch as a factor)")
    out = predict_all(fits, tin, tout, batch, deployments=args.deployment, per_request=True)
    if args.out:
        _write_predictions(out, args.out)
    _warn_out_of_range(fits, out)
    erratum = errata_warning(fits, set(out["deployment"].to_list()))
    if erratum:
        print(f"predict: warning: {erratum}", file=sys.stderr)
    if args.json:
        print(to_json(out.to_dicts()))
        return 0
    from llm_energy.report.tables import predictions_table, stdout_console

    stdout_console().print(predictions_table(out))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _warn_out_of_range(fits, out: pl.DataFrame) -> None:
    """One stderr line per deployment with predictions outside its fitted range or context length."""
    for (dep,), g in out.group_by(["deployment"], maintain_order=True):
        outside, beyond = int((~g["in_range"]).sum() or 0), int(g["beyond_context"].sum() or 0)
        if outside or beyond:
            d = fits.deployments[dep]
            what = []
            if outside:
                what.append(f"{outside} of {g.height} queries outside its fitted range ({d.range.describe()})")
            if beyond:
                what.append(f"{beyond} beyond its context length ({d.context_limit} tokens)")
            print(f"predict: {dep}: {'; '.join(what)}: extrapolated (in_range/beyond_context)", file=sys.stderr)


def cmd_report(args) -> int:
    """The report of the stores with the fits of ``--fits``, or with fits made here with the defaults."""
    from llm_energy.fit.fits import load_fits
    from llm_energy.fit.forms import fit_deployments
    from llm_energy.report.carbon import grid_from_args
    from llm_energy.report.markdown import write_report
    from llm_energy.trials.store import load_trials

    grid = grid_from_args(args.grid_gco2_per_kwh, args.grid_intensity)  # bad intensity fails before any work
    for flag, d in (("--plan", args.plan), ("--route", args.route)):
        if d is not None and not (Path(d) / "summary.json").is_file():
            raise bad_value(flag, d, "no summary.json there (not a plan/route output directory)")
    trials = load_trials(args.dir)
    fits = load_fits(args.fits) if args.fits else fit_deployments(trials, source=",".join(args.dir))
    path = write_report(trials, fits, args.out, stores=args.dir, plan_dir=args.plan, route_dir=args.route,
                        grid=grid, trace_trial=args.trace_trial)
    print(f"wrote {path}")
    return 0
