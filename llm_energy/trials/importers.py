"""Import other tools' measurements into the trial store (TRIAL_SCHEMA rows).

``wilkins2024``: the files of Wilkins, Keshav, Mortier (2024), detected by their header:

* grid (``all-stats-raw.csv``): trial rows are those whose Phase starts with ``start-inference``
  ("tokenizer" and "model load" are start-up). One trial per cell. HF transformers, bf16, KV cache
  disabled (backend ``hf-nocache``), batch 1 (the file's "Batch Size" column says 32 for every row,
  start-up rows included; the README documents batch 1). "GPU Energy (mJ)" is the NVML counter delta
  summed over the GPUs, idle not subtracted (``energy_net_j`` is left null). Token counts are the
  file's "Number of Input/Output Tokens" columns, which reproduce the published fits.
* sweeps (``all-{input,output}[-scale]-stats.csv``): trials are ``start-inference*`` and
  ``inference*`` rows; iteration 0 of each cell is a warm-up (stored, flagged). ``energy_j`` is
  "GPU Energy (J)"; "CPU Energy (J)" is kept as a second device (not summed: on Swing it was one
  session total shared out by runtime, and the Intel values are RAPL minus a fixed 37.5 W a package).
* served (``{vllm,mii}-*.csv``, no header): one trial per request; the file's output-token column
  holds generated length minus input length (a known defect), so ``tout = column + tin``. Files of
  2-GPU runs have one energy column per GPU (summed) and a memory pair per GPU (19 columns).

``csv``: any CSV with a column mapping (``FIELD=COLUMN``; for files without a header COLUMN is a
0-based index). Required fields: tin, tout, energy_j, runtime_s; optional: batch, model, node_type,
system, device, n_gpus, backend, repeat, warmup, energy_scale (multiplier, e.g. 0.001 for mJ).
``--set FIELD=VALUE`` gives a constant to a field the file lacks. Every value is checked before it is
stored: token counts, batch, n_gpus and repeat are integers (8.5 is an error, never truncated), energy
and runtime finite and non-negative (NaN and inf are errors), warmup true/false, yes/no or 1/0, and
model, node_type and backend non-empty.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.trials.schema import SOURCE_IMPORTED, TRIAL_SCHEMA, SweepInfo, conform
from llm_energy.trials.store import TrialStore

SERVED_COLUMNS = ["timestamp", "phase", "runtime_s", "gpu_energy_mj", "input_tokens", "iteration", "model", "n_gpus",
                  "prompt", "output_tokens_defect", "total_tokens", "batch_size", "cpu_core", "method", "mem_total_mb",
                  "mem_used_mb"]
SYSTEMS = {  # system label in the files -> (node_type, device, system description)
    "argonne-swing": ("swing-a100", "NVIDIA A100-SXM4-40GB", "AMD EPYC 7742 + NVIDIA A100-SXM4-40GB (Argonne Swing)"),
    "Swing AMD+A100": ("swing-a100", "NVIDIA A100-SXM4-40GB", "AMD EPYC 7742 + NVIDIA A100-SXM4-40GB (Argonne Swing)"),
    "Palmetto Intel+A100": ("palmetto-a100", "NVIDIA A100", "Intel Xeon + NVIDIA A100 (Clemson Palmetto)"),
    "Palmetto Intel+V100": ("palmetto-v100", "NVIDIA V100", "Intel Xeon + NVIDIA V100 (Clemson Palmetto)"),
    "M1-Pro": ("m1-pro", "Apple M1 Pro", "Apple M1 Pro"),
}
CSV_FIELDS = ("tin", "tout", "energy_j", "runtime_s", "batch", "model", "node_type", "system", "device", "n_gpus",
              "backend", "repeat", "warmup", "tin_actual", "tout_actual")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def _model_name(s: str) -> str:
    """'meta-llama/Llama-2-7b-chat-hf' -> 'Llama-2-7b-chat-hf'; 'Llama-2 (7B)' -> 'Llama-2-7B'."""
    s = s.split("/")[-1]
    return re.sub(r"\s*\(([^)]*)\)", r"-\1", s).replace(" ", "-")


def _finish(df: pl.DataFrame, source: Path, label: str) -> pl.DataFrame:
    """Ids, cell ids and defaults shared by every importer. Sweep ids hash the file's content, not its
    name: two different files both named run.csv both import, the same file imported twice adds nothing."""
    content = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    sweep = pl.concat_str([pl.lit(f"{label}|{content}"), pl.col("model"), pl.col("node_type"), pl.col("backend"),
                           pl.col("n_gpus").cast(pl.String)], separator="|")
    df = df.with_columns(
        sweep.map_elements(lambda s: hashlib.sha1(s.encode()).hexdigest()[:12], return_dtype=pl.String).alias("sweep_id"),
        pl.format("i{}-o{}-b{}", "tin", "tout", "batch").alias("cell_id"),
    )
    if "repeat" not in df.columns:
        df = df.with_columns(pl.int_range(pl.len()).over("sweep_id", "cell_id").alias("repeat"))
    df = df.with_columns(pl.format("{}/{}/r{}", "sweep_id", "cell_id", "repeat").alias("trial_id"),
                         pl.lit(str(source)).alias("versions"))
    return conform(df, TRIAL_SCHEMA)


def _read_csv(path: Path, **kw) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=100000, **kw)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def import_wilkins2024(path: str | Path) -> pl.DataFrame:
    """Trials of one Wilkins et al. (2024) file (grid, sweeps or served), detected by its header."""
    p = Path(path)
    head = _first_line(p)
    if head.startswith("Timestamp,Phase,Runtime (s),GPU Energy (mJ)"):
        return _import_grid(p)
    if head.startswith("Phase,Runtime (s),CPU Energy (J),GPU Energy (J)"):
        return _import_sweeps(p)
    if re.match(r"^\d+(\.\d+)?,[^,]*,", head):
        return _import_served(p)
    raise UserError(f"{p}: header={head[:60]!r}: not a wilkins2024 grid, sweeps or served file")


def _first_line(p: Path) -> str:
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            return f.readline().strip()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror})") from None


def _system_cols(col: str) -> list[pl.Expr]:
    def look(i: int):
        return pl.col(col).map_elements(lambda s: SYSTEMS.get(s, (_slug(s), s, s))[i], return_dtype=pl.String)

    return [look(0).alias("node_type"), look(1).alias("device"), look(2).alias("system")]


def _import_grid(p: Path) -> pl.DataFrame:
    g = _read_csv(p).filter(pl.col("Phase").str.starts_with("start-inference"))
    _check_numeric(g, p, ["Number of Input Tokens", "Number of Output Tokens", "Runtime (s)", "GPU Energy (mJ)"])
    df = g.select(
        pl.col("Number of Input Tokens").cast(pl.Int32).alias("tin"),
        pl.col("Number of Output Tokens").cast(pl.Int32).alias("tout"),
        pl.lit(1, pl.Int32).alias("batch"),
        pl.lit(False).alias("warmup"),
        pl.col("Runtime (s)").cast(pl.Float64).alias("runtime_s"),
        (pl.col("GPU Energy (mJ)").cast(pl.Float64) / 1000).alias("energy_j"),
        pl.lit(f"{SOURCE_IMPORTED}:nvml-counter").alias("energy_source"),
        pl.col("Model").map_elements(_model_name, return_dtype=pl.String).alias("model"),
        pl.col("Number of GPUs").cast(pl.Int32).alias("n_gpus"),
        pl.lit("hf-nocache").alias("backend"), pl.lit("bfloat16").alias("dtype"),
        pl.lit(1, pl.Int32).alias("n_inner"), pl.lit(0, pl.Int32).alias("n_samples"), pl.lit(False).alias("short_window"),
        pl.col("Timestamp").cast(pl.Float64).alias("t_start"),
        (pl.col("Timestamp").cast(pl.Float64) + pl.col("Runtime (s)")).alias("t_end"),
        pl.col("System").alias("node"),
        *_system_cols("System"),
    )
    return _finish(df, p, "wilkins2024-grid")


def _import_sweeps(p: Path) -> pl.DataFrame:
    s = _read_csv(p).filter(pl.col("Phase").str.starts_with("start-inference") | pl.col("Phase").str.starts_with("inference"))
    _check_numeric(s, p, ["Number of Input Tokens", "Number of Output Tokens", "Runtime (s)", "GPU Energy (J)"])
    df = s.select(
        pl.col("Number of Input Tokens").cast(pl.Int32).alias("tin"),
        pl.col("Number of Output Tokens").cast(pl.Int32).alias("tout"),
        pl.lit(1, pl.Int32).alias("batch"),
        pl.col("Iteration").cast(pl.Int32).alias("repeat"),
        (pl.col("Iteration") == 0).alias("warmup"),
        pl.col("Runtime (s)").cast(pl.Float64).alias("runtime_s"),
        pl.col("GPU Energy (J)").cast(pl.Float64).alias("energy_j"),
        pl.concat_list([pl.col("GPU Energy (J)").cast(pl.Float64), pl.col("CPU Energy (J)").cast(pl.Float64)]).alias("device_energy_j"),
        pl.lit(["gpu", "cpu"]).alias("devices"),
        # the NVIDIA systems' GPU energy is the NVML counter; the data's README does not say what
        # the M1 Pro's meter was, so its label says that rather than guess
        pl.when(pl.col("System").str.contains("A100|V100|H100"))
        .then(pl.lit(f"{SOURCE_IMPORTED}:nvml-counter"))
        .otherwise(pl.lit(f"{SOURCE_IMPORTED}:gpu-meter-unstated")).alias("energy_source"),
        pl.col("Model").map_elements(_model_name, return_dtype=pl.String).alias("model"),
        pl.col("Number of GPUs").cast(pl.Int32).alias("n_gpus"),
        pl.lit("hf-nocache").alias("backend"),
        pl.lit(1, pl.Int32).alias("n_inner"), pl.lit(False).alias("short_window"),
        pl.col("System").alias("node"),
        *_system_cols("System"),
    )
    # a cell can appear in several phases (the same repeat index twice): keep them apart
    df = df.with_columns(pl.int_range(pl.len()).over("model", "node_type", "tin", "tout", "repeat").alias("_dup"))
    df = df.with_columns(pl.when(pl.col("_dup") > 0).then(pl.col("repeat") + 1000 * pl.col("_dup")).otherwise(pl.col("repeat")).alias("repeat"))
    return _finish(df.drop("_dup"), p, f"wilkins2024-{p.stem}")


def _import_served(p: Path) -> pl.DataFrame:
    s = _read_csv(p, has_header=False)
    if s.width == len(SERVED_COLUMNS) + 3:
        # multi-GPU runs: one energy column per GPU (summed here) and a memory pair per GPU
        c = s.columns
        s = s.select(c[0], c[1], c[2], (pl.col(c[3]) + pl.col(c[4])).alias("e"), *c[5:17])
    elif s.width != len(SERVED_COLUMNS):
        raise UserError(f"{p}: {s.width} columns, a served file has {len(SERVED_COLUMNS)} (or {len(SERVED_COLUMNS) + 3} on 2 GPUs)")
    s = s.rename(dict(zip(s.columns, SERVED_COLUMNS))).filter(pl.col("phase").str.starts_with("start-inference"))
    _check_numeric(s, p, ["input_tokens", "output_tokens_defect", "runtime_s", "gpu_energy_mj"])
    df = s.select(
        pl.col("input_tokens").cast(pl.Int32).alias("tin"),
        (pl.col("output_tokens_defect") + pl.col("input_tokens")).cast(pl.Int32).alias("tout"),
        pl.lit(1, pl.Int32).alias("batch"),
        pl.lit(False).alias("warmup"),
        pl.col("runtime_s").cast(pl.Float64),
        (pl.col("gpu_energy_mj").cast(pl.Float64) / 1000).alias("energy_j"),
        pl.lit(f"{SOURCE_IMPORTED}:nvml-counter").alias("energy_source"),
        pl.col("model").map_elements(_model_name, return_dtype=pl.String),
        pl.col("n_gpus").cast(pl.Int32),
        ("served-" + pl.col("method").str.to_lowercase()).alias("backend"),
        pl.lit("a100-80gb").alias("node_type"), pl.lit("NVIDIA A100 80GB").alias("device"),
        pl.lit("NVIDIA 80 GB GPU node (served)").alias("system"), pl.lit("served").alias("node"),
        pl.lit(1, pl.Int32).alias("n_inner"),
    ).filter((pl.col("tin") > 0) & (pl.col("tout") > 0))
    return _finish(df, p, f"wilkins2024-{p.stem}")


def _check_numeric(df: pl.DataFrame, p: Path, cols: list[str]) -> None:
    for c in cols:
        if c not in df.columns:
            raise UserError(f"{p}: column {c!r} missing")
        if not df.schema[c].is_numeric():
            bad = df.filter(pl.col(c).cast(pl.Float64, strict=False).is_null())[c]
            raise UserError(f"{p}: {c}={bad[0] if bad.len() else '?'!r}: not a number")


INT_FIELDS = {"tin": 1, "tout": 1, "batch": 1, "n_gpus": 0, "repeat": 0, "tin_actual": 1, "tout_actual": 1}  # minimum
FLOAT_FIELDS = ("energy_j", "runtime_s")
NAME_FIELDS = ("model", "node_type", "backend")  # part of the deployment key: never empty
TEXT_FIELDS = ("system", "device")
BOOL_WORDS = {"true": True, "t": True, "yes": True, "y": True, "1": True,
              "false": False, "f": False, "no": False, "n": False, "0": False}
CSV_DEFAULTS = {"model": "unknown", "node_type": "imported", "backend": "imported", "n_gpus": "0", "batch": "1",
                "system": "", "device": ""}
INT32_MAX = 2**31 - 1


def import_csv(path: str | Path, mapping: dict[str, str], *, has_header: bool = True,
               defaults: dict[str, str] | None = None) -> pl.DataFrame:
    """Trials from any CSV through a FIELD=COLUMN mapping (COLUMN: a name, or a 0-based index).

    ``defaults`` (``--set FIELD=VALUE``) gives a constant to a field the file lacks. Every value is
    checked before it is cast: a bad one is a UserError naming the file, the field, its column (or
    ``--set``), the first bad value and its data row (1 = the first row after any header).
    """
    p = Path(path)
    defaults = dict(defaults or {})
    for f in mapping:
        if f not in (*CSV_FIELDS, "energy_scale"):
            raise UserError(f"--map {f}=...: unknown field; fields: {', '.join(CSV_FIELDS)}, energy_scale")
    for f in defaults:
        if f not in CSV_FIELDS:
            raise UserError(f"--set {f}=...: unknown field; fields: {', '.join(CSV_FIELDS)}")
        if f in mapping:
            raise UserError(f"--set {f}=...: {f} is also given by --map {f}={mapping[f]}; give it once")
    for f in ("tin", "tout", "energy_j", "runtime_s"):
        if f not in mapping:
            raise UserError(f"--map: field {f!r} is required (e.g. --map {f}=COLUMN)")
    scale = _energy_scale(mapping.get("energy_scale"))
    raw = _read_csv(p, has_header=has_header)
    cols: list[pl.Expr] = []
    where: dict[str, str] = {}  # field -> "column X" or "--set"
    for f, c in mapping.items():
        if f == "energy_scale":
            continue
        if has_header:
            if c not in raw.columns:
                raise UserError(f"{p}: column {c!r} (for {f}) missing; columns: {', '.join(raw.columns)}")
            cols.append(pl.col(c).alias(f))
            where[f] = f"column {c!r}"
        else:
            if not c.isdigit() or int(c) >= raw.width:
                raise UserError(f"{p}: {f}={c!r}: a file without a header needs a 0-based column index < {raw.width}")
            cols.append(pl.col(raw.columns[int(c)]).alias(f))
            where[f] = f"column {c}"
    df = raw.select(cols)
    for f, v in ({k: v for k, v in CSV_DEFAULTS.items() if k not in mapping} | defaults).items():
        df = df.with_columns(pl.lit(v, dtype=pl.String).alias(f))
        where[f] = "--set" if f in defaults else "default"
    out = []
    for f in df.columns:
        s = df[f]
        if f in INT_FIELDS:
            out.append(_check_number(s, p, where[f], integer=True, minimum=INT_FIELDS[f],
                                     optional=f in ("tin_actual", "tout_actual")).cast(pl.Int32))
        elif f in FLOAT_FIELDS:
            v = _check_number(s, p, where[f], integer=False, minimum=0)
            out.append(v * scale if f == "energy_j" else v)
        elif f == "warmup":
            out.append(_check_bool(s, p, where[f]))
        elif f in NAME_FIELDS:
            t = s.cast(pl.String).str.strip_chars()
            _first_bad(t.is_null() | (t == ""), s, p, where[f], f"empty; every trial needs a {f} (or use --set {f}=VALUE)")
            out.append(t)
        else:
            out.append(s.cast(pl.String).fill_null(""))
    df = pl.DataFrame(out)
    if "warmup" not in df.columns:
        df = df.with_columns(pl.lit(False).alias("warmup"))
    df = df.with_columns(pl.lit(f"{SOURCE_IMPORTED}:csv").alias("energy_source"), pl.lit(1, pl.Int32).alias("n_inner"),
                         pl.lit(str(p)).alias("node"))
    return _finish(df, p, "csv")


def _energy_scale(text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        v = float(text)
    except ValueError:
        raise bad_value("--map energy_scale", text, "not a number (a multiplier, e.g. 0.001 for mJ)") from None
    if not math.isfinite(v) or v <= 0:
        raise bad_value("--map energy_scale", text, "must be a finite number > 0 (e.g. 0.001 for mJ)")
    return v


def _first_bad(mask: pl.Series, s: pl.Series, p: Path, where: str, why: str) -> None:
    """UserError for the first row where ``mask`` holds (null counts as bad)."""
    mask = mask.fill_null(True)
    if not mask.any():
        return
    i = int(mask.arg_true()[0])
    v = s[i]
    if where in ("--set", "default"):
        raise UserError(f"{p}: {where} {s.name}={v!r}: {why}")
    raise UserError(f"{p}: {s.name}={'(empty)' if v is None else repr(v)} ({where}, data row {i + 1}): {why}")


def _check_number(s: pl.Series, p: Path, where: str, *, integer: bool, minimum: float,
                  optional: bool = False) -> pl.Series:
    """The column as Float64, every value a finite number >= minimum (an integer if ``integer``)."""
    num = s.cast(pl.Float64, strict=False)
    missing = s.is_null() if optional else pl.Series(s.name, [False] * s.len())
    _first_bad(~missing & (num.is_null() | num.is_nan() | num.is_infinite()), s, p, where, "not a finite number")
    num_ok = num.fill_null(minimum)
    if integer:
        _first_bad(num_ok != num_ok.floor(), s, p, where, "not an integer")
        _first_bad(num_ok > INT32_MAX, s, p, where, f"too large (at most {INT32_MAX})")
    if num_ok.lt(minimum).any():
        why = ("must be a positive integer" if minimum == 1 else "must be >= 0") if integer else "must not be negative"
        _first_bad(num_ok < minimum, s, p, where, why)
    return num.alias(s.name)


def _check_bool(s: pl.Series, p: Path, where: str) -> pl.Series:
    """true/false, yes/no, 1/0 (any case) as Boolean."""
    if s.dtype == pl.Boolean:
        _first_bad(s.is_null(), s, p, where, "empty; expected true or false")
        return s
    words = s.cast(pl.String).str.strip_chars().str.to_lowercase()
    if s.dtype.is_numeric():
        words = s.cast(pl.Float64, strict=False).cast(pl.String).str.replace(r"\.0$", "")
    known = words.is_in(list(BOOL_WORDS))
    _first_bad(~known, s, p, where, f"expected one of {', '.join(BOOL_WORDS)}")
    return words.replace_strict(BOOL_WORDS, return_dtype=pl.Boolean).alias(s.name)


def store_imported(df: pl.DataFrame, out: str | Path) -> int:
    """Append imported trials to a store, one sweep record per deployment; returns rows written."""
    store = TrialStore(out)
    for r in df.select("sweep_id", "model", "backend", "dtype", "node_type", "n_gpus", "node", "system", "device",
                       "energy_source", "versions").unique("sweep_id", maintain_order=True).iter_rows(named=True):
        store.register_sweep(r["sweep_id"], SweepInfo(
            sweep_id=r["sweep_id"], model=r["model"], backend=r["backend"], dtype=r["dtype"] or "",
            node_type=r["node_type"], n_gpus=int(r["n_gpus"] or 0), node=r["node"] or "", system=r["system"] or "",
            device=r["device"] or "", energy_source=r["energy_source"], notes=[f"imported from {r['versions']}"]))
    return store.append_trials(df)
