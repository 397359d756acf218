"""``route`` as a library call: :func:`run` (:class:`RouteRequest` -> :class:`RouteOutcome`), no printing.

Loads the fits, deployments and trace (or a workload on synthetic arrivals), predicts every query class
on every deployment once, and for each rate scale and policy routes and simulates the trace, then
writes ``DIR/queries.parquet`` (:data:`~llm_energy.route.metrics.QUERIES_SCHEMA`), ``DIR/summary.json``
(``policies``: metrics per policy at the first rate scale; ``sweep``: every rate scale's), the plots, and
``DIR/workload.parquet`` + ``DIR/offline_deployments.yaml`` (``plan`` on them solves ``offline``'s problem).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.io import to_json, write_text_atomic
from llm_energy.route.summary import RouteSummary
from llm_energy.route.trace import ARRIVAL_KINDS, Trace, load_trace, parse_rate_scales, synthetic_trace

SUMMARY_KEYS = ("energy_j", "idle_energy_j", "total_energy_j", "accuracy", "latency_p50_s", "latency_p99_s",
                "wait_p99_s", "slo_violations", "deployments", "regret_pct")


@dataclass
class RouteRequest:
    """Everything ``route`` needs (see the CLI flags for meanings and units)."""

    fits: Any  # path, or a FitsFile
    deployments: Any  # path, or a DeploymentsFile
    trace: Any  # path, a Trace, or a Workload (with arrivals poisson|gamma and rate)
    out: str
    policy: str = "all"
    rate_scale: str | float = 1.0
    zeta: float = 0.5
    min_share: float = 0.01
    slo_s: float | None = None
    window_s: float = 300.0
    history_windows: int = 3  # dual: solve on the last H windows (0: every query so far)
    seed: int = 0
    columns: str | None = None
    arrivals: str = "trace"  # trace | poisson | gamma
    rate: float | None = None
    load: float | None = None  # synthetic arrivals without a rate: the rate that keeps this share of slots busy
    cv: float = 1.0
    idle_w: str | float | None = None
    utilisation: float | None = 0.9
    queue_weight: float = 1.0
    solver: str = "glpk"
    time_limit_s: float = 60.0
    only: list[str] | None = None
    plots: bool = True
    write_queries: bool = True
    out_of_range: str = "warn"  # issue 15, as plan: queries routed outside their fit's range: warn | refuse


@dataclass
class RouteOutcome:
    """The summary (:class:`RouteSummary`, what summary.json holds) and the output paths."""

    summary: RouteSummary
    files: dict[str, str] = field(default_factory=dict)


def check_request(req: RouteRequest) -> list[float]:
    """Validate the options that need no file; returns the rate scales."""
    if not (isinstance(req.zeta, (int, float)) and math.isfinite(req.zeta) and 0 <= req.zeta <= 1):
        raise bad_value("--zeta", req.zeta, "must be in [0, 1]")
    if not (math.isfinite(req.min_share) and 0 <= req.min_share <= 0.5):
        raise bad_value("--min-share", req.min_share, "must be in [0, 0.5]")
    if not (math.isfinite(req.window_s) and req.window_s > 0):
        raise bad_value("--window-s", req.window_s, "must be seconds > 0")
    if isinstance(req.history_windows, bool) or not isinstance(req.history_windows, int) or req.history_windows < 0:
        raise bad_value("--history-windows", req.history_windows, "must be a whole number >= 0 (0: every query so far)")
    if req.utilisation is not None and not (math.isfinite(req.utilisation) and 0 < req.utilisation <= 1):
        raise bad_value("--utilisation", req.utilisation, "must be in (0, 1], or 'none' for no fleet capacity")
    if not (math.isfinite(req.queue_weight) and req.queue_weight >= 0):
        raise bad_value("--queue-weight", req.queue_weight, "must be >= 0")
    if req.slo_s is not None and not (math.isfinite(req.slo_s) and req.slo_s > 0):
        raise bad_value("--slo-s", req.slo_s, "must be seconds > 0")
    if req.arrivals not in ARRIVAL_KINDS:
        raise bad_value("--arrivals", req.arrivals, f"expected one of {', '.join(ARRIVAL_KINDS)}")
    if req.arrivals != "trace" and req.rate is None and req.load is None:
        raise UserError(f"--arrivals {req.arrivals} needs --rate (queries per second) or --load")
    if req.out_of_range not in ("warn", "refuse"):
        raise bad_value("--out-of-range", req.out_of_range, "expected warn or refuse")
    if Path(req.out).exists() and not Path(req.out).is_dir():
        raise bad_value("--out", req.out, "is a file; the route output is a directory")
    return parse_rate_scales(req.rate_scale)


def load_inputs(req: RouteRequest):
    """(trace, deployments, fits) validated. Each may be given as a path or as the object itself
    (a FitsFile, a DeploymentsFile, a :class:`Trace`, or a Workload to put on synthetic arrivals)."""
    from llm_energy.fit.fits import load_fits_any
    from llm_energy.plan.deployments import load_deployments
    from llm_energy.plan.workload import Workload
    from llm_energy.route.trace import synthetic_arrivals

    deps = load_deployments(req.deployments) if isinstance(req.deployments, (str, Path)) else req.deployments
    if req.only:
        deps = deps.select(req.only, "--only")
    fits = load_fits_any(req.fits) if isinstance(req.fits, (str, Path)) else req.fits
    if isinstance(req.trace, Trace):
        trace = req.trace
    elif isinstance(req.trace, Workload):
        if req.arrivals == "trace":
            raise UserError("a workload without arrival times needs --arrivals poisson|gamma and --rate")
        t = synthetic_arrivals(req.trace.n_queries, req.rate or 1.0, req.arrivals, req.cv, req.seed)
        trace = Trace(req.trace.tin, req.trace.tout, t, f"{req.trace.source} ({req.arrivals})")
    elif req.arrivals == "trace":
        trace = load_trace(req.trace, req.columns)
    else:
        trace = synthetic_trace(req.trace, req.rate or 1.0, req.arrivals, req.cv, req.seed, req.columns)
    return trace, deps, fits


def run(req: RouteRequest) -> RouteOutcome:
    """Route and simulate; write the outputs; return the summary."""
    from llm_energy.route.fleet import build_fleet, check_slo, rate_for_load
    from llm_energy.route.trace import synthetic_arrivals
    from llm_energy.route.policies import parse_policies

    t0 = time.perf_counter()
    scales = check_request(req)
    trace, deps, fits = load_inputs(req)
    # queries.parquet's `query` indexes what is left (workload.parquet's rows), `trace_row` the input's rows
    trace, beyond, rows = drop_beyond_context(trace, deps, fits, refuse=req.out_of_range == "refuse")
    fleet = build_fleet(fits, deps, trace.tin, trace.tout, idle_w=req.idle_w, fits_source=str(req.fits)
                        if isinstance(req.fits, (str, Path)) else "the fits")
    check_slo(fleet, req.slo_s)
    if req.arrivals != "trace":  # the arrivals at --rate, or at the rate that gives --load
        rate = req.rate if req.rate is not None else rate_for_load(fleet, req.load)
        trace = Trace(trace.tin, trace.tout, synthetic_arrivals(trace.n_queries, rate, req.arrivals, req.cv, req.seed),
                      f"{trace.source} {req.arrivals} {rate:.4g}/s cv {req.cv:g} seed {req.seed}")
    policies = parse_policies(req.policy, fleet.names)
    out = Path(req.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise bad_value("--out", req.out, f"cannot create it ({e.strerror or e})") from None
    sweep, frames, timings, assigned = [], [], {}, {}
    for x in scales:
        res, fr, tm = simulate_scale(req, fleet, trace.scaled(x) if x != 1.0 else trace, policies, x,
                                     assigned if not sweep else None, trace_row=rows)
        sweep.append({"rate_scale": x, "arrival_rate_per_s": trace.n_queries / max(trace.span_s / x, 1e-12),
                      "policies": res})
        frames += fr
        timings[f"x{x:g}"] = tm
    fitted_range = fitted_range_reports(fits, fleet, assigned)  # issue 15, as plan reports it
    if req.out_of_range == "refuse" and range_warning(fitted_range):
        raise UserError(f"--out-of-range refuse: {range_warning(fitted_range)[0]}")
    files = write_outputs(req, out, fleet, trace, frames, sweep, trace.span_s / scales[0])
    summary = {
        "policies": sweep[0]["policies"], "rate_scale": scales[0],
        "sweep": sweep if len(scales) > 1 else None,
        "trace": {"source": trace.source, "queries": trace.n_queries, "classes": int(len(fleet.count)),
                  "span_s": trace.span_s, "arrival_rate_per_s": trace.n_queries / max(trace.span_s, 1e-12),
                  "arrivals": req.arrivals},
        "fleet": {n: {"replicas": int(r), "max_batch": int(b), "idle_w": float(w), "accuracy": float(a)}
                  for n, r, b, w, a in zip(fleet.names, fleet.replicas, fleet.max_batch, fleet.idle_w, fleet.accuracy)},
        "options": {"zeta": req.zeta, "min_share": req.min_share, "slo_s": req.slo_s, "window_s": req.window_s,
                    "history_windows": req.history_windows, "utilisation": req.utilisation, "queue_weight": req.queue_weight, "seed": req.seed,
                    "solver": req.solver},
        "served_once": all(m.get("served_once", True) for s in sweep for m in s["policies"].values()),
        "warnings": fleet.warnings + ([beyond.warning("routed")] if beyond and beyond.unservable else [])
        + range_warning(fitted_range),
        "fitted_range": {p: r.to_dict() for p, r in fitted_range.items()} or None,
        "beyond_context": None if beyond is None else beyond.to_dict(),
        "timings_s": {**timings, "total": time.perf_counter() - t0},
        "files": files,
    }
    typed = RouteSummary.from_dict(json.loads(to_json(summary)))  # plain JSON values (numpy, NaN -> null)
    write_text_atomic(out / "summary.json", typed.to_json(), what="route summary")
    return RouteOutcome(typed, files)


def fitted_range_reports(fits, fleet, assigned: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per policy, :func:`llm_energy.fit.ranges.range_report` on the queries it routed (``assigned``:
    policy -> (C, K) query counts): how many, and what share of their predicted energy, lie outside the
    range their deployment was fitted on. Its ``beyond_context`` counts are 0 here by construction (no
    policy sends a query to a deployment whose context it exceeds, and the queries beyond every
    deployment's context were taken out before routing: summary.json ``beyond_context`` counts those);
    the keys stay, as plan writes them. Empty where the fits are not a FitsFile."""
    from llm_energy.fit.fits import FitsFile
    from llm_energy.fit.ranges import range_report

    if not isinstance(fits, FitsFile):
        return {}
    pairs = list(zip(fleet.names, fleet.fit_keys))
    return {p: range_report(fits, pairs, fleet.tin, fleet.tout, fleet.batch, assignment=x, energy_j=fleet.energy_j,
                            context_tokens=fleet.context) for p, x in assigned.items()}


def drop_beyond_context(trace: Trace, deps, fits, *, refuse: bool = False):
    """(trace, report, rows): the queries some deployment's context takes, in order; the
    :class:`~llm_energy.plan.context.ContextReport` (None: no context known); and each kept query's row
    in ``trace`` (int64, what queries.parquet's ``trace_row`` says). Queries beyond every deployment's
    context are not routed but counted (a warning, summary.json ``beyond_context``); with ``refuse``
    (``--out-of-range refuse``) they refuse the run."""
    from llm_energy.plan.context import context_limits, split_servable

    report, keep = split_servable(deps.names, context_limits(fits, deps), trace.tin, trace.tout)
    rows = np.flatnonzero(keep).astype(np.int64)
    if keep.all():
        return trace, report, rows
    if refuse:
        raise UserError(f"--out-of-range refuse: {report.warning('routed')}")
    if not keep.any():
        raise UserError(f"{trace.source}: {report.warning('routed')}; nothing is left to route")
    return Trace(trace.tin[keep], trace.tout[keep], trace.arrival_s[keep], trace.source), report, rows


def range_warning(reports: dict[str, Any]) -> list[str]:
    """One line when any policy routes queries outside their fit's range or the context length: how
    many policies, and the one with the largest share of predicted energy there, in plan's words."""
    bad = {p: r for p, r in reports.items() if r.warning()}
    if not bad:
        return []
    worst = max(bad, key=lambda p: (bad[p].energy_share_outside, bad[p].energy_share_beyond_context))
    return [f"fitted range: {len(bad)} of {len(reports)} policies route queries the fits extrapolate to "
            f"(per policy in summary.json fitted_range); {worst}: {bad[worst].warning()}"]


def simulate_scale(req: RouteRequest, fleet, trace: Trace, policies: list[str], x: float,
                   assigned: dict[str, np.ndarray] | None = None, trace_row: np.ndarray | None = None):
    """Every policy on one (scaled) trace: metrics by policy, the per-query frames, seconds per policy;
    with ``assigned`` (a dict), each policy's (C, K) query counts per class and deployment put in it;
    ``trace_row``: each query's row in the input trace (default: its index in ``trace``)."""
    from llm_energy.route.metrics import add_regret, policy_metrics, queries_frame
    from llm_energy.route.policies import RouteContext, get_policy

    ctx = RouteContext(fleet=fleet, arrival=trace.arrival_s, zeta=req.zeta, min_share=req.min_share, slo_s=req.slo_s,
                       seed=req.seed, queue_weight=req.queue_weight, window_s=req.window_s,
                       history_windows=req.history_windows or None, utilisation=req.utilisation, solver=req.solver, time_limit_s=req.time_limit_s)
    cost = ctx.cost_c()
    res, frames, tm = {}, [], {}
    for name in policies:
        t1 = time.perf_counter()
        routed = get_policy(name)(ctx)
        tm[name] = time.perf_counter() - t1
        m = policy_metrics(fleet, cost, trace.arrival_s, routed, req.slo_s)
        if assigned is not None:
            assigned[name] = np.zeros(fleet.energy_j.shape)
            np.add.at(assigned[name], (fleet.qclass, routed.dep), 1.0)
        m["served_once"] = bool(len(routed.dep) == trace.n_queries and np.all(routed.start >= trace.arrival_s))
        m["route_s"] = tm[name]
        res[name] = m
        if req.write_queries:
            frames.append(queries_frame(fleet, trace.tin, trace.tout, trace.arrival_s, routed, name, x,
                                        trace_row=trace_row))
    add_regret(res)
    return res, frames, tm


def write_outputs(req: RouteRequest, out: Path, fleet, trace: Trace, frames: list, sweep: list, span_s: float
                  ) -> dict[str, str]:
    from llm_energy.route.offline import plan_deployments_yaml

    files = {"summary": str(out / "summary.json"), "workload": str(out / "workload.parquet"),
             "offline_deployments": str(out / "offline_deployments.yaml")}
    pl.DataFrame({"tin": trace.tin, "tout": trace.tout}).write_parquet(files["workload"])
    write_text_atomic(files["offline_deployments"], plan_deployments_yaml(fleet, span_s, req.utilisation),
                      what="deployments file")
    if frames:
        files["queries"] = str(out / "queries.parquet")
        pl.concat(frames).write_parquet(files["queries"])
    if req.plots:
        from llm_energy.route.plots import plot_all

        files.update(plot_all(out, frames, sweep, req.slo_s))
    return files
