"""What to profile on one node (:class:`ProfileSpec`), and the sweep and trial ids that are functions of it alone."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from llm_energy.errors import bad_value
from llm_energy.measure.design import PlannedTrial, SweepDesign
from llm_energy.trials.schema import SCHEMA_VERSION


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

    def __post_init__(self) -> None:
        for name in ("idle_s", "cooldown_s", "min_window_s"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise bad_value(name, getattr(self, name), "must be >= 0")
        if self.sample_period_s <= 0:
            raise bad_value("sample_period_s", self.sample_period_s, "must be > 0")

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
    key = {
        "schema": SCHEMA_VERSION,
        "model": spec.model,
        "backend": spec.backend,
        "dtype": spec.dtype,
        "node_type": spec.node_type,
        "device": spec.device,
        "gpus": list(spec.gpu_indices) if spec.gpu_indices is not None else None,
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def trial_id(sweep: str, trial: PlannedTrial) -> str:
    """A trial's id within sweep ``sweep``: stable across runs, so a rerun skips what is stored."""
    return f"{sweep}/{trial.key}"
