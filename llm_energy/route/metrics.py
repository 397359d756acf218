"""What a routed, simulated trace cost: per-policy metrics, the per-query frame, and its invariants.

Energy: ``energy_j`` is the active energy (the fits' gross energy of each query where it ran);
``idle_energy_j`` = idle_w x the time each replica is on but serves nothing, over the horizon
[0, max(last arrival, last completion)] (every replica is on throughout); ``total_energy_j`` the sum.
Accuracy is the planner's token-weighted mean A_K. Latency = completion - arrival, wait = start -
arrival; ``slo_violations`` counts latencies over ``--slo-s`` (null without one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from llm_energy.route.fleet import Fleet
from llm_energy.route.sim import busy_union

QUERIES_SCHEMA = {
    "rate_scale": pl.Float64, "policy": pl.String, "query": pl.Int64, "tin": pl.Int64, "tout": pl.Int64,
    "arrival_s": pl.Float64, "start_s": pl.Float64, "end_s": pl.Float64, "wait_s": pl.Float64,
    "deployment": pl.String, "replica": pl.Int64, "slot": pl.Int64, "energy_j": pl.Float64, "runtime_s": pl.Float64,
    "trace_row": pl.Int64,
}  # one row per (rate scale, policy, query); energy_j/runtime_s predicted for the deployment that served it;
# query: 0..N-1 over the routed queries (workload.parquet's rows); trace_row: the query's row in the input
# trace (or workload file), which differs from query once queries beyond every context are taken out


def replica_ids(fleet: Fleet, dep: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """A fleet-wide replica index for each query (deployment k's replicas numbered after k-1's)."""
    off = np.r_[0, np.cumsum(fleet.replicas)[:-1]]
    return off[dep] + slot // fleet.max_batch[dep]


def idle_energy(fleet: Fleet, dep, start, end, slot, horizon_s: float) -> float:
    busy = np.zeros(int(fleet.replicas.sum()))
    if len(dep):
        b = busy_union(start, end, replica_ids(fleet, dep, slot))
        busy[:len(b)] = b
    owner = np.repeat(np.arange(fleet.n_deployments), fleet.replicas)
    idle_s = np.maximum(horizon_s - busy, 0.0)
    return float((fleet.idle_w[owner] * idle_s).sum())


def policy_metrics(fleet: Fleet, cost_c: np.ndarray, arrival: np.ndarray, routed, slo_s: float | None) -> dict[str, Any]:
    dep, start, end = routed.dep, routed.start, routed.end
    qc = fleet.qclass
    e = fleet.energy_j[qc, dep]
    tok = fleet.tokens[qc]
    lat, wait = end - arrival, start - arrival
    horizon = float(max(end.max(initial=0.0), arrival.max(initial=0.0)))
    idle = idle_energy(fleet, dep, start, end, routed.slot, horizon)
    n = len(dep)
    per = np.bincount(dep, minlength=fleet.n_deployments)
    e_per = np.bincount(dep, weights=e, minlength=fleet.n_deployments)
    pct = (lambda v, p: float(np.percentile(v, p)) if n else 0.0)
    out = {
        "energy_j": float(e.sum()), "idle_energy_j": idle, "total_energy_j": float(e.sum()) + idle,
        "accuracy": float((fleet.accuracy[dep] * tok).sum() / tok.sum()) if tok.sum() else 0.0,
        "objective": float(cost_c[qc, dep].sum()),
        "latency_p50_s": pct(lat, 50), "latency_p99_s": pct(lat, 99), "latency_mean_s": float(lat.mean()) if n else 0.0,
        "wait_p50_s": pct(wait, 50), "wait_p99_s": pct(wait, 99), "wait_mean_s": float(wait.mean()) if n else 0.0,
        "slo_violations": None if slo_s is None else int((lat > slo_s * (1 + 1e-12)).sum()),
        "makespan_s": horizon,
        "deployments": {name: {"count": int(per[k]), "share": float(per[k] / max(n, 1)), "energy_j": float(e_per[k])}
                        for k, name in enumerate(fleet.names)},
    }
    out.update(routed.info)
    return out


def add_regret(metrics: dict[str, dict[str, Any]]) -> None:
    """``regret_pct``: 100 (objective - offline's) / |offline's| (the planner's objective, which offline
    minimises); ``energy_vs_offline_pct``: the same for active energy."""
    off = metrics.get("offline")
    for m in metrics.values():
        if off is None:
            m["regret_pct"] = m["energy_vs_offline_pct"] = None
            continue
        m["regret_pct"] = 100.0 * (m["objective"] - off["objective"]) / max(abs(off["objective"]), 1e-12)
        m["energy_vs_offline_pct"] = 100.0 * (m["energy_j"] - off["energy_j"]) / max(abs(off["energy_j"]), 1e-12)


def queries_frame(fleet: Fleet, tin, tout, arrival, routed, policy: str, rate_scale: float, *,
                  trace_row: np.ndarray | None = None) -> pl.DataFrame:
    """One row per query (:data:`QUERIES_SCHEMA`); ``trace_row`` (N,) each query's row in the input trace
    (default: its index, 0..N-1)."""
    qc, dep = fleet.qclass, routed.dep
    rows = np.arange(len(dep), dtype=np.int64) if trace_row is None else np.asarray(trace_row, dtype=np.int64)
    if rows.shape != (len(dep),):
        raise ValueError(f"trace_row: {rows.shape[0]} rows for {len(dep)} queries")
    names = np.array(fleet.names, dtype=object)
    return pl.DataFrame({
        "rate_scale": np.full(len(dep), rate_scale), "policy": [policy] * len(dep),
        "query": np.arange(len(dep), dtype=np.int64), "tin": tin, "tout": tout, "arrival_s": arrival,
        "start_s": routed.start, "end_s": routed.end, "wait_s": routed.start - arrival,
        "deployment": names[dep], "replica": routed.slot // fleet.max_batch[dep], "slot": routed.slot,
        "energy_j": fleet.energy_j[qc, dep], "runtime_s": fleet.runtime_s[qc, dep], "trace_row": rows,
    }, schema=QUERIES_SCHEMA)


def check_invariants(frame: pl.DataFrame, n_queries: int, replicas: dict[str, int], max_batch: dict[str, int],
                     tol: float = 1e-9) -> list[str]:
    """What is wrong with one (rate scale, policy)'s queries: lost or twice-served queries, a start before
    its arrival or an end before its start, a service time unlike its prediction, a replica or slot
    beyond the fleet, or more queries in service at once than replicas x max_batch (or than max_batch
    on one replica, or 1 on one slot), or input trace rows (``trace_row``) not rising with ``query``.
    Empty: all hold."""
    bad: list[str] = []
    q = frame["query"].to_numpy()
    ids, counts = np.unique(q, return_counts=True)
    if len(ids) != n_queries or (counts != 1).any() or (len(ids) and (ids[0] != 0 or ids[-1] != n_queries - 1)):
        lost = n_queries - len(ids)
        bad.append(f"{lost} queries lost, {int((counts > 1).sum())} served more than once")
    elif "trace_row" in frame.columns:  # the routed queries keep the input's order: rows strictly rising
        rows = frame["trace_row"].to_numpy()[np.argsort(q)]
        if (rows < 0).any() or (np.diff(rows) <= 0).any():
            bad.append("trace_row does not rise with query (queries matched to the wrong input rows)")
    a, s, e = (frame[c].to_numpy() for c in ("arrival_s", "start_s", "end_s"))
    if (s < a - tol).any():
        bad.append(f"{int((s < a - tol).sum())} queries start before they arrive")
    if (np.abs((e - s) - frame["runtime_s"].to_numpy()) > tol * np.maximum(1.0, np.abs(e))).any():
        bad.append("service time differs from the predicted runtime")
    for name, g in frame.group_by("deployment"):
        name = name[0]
        cap = replicas[name] * max_batch[name]
        if int(g["replica"].max()) >= replicas[name] or int(g["slot"].max()) >= cap:
            bad.append(f"{name}: replica or slot beyond its {replicas[name]} replicas x {max_batch[name]}")
        for key, limit in ((None, cap), ("replica", max_batch[name]), ("slot", 1)):
            if _max_concurrent(g, key) > limit:
                bad.append(f"{name}: more than {limit} queries in service at once" + (f" per {key}" if key else ""))
    return bad


def _max_concurrent(g: pl.DataFrame, key: str | None) -> int:
    """Most queries in service at one instant (intervals [start, end); ends before starts at a tie)."""
    s, e = g["start_s"].to_numpy(), g["end_s"].to_numpy()
    grp = np.zeros(len(s), np.int64) if key is None else g[key].to_numpy()
    pos = e > s  # zero-length services occupy no time
    s, e, grp = s[pos], e[pos], grp[pos]
    if not len(s):
        return 0
    t = np.r_[s, e]
    d = np.r_[np.ones(len(s), np.int64), -np.ones(len(e), np.int64)]
    gg = np.r_[grp, grp]
    order = np.lexsort((d, t, gg))
    gg, d = gg[order], d[order]
    run = np.cumsum(d)
    first = np.r_[True, gg[1:] != gg[:-1]]
    base = np.maximum.accumulate(np.where(first, np.arange(len(d)), 0))
    offset = np.r_[0, run][base]
    return int((run - offset).max())
