"""The meter loops of ``benchmarks.gpu.eager_step``: its ``cache`` loop while one poller runs, to tell apart why
the profiler's samplers slow an eager decode step (H200 llama-2-7b: 33.6 ms a step alone, 44.9 ms while
NvmlSampler and EstimateSampler poll on threads every 20 ms).

Loops (each the ``cache`` loop, timed only: the profiler's counts are ``cache``'s):

* ``cache+none``: nothing polls (the control, measured next to the others);
* ``cache+null``: a polling thread every 20 ms that reads nothing (thread wake-ups and the GIL alone);
* ``cache+estimate``: EstimateSampler alone (``/proc/stat`` every 20 ms);
* ``cache+nvml``: NvmlSampler alone (power field and energy counter, 20 ms, on a thread, as the profiler polls);
* ``cache+nvml-100ms``: the same at 100 ms, the meter's update period;
* ``cache+nvml-proc``: NvmlSampler polled, at 20 ms, by a child process: the production
  ``ProcessSampler`` (``llm-energy profile --sampler-process``, llm_energy/measure/samplers/process.py;
  multiprocessing 'spawn', torch never imported there: it never touches the parent's CUDA context) with its
  optional read timing on, so the child clocks its own reads; the parent reads nothing while the loop runs
  (it holds an NVML handle, as the profiler's parent does for the window edges). Slower here than
  ``cache+none`` and NVML contends with the launches in the driver; as fast, the cost is the thread in this
  process (the GIL);
* ``cache+switch1ms``: the profiler's samplers (as ``cache+samplers``) under ``sys.setswitchinterval(0.001)``;
* ``cache+samplers-proc``: the profiler's samplers each polling in a child (``llm-energy profile
  --sampler-process``, llm_energy/measure/samplers/process.py), exactly as the profiler runs them (no read
  timing: their ``read_us`` count no reads, and NVML's ``read_us_idle`` is this process's): the fix, if
  ``cache+nvml-proc`` is fast.

Each poller's reads are clocked (wall and CPU us, median and p90) while the loop runs, and ``read_us_idle``
before it starts with nothing else running (in the process that polls; ``cache+samplers-proc``: see above).
``--nvml MODULE[:FACTORY]`` picks the NVML module (tests: ``tests.fakes.fake_pynvml:RealtimeNvml``; a child
imports pynvml itself, or gets a copy of the fake: ``samplers.process.recipe``).
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from llm_energy.measure.samplers.base import clock_reads, time_reads

IDLE_READS = 40  # reads of each kind, back to back, for read_us_idle


@dataclass(frozen=True)
class Meter:
    kind: str  # "none" | "null" | "estimate" | "nvml" | "profiler" (discover_samplers, as the profiler)
    period_s: float = 0.02
    process: bool = False
    switch_s: float | None = None


METERS = {"cache+none": Meter("none"), "cache+null": Meter("null"), "cache+estimate": Meter("estimate"),
          "cache+nvml": Meter("nvml"), "cache+nvml-100ms": Meter("nvml", 0.1),
          "cache+nvml-proc": Meter("nvml", process=True), "cache+switch1ms": Meter("profiler", switch_s=0.001),
          "cache+samplers-proc": Meter("profiler", process=True)}
METER_LOOPS = tuple(METERS)


class MeterUnavailable(Exception):
    """The loop's meter cannot run here (no NVML): its row says why instead of timing anything."""


def load_nvml(spec: str) -> Any:
    """The NVML module ``spec`` names (``pynvml``), or ``MODULE:FACTORY`` called (a fake)."""
    mod, _, factory = spec.partition(":")
    m = importlib.import_module(mod)
    return getattr(m, factory)() if factory else m


def _stats(xs: list[tuple[float, float]]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    wall = sorted(x[0] * 1e6 for x in xs)
    return {"n": len(xs), "median_us": round(statistics.median(wall), 1),
            "p90_us": round(wall[min(len(wall) - 1, int(0.9 * len(wall)))], 1),
            "cpu_median_us": round(statistics.median(x[1] * 1e6 for x in xs), 1)}


def idle_latency(s: Any, n: int = IDLE_READS) -> dict[str, Any]:
    """Each read's latency, ``n`` calls back to back, from the calling thread."""
    return {k: _stats(v) for k, v in time_reads(s, n).items()}


def _timed(s: Any) -> bool:
    """Whether ``s`` is a ProcessSampler whose child clocks its reads (``cache+nvml-proc``)."""
    return bool(getattr(s, "time_reads", False))


def _name(s: Any) -> str:
    """The sampler's kind (a ProcessSampler's: its inner sampler's)."""
    return type(getattr(s, "inner", s)).__name__


def _summary(s: Any, where: str, elapsed: float, reads: dict, idle: dict, polls0: int = 0,
             polls1: int | None = None) -> dict[str, Any]:
    """``poll_hz``: the polls after ``polls0`` (up to ``polls1``, default all) over ``elapsed`` seconds."""
    n = s.polls if polls1 is None else polls1
    return {"sampler": _name(s), "where": where, "period_s": s.period_s, "polls": s.polls,
            "poll_hz": round((n - polls0) / elapsed, 2) if elapsed > 0 else None,
            "poll_cpu_us_per_poll": round(s.poll_cpu_s / s.polls * 1e6, 1) if s.polls else None,
            "poll_errors": s.poll_errors, "read_us": {k: _stats(v) for k, v in reads.items()}, "read_us_idle": idle}


def _null_sampler(node: str, period_s: float) -> Any:
    from llm_energy.measure.samplers.base import PowerSampler

    class NullSampler(PowerSampler):
        source = "null"

        def devices(self):
            return []

        def read_power(self):
            return []
    return NullSampler(node, period_s)


def _nvml_sampler(node: str, indices: Any, period_s: float, nvml_spec: str) -> Any:
    from llm_energy.measure.samplers.nvml import NvmlSampler

    try:
        return NvmlSampler(node, gpu_indices=indices, period_s=period_s, nvml=load_nvml(nvml_spec))
    except Exception as e:  # noqa: BLE001 - no driver, no pynvml, no GPU: the row says so
        raise MeterUnavailable(f"no NVML ({type(e).__name__}: {e})") from e


def build_samplers(m: Meter, node: str, indices: Any, nvml_spec: str) -> list[Any]:
    """The in-process samplers of meter ``m`` (not started)."""
    if m.kind == "none":
        return []
    if m.kind == "null":
        return [_null_sampler(node, m.period_s)]
    if m.kind == "estimate":
        from llm_energy.measure.samplers.estimate import EstimateSampler

        return [EstimateSampler(node, period_s=m.period_s)]
    if m.kind == "nvml":
        return [_nvml_sampler(node, indices, m.period_s, nvml_spec)]
    from llm_energy.measure.samplers.discover import discover_samplers

    return discover_samplers(node, gpu_indices=indices, period_s=m.period_s,
                             nvml=None if nvml_spec == "pynvml" else load_nvml(nvml_spec))


class ThreadPoller:
    """Samplers polling on their threads in this process (as the profiler runs them), reads clocked; or each in
    a child (a ProcessSampler), its reads clocked there where it times them (``time_reads``)."""

    def __init__(self, samplers: list[Any], switch_s: float | None = None) -> None:
        self.samplers, self.switch_s, self._switch0 = samplers, switch_s, None
        self.names = [_name(s) for s in samplers]
        self.idle: list[dict] = []
        self.reads: list[dict] = []
        self.t0 = 0.0
        self.polls0: list[int] = []

    def start(self) -> None:
        for s in self.samplers:
            s.poll_counters = True
            timed = _timed(s)  # the child times its reads, idle ones included, and sends them at its stop
            self.idle.append(idle_latency(s) if _name(s) == "NvmlSampler" and not timed else {})
            self.reads.append({} if timed else clock_reads(s))
        if self.switch_s is not None:
            self._switch0 = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_s)
        for s in self.samplers:
            s.start()
        self.t0 = time.monotonic()  # after the starts (a child's spawn takes a while): poll_hz counts from here
        for s in self.samplers:
            if hasattr(s, "inner"):
                s.failure()  # a round trip: the child's polls so far
        self.polls0 = [s.polls for s in self.samplers]

    def stop(self) -> list[dict[str, Any]]:
        """Stop and release every sampler (also after a failed start); their summaries."""
        elapsed = time.monotonic() - self.t0
        for s in self.samplers:
            if hasattr(s, "inner") and s.running:
                s.failure()  # a round trip: the child's polls now, not at its stop (after the children before it end)
        polls1 = [s.polls for s in self.samplers]
        try:
            for s in self.samplers:
                s.close()
        finally:
            if self._switch0 is not None:
                sys.setswitchinterval(self._switch0)
        out = []
        polls0 = self.polls0 or [0] * len(self.samplers)
        for s, r, i, p0, p1 in zip(self.samplers, self.reads, self.idle, polls0, polls1):
            if _timed(s):  # what the child clocked, its idle reads included
                r, i = s.read_times, {k: _stats(v) for k, v in s.idle_read_times.items()}
            row = _summary(s, "process" if hasattr(s, "inner") else "thread", elapsed, r, i, p0, p1)
            if _timed(s):
                row["child_imported_torch"] = s.child_imported_torch
            out.append(row)
        return out


def poller(m: Meter, node: str, indices: Any, nvml_spec: str) -> ThreadPoller:
    """The poller a meter loop runs alongside; raises MeterUnavailable where its meter is missing."""
    samplers = build_samplers(m, node, indices, nvml_spec)
    if m.process and m.kind == "nvml":  # the production ProcessSampler, its child clocking its reads
        from llm_energy.measure.samplers.process import ProcessSampler

        samplers = [ProcessSampler(s, time_reads=True, idle_reads=IDLE_READS) for s in samplers]
    elif m.process:  # each in a child of its own, as `llm-energy profile --sampler-process` polls them
        from llm_energy.measure.samplers.process import in_processes

        samplers = in_processes(samplers)
    return ThreadPoller(samplers, m.switch_s)
