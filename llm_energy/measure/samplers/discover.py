"""Which meters does this node have? NVML for NVIDIA GPUs, RAPL for CPUs, else the labelled estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_energy.measure.samplers.base import MeteredDevice, PowerSampler


@dataclass(frozen=True, slots=True)
class MeterReport:
    """One meter kind on this node: found (with its devices) or not (with why)."""

    meter: str  # "nvml" | "rapl" | "estimate"
    found: bool
    why: str = ""
    devices: tuple[MeteredDevice, ...] = ()


def _try_nvml(node: str, gpu_indices, period_s: float, nvml: Any) -> tuple[PowerSampler | None, MeterReport]:
    try:
        from llm_energy.measure.samplers.nvml import NvmlSampler

        s = NvmlSampler(node, gpu_indices=gpu_indices, period_s=period_s, nvml=nvml)
    except ImportError as e:
        return None, MeterReport("nvml", False, f"pynvml not importable ({e})")
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, MeterReport("nvml", False, f"no NVIDIA driver or GPU ({type(e).__name__}: {e})")
    if not s.handles:
        s.close()
        return None, MeterReport("nvml", False, "NVML found no GPUs")
    return s, MeterReport("nvml", True, devices=tuple(s.devices()))


def _try_rapl(node: str, period_s: float, root) -> tuple[PowerSampler | None, MeterReport]:
    from llm_energy.measure.samplers.rapl import RaplSampler, powercap_root

    base = powercap_root(root)
    try:
        s = RaplSampler(node, root=base, period_s=period_s)
    except FileNotFoundError:
        why = f"{base} missing" if not base.exists() else f"no intel-rapl zones under {base}"
        return None, MeterReport("rapl", False, why)
    except PermissionError:
        return None, MeterReport("rapl", False, f"{base}/*/energy_uj not readable (root only since CVE-2020-8694)")
    return s, MeterReport("rapl", True, devices=tuple(s.devices()))


def discover_samplers(node: str, *, gpu_indices=None, period_s: float = 0.02, cpu: bool = True,
                      allow_estimate: bool = True, nvml: Any = None, powercap_root=None,
                      reports: list[MeterReport] | None = None) -> list[PowerSampler]:
    """Samplers for this node: NVML (if it initialises and sees GPUs), RAPL (if readable), and the
    estimate only when no real meter covers the CPU. ``reports`` (if given) receives what was found
    and why the rest was not."""
    out: list[PowerSampler] = []
    rep: list[MeterReport] = []
    if gpu_indices is None or len(gpu_indices) > 0:
        s, r = _try_nvml(node, gpu_indices, period_s, nvml)
        rep.append(r)
        if s is not None:
            out.append(s)
    if cpu:
        s, r = _try_rapl(node, period_s, powercap_root)
        rep.append(r)
        if s is not None:
            out.append(s)
        elif allow_estimate:
            from llm_energy.measure.samplers.estimate import EstimateSampler

            e = EstimateSampler(node, period_s=period_s)
            out.append(e)
            rep.append(MeterReport("estimate", True, "no CPU meter: utilisation x TDP (not a measurement)",
                                   tuple(e.devices())))
    if reports is not None:
        reports.extend(rep)
    return out


def describe_meters(node: str | None = None, **kw: Any) -> list[MeterReport]:
    """What meters this node has (and why the others are missing); closes what it opened."""
    import socket

    reports: list[MeterReport] = []
    for s in discover_samplers(node or socket.gethostname(), reports=reports, **kw):
        s.close()
    return reports


