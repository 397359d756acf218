"""A labelled estimate for CPUs with no readable meter: idle + utilisation x (TDP - idle).

Not a measurement. Every sample and trial it produces is labelled ``estimate`` and every report says
so. Utilisation is system-wide (``psutil.cpu_percent``), because inference threads, the sampler and
anything else running all draw package power. TDP comes from a small table of CPU model keywords, or
10 W per logical core as a stated fallback; idle defaults to 30% of TDP.
"""

from __future__ import annotations

import os
import platform

import psutil

from llm_energy.measure.samplers.base import MeteredDevice, PowerSampler, now
from llm_energy.trials.schema import SOURCE_ESTIMATE, PowerSample

# Package TDPs (W) of common server CPUs, matched by keyword in the model name.
TDP_TABLE = {
    "EPYC 7742": 225.0, "EPYC 7763": 280.0, "EPYC 9654": 360.0, "EPYC 9554": 360.0, "EPYC 7B13": 240.0,
    "Xeon Platinum 8480": 350.0, "Xeon Platinum 8380": 270.0, "Xeon Platinum 8280": 205.0,
    "Xeon Gold 6248": 150.0, "Xeon Gold 6148": 150.0, "Xeon CPU @": 0.0,  # 0: unknown cloud SKU, use fallback
}
WATTS_PER_CORE_FALLBACK = 10.0
IDLE_FRACTION = 0.3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_tdp(model: str | None = None, cores: int | None = None) -> tuple[float, str]:
    """(TDP W, where it came from) for this CPU."""
    model = model or cpu_model()
    for key, tdp in TDP_TABLE.items():
        if key in model and tdp > 0:
            return tdp, f"table: {key}"
    n = cores or os.cpu_count() or 1
    return WATTS_PER_CORE_FALLBACK * n, f"fallback: {WATTS_PER_CORE_FALLBACK:.0f} W x {n} logical cores"


class CpuUtilisation:
    """System-wide CPU utilisation since the previous call, as ``psutil.cpu_percent(interval=None)``
    computes it, but read from one kept-open ``/proc/stat`` (its first line only): a poll costs tens
    of microseconds instead of a file open and a full parse. Falls back to psutil where there is no
    ``/proc/stat``."""

    def __init__(self, path: str = "/proc/stat") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None
        self._last = self._times() if self._fd is not None else psutil.cpu_percent(interval=None)
        self._util = 0.0

    def _times(self) -> tuple[int, int]:
        """(busy, total) jiffies over all CPUs: user nice system idle iowait irq softirq steal
        (guest time is already inside user)."""
        head = os.pread(self._fd, 512, 0).split(b"\n", 1)[0].split()
        v = [int(x) for x in head[1:9]]
        total = sum(v)
        return total - v[3] - (v[4] if len(v) > 4 else 0), total

    def __call__(self) -> float:
        """Utilisation in [0, 1] since the previous call (the previous value if no tick elapsed)."""
        if self._fd is None:
            return min(100.0, max(0.0, psutil.cpu_percent(interval=None))) / 100.0
        busy, total = self._times()
        db, dt = busy - self._last[0], total - self._last[1]
        if dt > 0:
            self._util = min(1.0, max(0.0, db / dt))
            self._last = (busy, total)
        return self._util

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EstimateSampler(PowerSampler):
    source = SOURCE_ESTIMATE
    update_period_s = 0.02
    has_counter = False

    def __init__(self, node: str, tdp_w: float | None = None, idle_w: float | None = None, period_s: float = 0.02) -> None:
        super().__init__(node, period_s)
        self.cpu = cpu_model()
        if tdp_w is None:
            tdp_w, self.tdp_origin = default_tdp(self.cpu)
        else:
            self.tdp_origin = "given"
        if tdp_w <= 0:
            raise ValueError(f"tdp_w must be > 0, got {tdp_w}")
        self.tdp_w = float(tdp_w)
        self.idle_w = float(idle_w) if idle_w is not None else IDLE_FRACTION * self.tdp_w
        if not 0 <= self.idle_w <= self.tdp_w:
            raise ValueError(f"idle_w must be in [0, tdp_w], got {self.idle_w}")
        self._util = CpuUtilisation()  # primed: the first reading covers the time since now

    def devices(self) -> list[MeteredDevice]:
        return [MeteredDevice("cpu", self.cpu, "cpu", SOURCE_ESTIMATE, power_limit_w=self.tdp_w,
                              note=f"estimate: no meter (idle {self.idle_w:.0f} W + util x (TDP {self.tdp_w:.0f} W "
                                   f"- idle); TDP {self.tdp_origin})")]

    def read_power(self) -> list[PowerSample]:
        util = self._util()
        w, m = now()
        return [PowerSample(w, m, self.node, "cpu", SOURCE_ESTIMATE, watts=self.idle_w + util * (self.tdp_w - self.idle_w))]

    def close(self) -> None:
        super().close()
        self._util.close()
