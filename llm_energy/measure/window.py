"""Measurement windows over this node's power samplers, for code the profiler does not run.

In the style of Zeus's ``ZeusMonitor.begin_window/end_window``::

    meter = EnergyMeter()                 # NVML, RAPL or the labelled CPU estimate, found as the profiler does
    with meter.window("generate") as m:
        model.generate(...)
    m.energy_j, m.energy_source, m.short_window

A window's energy comes from the profiler's own estimators
(:func:`llm_energy.measure.integrate.window_energy`): the interpolated energy counter where a device
has one (NVML's total-energy counter, RAPL), else the trapezoid of polled power, with the same
``energy_source`` labels a stored trial carries (``nvml-counter``, ``nvml-power``, ``rapl``,
``estimate``). A window shorter than the meter's minimum (the profiler's :func:`auto_min_window`: 20
meter update periods, at least 0.5 s) reports no energy at all (``energy_j is None``,
``short_window`` set, ``note`` saying why) rather than a plausible number that cannot be trusted:
repeat short work inside one window and divide, as the profiler does with ``n_inner``
(:meth:`EnergyMeter.repeat` does it: ``energy_per_call_j``).

Windows may overlap or nest under different names. The samplers poll while a window is open (or
for the whole of ``with meter:``); the first window to open waits one counter update period first
so its start edge can be interpolated, and every window waits one past its end for the same reason
(up to ~120 ms on NVML, ~1 ms on RAPL, nothing on the estimate).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

import polars as pl

from llm_energy.errors import UserError, bad_value
from llm_energy.measure.integrate import window_energy
from llm_energy.measure.profiler import MAX_INNER, auto_min_window, source_label
from llm_energy.measure.quality import assess_window, meter_info, quality_label
from llm_energy.measure.samplers.base import MeteredDevice, MeterReadError, PowerSampler, now
from llm_energy.trials.schema import QUALITY_OK, SAMPLE_SCHEMA, SOURCE_ESTIMATE, PowerSample, samples_frame

#: samples kept from before the oldest open window: the start edge's counter interpolation needs
#: the update point before it (the profiler keeps the same 1 s tail)
HISTORY_S = 1.0
#: a window is never trusted below this many meter update periods, whatever ``min_window_s`` says
#: (the profiler's ``short_window`` flag)
FLOOR_PERIODS = 3


@dataclass(frozen=True)
class Measurement:
    """Time and energy of one window. Energies are ``None`` when the window cannot be trusted
    (``short_window``, or a device without a reading: ``note`` says which)."""

    name: str
    time_s: float
    energy_j: float | None  # summed over ``devices``
    device_energy_j: Mapping[str, float | None]  # every metered device
    devices: tuple[str, ...]  # what energy_j sums: the GPUs when any is metered, else the CPU/DRAM meters
    energy_source: str  # label of energy_j, as TrialRecord.energy_source: nvml-counter | nvml-power | rapl | estimate | a+b
    device_source: Mapping[str, str]  # per device: the source of the readings its energy came from
    n_samples: int  # power samples of ``devices`` inside the window
    short_window: bool  # time_s < min_window_s: no energy reported
    min_window_s: float
    t_start_mono: float
    t_end_mono: float
    note: str = ""
    quality: str = QUALITY_OK  # as a trial's: "ok", or "suspect:<code>,..." from llm_energy.measure.quality
    quality_note: str = ""  # what the quality checks saw, per device
    n_calls: int = 1  # back-to-back calls inside the window (EnergyMeter.repeat), as a trial's n_inner

    @property
    def mean_w(self) -> float | None:
        return self.energy_j / self.time_s if self.energy_j is not None and self.time_s > 0 else None

    @property
    def energy_per_call_j(self) -> float | None:
        return self.energy_j / self.n_calls if self.energy_j is not None else None

    @property
    def is_estimate(self) -> bool:
        """True when any part of ``energy_j`` is the CPU estimate (utilisation x TDP), not a meter."""
        return SOURCE_ESTIMATE in self.energy_source.split("+")

    def to_dict(self) -> dict[str, Any]:
        """Plain fields (dicts and lists), e.g. for ``pl.DataFrame([m.to_dict() for m in ms])`` or JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(device_energy_j=dict(self.device_energy_j), device_source=dict(self.device_source),
                   devices=list(self.devices))
        return out


class Window:
    """What ``with meter.window(name) as m`` binds: the :class:`Measurement` once the block has
    ended (``m.measurement``; its fields also read as ``m.energy_j`` etc.)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.measurement: Measurement | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        m = self.__dict__.get("measurement")
        if m is None:
            raise UserError(f"window {self.__dict__.get('name')!r} is still open: its {attr} exists once the with-block ends")
        return getattr(m, attr)

    def __repr__(self) -> str:
        return f"Window({self.name!r}, {self.measurement!r})" if self.measurement else f"Window({self.name!r}, open)"


@dataclass(frozen=True)
class _Open:
    t_start_mono: float
    counters: tuple[PowerSample, ...]


class EnergyMeter:
    """Energy of named windows of the caller's own code, on this node's samplers.

    ``samplers``: the meters to use (left running/open as given; :meth:`close` stops only what the
    meter started); by default discovered as the profiler does
    (:func:`~llm_energy.measure.samplers.discover.discover_samplers`: NVML for ``gpu_indices``, RAPL,
    else the labelled CPU estimate) and closed by :meth:`close`. ``devices``: what
    ``Measurement.energy_j`` sums (default: the metered GPUs, else the CPU/DRAM meters).
    ``min_window_s``: shorter windows report no energy (default: the profiler's
    :func:`~llm_energy.measure.profiler.auto_min_window`; never below 3 meter update periods).
    ``sync``: wait for queued CUDA work at both edges (only where torch has initialised CUDA)."""

    def __init__(self, samplers: Sequence[PowerSampler] | None = None, *, node: str | None = None,
                 gpu_indices: Sequence[int] | None = None, cpu: bool = True, period_s: float = 0.02,
                 devices: Sequence[str] | None = None, min_window_s: float | None = None, sync: bool = True,
                 **discover: Any) -> None:
        self.node = node or socket.gethostname()
        self._owned = samplers is None
        if samplers is None:
            from llm_energy.measure.samplers.discover import discover_samplers

            samplers = discover_samplers(self.node, gpu_indices=gpu_indices, period_s=period_s, cpu=cpu, **discover)
        self.samplers = list(samplers)
        try:
            self._choose(devices, min_window_s)
        except UserError:
            if self._owned:
                for s in self.samplers:
                    s.close()
            raise
        self.sync = sync
        self.session = uuid.uuid4().hex[:12]
        self._open: dict[str, _Open] = {}
        self._held = False  # polling kept on by start()/with meter
        self._started: list[PowerSampler] = []  # samplers this meter started (and so stops)
        self._frame = pl.DataFrame(schema=SAMPLE_SCHEMA)
        self._lock = threading.RLock()
        self._closed = False

    def _choose(self, devices: Sequence[str] | None, min_window_s: float | None) -> None:
        """The devices energy_j sums, their label and update period, and the minimum window."""
        if not self.samplers:
            raise UserError("no power meter on this node (no NVML GPU, no readable RAPL, estimate not allowed)")
        self.metered: list[MeteredDevice] = [d for s in self.samplers for d in s.devices()]
        self._meters = meter_info(self.samplers)
        self.devices = tuple(devices) if devices is not None else _default_devices(self.metered)
        unknown = sorted(set(self.devices) - {d.device for d in self.metered})
        if unknown or not self.devices:
            raise bad_value("devices", unknown or list(self.devices),
                            f"not metered here (metered: {', '.join(d.device for d in self.metered)})")
        self._mine = [s for s in self.samplers if any(d.device in self.devices for d in s.devices())]
        self.energy_source = source_label(self.samplers, list(self.devices))
        self.update_period_s = max(s.update_period_s for s in self._mine)
        floor = FLOOR_PERIODS * self.update_period_s
        if min_window_s is not None and min_window_s < floor:
            raise bad_value("min_window_s", min_window_s, f"below {FLOOR_PERIODS} meter update periods "
                            f"({floor:g} s on {self.energy_source}): energy over a shorter window cannot be trusted")
        self.min_window_s = float(min_window_s) if min_window_s is not None else auto_min_window(self._mine)

    # ---- windows ---------------------------------------------------------------------------
    def begin_window(self, name: str) -> None:
        """Open window ``name`` (names of open windows are unique; windows may overlap)."""
        if not isinstance(name, str) or not name:
            raise bad_value("window name", name, "must be a non-empty string")
        with self._lock:
            self._check_open()
            if name in self._open:
                raise UserError(f"window {name!r} is already open (open: {', '.join(self._open)})")
            self._poll_on()
            _sync_cuda(self.sync)
            try:
                c0 = self._read_counters()
            except MeterReadError as e:
                raise UserError(f"window {name!r}: meter failed: {e}") from None
            _, t0 = now()
            self._open[name] = _Open(t0, tuple(c0))
            self._prune()  # drains the samplers: a long-held meter does not pile up readings

    def end_window(self, name: str) -> Measurement:
        """Close window ``name`` and return its :class:`Measurement`."""
        with self._lock:
            state = self._pop(name)
            _sync_cuda(self.sync)
            _, t1 = now()
            try:
                c1, failed = self._read_counters(), None
            except MeterReadError as e:
                c1, failed = [], e
            short = t1 - state.t_start_mono < self.min_window_s
            if not short and failed is None:
                _settle(self.samplers)  # one update past the end edge, so it can be interpolated
            failed = failed or next((f for f in (s.failure() for s in self._mine) if f is not None), None)
            self._take(list(state.counters) + c1)
            m = self._measure(name, state.t_start_mono, t1, short, failed)
            self._prune()
            return m

    def cancel_window(self, name: str) -> None:
        """Discard window ``name`` without measuring it."""
        with self._lock:
            self._pop(name)
            self._prune()

    @contextmanager
    def window(self, name: str) -> Iterator[Window]:
        """``with meter.window(name) as m: ...``; ``m`` holds the Measurement after the block. A block
        that raises cancels its window."""
        w = Window(name)
        self.begin_window(name)
        try:
            yield w
        except BaseException:
            self.cancel_window(name)
            raise
        w.measurement = self.end_window(name)

    def repeat(self, name: str, fn: Callable[[], Any], *, max_calls: int = MAX_INNER) -> tuple[Measurement, list[Any]]:
        """Call ``fn()`` back to back inside one window until the window lasts ``min_window_s`` (as
        the profiler repeats a short trial ``n_inner`` times): work too short to meter on its own gets
        an energy per call (``energy_per_call_j``). Returns the measurement and what ``fn`` returned."""
        if max_calls < 1:
            raise bad_value("max_calls", max_calls, "must be >= 1")
        results: list[Any] = []
        with self.window(name) as w:
            t0 = self._open[name].t_start_mono
            while not results or (time.monotonic() - t0 < self.min_window_s and len(results) < max_calls):
                results.append(fn())
        return replace(w.measurement, n_calls=len(results)), results

    @property
    def open_windows(self) -> tuple[str, ...]:
        return tuple(self._open)

    # ---- polling lifetime ------------------------------------------------------------------
    def start(self) -> "EnergyMeter":
        """Keep the samplers polling until :meth:`stop` (saves the warm-up wait of each first window)."""
        with self._lock:
            self._check_open()
            self._held = True
            self._poll_on()
        return self

    def stop(self) -> None:
        with self._lock:
            self._held = False
            self._prune()

    def close(self) -> None:
        """Stop what this meter started and close the samplers it discovered; open windows are dropped."""
        with self._lock:
            self._open.clear()
            self._held = False
            self._poll_off()
            if self._owned and not self._closed:
                for s in self.samplers:
                    s.close()
            self._closed = True

    def __enter__(self) -> "EnergyMeter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise UserError("this EnergyMeter is closed; make a new one")

    def _pop(self, name: str) -> _Open:
        try:
            return self._open.pop(name)
        except KeyError:
            raise UserError(f"no open window {name!r} (open: {', '.join(self._open) or 'none'})") from None

    def _poll_on(self) -> None:
        for s in self.samplers:  # counter update points between the edges (see integrate)
            s.poll_counters = True
        idle = [s for s in self.samplers if not s.running]
        if not idle:
            return
        for s in idle:
            s.start()
        self._started.extend(idle)
        # one reading (and one counter update) before the first window's start edge
        time.sleep(1.2 * max(max(s.update_period_s, s.period_s) for s in idle))

    def _poll_off(self) -> None:
        for s in self._started:
            s.stop()
        self._started = []
        for s in self.samplers:
            s.drain()
        self._frame = self._frame.clear()

    def _read_counters(self) -> list[PowerSample]:
        return [c for s in self.samplers if s.has_counter for c in s.read_counters()]

    def _take(self, extra: list[PowerSample]) -> None:
        """Drain the samplers (and ``extra`` edge readings) into the meter's frame."""
        got = list(extra)
        for s in self.samplers:
            got.extend(s.drain())
        if got:
            got.sort(key=lambda x: x.t_mono)
            self._frame = pl.concat([self._frame, samples_frame(got, self.session)], how="vertical_relaxed")

    def _prune(self) -> None:
        """Drop samples no open window needs; stop polling when nothing needs it."""
        if not self._open and not self._held:
            self._poll_off()
            return
        self._take([])
        keep_from = min((o.t_start_mono for o in self._open.values()), default=now()[1]) - HISTORY_S
        self._frame = self._frame.filter(pl.col("t_mono") >= keep_from)

    def _measure(self, name: str, t0: float, t1: float, short: bool, failed: BaseException | None) -> Measurement:
        by_dev = {} if short or failed is not None else self._energy(t0, t1)
        missing = [d for d in self.devices if d not in by_dev]
        total = None if missing else sum(by_dev[d]["energy_j"] for d in self.devices)
        inside = self._frame.filter(pl.col("watts").is_not_null() & pl.col("device").is_in(self.devices)
                                    & pl.col("t_mono").is_between(t0, t1))
        quality, quality_note = QUALITY_OK, ""
        if failed is not None:
            note = f"meter failed: {failed}: no energy reported"
        elif short:
            note = (f"window {t1 - t0:.3g} s is shorter than min_window_s {self.min_window_s:g} s "
                    f"(meter updates every {self.update_period_s:g} s): no energy reported; repeat the work inside one window")
        else:
            note = f"no readings for {', '.join(missing)}" if missing else ""
            energies = {d: by_dev[d]["energy_j"] for d in self.devices if d in by_dev}
            quality, quality_note = quality_label(assess_window(self._frame, t0, t1, self.devices, energies, self._meters))
        return Measurement(
            name=name, time_s=t1 - t0, energy_j=total,
            device_energy_j=MappingProxyType({d.device: by_dev[d.device]["energy_j"] if d.device in by_dev else None
                                              for d in self.metered}),
            devices=self.devices, energy_source=self.energy_source,
            device_source=MappingProxyType({d.device: by_dev[d.device]["source"] if d.device in by_dev else d.source
                                            for d in self.metered}),
            n_samples=inside.height, short_window=short, min_window_s=self.min_window_s,
            t_start_mono=t0, t_end_mono=t1, note=note, quality=quality, quality_note=quality_note,
        )

    def _energy(self, t0: float, t1: float) -> dict[str, dict[str, Any]]:
        nodes = sorted({s.node for s in self.samplers})
        win = pl.DataFrame({"trial_id": ["w"] * len(nodes), "node": nodes, "session": [self.session] * len(nodes),
                            "t_start_mono": [t0] * len(nodes), "t_end_mono": [t1] * len(nodes)})
        e = window_energy(self._frame.filter(pl.col("t_mono") >= t0 - HISTORY_S), win)
        # per device: the counter where one exists, else the trapezoid (as the profiler chooses)
        e = e.sort(pl.col("method") != "counter").unique("device", keep="first", maintain_order=True)
        return {r["device"]: r for r in e.iter_rows(named=True)}


def _default_devices(metered: list[MeteredDevice]) -> tuple[str, ...]:
    gpus = tuple(d.device for d in metered if d.kind == "gpu")
    return gpus or tuple(d.device for d in metered if d.kind in ("cpu", "dram"))


def _settle(samplers: Sequence[PowerSampler]) -> None:
    """Wait one counter update period (x1.2), so a window edge has a counter update on its far side."""
    periods = [s.update_period_s for s in samplers if s.has_counter]
    if periods:
        time.sleep(1.2 * max(periods))


def _sync_cuda(enabled: bool) -> None:
    """Wait for queued CUDA work, only where torch is imported and has a CUDA context already."""
    torch = sys.modules.get("torch") if enabled else None
    if torch is not None and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)
