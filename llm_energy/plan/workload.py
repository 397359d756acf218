"""Workloads: lists of queries (prompt tokens ``tin``, generated tokens ``tout``) and their classes.

A :class:`Workload` is what a file holds, one row per query. The planner works on
:class:`WorkloadClasses`: the distinct (tin, tout) pairs with integer counts (exact: queries with the
same pair cost the same on every deployment). :func:`bin_classes` merges classes further into
log-spaced (tin, tout) bins for very diverse traces; the planner reports the error bound that adds.

Files: CSV, Parquet or JSONL (one JSON object a line) with one column for each of tin and tout; other
column names come in through a mapping (``tin=ContextTokens,tout=GeneratedTokens``) or are recognised
from :data:`COLUMN_ALIASES` (the Azure LLM inference trace's names among them).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llm_energy.errors import UserError, bad_value

WORKLOAD_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# Column pairs recognised without a mapping, in order of preference: (tin column, tout column).
COLUMN_ALIASES: tuple[tuple[str, str], ...] = (
    ("tin", "tout"),
    ("ContextTokens", "GeneratedTokens"),  # Azure LLM inference traces 2023/2024
    ("input_tokens", "output_tokens"),
    ("prompt_tokens", "completion_tokens"),
)

# Named mappings accepted by --columns.
COLUMN_PRESETS = {"azure": ("ContextTokens", "GeneratedTokens")}

SYNTH_KINDS = ("lognormal", "grid", "chat", "code", "mix")

WORKLOAD_SCHEMA = {"tin": pl.Int64, "tout": pl.Int64}
# No model's context comes near this; it keeps (tin, tout) class keys far from int64 overflow.
MAX_TOKENS = 100_000_000


@dataclass(frozen=True)
class Workload:
    """Queries in file order: ``tin[i]`` prompt tokens and ``tout[i]`` generated tokens of query i (int64)."""

    tin: np.ndarray
    tout: np.ndarray
    source: str = "<memory>"
    arrival_s: np.ndarray | None = None  # seconds from the first query (a timed trace), else None

    def __post_init__(self) -> None:
        if self.tin.shape != self.tout.shape or self.tin.ndim != 1:
            raise ValueError("tin and tout must be 1-d arrays of the same length")
        if self.arrival_s is not None and self.arrival_s.shape != self.tin.shape:
            raise ValueError("arrival_s must have one time per query")

    @property
    def n_queries(self) -> int:
        return int(self.tin.shape[0])

    def frame(self) -> pl.DataFrame:
        """The workload as a Polars frame with :data:`WORKLOAD_SCHEMA`."""
        return pl.DataFrame({"tin": self.tin, "tout": self.tout}, schema=WORKLOAD_SCHEMA)


@dataclass(frozen=True)
class WorkloadClasses:
    """Query classes: ``count[c]`` queries with ``tin[c]`` prompt and ``tout[c]`` generated tokens.

    ``tin``/``tout`` are int64 for exact classes and float64 (count-weighted means) for bins.
    ``query_class[i]`` is the class of query i of the workload it came from (None when unknown).
    """

    tin: np.ndarray
    tout: np.ndarray
    count: np.ndarray
    query_class: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def n_queries(self) -> int:
        return int(self.count.sum())

    @property
    def tokens(self) -> np.ndarray:
        """tin + tout per class (float64), the paper's accuracy weight."""
        return self.tin.astype(np.float64) + self.tout.astype(np.float64)


@dataclass(frozen=True)
class BinnedClasses:
    """Exact classes merged into log-spaced (tin, tout) bins.

    ``bins`` holds one class per non-empty bin (representative tin/tout: the count-weighted means, so
    every term linear in tin or tout sums exactly); ``class_bin[c]`` is the bin of exact class c;
    ``tin_edges``/``tout_edges`` the bin edges (tokens, log-spaced).
    """

    bins: WorkloadClasses
    class_bin: np.ndarray
    tin_edges: np.ndarray
    tout_edges: np.ndarray


def parse_column_mapping(spec: str | None) -> tuple[str, str] | None:
    """``"tin=A,tout=B"`` or a preset name (``azure``) -> (tin column, tout column); None -> None."""
    if spec is None or spec == "":
        return None
    if spec in COLUMN_PRESETS:
        return COLUMN_PRESETS[spec]
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or key not in ("tin", "tout") or not col:
            raise bad_value("--columns", spec, "expected tin=COLUMN,tout=COLUMN or one of "
                            + ", ".join(sorted(COLUMN_PRESETS)))
        out[key] = col
    return out.get("tin", "tin"), out.get("tout", "tout")


def _format_of(path: Path) -> str:
    fmt = WORKLOAD_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise bad_value("workload", str(path), "unknown format: use .csv, .parquet or .jsonl")
    return fmt


def _scan(path: Path) -> pl.LazyFrame:
    fmt = _format_of(path)
    if fmt == "csv":
        return pl.scan_csv(path, infer_schema_length=10000)
    if fmt == "parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path, infer_schema_length=10000)


TIME_ALIASES = ("TIMESTAMP", "timestamp", "arrival_s", "arrival_time")


def load_workload(path: str | Path, columns: tuple[str, str] | None = None, *, times: str | bool = False
                  ) -> Workload:
    """Read a workload file; ``columns`` = (tin column, tout column), else :data:`COLUMN_ALIASES`.
    ``times``: also read arrival times (a column name, or True for the first of :data:`TIME_ALIASES` if
    any): date-times or seconds, as seconds from the first query (``Workload.arrival_s``).

    Raises :class:`UserError` naming the file, column, row and value for a missing file or column,
    a non-numeric, missing, NaN, negative or fractional token count, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise bad_value("workload", str(path), "no such file")
    try:
        lf = _scan(path)
        names = lf.collect_schema().names()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 (polars raises several kinds for unreadable files)
        raise bad_value("workload", str(path), f"cannot read: {str(e).splitlines()[0]}") from None
    if columns is None:
        columns = next(((a, b) for a, b in COLUMN_ALIASES if a in names and b in names), None)
        if columns is None:
            raise UserError(f"{path}: no tin/tout columns among {names}; map them with "
                            "--columns tin=COLUMN,tout=COLUMN")
    for role, col in zip(("tin", "tout"), columns):
        if col not in names:
            raise UserError(f"{path}: column {col!r} (for {role}) not found; columns are {names}")
    try:
        df = lf.select(pl.col(columns[0]).alias("tin"), pl.col(columns[1]).alias("tout")).collect()
    except Exception as e:  # noqa: BLE001
        raise bad_value("workload", str(path), f"cannot read: {str(e).splitlines()[0]}") from None
    if df.height == 0:
        raise UserError(f"{path}: the workload has no queries")
    arrays = {}
    for role, col in zip(("tin", "tout"), columns):
        s = df[role]
        if not (s.dtype.is_numeric() or s.dtype == pl.Null):
            try:
                s = s.cast(pl.Float64, strict=True)
            except Exception:  # noqa: BLE001
                bad = s.cast(pl.Float64, strict=False).is_null() & s.is_not_null()
                i = int(bad.arg_max())
                raise UserError(f"{path}: row {i}: {col}={s[i]!r}: not a number") from None
        arrays[role] = _checked_tokens(s.cast(pl.Float64).to_numpy(), path, col)
    arrival = _arrival_seconds(lf, names, times, path) if times else None
    return Workload(arrays["tin"], arrays["tout"], str(path), arrival)


def _arrival_seconds(lf: pl.LazyFrame, names: list[str], times: str | bool, path: Path) -> np.ndarray | None:
    """The arrival column as seconds from the first query (date-time strings, date-times or numbers)."""
    col = times if isinstance(times, str) else next((c for c in TIME_ALIASES if c in names), None)
    if col is None and times is True:
        return None  # looked for one, found none: an untimed workload
    if col is None or col not in names:
        raise UserError(f"{path}: no arrival-time column ({col or ', '.join(TIME_ALIASES)}) among {names}; "
                        "--window-s needs a timed trace (--time-column NAME)")
    s = lf.select(pl.col(col)).collect()[col]
    if s.dtype == pl.String:
        s = s.str.to_datetime(time_unit="ns", strict=False)
    if s.dtype.is_temporal():
        v = s.cast(pl.Datetime("ns")).cast(pl.Int64).cast(pl.Float64).to_numpy() / 1e9
    elif s.dtype.is_numeric():
        v = s.cast(pl.Float64).to_numpy()
    else:
        raise UserError(f"{path}: column {col!r}: expected date-times or seconds, got {s.dtype}")
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{path}: row {i}: {col}: not a date-time or a number of seconds ({int(bad.sum())} such rows)")
    return v - v.min()


def _fmt(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "NaN"
    return str(int(x)) if math.isfinite(x) and x == int(x) else repr(x)


def _checked_tokens(v: np.ndarray, path: Path, col: str) -> np.ndarray:
    """Token counts as int64; the first missing/NaN/infinite/negative/fractional value is a UserError."""
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{path}: row {i}: {col}={_fmt(v[i])}: missing, NaN or infinite token count "
                        f"({int(bad.sum())} such rows)")
    neg = v < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise UserError(f"{path}: row {i}: {col}={_fmt(v[i])}: negative token count ({int(neg.sum())} such rows)")
    big = v > MAX_TOKENS
    if big.any():
        i = int(np.argmax(big))
        raise UserError(f"{path}: row {i}: {col}={_fmt(v[i])}: more than {MAX_TOKENS:,} tokens ({int(big.sum())} such rows)")
    frac = v != np.floor(v)
    if frac.any():
        i = int(np.argmax(frac))
        raise UserError(f"{path}: row {i}: {col}={_fmt(v[i])}: token counts must be whole numbers")
    return v.astype(np.int64)


def check_tokens(tin: np.ndarray, tout: np.ndarray, source: str = "workload") -> Workload:
    """A :class:`Workload` from in-memory arrays, validated like a file."""
    p = Path(source)
    return Workload(_checked_tokens(np.asarray(tin, dtype=np.float64), p, "tin"),
                    _checked_tokens(np.asarray(tout, dtype=np.float64), p, "tout"), source)


def save_workload(w: Workload, path: str | Path) -> Path:
    """Write ``w`` as CSV, Parquet or JSONL (by extension) with columns tin, tout."""
    path = Path(path)
    fmt = _format_of(path)
    if path.is_dir():
        raise bad_value("--out", str(path), "is a directory; give a file name ending in .csv, .parquet or .jsonl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise bad_value("--out", str(path), f"cannot create its directory ({e.strerror or e})") from None
    df = w.frame()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # whole or not at all (issue 16)
    try:
        if fmt == "csv":
            df.write_csv(tmp)
        elif fmt == "parquet":
            df.write_parquet(tmp)
        else:
            df.write_ndjson(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a directory that cannot be written: one line, not a traceback
        tmp.unlink(missing_ok=True)
        raise bad_value("--out", str(path), f"cannot write it ({e.strerror or e})") from None
    return path


def aggregate(w: Workload) -> WorkloadClasses:
    """Distinct (tin, tout) pairs with their counts, sorted by (tin, tout); exact."""
    key = w.tin * (int(w.tout.max()) + 1) + w.tout
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    width = int(w.tout.max()) + 1
    return WorkloadClasses(tin=(uniq // width).astype(np.int64), tout=(uniq % width).astype(np.int64),
                           count=counts.astype(np.int64), query_class=inverse.astype(np.int64).reshape(-1))


def log_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """``n_bins + 1`` log-spaced edges covering ``values`` (tokens; 0 falls in the first bin)."""
    lo = max(float(values.min()), 1.0)
    hi = max(float(values.max()), lo) + 1.0
    return np.geomspace(lo, hi, n_bins + 1)


def bin_classes(classes: WorkloadClasses, n_bins: int, split: np.ndarray | None = None) -> BinnedClasses:
    """Merge classes into ``n_bins`` x ``n_bins`` log-spaced (tin, tout) bins (empty bins dropped);
    ``split`` (C,) labels: classes of different labels never share a bin (e.g. those fitting different
    deployments' context lengths)."""
    if n_bins < 1:
        raise bad_value("--bins", n_bins, "must be >= 1")
    te, oe = log_edges(classes.tin, n_bins), log_edges(classes.tout, n_bins)
    ti = np.clip(np.searchsorted(te, classes.tin, side="right") - 1, 0, n_bins - 1)
    oi = np.clip(np.searchsorted(oe, classes.tout, side="right") - 1, 0, n_bins - 1)
    cell = ti * n_bins + oi
    if split is not None:
        cell = np.asarray(split, dtype=np.int64) * (n_bins * n_bins) + cell
    uniq, class_bin = np.unique(cell, return_inverse=True)
    class_bin = class_bin.reshape(-1)
    n = np.bincount(class_bin, weights=classes.count, minlength=len(uniq))
    tin = np.bincount(class_bin, weights=classes.count * classes.tin.astype(np.float64), minlength=len(uniq)) / n
    tout = np.bincount(class_bin, weights=classes.count * classes.tout.astype(np.float64), minlength=len(uniq)) / n
    qc = None if classes.query_class is None else class_bin[classes.query_class]
    bins = WorkloadClasses(tin=tin, tout=tout, count=n.astype(np.int64), query_class=qc)
    return BinnedClasses(bins=bins, class_bin=class_bin.astype(np.int64), tin_edges=te, tout_edges=oe)


# ---------------------------------------------------------------------------------------------------
# Synthetic workloads (seeded; no download needed for demos)

GRID_TOKENS = tuple(2**i for i in range(3, 12))  # 8 .. 2048, the paper's 9 x 9 grid


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int, max_tokens: int) -> np.ndarray:
    v = np.rint(rng.lognormal(math.log(median), sigma, n))
    return np.clip(v, 1, max_tokens).astype(np.int64)


def _heavy(rng: np.random.Generator, scale: float, shape: float, n: int, max_tokens: int) -> np.ndarray:
    """Lomax (Pareto II) tokens: a heavy tail with P(X > x) ~ x^-shape."""
    v = np.rint(scale * rng.pareto(shape, n) + 1)
    return np.clip(v, 1, max_tokens).astype(np.int64)


def synth_workload(kind: str, n: int, seed: int = 0, max_tokens: int = 4096) -> Workload:
    """A seeded synthetic workload of ``n`` queries.

    kinds: ``lognormal`` (tin median 512, tout median 128), ``grid`` (the paper's 9 x 9 grid of powers of
    two 8..2048, equally often, shuffled), ``chat`` (heavy-tailed prompts around a few hundred tokens,
    answers of a few hundred), ``code`` (long contexts, short completions), ``mix`` (70 % chat, 30 % code).
    """
    if kind not in SYNTH_KINDS:
        raise bad_value("--kind", kind, f"expected one of {', '.join(SYNTH_KINDS)}")
    if n < 1:
        raise bad_value("--n", n, "must be >= 1")
    if max_tokens < 1:
        raise bad_value("--max-tokens", max_tokens, "must be >= 1")
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        tin, tout = _lognormal(rng, 512, 1.0, n, max_tokens), _lognormal(rng, 128, 0.8, n, max_tokens)
    elif kind == "grid":
        g = np.array(GRID_TOKENS, dtype=np.int64)
        cells = rng.permutation(np.arange(n) % (len(g) ** 2))
        tin, tout = np.minimum(g[cells // len(g)], max_tokens), np.minimum(g[cells % len(g)], max_tokens)
    elif kind == "chat":
        tin, tout = _heavy(rng, 600, 2.5, n, max_tokens), _lognormal(rng, 200, 0.7, n, max_tokens)
    elif kind == "code":
        tin, tout = _lognormal(rng, 1500, 0.6, n, max_tokens), _heavy(rng, 40, 2.2, n, max_tokens)
    else:
        is_code = rng.random(n) < 0.3
        chat, code = synth_workload("chat", n, seed + 1, max_tokens), synth_workload("code", n, seed + 2, max_tokens)
        tin, tout = np.where(is_code, code.tin, chat.tin), np.where(is_code, code.tout, chat.tout)
    return Workload(tin.astype(np.int64), tout.astype(np.int64), f"synth:{kind}:n={n}:seed={seed}")
