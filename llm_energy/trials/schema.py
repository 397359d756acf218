"""The trial and sample schemas: the contract between measurement, storage, fitting and planning.

Documented in docs/schema.md; bump :data:`SCHEMA_VERSION` on any incompatible change.

Trials are one row per measured trial (one generation of ``batch`` sequences, ``tin`` prompt tokens
each, ``tout`` new tokens each). Samples are raw timestamped meter readings: power (W) polled on a
background thread, or a cumulative energy counter (J) read at window boundaries.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from llm_energy.trials.errata import COMPILED_COLUMN, COMPILED_IN_WINDOW, excluded

SCHEMA_VERSION = 1

# Energy source labels. A trial's ``energy_source`` is the best source that measured it.
SOURCE_NVML_COUNTER = "nvml-counter"  # nvmlDeviceGetTotalEnergyConsumption deltas (mJ counter)
SOURCE_NVML_POWER = "nvml-power"  # integrated polled power (POWER_INSTANT field or plain power)
SOURCE_RAPL = "rapl"  # /sys/class/powercap energy_uj counters
SOURCE_ESTIMATE = "estimate"  # CPU utilisation x TDP: no meter exists; every report says so
SOURCE_IMPORTED = "imported"  # read from another tool's files (the label says what they measured)

# Trial quality (docs/schema.md): "ok", or "suspect:<code>[,<code>...]" with the reason in quality_note.
# A suspect trial's energy is stored as measured, never replaced by a plausible number; fit leaves it out.
QUALITY_OK = "ok"
QUALITY_SUSPECT = "suspect"

TRIAL_SCHEMA: dict[str, pl.DataType] = {
    "trial_id": pl.String,  # f"{sweep_id}/{cell_id}/r{repeat}", unique in a store
    "sweep_id": pl.String,  # hash of what makes trials comparable (model, backend, node, dtype, ...)
    "cell_id": pl.String,  # stable id of (tin, tout, batch)
    "repeat": pl.Int32,  # 0-based; warm-up trials have warmup=True
    "warmup": pl.Boolean,
    "tin": pl.Int32,  # requested prompt tokens per sequence
    "tout": pl.Int32,  # requested new tokens per sequence
    "batch": pl.Int32,
    "tin_actual": pl.Int32,
    "tout_actual": pl.Int32,
    "runtime_s": pl.Float64,  # wall time of one generation (prefill + decode), per inner repetition
    "prefill_s": pl.Float64,  # time to first token
    "decode_s": pl.Float64,  # runtime_s - prefill_s
    "energy_j": pl.Float64,  # gross energy of one generation, summed over the deployment's devices
    "energy_net_j": pl.Float64,  # energy_j - idle_w * runtime_s
    "idle_w": pl.Float64,  # idle baseline power of the devices measured (W)
    "energy_source": pl.String,  # nvml-counter | nvml-power | rapl | estimate | imported:<what was measured>
    "mean_w": pl.Float64,
    "peak_w": pl.Float64,
    "n_samples": pl.Int32,  # polled power samples inside the window
    "n_inner": pl.Int32,  # generations inside one measurement window (short trials are repeated)
    "short_window": pl.Boolean,  # window shorter than 3 meter update periods even after repeating
    "device_energy_j": pl.List(pl.Float64),  # per-device gross energy, same order as `devices`
    "devices": pl.List(pl.String),  # device ids, e.g. "gpu0", "package-0"
    "t_start": pl.Float64,  # wall clock (epoch s) of the window's start
    "t_end": pl.Float64,
    "t_start_mono": pl.Float64,  # monotonic clock of the node (s): joins samples to trials
    "t_end_mono": pl.Float64,
    "node": pl.String,  # hostname or Ray node id
    "session": pl.String,  # one profiler run (process): monotonic clocks compare only within it
    "node_type": pl.String,  # e.g. "h100", "a100", "cpu" (the config's node type)
    "system": pl.String,  # hardware description, e.g. "AMD EPYC 7742 + NVIDIA A100-SXM4-40GB"
    "device": pl.String,  # e.g. the GPU's NVML name, or the CPU model
    "n_gpus": pl.Int32,
    "model": pl.String,
    "backend": pl.String,  # cache | no-cache | static | imported:<method>
    "dtype": pl.String,
    "versions": pl.String,  # JSON of software versions
    "quality": pl.String,  # "ok" | "suspect:<code>[,<code>...]" (a meter reading that cannot be trusted)
    "quality_note": pl.String,  # why, per device ("" when ok)
    # outside the window, just before it: the seconds backend.prepare took (a static backend's compile + CUDA-graph
    # capture + warm-up on the first trial of a bucket x batch; a first seen prompt shape's warm-up; ~0 otherwise),
    # and whether that prepare compiled a new bucket x batch; null in stores and imports from before they were recorded
    "prepare_s": pl.Float64,
    "prepare_compiled": pl.Boolean,
    # the counter energy (J) over those prepare_s seconds (a trial measured again after its window compiled: the
    # discarded window's too), integrated as the window's is: in total over the deployment's devices (as energy_j),
    # and per device in the order of `devices` (as device_energy_j; what check's session closure adds per device);
    # null in stores from before they were recorded
    "prepare_j": pl.Float64,
    "prepare_device_j": pl.List(pl.Float64),
    # static backends: the caches (batch x bucket StaticCaches) given back during the trial (its prepare, which
    # makes room for the trial's cache; an out-of-memory retry gives back all): StaticBackend.evictions' increase;
    # null for backends that keep no such cache and in stores from before it was recorded
    "prepare_evictions": pl.Int32,
}

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "t_wall": pl.Float64,  # epoch seconds
    "t_mono": pl.Float64,  # node monotonic seconds
    "node": pl.String,
    "session": pl.String,  # the profiler run that took it (see TRIAL_SCHEMA)
    "device": pl.String,  # e.g. "gpu0", "package-0", "dram-0", "cpu"
    "source": pl.String,  # nvml-power | nvml-counter | rapl | estimate
    "watts": pl.Float64,  # null for counter readings
    "joules": pl.Float64,  # cumulative counter value (J); null for power readings
}


@dataclass(frozen=True, slots=True)
class PowerSample:
    """One meter reading. Exactly one of ``watts`` (instant power) or ``joules`` (a cumulative
    counter) is set."""

    t_wall: float
    t_mono: float
    node: str
    device: str
    source: str
    watts: float | None = None
    joules: float | None = None


def samples_frame(samples: list[PowerSample], session: str = "") -> pl.DataFrame:
    """Samples as a frame with :data:`SAMPLE_SCHEMA` (empty list -> empty frame with the schema)."""
    if not samples:
        return pl.DataFrame(schema=SAMPLE_SCHEMA)
    cols = {name: [getattr(s, name) for s in samples] for name in SAMPLE_SCHEMA if name != "session"}
    cols["session"] = [session] * len(samples)
    return pl.DataFrame(cols, schema=SAMPLE_SCHEMA)


@dataclass(slots=True)
class TrialRecord:
    """One measured trial; ``to_row`` gives the :data:`TRIAL_SCHEMA` row."""

    trial_id: str
    sweep_id: str
    cell_id: str
    repeat: int
    warmup: bool
    tin: int
    tout: int
    batch: int
    tin_actual: int
    tout_actual: int
    runtime_s: float
    prefill_s: float
    decode_s: float
    energy_j: float
    energy_net_j: float
    idle_w: float
    energy_source: str
    mean_w: float | None
    peak_w: float | None
    n_samples: int
    n_inner: int
    short_window: bool
    device_energy_j: list[float]
    devices: list[str]
    t_start: float
    t_end: float
    t_start_mono: float
    t_end_mono: float
    node: str
    node_type: str
    system: str
    device: str
    n_gpus: int
    model: str
    backend: str
    dtype: str
    versions: str = "{}"
    session: str = ""
    quality: str = QUALITY_OK
    quality_note: str = ""
    prepare_s: float | None = None  # None: not recorded (what an old store reads as)
    prepare_compiled: bool | None = None
    prepare_j: float | None = None  # None: not recorded (an old store), as prepare_s
    prepare_device_j: list[float] | None = None
    prepare_evictions: int | None = None  # None: a backend without evictions (not static), or an old store

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trials_frame(records: list[TrialRecord]) -> pl.DataFrame:
    """Trial records as a frame with :data:`TRIAL_SCHEMA`."""
    if not records:
        return pl.DataFrame(schema=TRIAL_SCHEMA)
    return pl.DataFrame([r.to_row() for r in records], schema=TRIAL_SCHEMA)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Cast ``df`` to ``schema``: missing columns become nulls, extra columns are dropped."""
    exprs = [
        (pl.col(n).cast(t) if n in df.columns else pl.lit(None, dtype=t)).alias(n)
        for n, t in schema.items()
    ]
    return df.select(exprs)


def with_quality_default(df: pl.DataFrame) -> pl.DataFrame:
    """Trials written before the quality columns existed (old stores, imported rows) are "ok"."""
    if "quality" not in df.columns:
        return df
    return df.with_columns(pl.col("quality").fill_null(QUALITY_OK), pl.col("quality_note").fill_null(""))


def suspect_rows() -> pl.Expr:
    """True for trials flagged suspect (a missing quality is ok)."""
    return pl.col("quality").fill_null(QUALITY_OK).str.starts_with(QUALITY_SUSPECT)


def quality_codes() -> pl.Expr:
    """A suspect trial's reason codes as a list (``suspect:a,b`` -> ``["a", "b"]``; an ok trial: ``["ok"]``)."""
    return pl.col("quality").str.strip_prefix(f"{QUALITY_SUSPECT}:").str.split(",")


def split_suspect(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(trusted, suspect) trials; a frame without a quality column is all trusted."""
    if "quality" not in df.columns:
        return df, df.clear()
    bad = suspect_rows()
    return df.filter(~bad), df.filter(bad)


def drop_suspect(df: pl.DataFrame, what: str = "fit") -> tuple[pl.DataFrame, str | None]:
    """The trusted trials, and a line saying how many suspect ones ``what`` leaves out and why (None
    when there are none): what ``fit`` and the Ray pipeline's fit step both do."""
    # trials an erratum makes implausible (compiled-in-window), left out the same way; replayed over the whole
    # frame, since the rule follows each session's trials in order (a suspect trial still ran its warm-ups)
    ex = excluded(df)
    kept, bad = split_suspect(df.with_columns(ex.alias(COMPILED_COLUMN)).filter(~ex))
    n_ex = int(ex.sum())
    if not bad.height and not n_ex:
        return kept, None
    counts = quality_counts(bad)
    if n_ex:
        counts[f"erratum {COMPILED_IN_WINDOW}"] = n_ex
    why = ", ".join(f"{k} x{n}" for k, n in counts.items())
    return kept, f"{what}: left out {bad.height + n_ex} suspect trial(s) of {df.height} ({why})"


def quality_counts(df: pl.DataFrame) -> dict[str, int]:
    """Suspect trials per reason code (a trial with two codes counts under both)."""
    if "quality" not in df.columns:
        return {}
    codes = df.filter(suspect_rows()).select(quality_codes()).explode("quality")["quality"].to_list()
    return {c: codes.count(c) for c in sorted(set(codes))}


def versions_json(extra: dict[str, str] | None = None) -> str:
    """Software versions of this process as a JSON string (stored with every trial)."""
    import platform

    out: dict[str, str] = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "polars", "pynvml"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:  # noqa: BLE001 - a missing optional module is simply not listed
            pass
    try:
        from importlib.metadata import version

        out["llm_energy"] = version("llm-energy")
    except Exception:  # noqa: BLE001
        pass
    if extra:
        out.update(extra)
    return json.dumps(out, sort_keys=True)


@dataclass(frozen=True, slots=True)
class IdleBaseline:
    """Idle power measured before a sweep, per device and in total."""

    watts: float
    per_device: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    source: str = ""


@dataclass(slots=True)
class SweepInfo:
    """What a sweep measured and under which conditions (one per sweep id, in the manifest)."""

    sweep_id: str
    model: str
    backend: str
    dtype: str
    node_type: str
    n_gpus: int
    node: str = ""
    system: str = ""
    device: str = ""
    energy_source: str = ""
    idle_w: float | None = None  # model loaded, nothing running (what energy_net_j subtracts)
    idle_cold_w: float | None = None  # before the model was loaded (no CUDA context in the process)
    idle_per_device_w: dict[str, float] = field(default_factory=dict)
    design: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    versions: str = "{}"
    created: float = 0.0
    notes: list[str] = field(default_factory=list)
    # one record per profiler run (session) of this sweep: its node, idle baselines and meters; the
    # fields above are the first run's and are never overwritten by a resume
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepInfo":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


#: what a resumed run must share with the sweep it adds trials to (besides what ``sweep_id`` hashes)
IDENTITY_SPEC_KEYS = ("seed", "min_window_s", "backend", "dtype")


def sweep_identity(info: SweepInfo) -> dict[str, Any]:
    """The settings that make a sweep's trials comparable, from what its record holds: the design
    (cells, repeats, warm-ups, kind), the spec's seed, window, backend and dtype, the resolved dtype
    and the energy source. A key the record lacks (an imported sweep has no design) is not compared."""
    out: dict[str, Any] = {}
    d = info.design or {}
    if d.get("cells") is not None:
        cells = sorted(tuple(int(x) for x in c) for c in d["cells"])
        out["tin"] = sorted({c[0] for c in cells})
        out["tout"] = sorted({c[1] for c in cells})
        out["batch"] = sorted({c[2] for c in cells})
        out["cells"] = cells
    for k in ("kind", "repeats", "warmups"):
        if k in d:
            out["design" if k == "kind" else k] = d[k]
    spec = info.spec or {}
    for k in IDENTITY_SPEC_KEYS:
        if k in spec:
            out[f"spec.{k}" if k == "dtype" else k] = spec[k]
    if info.dtype:
        out["dtype"] = info.dtype
    if info.energy_source:
        out["energy_source"] = info.energy_source
    return out


def identity_diff(stored: SweepInfo, new: SweepInfo) -> list[tuple[str, Any, Any]]:
    """(key, stored value, new value) for every identity key both records hold and that differs."""
    a, b = sweep_identity(stored), sweep_identity(new)
    diff = [(k, a[k], b[k]) for k in a if k in b and a[k] != b[k]]
    if any(k in ("tin", "tout", "batch") for k, _, _ in diff):
        diff = [x for x in diff if x[0] != "cells"]  # the lists say it already
    return diff
