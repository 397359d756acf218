"""A plan's files: the assignment tables (schemas and frames), the Pareto table, and writing them.

``PLAN_DIR/assignment.parquet`` (:data:`ASSIGNMENT_SCHEMA`, one row per (class, deployment) with
queries assigned), ``assignment_per_query.parquet`` (:data:`PER_QUERY_SCHEMA`, one row per query in
workload file order, with ``--per-query``), ``pareto.parquet`` (:data:`PARETO_SCHEMA`, with
``--pareto``) and ``summary.json`` (:class:`~llm_energy.plan.summary.PlanSummary`). The schemas are
an interface: readers (the report, the cluster jobs, users' notebooks) rely on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from llm_energy.errors import bad_value
from llm_energy.plan.summary import ParetoPoint

ASSIGNMENT_SCHEMA = {
    "tin": pl.Int64, "tout": pl.Int64, "count": pl.Int64, "deployment": pl.String, "count_assigned": pl.Int64,
    "energy_j": pl.Float64, "runtime_s": pl.Float64,
}  # one row per (class, deployment) with count_assigned > 0; energy_j/runtime_s per query (predicted)
PER_QUERY_SCHEMA = {"query": pl.Int64, "tin": pl.Int64, "tout": pl.Int64, "deployment": pl.String}
PARETO_SCHEMA = {
    "zeta": pl.Float64, "status": pl.String, "objective": pl.Float64, "energy_j": pl.Float64,
    "accuracy": pl.Float64, "runtime_s": pl.Float64, "gap": pl.Float64, "chosen": pl.Boolean,
}


def assignment_frame(tin, tout, count, names, x: np.ndarray, energy_j: np.ndarray, runtime_s: np.ndarray,
                     ) -> pl.DataFrame:
    """Per (class, deployment) with queries assigned: :data:`ASSIGNMENT_SCHEMA`."""
    c, k = np.nonzero(x)
    return pl.DataFrame({
        "tin": np.asarray(tin, dtype=np.int64)[c], "tout": np.asarray(tout, dtype=np.int64)[c],
        "count": np.asarray(count, dtype=np.int64)[c], "deployment": np.asarray(names, dtype=object)[k].tolist(),
        "count_assigned": x[c, k].astype(np.int64), "energy_j": energy_j[c, k], "runtime_s": runtime_s[c, k],
    }, schema=ASSIGNMENT_SCHEMA)


def per_query_deployment(query_class: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Deployment index of each query (file order): the queries of a class fill its deployments in order."""
    order = np.argsort(query_class, kind="stable")
    qc = query_class[order]
    starts = np.searchsorted(qc, np.arange(x.shape[0]))
    rank = np.arange(len(qc)) - starts[qc]
    cum = np.cumsum(x, axis=1)
    dep_sorted = (cum[qc] <= rank[:, None]).sum(axis=1)
    dep = np.empty_like(dep_sorted)
    dep[order] = dep_sorted
    return dep


def per_query_frame(tin, tout, query_class, names, x) -> pl.DataFrame:
    """One row per query (file order): :data:`PER_QUERY_SCHEMA`."""
    dep = per_query_deployment(query_class, x)
    names_s = pl.Series("deployment", list(names), dtype=pl.String)
    return pl.DataFrame({"query": np.arange(len(tin), dtype=np.int64), "tin": tin, "tout": tout,
                         "deployment": names_s.gather(dep)}, schema=PER_QUERY_SCHEMA)


def pareto_frame(points: Sequence[ParetoPoint], chosen_zeta: float) -> pl.DataFrame:
    """The sweep as :data:`PARETO_SCHEMA`, ``chosen`` marking the plan's own zeta."""
    rows = [{**pt.to_dict(), "chosen": abs(pt.zeta - chosen_zeta) < 1e-12} for pt in points]
    return pl.DataFrame(rows, schema=PARETO_SCHEMA)


def plan_dir(out: str | Path) -> Path:
    """The plan directory, created if missing (a UserError naming ``--out`` if it cannot be)."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise bad_value("--out", str(out), f"cannot create it ({e.strerror or e})") from None
    return path
