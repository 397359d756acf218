"""A fake ``pynvml`` for two GPUs, replaying values like those measured on an H100 and an A100.

* time is a settable clock (``FakeNvml.now``), so tests control it;
* power follows a per-GPU profile (idle ~71 W; 140-350 W under load); both the total-energy counter
  and the reported power only change every 100 ms of that clock, like the real meters;
* GPU 0 ("NVIDIA H100 80GB HBM3") supports the POWER_INSTANT field; GPU 1 ("NVIDIA A100-SXM4-40GB")
  answers it with NVML_ERROR_NOT_SUPPORTED and is read through nvmlDeviceGetPowerUsage;
* errors are NVMLError subclasses with NVML's real return codes (and pynvml's messages);
* faults seen on real nodes can be switched on per GPU: no energy counter (pre-Volta), power stuck at a
  value (``power_stuck``: 0 W on a broken sensor), a counter that stops updating (``counter_frozen_at``),
  a GPU that falls off the bus (``lost_at``: every call raises NVMLError GPU_IS_LOST);
* :class:`RealtimeNvml` ties the clock to ``time.monotonic`` for end-to-end profiler runs.
"""

from __future__ import annotations

import ctypes
import math
import time
import zlib
from dataclasses import dataclass

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_GPU_IS_LOST = 15
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_UNSIGNED_INT = 1
UPDATE_S = 0.1


_MESSAGES = {NVML_ERROR_UNINITIALIZED: "Uninitialized", NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
             NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_GPU_IS_LOST: "GPU is lost"}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:  # pynvml: nvmlErrorString(value)
        return _MESSAGES.get(self.value, f"Unknown Error ({self.value})")


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class _Value(ctypes.Union):
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ulVal", ctypes.c_ulong),
                ("ullVal", ctypes.c_ulonglong), ("sllVal", ctypes.c_longlong), ("siVal", ctypes.c_int)]


@dataclass
class _FieldValue:
    fieldId: int
    nvmlReturn: int
    valueType: int
    value: _Value


@dataclass
class _Mem:
    total: int
    free: int
    used: int


class FakeGpu:
    def __init__(self, name: str, instant: bool, idle_w: float, load_w: float, mem_gib: int) -> None:
        self.name, self.instant, self.idle_w, self.load_w = name, instant, idle_w, load_w
        self.mem = mem_gib * 2**30
        self.busy: list[tuple[float, float]] = []  # (start, end) intervals under load
        self.counter = True  # False: no total-energy counter (pre-Volta)
        self.power_stuck: float | None = None  # the power reading stuck at this value (W)
        self.counter_frozen_at: float | None = None  # the counter stops updating at this time
        self.lost_at: float | None = None  # from this time on every call raises GPU_IS_LOST
        self.uuid = f"GPU-{zlib.crc32(f'{name}/{idle_w}'.encode()):08x}-fake-{int(load_w)}"  # NVML's form, "GPU-<hex>-..."

    def power(self, t: float) -> float:
        """True instantaneous power (W) at time t: idle, or load with a small ripple."""
        for a, b in self.busy:
            if a <= t < b:
                return self.load_w + 8 * math.sin(40 * t)
        return self.idle_w + 0.6 * math.sin(3 * t)

    def energy(self, t: float, dt: float = 0.001) -> float:
        """True cumulative energy (J) since t = 0 (numerical integral)."""
        n = max(1, int(t / dt))
        return sum(self.power(i * dt) for i in range(n)) * dt


class FakeNvml:
    """Module-like object: pass it as ``NvmlSampler(nvml=fake)``."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT

    def __init__(self) -> None:
        self.now = 0.0
        self.inits = 0
        self.shutdowns = 0
        self.gpus = [FakeGpu("NVIDIA H100 80GB HBM3", True, 71.5, 310.0, 80),
                     FakeGpu("NVIDIA A100-SXM4-40GB", False, 56.0, 240.0, 40)]
        self._e_cache: dict[tuple[int, float], float] = {}

    # lifecycle
    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if not 0 <= i < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return i

    # readings: values change only every UPDATE_S of the fake clock
    def _tick(self) -> float:
        return math.floor(self.now / UPDATE_S + 1e-9) * UPDATE_S

    def _check(self, h: int) -> None:
        lost = self.gpus[h].lost_at
        if lost is not None and self.now >= lost:
            raise NVMLError_GpuIsLost()

    def _energy_mj(self, h: int) -> int:
        self._check(h)
        if not self.gpus[h].counter:
            raise NVMLError_NotSupported()
        t = self._tick()
        frozen = self.gpus[h].counter_frozen_at
        if frozen is not None:
            t = min(t, math.floor(frozen / UPDATE_S) * UPDATE_S)
        key = (h, round(t, 6))
        if key not in self._e_cache:
            self._e_cache[key] = self.gpus[h].energy(t)
        return int(1000 * self._e_cache[key]) + 12_345_678  # counter since driver load: nonzero base

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self._energy_mj(h)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        # the plain call: a 1 s moving average on recent GPUs; instantaneous-ish on the A100
        self._check(h)
        return int(1000 * self._reported_w(h))

    def _reported_w(self, h: int) -> float:
        g = self.gpus[h]
        return g.power_stuck if g.power_stuck is not None else g.power(self._tick())

    def nvmlDeviceGetFieldValues(self, h: int, ids: list[int]) -> list[_FieldValue]:
        self._check(h)
        out = []
        for fid in ids:
            v = _Value()
            if fid == NVML_FI_DEV_POWER_INSTANT and self.gpus[h].instant:
                v.uiVal = int(1000 * self._reported_w(h))
                out.append(_FieldValue(fid, NVML_SUCCESS, NVML_VALUE_TYPE_UNSIGNED_INT, v))
            else:
                out.append(_FieldValue(fid, NVML_ERROR_NOT_SUPPORTED, 0, v))
        return out

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.gpus[h].name

    def nvmlDeviceGetMemoryInfo(self, h: int) -> _Mem:
        m = self.gpus[h].mem
        return _Mem(m, m - 600 * 2**20, 600 * 2**20)

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        return 700_000 if self.gpus[h].instant else 400_000

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.gpus[h].uuid


class NoDriverNvml(FakeNvml):
    """NVML as it behaves on a machine without the NVIDIA driver."""

    def nvmlInit(self) -> None:
        raise NVMLError(12)  # NVML_ERROR_LIBRARY_NOT_FOUND


class RealtimeNvml(FakeNvml):
    """The fake NVML with its clock tied to time.monotonic (its counters update every 100 ms)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        super().__init__()

    @property
    def now(self) -> float:
        return time.monotonic() - self.t0

    @now.setter
    def now(self, _: float) -> None:
        pass
