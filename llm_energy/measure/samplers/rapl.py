"""CPU packages and DRAM through Linux powercap (Intel RAPL; AMD exposes the same ``intel-rapl`` tree).

Zones ``intel-rapl:N`` (name ``package-N``) and their ``dram`` subzones hold ``energy_uj``, a counter
that wraps at ``max_energy_range_uj``: readings are unwrapped with a running offset per zone. Power is
the counter delta between polls. Since CVE-2020-8694 ``energy_uj`` is often readable by root only.

A reading below the previous one is a wrap only where the range makes it plausible: the energy the
wrap implies (the rest of the range plus the new value) must fit the time since the previous read at
the zone's ``constraint_0_max_power_uw`` (x ``WRAP_SLACK``; ``DEFAULT_MAX_W`` where that is not
readable). Otherwise the counter stepped back (a firmware glitch, a reset): the reading is kept as it
is, so the stored counter visibly falls and the trial over it is flagged (llm_energy.measure.quality),
instead of a whole range (~262 kJ) being added to one window.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from llm_energy.measure.samplers.base import MeteredDevice, PowerSampler, now
from llm_energy.trials.schema import SOURCE_RAPL, PowerSample

DEFAULT_ROOT = "/sys/class/powercap"
DEFAULT_MAX_W = 1000.0  # per zone, where constraint_0_max_power_uw is not readable: above any CPU package
WRAP_SLACK = 1.5


@dataclass
class _Zone:
    device: str  # "package-0" | "dram-0"
    kind: str  # "cpu" | "dram"
    path: Path
    max_range_uj: int
    max_power_w: float | None = None  # constraint_0_max_power_uw where readable
    last_raw: int | None = None
    last_raw_t: float | None = None
    offset_uj: int = 0
    last_j: float | None = None
    last_t: float | None = None


def powercap_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("LLM_ENERGY_POWERCAP_ROOT") or DEFAULT_ROOT)


def find_zones(root: str | os.PathLike | None = None) -> list[_Zone]:
    """Package zones and their DRAM subzones under a powercap root (empty list if none)."""
    base = powercap_root(root)
    zones: list[_Zone] = []
    if not base.is_dir():
        return zones
    for pkg in sorted(base.glob("intel-rapl:*")):
        if pkg.name.count(":") != 1 or not (pkg / "energy_uj").exists():
            continue
        n = pkg.name.split(":")[1]
        name = _read(pkg / "name") or f"package-{n}"
        zones.append(_Zone(name if name.startswith("package") else f"package-{n}", "cpu", pkg, _max(pkg), _max_power(pkg)))
        for sub in sorted(pkg.glob(f"intel-rapl:{n}:*")):
            if _read(sub / "name") == "dram" and (sub / "energy_uj").exists():
                zones.append(_Zone(f"dram-{n}", "dram", sub, _max(sub), _max_power(sub)))
    return zones


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def _max(zone: Path) -> int:
    v = _read(zone / "max_energy_range_uj")
    return int(v) if v and v.isdigit() else 2**32


def _max_power(zone: Path) -> float | None:
    """The zone's maximum power (W) from its first constraint, where readable and nonzero."""
    v = _read(zone / "constraint_0_max_power_uw")
    return int(v) / 1e6 if v and v.isdigit() and int(v) > 0 else None


class RaplSampler(PowerSampler):
    source = SOURCE_RAPL
    update_period_s = 0.001
    has_counter = True

    def __init__(self, node: str, root: str | os.PathLike | None = None, period_s: float = 0.02) -> None:
        super().__init__(node, period_s)
        self.root = powercap_root(root)
        self.zones = find_zones(self.root)
        if not self.zones:
            raise FileNotFoundError(f"no RAPL zones under {self.root}")
        for z in self.zones:  # raises PermissionError where energy_uj is root-only
            (z.path / "energy_uj").read_text()
        self._cpu = _cpu_name()
        self._zlock = threading.Lock()  # counters are read from the poll threads and the main thread

    def devices(self) -> list[MeteredDevice]:
        return [MeteredDevice(z.device, self._cpu if z.kind == "cpu" else "DRAM", z.kind, SOURCE_RAPL,
                              power_limit_w=z.max_power_w, note=f"RAPL {z.path.name}") for z in self.zones]

    def _joules(self, z: _Zone) -> float:
        with self._zlock:
            raw = int((z.path / "energy_uj").read_text())
            _, t = now()
            if z.last_raw is not None and raw < z.last_raw and self._plausible_wrap(z, raw, t):
                z.offset_uj += z.max_range_uj  # the counter wrapped
            z.last_raw, z.last_raw_t = raw, t
            return (raw + z.offset_uj) / 1e6

    @staticmethod
    def _plausible_wrap(z: _Zone, raw: int, t: float) -> bool:
        """Whether a fall from ``z.last_raw`` to ``raw`` can be a wrap: the energy it implies fits the
        time since the previous read at the zone's maximum power."""
        implied_j = (z.max_range_uj - z.last_raw + raw) / 1e6
        dt = max(t - (z.last_raw_t if z.last_raw_t is not None else t), 1e-3)
        return implied_j <= WRAP_SLACK * (z.max_power_w or DEFAULT_MAX_W) * dt

    def read_counters(self) -> list[PowerSample]:
        out = []
        for z in self.zones:
            w, m = now()
            out.append(PowerSample(w, m, self.node, z.device, SOURCE_RAPL, joules=self._joules(z)))
        return out

    def read_power(self) -> list[PowerSample]:
        out = []
        for z in self.zones:
            w, m = now()
            j = self._joules(z)
            if z.last_j is not None and z.last_t is not None and m > z.last_t:
                out.append(PowerSample(w, m, self.node, z.device, SOURCE_RAPL, watts=(j - z.last_j) / (m - z.last_t)))
            z.last_j, z.last_t = j, m
        return out


def _cpu_name() -> str:
    from llm_energy.measure.samplers.estimate import cpu_model

    return cpu_model()
