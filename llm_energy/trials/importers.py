"""Import other tools' measurements into the trial store (TRIAL_SCHEMA rows).

``wilkins2024``: the files of Wilkins, Keshav, Mortier (2024), detected by their header:

* grid (``all-stats-raw.csv``): trial rows are those whose Phase starts with ``start-inference``
  ("tokenizer" and "model load" are start-up). One trial per cell. HF transformers, bf16, KV cache
  disabled (backend ``hf-nocache``), batch 1 (the file's "Batch Size" column says 32 for every row,
  start-up rows included; the README documents batch 1). "GPU Energy (mJ)" is the NVML counter delta
  summed over the GPUs, idle not subtracted (``energy_net_j`` is left null). Token counts ``tin``,
  ``tout`` are the file's "Number of Input/Output Tokens" columns (the nominal prompt length and
  max_new_tokens), which reproduce the published fits. The actual ones come from "Total Number of
  Tokens": a row of the grid (one model, one nominal tin) shares one prompt, whose length is the
  largest total - tout of the row (where the generation ran to max_new_tokens: 9..2134 for Llama-2,
  as the data's README says); ``tin_actual`` is that and ``tout_actual`` the total minus it (0.875 to
  1 x tout: generation may stop after min_new_tokens = 0.9 x tout).
* sweeps (``all-{input,output}[-scale]-stats.csv``): trials are ``start-inference*`` and
  ``inference*`` rows; iteration 0 of each cell is a warm-up (stored, flagged). ``energy_j`` is
  "GPU Energy (J)"; "CPU Energy (J)" is kept as a second device (not summed: on Swing it was one
  session total shared out by runtime, and the Intel values are RAPL minus a fixed 37.5 W a package).
* served (``{vllm,mii}-{model}-{gpus}.csv``, no header): one trial per request; the file's
  output-token column holds generated length minus input length (a known defect), so
  ``tout = column + tin`` (the total-tokens column). vLLM files have 16 columns; files of 2-GPU runs
  one energy column per GPU (summed into ``energy_j``, each kept in ``device_energy_j``) and a memory
  pair per GPU (19 columns); MII files a dataset column after the serving method (17). The model is
  what the caller states (``model=``), else the file name's: the files' own model column says
  Llama-2-7b-chat-hf in the 7b, 13b and 70b files alike, so trusting it would merge different
  models into one deployment; a disagreement is reported in ``notes``. The node type is the caller's
  (``node_type=``), else ``a100-80gb``.

``csv``: any CSV with a column mapping (``FIELD=COLUMN``; for files without a header COLUMN is a
0-based index). Required fields: tin, tout, energy_j, runtime_s; optional: batch, model, node_type,
system, device, n_gpus, backend, repeat, warmup. ``energy_j=A+B`` sums several columns (one a GPU,
say), each kept per device in ``device_energy_j``. ``energy_scale`` and ``runtime_scale`` are
multipliers (0.001 for mJ or ms), through the mapping or ``--set``. ``--set FIELD=VALUE`` gives a
constant to a field the file lacks. Every value is checked before it is
stored: token counts, batch, n_gpus and repeat are integers (8.5 is an error, never truncated), energy
and runtime finite and non-negative (NaN and inf are errors), warmup true/false, yes/no or 1/0, and
model, node_type and backend non-empty.
"""

from __future__ import annotations

import csv
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
    """The CSV as a frame; a file with no data row, or a header naming a column twice, is a UserError
    (issue 16: a header-only file was a traceback, a duplicated column silently renamed)."""
    try:
        df = pl.read_csv(path, infer_schema_length=100000, **kw)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    if kw.get("has_header", True):
        header = next(csv.reader([_first_line(path)]), [])
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise UserError(f"{path}: header names column {twice[0]!r} {header.count(twice[0])} times; "
                            "each column once (which one is meant?)")
    if df.height == 0:
        raise UserError(f"{path}: no data rows{' (a header only)' if kw.get('has_header', True) else ''}")
    return df


def import_wilkins2024(path: str | Path, *, model: str | None = None, node_type: str | None = None,
                       notes: list[str] | None = None) -> pl.DataFrame:
    """Trials of one Wilkins et al. (2024) file (grid, sweeps or served), detected by its header.

    ``model`` and ``node_type`` (served files only: the grid and sweep files name both reliably) are
    what the caller states; what the import decided that a user should know is appended to ``notes``.
    """
    p = Path(path)
    head = _first_line(p)
    stated = [f for f, v in (("model", model), ("node_type", node_type)) if v]
    if head.startswith("Timestamp,Phase,Runtime (s),GPU Energy (mJ)") or \
            head.startswith("Phase,Runtime (s),CPU Energy (J),GPU Energy (J)"):
        if stated:
            raise UserError(f"{p}: --{stated[0].replace('_', '-')} applies to served files only (this file "
                            f"names the {stated[0].replace('_', ' ')} of every row)")
        return _import_grid(p) if head.startswith("Timestamp") else _import_sweeps(p)
    if re.match(r"^\d+(\.\d+)?,[^,]*,", head):
        return _import_served(p, model=model, node_type=node_type, notes=notes if notes is not None else [])
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
    g = _read_csv(p).with_row_index("_row").filter(pl.col("Phase").str.starts_with("start-inference"))
    _check_numeric(g, p, ["Number of Input Tokens", "Number of Output Tokens", "Runtime (s)", "GPU Energy (mJ)"])
    _check_numeric(g, p, ["Total Number of Tokens"])
    prompt = (pl.col("Total Number of Tokens") - pl.col("Number of Output Tokens")).max().over(
        "Model", "System", "Number of Input Tokens")
    df = g.select(
        pl.col("Number of Input Tokens").cast(pl.Int32).alias("tin"),
        pl.col("Number of Output Tokens").cast(pl.Int32).alias("tout"),
        pl.when(prompt > 0).then(prompt).cast(pl.Int32).alias("tin_actual"),
        pl.when((prompt > 0) & (pl.col("Total Number of Tokens") > prompt))
        .then(pl.col("Total Number of Tokens") - prompt).cast(pl.Int32).alias("tout_actual"),
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
    s = _read_csv(p).with_row_index("_row").filter(pl.col("Phase").str.starts_with("start-inference")
                                                   | pl.col("Phase").str.starts_with("inference"))
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


SERVED_WIDTHS = {16: ("vllm", 1), 17: ("mii", 1), 19: ("vllm", 2)}  # columns -> (layout, energy columns)
SERVED_NAME = re.compile(r"^(vllm|mii)-(.+)-(\d+)$", re.IGNORECASE)


def _served_frame(p: Path) -> tuple[pl.DataFrame, int]:
    """The served file's columns under SERVED_COLUMNS names (one energy column per GPU: gpu_energy_mj,
    gpu1_energy_mj, ...) and how many energy columns it has."""
    s = _read_csv(p, has_header=False)
    if s.width not in SERVED_WIDTHS:
        raise UserError(f"{p}: {s.width} columns; a served file has 16 (vLLM), 17 (MII) or 19 (vLLM on 2 GPUs)")
    layout, n_energy = SERVED_WIDTHS[s.width]
    c = s.columns
    energy = [f"gpu{k}_energy_mj" if k else "gpu_energy_mj" for k in range(n_energy)]
    rest = c[3 + n_energy:]
    names = SERVED_COLUMNS[4:14]  # input_tokens .. method
    cols = [pl.col(c[0]).alias("timestamp"), pl.col(c[1]).alias("phase"), pl.col(c[2]).alias("runtime_s"),
            *[pl.col(c[3 + k]).alias(e) for k, e in enumerate(energy)],
            *[pl.col(rest[k]).alias(n) for k, n in enumerate(names)]]
    return s.select(cols), n_energy


def _served_labels(p: Path, column_models: list[str], model: str | None, node_type: str | None,
                   notes: list[str]) -> tuple[str, str]:
    """The model (stated, else from the file name) and node type of a served file; notes where the
    file's own model column disagrees."""
    m = SERVED_NAME.match(p.stem)
    chosen = model or (m.group(2) if m else None)
    if chosen is None:
        if len(column_models) != 1:
            raise UserError(f"{p}: model column={column_models!r}: several models and no name to go by; "
                            "state it with --model")
        chosen = column_models[0]
    disagree = [c for c in column_models if c.lower() != chosen.lower()]
    if disagree:
        source = "--model" if model else "the file name"
        notes.append(f"{p}: the file's model column says {', '.join(disagree)}; using {chosen} from {source}")
    return chosen, node_type or "a100-80gb"


def _import_served(p: Path, *, model: str | None, node_type: str | None, notes: list[str]) -> pl.DataFrame:
    s, n_energy = _served_frame(p)
    s = s.with_row_index("_row").filter(pl.col("phase").str.starts_with("start-inference"))
    energy = [c for c in s.columns if c.endswith("energy_mj")]
    _check_numeric(s, p, ["input_tokens", "runtime_s", *energy])
    _check_numeric(s, p, ["output_tokens_defect"], nonnegative=False)  # tout - tin: negative in the files
    column_models = sorted({_model_name(v) for v in s["model"].cast(pl.String).unique().to_list() if v})
    model_name, node = _served_labels(p, column_models, model, node_type, notes)
    device = "NVIDIA A100 80GB" if node == "a100-80gb" else node
    df = s.select(
        pl.col("input_tokens").cast(pl.Int32).alias("tin"),
        (pl.col("output_tokens_defect") + pl.col("input_tokens")).cast(pl.Int32).alias("tout"),
        pl.lit(1, pl.Int32).alias("batch"),
        pl.lit(False).alias("warmup"),
        pl.col("runtime_s").cast(pl.Float64),
        (pl.sum_horizontal([pl.col(e).cast(pl.Float64) for e in energy]) / 1000).alias("energy_j"),
        pl.concat_list([pl.col(e).cast(pl.Float64) / 1000 for e in energy]).alias("device_energy_j"),
        pl.lit([f"gpu{k}" for k in range(n_energy)]).alias("devices"),
        pl.lit(f"{SOURCE_IMPORTED}:nvml-counter").alias("energy_source"),
        pl.lit(model_name).alias("model"),
        pl.col("n_gpus").cast(pl.Int32),
        ("served-" + pl.col("method").str.to_lowercase().str.replace("deepspeed-", "")).alias("backend"),
        pl.lit(node).alias("node_type"), pl.lit(device).alias("device"),
        pl.lit("NVIDIA 80 GB GPU node (served)" if node == "a100-80gb" else f"{node} node (served)").alias("system"),
        pl.lit("served").alias("node"),
        pl.lit(1, pl.Int32).alias("n_inner"),
    ).filter((pl.col("tin") > 0) & (pl.col("tout") > 0))
    return _finish(df, p, f"wilkins2024-{p.stem}")


def _check_numeric(df: pl.DataFrame, p: Path, cols: list[str], *, nonnegative: bool = True) -> None:
    """Every value of ``cols`` a finite number, >= 0 unless not ``nonnegative`` (issue 16: NaN and negative energies were taken as
    measured); the first bad one is a UserError naming its column, value and data row, and saying so
    when that row is the file's last and incomplete (a file cut mid-row)."""
    if df.height == 0:
        raise UserError(f"{p}: no inference rows (Phase start-inference...)")
    for c in cols:
        if c not in df.columns:
            raise UserError(f"{p}: column {c!r} missing")
        num = df[c].cast(pl.Float64, strict=False)
        bad = (num.is_null() | num.is_nan() | num.is_infinite() | ((num < 0) & nonnegative)).fill_null(True)
        if bad.any():
            i = int(bad.arg_true()[0])
            v = df[c][i]
            row = int(df["_row"][i]) + 1 if "_row" in df.columns else i + 1
            cut = " (the last row, incomplete: the file looks cut mid-row)" if (
                i == df.height - 1 and df.row(i).count(None) > 0) else ""
            raise UserError(f"{p}: {c}={'(empty)' if v is None else repr(v)} (data row {row}{cut}): "
                            f"not a finite number{' >= 0' if nonnegative else ''}")


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
        if f not in (*CSV_FIELDS, *SCALES):
            raise UserError(f"--map {f}=...: unknown field; fields: {', '.join(CSV_FIELDS)}, {', '.join(SCALES)}")
    for f in defaults:
        if f not in (*CSV_FIELDS, *SCALES):
            raise UserError(f"--set {f}=...: unknown field; fields: {', '.join(CSV_FIELDS)}, {', '.join(SCALES)}")
        if f in mapping:
            raise UserError(f"--set {f}=...: {f} is also given by --map {f}={mapping[f]}; give it once")
    for f in ("tin", "tout", "energy_j", "runtime_s"):
        if f not in mapping:
            raise UserError(f"--map: field {f!r} is required (e.g. --map {f}=COLUMN)")
    scale = {f: _scale(f, mapping.get(f, defaults.get(f)), "--map" if f in mapping else "--set") for f in SCALES}
    defaults = {k: v for k, v in defaults.items() if k not in SCALES}
    raw = _read_csv(p, has_header=has_header)
    cols: list[pl.Expr] = []
    where: dict[str, str] = {}  # field -> "column X" or "--set"
    parts: list[str] = []  # the energy columns summed into energy_j (more than one: kept per device)
    for f, c in mapping.items():
        if f in SCALES:
            continue
        names = [_csv_column(raw, p, f, x.strip(), has_header) for x in _summands(raw, f, c, has_header)]
        if len(names) > 1:
            parts = names
            cols.append(pl.sum_horizontal([pl.col(n).cast(pl.Float64, strict=False) for n in names]).alias(f))
            cols.extend(pl.col(n).alias(f"_part{k}") for k, n in enumerate(names))
        else:
            cols.append(pl.col(names[0]).alias(f))
        where[f] = f"column {c!r}" if has_header else f"column {c}"
    df = raw.select(cols)
    per_device = [_check_number(df[f"_part{k}"], p, f"column {n!r}", integer=False, minimum=0) * scale["energy_scale"]
                  for k, n in enumerate(parts)]
    df = df.drop([c for c in df.columns if c.startswith("_part")])
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
            out.append(v * scale["energy_scale" if f == "energy_j" else "runtime_scale"])
        elif f == "warmup":
            out.append(_check_bool(s, p, where[f]))
        elif f in NAME_FIELDS:
            t = s.cast(pl.String).str.strip_chars()
            _first_bad(t.is_null() | (t == ""), s, p, where[f], f"empty; every trial needs a {f} (or use --set {f}=VALUE)")
            out.append(t)
        else:
            out.append(s.cast(pl.String).fill_null(""))
    df = pl.DataFrame(out)
    if per_device:
        df = df.with_columns(pl.concat_list(per_device).alias("device_energy_j"),
                             pl.lit(parts).alias("devices"))
    if "warmup" not in df.columns:
        df = df.with_columns(pl.lit(False).alias("warmup"))
    df = df.with_columns(pl.lit(f"{SOURCE_IMPORTED}:csv").alias("energy_source"), pl.lit(1, pl.Int32).alias("n_inner"),
                         pl.lit(str(p)).alias("node"))
    return _finish(df, p, "csv")


SCALES = ("energy_scale", "runtime_scale")  # multipliers of energy_j and runtime_s


def _scale(field: str, text: str | None, flag: str) -> float:
    """A scale multiplier (default 1), a finite number > 0."""
    if text is None:
        return 1.0
    eg = "0.001 for mJ" if field == "energy_scale" else "0.001 for ms"
    try:
        v = float(text)
    except ValueError:
        raise bad_value(f"{flag} {field}", text, f"not a number (a multiplier, e.g. {eg})") from None
    if not math.isfinite(v) or v <= 0:
        raise bad_value(f"{flag} {field}", text, f"must be a finite number > 0 (e.g. {eg})")
    return v


def _summands(raw: pl.DataFrame, field: str, spec: str, has_header: bool) -> list[str]:
    """The columns of a mapping: ``A+B`` sums columns for energy_j (unless a column is named so)."""
    if field != "energy_j" or "+" not in spec or (has_header and spec in raw.columns):
        return [spec]
    return [x for x in spec.split("+")]


def _csv_column(raw: pl.DataFrame, p: Path, field: str, c: str, has_header: bool) -> str:
    """The frame column a mapping names (a header name, or a 0-based index without a header)."""
    if has_header:
        if c not in raw.columns:
            hint = ""
            if raw.columns and all(_looks_numeric(x) for x in raw.columns):
                hint = ("; the first row looks like data, not a header: use --no-header (COLUMN is then a "
                        "0-based index)")
            raise UserError(f"{p}: column {c!r} (for {field}) missing; columns: {', '.join(raw.columns)}{hint}")
        return c
    if not c.isdigit() or int(c) >= raw.width:
        raise UserError(f"{p}: {field}={c!r}: a file without a header needs a 0-based column index < {raw.width}")
    return raw.columns[int(c)]


def _looks_numeric(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


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
