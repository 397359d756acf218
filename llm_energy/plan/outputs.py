"""A plan's files: the assignment tables (schemas and frames), the Pareto table, and writing them.

``PLAN_DIR/assignment.parquet`` (:data:`ASSIGNMENT_SCHEMA`, one row per (class, deployment) with
queries assigned), ``assignment_per_query.parquet`` (:data:`PER_QUERY_SCHEMA`, one row per query in
workload file order, with ``--per-query``), ``pareto.parquet`` (:data:`PARETO_SCHEMA`, with
``--pareto``) and ``summary.json`` (:class:`~llm_energy.plan.summary.PlanSummary`). The schemas are
an interface: readers (the report, the cluster jobs, users' notebooks) rely on them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl

from llm_energy.errors import bad_value
from llm_energy.plan.summary import ParetoPoint
from llm_energy.trials.store import fsync_path

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


def per_query_frame(tin, tout, query_class, names, x, dep=None) -> pl.DataFrame:
    """One row per query (file order): :data:`PER_QUERY_SCHEMA` (``dep``: each query's deployment index
    where the plan fixed it, e.g. per window; else the queries of a class fill its deployments in order)."""
    dep = per_query_deployment(query_class, x) if dep is None else dep
    names_s = pl.Series("deployment", list(names), dtype=pl.String)
    return pl.DataFrame({"query": np.arange(len(tin), dtype=np.int64), "tin": tin, "tout": tout,
                         "deployment": names_s.gather(dep)}, schema=PER_QUERY_SCHEMA)


def with_unplanned(frame: pl.DataFrame, kept: np.ndarray, tin: np.ndarray, tout: np.ndarray) -> pl.DataFrame:
    """A per-query frame of the planned queries (rows ``kept`` of the workload file) with the queries
    no deployment's context takes (``tin``, ``tout``: the other rows, in order) put back, deployment
    null, every row's ``query`` its row in the file."""
    n = len(kept) + len(tin)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), kept)
    planned = frame.with_columns(pl.Series("query", np.asarray(kept, dtype=np.int64)))
    unplanned = pl.DataFrame({"query": rest, "tin": tin, "tout": tout, "deployment": [None] * len(rest)},
                             schema=PER_QUERY_SCHEMA)
    return pl.concat([planned, unplanned]).sort("query")


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


# ---- writing a plan directory whole or not at all (issue 16) ------------------------------------
PLAN_FILES = ("assignment.parquet", "assignment_per_query.parquet", "pareto.parquet", "pareto.png", "summary.json")
_STAGE = ".plan-tmp-"  # sibling staging directories: .<name>.plan-tmp-<pid>-<hex>


@contextmanager
def write_plan_dir(out: str | Path) -> Iterator[Path]:
    """Stage a plan: yields an empty directory beside ``out`` to write every file into; on a clean exit it
    takes the place of ``out`` (an atomic exchange of the two directories where the OS has one, so a
    reader sees the old plan or the new one, never a mix), and the old plan is removed after. An
    exception or a kill leaves ``out`` as it was; the staging directory of a killed writer is removed
    by the next one. An ``out`` holding files that are not a plan's (e.g. the workload beside it) is
    not swapped: the new plan's files are renamed in one by one with summary.json removed first and
    written last, so a plan without its summary.json is an incomplete one."""
    out = Path(out)
    real = out.resolve()
    plan_dir(out)
    _clean_stale(real)
    stage = real.parent / f".{real.name}{_STAGE}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
    except OSError:  # a parent we cannot write: stage inside out, files renamed in one by one
        stage = real / f"{_STAGE}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            stage.mkdir()
        except OSError as e:
            raise bad_value("--out", str(out), f"cannot write in it ({e.strerror or e})") from None
    try:
        yield stage
        _fsync_tree(stage)
        if stage.parent == real.parent and _only_plan_files(real) and _exchange(stage, real):
            fsync_path(real.parent)
        else:
            _move_files_in(stage, real)
    except OSError as e:
        raise bad_value("--out", str(out), f"cannot write the plan ({e.strerror or e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # the old plan after an exchange, or what is left


def _only_plan_files(d: Path) -> bool:
    return all(p.name in PLAN_FILES for p in d.iterdir())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _move_files_in(stage: Path, real: Path) -> None:
    """summary.json removed first, every new file renamed in, old plan files the new plan lacks removed,
    the new summary.json renamed in last."""
    (real / "summary.json").unlink(missing_ok=True)
    fsync_path(real)
    new = {p.name for p in stage.iterdir()}
    for name in sorted(new - {"summary.json"}):
        os.replace(stage / name, real / name)
    for name in PLAN_FILES:
        if name not in new:
            (real / name).unlink(missing_ok=True)
    fsync_path(real)
    if "summary.json" in new:
        os.replace(stage / "summary.json", real / "summary.json")
        fsync_path(real)


def _clean_stale(real: Path) -> None:
    """Staging directories of writers that are gone (killed mid-write), beside ``real`` and inside it."""
    for where, prefix in ((real.parent, f".{real.name}{_STAGE}"), (real, _STAGE)):
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.name.startswith(prefix) and p.is_dir() and not _alive(p.name[len(prefix):].split("-")[0]):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):
        return True  # another user's, or a name we did not make: left alone
    return True


def _fsync_tree(d: Path) -> None:
    for p in d.iterdir():
        if p.is_file():
            fsync_path(p)
    fsync_path(d)
