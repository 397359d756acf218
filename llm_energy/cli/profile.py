"""``llm-energy profile`` (run a token sweep on this node) and ``llm-energy show`` (print a store)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.measure.design import DESIGN_KINDS, design_from_lists, parse_int_list
from llm_energy.trials.schema import SOURCE_ESTIMATE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="run a token sweep on this node and store its trials",
        description=(
            "Run a token sweep on this node: prompts of exactly TIN tokens, generations of exactly TOUT new "
            "tokens, for every batch size, REPEATS times (plus warm-ups). Trials are appended to the store in "
            "OUT; rerunning the same command resumes without repeating or losing a trial."
        ),
    )
    p.add_argument("--model", required=True, help="preset name (see `llm-energy models`) or a local checkpoint dir")
    p.add_argument("--tin", default="8,16,32", help="prompt tokens: a list (8,16,32) or a doubling range (8..2048)")
    p.add_argument("--tout", default="8,16", help="new tokens: a list or a doubling range")
    p.add_argument("--batch", default="1", help="batch sizes: a list or a doubling range")
    p.add_argument("--repeats", type=int, default=3, help="measured trials per cell (default 3)")
    p.add_argument("--warmups", type=int, default=1, help="warm-up trials per cell, stored but flagged (default 1)")
    p.add_argument("--design", default="grid", choices=DESIGN_KINDS, help="sweep design (default grid)")
    p.add_argument("--n-random", type=int, default=16, help="points per batch size for --design random-log")
    p.add_argument("--backend", default="cache", help="cache (default) | no-cache | static | static+OPTIONS (e.g. "
                   "static+fused, static+gqa, static+fused+cdt: fused projections, decode attention on the KV heads, "
                   "inductor tuning; docs/h200.md)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--gpus", default=None, help="GPUs for a deployment sharded over several, e.g. 0,1: CUDA ordinals as this process sees them "
                        "(under CUDA_VISIBLE_DEVICES=2,3, 0 is GPU 2; the power meter follows)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, float32 on CPU) | bfloat16 | float16 | float32")
    p.add_argument("--out", required=True, help="store directory (created if missing)")
    p.add_argument("--node-type", default="local", help="label of this node's type, part of the deployment key")
    p.add_argument("--idle-s", type=float, default=3.0, help="idle baseline seconds before the sweep (default 3)")
    p.add_argument("--cooldown-s", type=float, default=0.0, help="pause before each trial (default 0)")
    p.add_argument("--min-window-s", default="auto",
                   help="repeat short generations inside one window until it lasts this long; "
                        "auto (default): 20 meter update periods, at least 0.5 s (2 s on NVML)")
    p.add_argument("--sample-ms", type=float, default=20.0, help="power polling period in ms (default 20)")
    p.add_argument("--sampler-process", action="store_true",
                   help="poll the power meters in child processes instead of threads of the inference process")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--beyond-context", action="store_true",
                   help="run sequences (tin + tout) longer than the model's max_position_embeddings instead of "
                        "refusing them: their cost, not their text, is what is measured (the paper's Falcon grid "
                        "runs to 4096 tokens on a 2048-token model); recorded in the sweep's spec")
    p.add_argument("--time-budget-s", default=None, metavar="SECONDS",
                   help="wall-clock seconds this run may take, from the command's start: before each trial its "
                        "seconds are predicted from the sweep's trials measured so far, one that would not finish "
                        "in the time left is deferred to the next run and the next that fits runs; when none fits "
                        "the run stops as an interrupted one does (exit 130; rerun to resume). Not part of the "
                        "sweep's identity")
    p.add_argument("--seed", type=int, default=0, help="seed for prompts and run order")
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    p.add_argument("--new-sweep", action="store_true",
                   help="when OUT holds this sweep measured with other settings (design, seed, window, energy "
                        "source), start a new sweep beside it instead of refusing")
    p.add_argument("--wait", action="store_true", help="wait for another writer of OUT to finish instead of refusing")
    p.set_defaults(func=cmd_profile)

    s = sub.add_parser("show", help="print the trials of a store", description="Print the trials of a store.")
    s.add_argument("dir", help="store directory")
    s.add_argument("--json", action="store_true", help="print the trial records as a JSON list (NaN/inf as null)")
    s.add_argument("--warmups", action="store_true", help="include warm-up trials")
    s.add_argument("--limit", type=int, default=200, help="rows in the table (default 200; --json prints all)")
    s.set_defaults(func=cmd_show)

    c = sub.add_parser("check", help="energy accounting checks on a store's raw samples",
                       description="Per trial: the energy counter against integrated polled power over the same "
                                   "window. Per session: the counter's total against trials + idle x time outside "
                                   "trial windows, and against all integrated power.")
    c.add_argument("dir")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    k = sub.add_parser("compact", help="merge a store's chunk files (optionally decimating samples)",
                       description="Merge a store's chunk files into one trials and one samples file. With "
                                   "--decimate-ms, keep one power sample per device per interval and only the "
                                   "counter readings where the counter changed (what energy integration needs). "
                                   "Do not run while a sweep writes to the store.")
    k.add_argument("dir")
    k.add_argument("--decimate-ms", type=float, default=None)
    k.add_argument("--wait", action="store_true", help="wait for another writer of DIR to finish instead of refusing")
    k.set_defaults(func=cmd_compact)


def spec_from_args(args: argparse.Namespace):
    from llm_energy.measure.spec import ProfileSpec

    tins = parse_int_list(args.tin, name="tin")
    touts = parse_int_list(args.tout, name="tout")
    batches = parse_int_list(args.batch, name="batch")
    if args.repeats < 1:
        raise bad_value("--repeats", args.repeats, "must be >= 1")
    if args.warmups < 0:
        raise bad_value("--warmups", args.warmups, "must be >= 0")
    if args.sample_ms <= 0:
        raise bad_value("--sample-ms", args.sample_ms, "must be > 0")
    gpus = tuple(parse_int_list_zero(args.gpus)) if args.gpus else None
    if args.min_window_s == "auto":
        min_window = None
    else:
        try:
            min_window = float(args.min_window_s)
        except ValueError:
            raise bad_value("--min-window-s", args.min_window_s, "expected seconds or auto") from None
        if min_window < 0:
            raise bad_value("--min-window-s", args.min_window_s, "must be >= 0")
    design = design_from_lists(args.design, tins, touts, batches, repeats=args.repeats, warmups=args.warmups,
                               seed=args.seed, n_random=args.n_random)
    device = args.device
    if gpus and device == "auto":
        device = f"cuda:{gpus[0]}"
    return ProfileSpec(
        model=args.model, design=design, backend=args.backend, device=device, dtype=args.dtype,
        node_type=args.node_type, idle_s=args.idle_s, cooldown_s=args.cooldown_s, min_window_s=min_window,
        sample_period_s=args.sample_ms / 1e3, seed=args.seed, gpu_indices=gpus, threads=args.threads,
        beyond_context=args.beyond_context,
    )


def parse_int_list_zero(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            v = int(part)
        except ValueError:
            raise bad_value("--gpus", text, f"{part!r} is not a GPU index") from None
        if v < 0:
            raise bad_value("--gpus", text, f"{v} is not a GPU index")
        out.append(v)
    return out


def cmd_profile(args: argparse.Namespace) -> int:
    from llm_energy.measure.budget import BudgetSpent
    from llm_energy.measure.events import ProgressTick
    from llm_energy.measure.inference.backends import BACKENDS
    from llm_energy.measure.profiler import Profiler
    from llm_energy.measure.record import record_events
    from llm_energy.report.live import SweepView
    from llm_energy.report.tables import cell_summary_table, fmt_joules, stdout_console
    from llm_energy.trials import lock as store_lock
    from llm_energy.trials.store import TrialStore

    if args.backend.startswith("static+"):  # any static variant, in its one spelling (the sweep id hashes it)
        from llm_energy.measure.inference.fusion import parse_static, static_label

        args.backend = static_label(parse_static(args.backend))
    elif args.backend not in BACKENDS:
        raise bad_value("--backend", args.backend, f"unknown backend; choose one of {', '.join(BACKENDS)}")
    budget = time_budget(args.time_budget_s)  # counted from here, the command's start
    spec = spec_from_args(args)
    _check_model_name(spec.model)
    prof = Profiler(spec, budget=budget, sampler_process=args.sampler_process)
    if (Path(args.out) / store_lock.LOCK_NAME).exists():  # a store in use: refused before the model is read
        store_lock.release(store_lock.acquire(args.out, "profile", wait=args.wait))
    # a bad config, a sequence past the model's positions or a model too large for the sweep's largest
    # batch x longest sequence is refused here, before the store exists and before any idle is measured
    prof.preflight()
    store = TrialStore(args.out, writer="profile", wait=args.wait)  # one writer at a time
    prof.resume_into(store.sweeps(), new_sweep=args.new_sweep, where=args.out)  # same settings or refuse
    done_before = store.done_trial_ids()
    planned = spec.design.trials()
    skipped = sum(prof.trial_id(t) in done_before for t in planned)
    console = stdout_console()
    if skipped:
        console.print(f"resuming: {skipped} of {len(planned)} trials already in {args.out}")
    history = store.trials().filter(pl.col("sweep_id") == prof.sweep_id).to_dicts() if budget and skipped else []
    at: dict[str, str] = {}  # the trial a compile is preparing (the last event), named by an out-of-memory error
    try:
        with SweepView(live=False if args.no_live else None, title=f"llm-energy profile {spec.model}") as view:
            def on_event(ev) -> None:
                at["trial"] = ev.cell if isinstance(ev, ProgressTick) and ev.state == "compiling" else ""
                if isinstance(ev, ProgressTick):
                    view.update(ev)

            summary = record_events(prof.events(skip=done_before, history=history), store, on_event=on_event)
    except KeyboardInterrupt:  # stop at once; every trial committed before the interrupt stays (issue 16)
        _print_kept(store, prof.sweep_id, len(planned), args.out, "interrupted")
        raise
    except BudgetSpent as e:  # the time budget holds no trial left: stopped as an interrupt stops it
        kept = _print_kept(store, prof.sweep_id, len(planned), args.out, None)
        print(f"{e.describe(len(planned) - kept, len(planned))}; {kept} of {len(planned)} trials of sweep "
              f"{prof.sweep_id} are in {args.out}; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # out of device memory: one line, the trials committed before it kept
        why = _out_of_memory(e)
        if why is None:
            raise
        kept = _print_kept(store, prof.sweep_id, len(planned), args.out, None)
        trial = f"trial {at['trial']}: " if at.get("trial") else ""
        raise UserError(f"{trial}{why}; {kept} of {len(planned)} trials of sweep {prof.sweep_id} are in {args.out} "
                        "(the same command resumes them; a smaller --batch or tin + tout fits)") from None
    df = store.trials().filter(pl.col("sweep_id") == prof.sweep_id)
    meas = df.filter(~pl.col("warmup"))
    console.print(f"wrote {summary.trials_written} trials ({summary.samples_written} samples) to {args.out}; "
                  f"sweep {prof.sweep_id} now has {df.height} trials ({meas.height} measured)")
    if meas.height:
        src = meas["energy_source"][0]
        info = store.sweeps().get(prof.sweep_id)
        idle = f"{info.idle_w:.1f} W" if info and info.idle_w is not None else "-"
        console.print(f"energy source: {src}{' (ESTIMATE: no power meter on this node)' if src == SOURCE_ESTIMATE else ''}; "
                      f"idle {idle}; total {fmt_joules(float((meas['energy_j'] * meas['n_inner']).sum()))}")
        console.print(cell_summary_table(meas))
    print_prepare(console, df)
    _print_quality(console, df)
    return 0


def time_budget(text: str | None):
    """``--time-budget-s``: a :class:`~llm_energy.measure.budget.TimeBudget` starting now, or None."""
    import math

    from llm_energy.measure.budget import TimeBudget

    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise bad_value("--time-budget-s", text, "expected seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise bad_value("--time-budget-s", text, "must be a finite number of seconds > 0")
    return TimeBudget(seconds)


def _out_of_memory(e: BaseException) -> str | None:
    """The one line a device-memory failure reports (the static backend's DeviceMemoryError, or torch's
    OutOfMemoryError raised elsewhere, e.g. in a measurement window), or None for any other error. torch is
    looked up, not imported: a run that never loaded it raised no error of it."""
    from llm_energy.measure.inference.sizing import DeviceMemoryError, out_of_memory_text

    if isinstance(e, DeviceMemoryError):
        return str(e)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return f"device out of memory: {out_of_memory_text(e)}"
    return None


def _print_kept(store, sweep: str, planned: int, out: str, what: str | None) -> int:
    """Close ``store`` after a stopped run and count the sweep's committed trials; with ``what``, say so."""
    from llm_energy.trials.store import open_store

    store.close()
    kept = sum(1 for t in open_store(out).done_trial_ids() if t.startswith(f"{sweep}/"))
    if what:
        print(f"{what}: {kept} of {planned} trials of sweep {sweep} are in {out}; rerun the same command to resume",
              file=sys.stderr)
    return kept


#: trial columns a store records from the prepare-timing profiler on (null in older stores and imports)
PREPARE_COLUMNS = ("prepare_s", "prepare_compiled", "prepare_j", "prepare_device_j", "prepare_evictions")


def prepare_summary(trials: pl.DataFrame) -> list[dict]:
    """Per sweep whose trials recorded a compiling prepare (``prepare_compiled``: a static backend's first
    trial of a bucket x batch in a run), the time ``backend.prepare`` took outside the windows: compiles, their
    total and largest seconds with the bucket and batch of the largest, and the other trials' prepare seconds;
    and a static backend's caches given back to fit others (``prepare_evictions``): ``evictions`` (None where no
    trial recorded it: other backends, older stores), the trials that recorded it, and the batch and bucket of
    the first trial that gave one back (None when none did). Empty for stores from before ``prepare_s`` was
    recorded and for backends that never compile."""
    from llm_energy.measure.inference.sizing import bucket_len

    if trials.height == 0 or not set(PREPARE_COLUMNS) <= set(trials.columns):
        return []
    out = []
    timed = trials.filter(pl.col("prepare_s").is_not_null())
    for (sid,), g in timed.group_by(["sweep_id"], maintain_order=True):
        comp = g.filter(pl.col("prepare_compiled").fill_null(False))
        if comp.height == 0:
            continue
        top = comp.sort("prepare_s", descending=True, maintain_order=True).row(0, named=True)
        total = float(comp["prepare_s"].sum())
        out.append({"sweep_id": sid, "model": top["model"], "backend": top["backend"], "compiles": comp.height,
                    "total_s": total, "max_s": top["prepare_s"], "bucket": bucket_len(top["tin"] + top["tout"]),
                    "batch": top["batch"], "other_trials": g.height - comp.height,
                    "other_s": float(g["prepare_s"].sum()) - total, **_evictions(g)})
    return out


def _evictions(g: pl.DataFrame) -> dict:
    """A sweep's ``prepare_evictions`` summed (None: no trial recorded it), the trials recording it, and the
    batch and bucket of the first trial (by window start) that gave a cache back."""
    from llm_energy.measure.inference.sizing import bucket_len

    rec = g.filter(pl.col("prepare_evictions").is_not_null())
    gave = rec.filter(pl.col("prepare_evictions") > 0).sort("t_start", maintain_order=True)
    first = gave.row(0, named=True) if gave.height else None
    return {"evictions": int(rec["prepare_evictions"].sum()) if rec.height else None, "evictions_recorded": rec.height,
            "first_eviction": None if first is None else (first["batch"], bucket_len(first["tin"] + first["tout"]))}


def _evictions_text(r: dict, trials: int) -> str:
    """``no cache given back to fit another`` or ``3 cache(s) given back to fit another (the first for batch 128,
    bucket 512)``, saying so where only some of the sweep's ``trials`` recorded it."""
    n = r["evictions"]
    text = (f"{n} cache(s) given back to fit another (the first for batch {r['first_eviction'][0]}, bucket "
            f"{r['first_eviction'][1]})" if n else "no cache given back to fit another")
    if r["evictions_recorded"] < trials:
        text += f", in the {r['evictions_recorded']} of {trials} trials that record it"
    return text


def print_prepare(console, trials: pl.DataFrame) -> None:
    """One line per sweep that compiled: prepare's seconds, outside every measurement window (issue 13); and for a
    static backend's a second, how many caches it gave back to fit others (``StaticBackend._make_room``)."""
    rows = prepare_summary(trials)
    for r in rows:
        which = f" [sweep {r['sweep_id']}: {r['model']} {r['backend']}]" if len(rows) > 1 else ""
        console.print(f"prepare (compile + capture) outside the windows{which}: {r['compiles']} bucket x batch "
                      f"compile(s), {r['total_s']:.1f} s in all, max {r['max_s']:.1f} s (bucket {r['bucket']}, batch "
                      f"{r['batch']}); the other {r['other_trials']} trial(s)' prepare {r['other_s']:.1f} s",
                      markup=False, highlight=False)
        if r["evictions"] is not None:  # a static backend's: StaticBackend._make_room
            console.print(f"static cache evictions{which}: {_evictions_text(r, r['compiles'] + r['other_trials'])}",
                          markup=False, highlight=False, soft_wrap=True)


def _print_quality(console, df: pl.DataFrame) -> None:
    """A warning line counting the trials whose meter readings cannot be trusted, by reason, and one per
    known defect of the measurement (:mod:`llm_energy.trials.errata`)."""
    from llm_energy.trials.errata import errata
    from llm_energy.trials.schema import quality_counts, split_suspect

    bad = split_suspect(df)[1]
    if bad.height:
        console.print(f"warning: {bad.height} of {df.height} trials suspect ("
                      + ", ".join(f"{k} x{n}" for k, n in quality_counts(bad).items())
                      + "): energy kept as measured, fit leaves them out; quality_note in show --json says why")
    for hit in errata(df):
        console.print(f"warning: {hit.line()}", markup=False, highlight=False)


def _check_model_name(model: str) -> None:
    """Fail before touching the store for a name that is neither a preset nor a directory."""
    if Path(model).is_dir():
        return
    from llm_energy.measure.inference.presets import get_preset

    get_preset(model)  # raises UserError listing the presets


def cmd_show(args: argparse.Namespace) -> int:
    from llm_energy.report.tables import stdout_console, trials_table
    from llm_energy.trials.store import open_store

    store = open_store(args.dir)
    df = every = store.trials()
    if not args.warmups:
        df = df.filter(~pl.col("warmup"))
    if args.json:
        from llm_energy.io import to_json

        # the prepare columns only where a trial shown recorded them: an older store prints what it always did
        df = df.drop([c for c in PREPARE_COLUMNS if df[c].null_count() == df.height])
        print(to_json(df.to_dicts(), default=str))  # NaN/inf -> null: bare NaN is not JSON
        return 0
    if args.limit < 1:
        raise bad_value("--limit", args.limit, "must be >= 1")
    console = stdout_console()
    if df.height == 0:
        console.print(f"{args.dir}: no trials")
        return 0
    console.print(trials_table(df.head(args.limit), title=f"{args.dir}: {df.height} trials"))
    if (df["energy_source"] == SOURCE_ESTIMATE).any():
        console.print("note: energy_source 'estimate' rows are CPU utilisation x TDP, not a measurement")
    print_prepare(console, every)  # warm-ups included: a bucket's first trial, which compiles, is often one
    _print_quality(console, df)
    if df.height > args.limit:
        console.print(f"... {df.height - args.limit} more rows (use --limit or --json)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from llm_energy.measure.closure import instrument_agreement, quality_summary, recheck_quality, session_closure
    from llm_energy.report.tables import stdout_console
    from llm_energy.trials.store import open_store

    store = open_store(args.dir)
    trials = store.trials()
    agree = instrument_agreement(store)
    closures = session_closure(store)
    quality = quality_summary(trials)
    rechecked = recheck_quality(store)  # the meters' checks again, on the stored raw samples
    quality["recheck"] = quality_summary(rechecked.select("trial_id", quality="recheck", quality_note="recheck_note"))
    quality["compiled"] = compiled_trials(trials)
    if not args.json:
        _print_quality(stdout_console(), trials)
        r = quality["recheck"]
        stdout_console().print(f"quality rechecked from the raw samples: {r['ok']} ok, {r['suspect']} suspect"
                               + (f" ({', '.join(f'{k} x{n}' for k, n in r['reasons'].items())})" if r["reasons"] else ""))
        _print_compiled(stdout_console(), quality["compiled"])
    if agree.height == 0 and not closures:
        raise UserError(f"{args.dir}: no trials with raw counter samples to check")
    win = trials.select("trial_id", (pl.col("t_end_mono") - pl.col("t_start_mono")).alias("window_s"))
    if agree.height:
        agree = agree.join(win, on="trial_id")
    groups = []
    for label, cond in (("all", pl.lit(True)), ("window < 1 s", pl.col("window_s") < 1),
                        ("window 1-5 s", pl.col("window_s").is_between(1, 5)), ("window > 5 s", pl.col("window_s") > 5)):
        g = agree.filter(cond) if agree.height else agree
        if g.height:
            groups.append({"trials": label, "n": g.height, "median": g["rel_diff"].median(),
                           "p90_abs": g["rel_diff"].abs().quantile(0.9), "max_abs": g["rel_diff"].abs().max()})
    sess = [c.to_dict() for c in closures]
    if args.json:
        from llm_energy.io import to_json

        from llm_energy.trials.errata import errata

        print(to_json({"power_vs_counter": groups, "sessions": sess, "quality": quality,
                       "errata": [h.to_dict() for h in errata(trials)]}))
        return 0
    from rich.table import Table

    con = stdout_console()
    t = Table(title="integrated power vs energy counter, per trial: (power - counter) / counter")
    for col in ("trials", "n", "median", "p90 |.|", "max |.|"):
        t.add_column(col, justify="right")
    for g in groups:
        t.add_row(g["trials"], str(g["n"]), f"{100 * g['median']:+.2f}%", f"{100 * g['p90_abs']:.2f}%", f"{100 * g['max_abs']:.2f}%")
    con.print(t)
    from llm_energy.report.check import print_closure

    print_closure(con, sess)
    return 0


def compiled_trials(trials: pl.DataFrame) -> dict:
    """The trials stored ``suspect:compiled`` (torch compiled during the window, and again when the
    profiler measured the trial again): how many and which, with their cells and notes. The flag comes
    from the profiler's compile count, not from the meters, so the recheck on the raw samples cannot
    see it (check's ``quality.compiled``)."""
    from llm_energy.measure.profiler import COMPILED_CODE
    from llm_energy.trials.schema import quality_codes, suspect_rows

    if trials.height == 0 or "quality" not in trials.columns:
        return {"n_trials": 0, "trials": []}
    hit = trials.filter(suspect_rows() & quality_codes().list.contains(COMPILED_CODE)).sort("trial_id")
    rows = hit.select("trial_id", "tin", "tout", "batch", "quality_note").to_dicts()
    return {"n_trials": hit.height, "trials": rows}


def _print_compiled(console, compiled: dict) -> None:
    if not compiled["n_trials"]:
        return
    ids = ", ".join(f"{r['trial_id']} ({r['tin']}x{r['tout']} b{r['batch']})" for r in compiled["trials"])
    from llm_energy.measure.profiler import COMPILED_CODE

    console.print(f"warning: {compiled['n_trials']} trial(s) flagged suspect:{COMPILED_CODE} (torch compiled during the "
                  "window and again when measured again: time and energy include compilation; set by the "
                  f"profiler, not a meter, so the recheck above cannot see it): {ids}", markup=False, highlight=False)


def cmd_compact(args: argparse.Namespace) -> int:
    from llm_energy.trials.store import open_store

    if args.decimate_ms is not None and args.decimate_ms <= 0:
        raise bad_value("--decimate-ms", args.decimate_ms, "must be > 0")
    store = open_store(args.dir)
    store.lock("compact", wait=args.wait)
    n_t, n_s, files = store.compact(decimate_s=args.decimate_ms / 1e3 if args.decimate_ms else None)
    print(f"{args.dir}: {n_t} trials, {n_s} samples in 2 files (was {files} chunk files)")
    return 0
