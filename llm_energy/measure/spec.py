"""What to profile on one node (:class:`ProfileSpec`), the sweep and trial ids that are functions of it
alone, and whether a run may resume a stored sweep (:func:`resume_spec`).

A sweep's id hashes model, backend, dtype, node type, device and GPUs (unchanged since schema 1, so
every stored sweep keeps its id). What else makes its trials comparable (design, seed, measurement
window, resolved dtype, energy source: :func:`llm_energy.trials.schema.sweep_identity`) is checked
against the sweep's record in the manifest: a run that differs is refused, or with ``--new-sweep``
becomes sweep variant 1, 2, ... (``sweep_variant``, hashed into the id only when nonzero)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

from llm_energy.errors import UserError, bad_value
from llm_energy.measure.design import PlannedTrial, SweepDesign
from llm_energy.trials.schema import SCHEMA_VERSION, SweepInfo, identity_diff

MAX_VARIANTS = 1000


@dataclass(frozen=True)
class ProfileSpec:
    """What to profile on one node."""

    model: str
    design: SweepDesign
    backend: str = "cache"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"
    node_type: str = "local"
    idle_s: float = 3.0
    cooldown_s: float = 0.0
    min_window_s: float | None = None  # None: auto = max(0.5, 20 meter update periods): 2 s on NVML
    sample_period_s: float = 0.02
    seed: int = 0
    gpu_indices: tuple[int, ...] | None = None
    threads: int | None = None
    sweep_variant: int = 0  # 0: the sweep of these settings; n > 0: the n-th new sweep beside it (--new-sweep)
    sweep: str | None = None  # an explicit sweep id: a stored sweep recorded under the first id scheme
    beyond_context: bool = False  # run sequences longer than max_position_embeddings (--beyond-context)

    def __post_init__(self) -> None:
        for name in ("idle_s", "cooldown_s", "min_window_s"):  # `not v >= 0`: NaN too (issue 16)
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise bad_value(name, v, "must be a finite number of seconds >= 0")
        if not (math.isfinite(self.sample_period_s) and self.sample_period_s > 0):
            raise bad_value("sample_period_s", self.sample_period_s, "must be a finite number > 0")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise bad_value("threads", self.threads, "must be a positive integer (torch CPU threads)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["design"] = self.design.to_dict()
        d["gpu_indices"] = list(self.gpu_indices) if self.gpu_indices is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProfileSpec":
        d = dict(d)
        d["design"] = SweepDesign.from_dict(d["design"])
        if d.get("gpu_indices") is not None:
            d["gpu_indices"] = tuple(int(i) for i in d["gpu_indices"])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise bad_value("profile spec", sorted(unknown)[0], "unknown field")
        return cls(**d)


def sweep_id(spec: ProfileSpec) -> str:
    """The sweep's id: a function of the spec alone, so a driver without GPUs and the actors on GPU
    nodes compute the same trial ids (the device is resolved on the node, when the sweep runs)."""
    if spec.sweep:
        return spec.sweep
    key = {
        "schema": SCHEMA_VERSION,
        "model": spec.model,
        "backend": spec.backend,
        "dtype": spec.dtype,
        "node_type": spec.node_type,
        "device": spec.device,
        "gpus": list(spec.gpu_indices) if spec.gpu_indices is not None else None,
    }
    if spec.sweep_variant:
        key["variant"] = spec.sweep_variant
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def legacy_sweep_id(spec: ProfileSpec, n_gpus: int) -> str:
    """The id the first profiler (stores written before 2026-11-25 05:00, e.g. data/h100/*) gave this
    spec: device kind and GPU count, resolved on the node, instead of the requested device."""
    key = {"schema": SCHEMA_VERSION, "model": spec.model, "backend": spec.backend, "dtype": spec.dtype,
           "node_type": spec.node_type, "device_kind": "cuda" if n_gpus else "cpu", "n_gpus": n_gpus}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def trial_id(sweep: str, trial: PlannedTrial) -> str:
    """A trial's id within sweep ``sweep``: stable across runs, so a rerun skips what is stored."""
    return f"{sweep}/{trial.key}"


# ---- resuming a stored sweep ----------------------------------------------------------------
_FLAGS = {"tin": "--tin", "tout": "--tout", "batch": "--batch", "repeats": "--repeats", "warmups": "--warmups",
          "design": "--design", "cells": "design cells", "seed": "--seed", "min_window_s": "--min-window-s",
          "backend": "--backend", "spec.dtype": "--dtype", "dtype": "dtype", "energy_source": "energy source"}


def planned_info(spec: ProfileSpec, energy_source: str = "") -> SweepInfo:
    """The identity a run of ``spec`` would record (what :func:`identity_diff` compares)."""
    return SweepInfo(sweep_id=sweep_id(spec), model=spec.model, backend=spec.backend, dtype="",
                     node_type=spec.node_type, n_gpus=0, energy_source=energy_source,
                     design=spec.design.to_dict(), spec=spec.to_dict())


def _show(key: str, v: Any) -> str:
    if key == "min_window_s" and v is None:
        return "auto"
    if isinstance(v, list) and key in ("tin", "tout", "batch"):
        return ",".join(str(x) for x in v)
    if key == "cells":
        return f"{len(v)} cells"
    return str(v)


def describe_diff(diff: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{_FLAGS.get(k, k)} {_show(k, b)} (stored: {_show(k, a)})" for k, a, b in diff)


def resume_spec(sweeps: dict[str, SweepInfo], spec: ProfileSpec, energy_source: Callable[[], str], *,
                new_sweep: bool = False, where: str = "", n_gpus: int | None = None) -> ProfileSpec:
    """The spec this run should use in a store holding ``sweeps``: ``spec`` itself when its sweep is
    new or was recorded with the same settings; otherwise a UserError saying what differs, or with
    ``new_sweep`` the first later variant that matches or is free. ``energy_source`` is called (it
    opens the meters) only when a stored sweep has to be compared. With ``n_gpus`` (resolved on this
    node) a sweep stored under its :func:`legacy_sweep_id` is resumed under that id."""
    source: str | None = None
    first: tuple[str, list] | None = None
    for v in range(spec.sweep_variant, spec.sweep_variant + MAX_VARIANTS):
        cand = replace(spec, sweep_variant=v)
        sid = sweep_id(cand)
        if v == 0 and sid not in sweeps and n_gpus is not None and not spec.sweep:
            old = legacy_sweep_id(spec, n_gpus)
            if old in sweeps:
                cand, sid = replace(cand, sweep=old), old
        stored = sweeps.get(sid)
        if stored is None:  # a free id (reached past variant 0 only with new_sweep)
            return cand
        if source is None:
            source = energy_source()
        diff = identity_diff(stored, planned_info(cand, source))
        if not diff:
            return cand
        first = first or (sid, diff)
        if not new_sweep:
            break
    sid, diff = first
    raise UserError(f"{where or 'store'}: sweep {sid} there was measured otherwise: {describe_diff(diff)}; "
                    "rerun with the stored settings, use another --out, or pass --new-sweep to start a new sweep "
                    "in this store")
