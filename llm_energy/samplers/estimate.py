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

from llm_energy.samplers.base import MeteredDevice, PowerSampler, now
from llm_energy.schema import SOURCE_ESTIMATE, PowerSample

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
        psutil.cpu_percent(interval=None)  # prime: the first call has no interval to measure

    def devices(self) -> list[MeteredDevice]:
        return [MeteredDevice("cpu", self.cpu, "cpu", SOURCE_ESTIMATE,
                              note=f"estimate: no meter (idle {self.idle_w:.0f} W + util x (TDP {self.tdp_w:.0f} W "
                                   f"- idle); TDP {self.tdp_origin})")]

    def read_power(self) -> list[PowerSample]:
        util = min(100.0, max(0.0, psutil.cpu_percent(interval=None))) / 100.0
        w, m = now()
        return [PowerSample(w, m, self.node, "cpu", SOURCE_ESTIMATE, watts=self.idle_w + util * (self.tdp_w - self.idle_w))]
