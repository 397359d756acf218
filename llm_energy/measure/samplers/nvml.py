"""NVIDIA GPUs through NVML (``pynvml`` from nvidia-ml-py).

* Counter: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load; Volta and later).
* Power: the ``NVML_FI_DEV_POWER_INSTANT`` field where the GPU reports it. On Ampere-and-later GPUs
  other than the A100, plain ``nvmlDeviceGetPowerUsage`` is a 1 s moving average, too slow for
  trials of a few hundred ms; GPUs without the field fall back to it (the device note says which).
Both update about every 100 ms on an H100.
"""

from __future__ import annotations

import os
from typing import Any

from llm_energy.measure.samplers.base import MeteredDevice, MeterReadError, PowerSampler, now
from llm_energy.trials.schema import SOURCE_NVML_COUNTER, SOURCE_NVML_POWER, PowerSample

FI_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT (nvml.h); pynvml exposes it when new enough


def visible_gpu_indices(nvml: Any) -> list[int]:
    """NVML indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES of plain integers honoured)."""
    n = nvml.nvmlDeviceGetCount()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or env.strip() == "":
        return list(range(n))
    parts = [p.strip() for p in env.split(",") if p.strip()]
    if all(p.isdigit() for p in parts):
        return [int(p) for p in parts if int(p) < n]
    return list(range(n))  # UUIDs/MIG names: cannot map here, measure all


def nvml_indices_for_cuda(ordinals: list[int] | tuple[int, ...], env: str | None = None) -> list[int]:
    """NVML indices of CUDA device ordinals of this process.

    Under ``CUDA_VISIBLE_DEVICES=2,3`` (Ray sets it for an actor that reserved two GPUs) ``cuda:0``
    is NVML's GPU 2. Assumes CUDA and NVML enumerate in the same (PCI bus) order, which holds on
    nodes of identical GPUs and under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    parts = [p.strip() for p in (env or "").split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        return list(ordinals)
    out = []
    for i in ordinals:
        if not 0 <= i < len(parts):
            raise ValueError(f"cuda:{i} is not visible (CUDA_VISIBLE_DEVICES={env})")
        out.append(int(parts[i]))
    return out


class NvmlSampler(PowerSampler):
    source = SOURCE_NVML_POWER
    update_period_s = 0.1

    def __init__(self, node: str, gpu_indices: list[int] | tuple[int, ...] | None = None, period_s: float = 0.02,
                 nvml: Any = None) -> None:
        super().__init__(node, period_s)
        if nvml is None:
            import pynvml as nvml  # type: ignore[no-redef]
        self.nvml = nvml
        nvml.nvmlInit()
        self._closed = False
        idx = list(gpu_indices) if gpu_indices is not None else visible_gpu_indices(nvml)
        count = nvml.nvmlDeviceGetCount()
        for i in idx:
            if not 0 <= i < count:
                raise ValueError(f"GPU index {i} not present (NVML sees {count} GPUs)")
        self.indices = idx
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in idx]
        self._fi = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", FI_POWER_INSTANT)
        self.instant = [self._has_instant(h) for h in self.handles]
        self.counter_ok = [self._has_counter(h) for h in self.handles]
        self.has_counter = bool(self.handles) and all(self.counter_ok)

    # ---- capability probes ----
    def _has_instant(self, h: Any) -> bool:
        try:
            v = self.nvml.nvmlDeviceGetFieldValues(h, [self._fi])[0]
        except Exception:  # noqa: BLE001 - old driver/pynvml: no field API
            return False
        return getattr(v, "nvmlReturn", 1) == 0

    def _has_counter(self, h: Any) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            return True
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported before Volta
            return False

    # ---- readings ----
    def devices(self) -> list[MeteredDevice]:
        out = []
        for i, h, inst, cnt in zip(self.indices, self.handles, self.instant, self.counter_ok):
            name = self.nvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = self.nvml.nvmlDeviceGetMemoryInfo(h)
            try:
                limit = self.nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
            except Exception:  # noqa: BLE001
                limit = None
            note = ("power: POWER_INSTANT field" if inst else "power: nvmlDeviceGetPowerUsage (1 s average on recent GPUs)")
            note += "; energy counter" if cnt else "; no energy counter (pre-Volta)"
            out.append(MeteredDevice(f"gpu{i}", name, "gpu", SOURCE_NVML_POWER, int(mem.total), int(mem.free), limit, note,
                                     self._uuid(h)))
        return out

    def _uuid(self, h: Any) -> str | None:
        """NVML's UUID of the card (which physical GPU measured: two lent machines of one kind are not one card)."""
        try:
            u = self.nvml.nvmlDeviceGetUUID(h)
        except Exception:  # noqa: BLE001 - an old pynvml or driver without it
            return None
        return u.decode() if isinstance(u, bytes) else str(u)

    def read_power(self) -> list[PowerSample]:
        out = []
        for i, h, inst in zip(self.indices, self.handles, self.instant):
            w, m = now()
            try:
                if inst:
                    v = self.nvml.nvmlDeviceGetFieldValues(h, [self._fi])[0]
                    if getattr(v, "nvmlReturn", 1) != 0:
                        continue
                    watts = _field_value(v) / 1000.0
                else:
                    watts = self.nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception as e:  # noqa: BLE001 - NVMLError (GPU lost, driver gone, ...): name the device
                raise MeterReadError(f"gpu{i}", "NVML", e) from e
            out.append(PowerSample(w, m, self.node, f"gpu{i}", SOURCE_NVML_POWER, watts=watts))
        return out

    def read_counters(self) -> list[PowerSample]:
        out = []
        for i, h, ok in zip(self.indices, self.handles, self.counter_ok):
            if not ok:
                continue
            w, m = now()
            try:
                mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            except Exception as e:  # noqa: BLE001
                raise MeterReadError(f"gpu{i}", "NVML", e) from e
            out.append(PowerSample(w, m, self.node, f"gpu{i}", SOURCE_NVML_COUNTER, joules=mj / 1000.0))
        return out

    def close(self) -> None:
        super().close()
        if not self._closed:
            self._closed = True
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


def _field_value(v: Any) -> float:
    """The numeric value of an nvmlFieldValue_t (a union selected by valueType)."""
    vt = getattr(v, "valueType", 1)
    val = v.value
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(vt, "uiVal")
    return float(getattr(val, attr))
