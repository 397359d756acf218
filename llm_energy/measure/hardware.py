"""What one node is: CPU, memory, GPUs (NVML) and power meters, as a typed record.

``probe_hardware`` runs on the node it describes (the ``devices`` command, and the cluster's
discovery runs it pinned on every node). It never loads a model or starts a sampler thread.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_energy.measure.samplers.base import PowerSampler


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML index on its node
    name: str  # NVML name, e.g. "NVIDIA H100 80GB HBM3"
    memory_total_b: int
    memory_free_b: int
    power_limit_w: float | None = None


@dataclass(frozen=True)
class NodeHardware:
    hostname: str
    cpu_model: str
    logical_cores: int
    memory_total_b: int
    memory_available_b: int
    gpus: tuple[GpuInfo, ...] = ()
    meters: tuple[str, ...] = ()  # meters found: "nvml", "rapl", "estimate"
    missing: tuple[str, ...] = field(default=())  # "<meter>: why not"

    @property
    def gpu_kinds(self) -> str:
        """e.g. "2x NVIDIA H100 80GB HBM3" or "-" without GPUs."""
        if not self.gpus:
            return "-"
        names: dict[str, int] = {}
        for g in self.gpus:
            names[g.name] = names.get(g.name, 0) + 1
        return ", ".join(f"{n}x {k}" for k, n in names.items())

    @property
    def min_gpu_memory_b(self) -> int:
        return min((g.memory_total_b for g in self.gpus), default=0)


def probe_hardware(nvml=None, powercap_root=None) -> NodeHardware:
    """Describe this node. All of NVML's GPUs are listed whatever CUDA_VISIBLE_DEVICES says."""
    import psutil

    from llm_energy.measure.samplers.discover import describe_meters
    from llm_energy.measure.samplers.estimate import cpu_model

    host = socket.gethostname()
    gpu_indices = _all_nvml_indices(nvml)
    kw = {"nvml": nvml, "powercap_root": powercap_root}
    if gpu_indices is not None:
        kw["gpu_indices"] = gpu_indices
    reports = describe_meters(host, **kw)
    gpus = tuple(
        GpuInfo(int(d.device[3:]), d.name, int(d.memory_total_b or 0), int(d.memory_free_b or 0), d.power_limit_w)
        for r in reports for d in r.devices if d.kind == "gpu"
    )
    vm = psutil.virtual_memory()
    return NodeHardware(
        hostname=host, cpu_model=cpu_model(), logical_cores=os.cpu_count() or 1,
        memory_total_b=int(vm.total), memory_available_b=int(vm.available), gpus=gpus,
        meters=tuple(r.meter for r in reports if r.found),
        missing=tuple(f"{r.meter}: {r.why}" for r in reports if not r.found),
    )


def _all_nvml_indices(nvml) -> list[int] | None:
    try:
        if nvml is None:
            import pynvml as nvml  # type: ignore[no-redef]
        nvml.nvmlInit()
        try:
            n = nvml.nvmlDeviceGetCount()
        finally:
            nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver / no pynvml: describe_meters says why
        return None
    return list(range(n)) or None


def _describe_hardware(samplers: list[PowerSampler], primary: list[str], gpu_indices: tuple[int, ...]) -> tuple[str, str]:
    """A profiler run's (device, system) labels: its GPU's meter name (``2x ...`` over several), else the CPU model."""
    from llm_energy.measure.samplers.estimate import cpu_model

    cpu = cpu_model()
    names = [d.name for s in samplers for d in s.devices() if d.device in primary]
    if gpu_indices:
        gpu = names[0] if names else "GPU"
        label = f"{len(gpu_indices)}x {gpu}" if len(gpu_indices) > 1 else gpu
        return gpu, f"{cpu} + {label}"
    return cpu, cpu
