"""One interface for every power meter (cf. Zeus's ``zeus/device``): a class per meter kind.

A sampler covers one meter kind on one node and one or more devices. It offers two readings:

* ``read_counters()``: cumulative energy counters (J) per device, read at window boundaries. Exact
  energy over a window is the counter delta. Meters without a counter return ``[]``.
* ``read_power()``: instantaneous power (W) per device. ``start()`` polls it on a background thread
  every ``period_s`` (and the counters too when ``poll_counters`` is set); ``drain()`` hands over
  what was polled since the last drain.

Every reading is a :class:`~llm_energy.trials.schema.PowerSample` labelled with its ``source``.

A read that fails raises :class:`MeterReadError` naming the device. The polling thread skips a failed
poll, counts it and keeps the error; :meth:`PowerSampler.failure` says when the meter has failed for
good (``FAIL_POLLS`` polls in a row, over at least ``FAIL_S``), so the profiler stops the sweep with one line instead of
measuring on without a meter.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from llm_energy.trials.schema import PowerSample

#: consecutive failed polls, over at least FAIL_S seconds, after which a meter counts as failed
#: (not a transient error)
FAIL_POLLS = 5
FAIL_S = 1.0


class MeterReadError(Exception):
    """A meter read failed (e.g. ``pynvml.NVMLError`` mid-sweep): which device, which meter, and why."""

    def __init__(self, device: str, meter: str, error: BaseException) -> None:
        self.device, self.meter, self.error = device, meter, error
        why = str(error).strip() or "no message"
        super().__init__(f"{device} ({meter}): {type(error).__name__}: {why}")


@dataclass(frozen=True, slots=True)
class MeteredDevice:
    """A device a sampler measures (for ``llm-energy devices`` and trial metadata)."""

    device: str  # id used in samples, e.g. "gpu0", "package-0"
    name: str  # human name, e.g. NVML's "NVIDIA H100 80GB HBM3" or the CPU model
    kind: str  # "gpu" | "cpu" | "dram"
    source: str  # the sampler's source label
    memory_total_b: int | None = None
    memory_free_b: int | None = None
    power_limit_w: float | None = None
    note: str = ""  # e.g. "power from POWER_INSTANT field" or "estimate: no meter"
    uuid: str | None = None  # the device's own identity (NVML's UUID, "GPU-..."); None where the meter has none


class PowerSampler(ABC):
    """Base class: subclasses implement ``devices``, ``read_power`` and (if any) ``read_counters``."""

    source: str = "?"
    #: how often the meter's value changes (s); windows shorter than ~3 of these are unreliable
    update_period_s: float = 0.1
    #: True when ``read_counters`` returns cumulative energy
    has_counter: bool = False

    def __init__(self, node: str, period_s: float = 0.02) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.node = node
        self.period_s = period_s
        #: also poll the energy counters on the polling thread (the profiler turns this on: counter
        #: update points let window edges be interpolated; see llm_energy.measure.integrate)
        self.poll_counters = False
        #: CPU time (s) the polling thread has used, and its polls: the sampler's own cost, measured
        #: directly (a bound on what it can take from inference, unlike a noisy tokens/s comparison)
        self.poll_cpu_s = 0.0
        self.polls = 0
        #: failed polls in all, in a row now, and the last error
        self.poll_errors = 0
        self.failed_in_a_row = 0
        self.failing_since: float | None = None  # monotonic time of the first failed poll in a row
        self.last_error: BaseException | None = None
        self._buf: list[PowerSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def devices(self) -> list[MeteredDevice]:
        """The devices this sampler measures."""

    @abstractmethod
    def read_power(self) -> list[PowerSample]:
        """One instantaneous power reading (W) per device."""

    def read_counters(self) -> list[PowerSample]:
        """One cumulative energy reading (J) per device; ``[]`` for meters without a counter."""
        return []

    def close(self) -> None:
        """Release the meter (e.g. nvmlShutdown). Stops polling first."""
        self.stop()

    def failure(self) -> BaseException | None:
        """The error of a meter whose polls have all failed lately (``FAIL_POLLS`` of them, for at
        least ``FAIL_S``), else None."""
        since = self.failing_since
        if self.failed_in_a_row >= FAIL_POLLS and since is not None and time.monotonic() - since >= FAIL_S:
            return self.last_error
        return None

    # ---- background polling (shared) ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name=f"{type(self).__name__}-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        t = self._thread
        if t is None:
            return
        self._stop.set()
        t.join(timeout=5)
        self._thread = None

    def drain(self) -> list[PowerSample]:
        """Power samples polled since the previous drain, oldest first."""
        with self._lock:
            out, self._buf = self._buf, []
        return out

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _poll(self) -> None:
        # Fixed-rate schedule (not sleep(period) after work) so the rate does not drift with the
        # cost of a read.
        next_t = time.monotonic()
        while not self._stop.is_set():
            c0 = time.thread_time()
            try:
                readings = self.read_power()
                if self.poll_counters and self.has_counter:
                    readings += self.read_counters()
                self.failed_in_a_row, self.failing_since = 0, None
            except Exception as e:  # noqa: BLE001 - a failed poll is skipped and counted (see failure())
                readings = []
                self.poll_errors += 1
                self.failed_in_a_row += 1
                self.failing_since = self.failing_since or time.monotonic()
                self.last_error = e
            if readings:
                with self._lock:
                    self._buf.extend(readings)
            self.poll_cpu_s += time.thread_time() - c0
            self.polls += 1
            next_t += self.period_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def __enter__(self) -> "PowerSampler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def now() -> tuple[float, float]:
    """(wall, monotonic) clock pair for a sample's timestamps."""
    return time.time(), time.monotonic()


# ---- read timing (optional: benchmarks/gpu/eager_meters.py; ProcessSampler(time_reads=True) in its child) ----
#: one read's cost: (wall seconds, CPU seconds of the calling thread)
ReadTime = tuple[float, float]


def read_kinds(s: PowerSampler) -> tuple[str, ...]:
    """The reads a sampler's poll loop makes (``read_counters`` too where it has a counter)."""
    return ("read_power", "read_counters") if s.has_counter else ("read_power",)


def clock_reads(s: PowerSampler) -> dict[str, list[ReadTime]]:
    """Wrap the sampler's reads (instance attributes, which its poll loop finds first) so that each call's
    wall and CPU seconds land in the returned lists, one per read kind: two clock reads a call, no lock."""
    out: dict[str, list[ReadTime]] = {}
    for name in read_kinds(s):
        fn, into = getattr(s, name), out.setdefault(name, [])

        def clocked(fn=fn, into=into):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn()
            finally:
                into.append((time.perf_counter() - t, time.thread_time() - c))
        setattr(s, name, clocked)
    return out


def time_reads(s: PowerSampler, n: int) -> dict[str, list[ReadTime]]:
    """Each read's cost, ``n`` calls of each kind back to back from the calling thread (a latency with nothing
    else running, before polling starts)."""
    out: dict[str, list[ReadTime]] = {}
    for name in read_kinds(s):
        xs = out.setdefault(name, [])
        for _ in range(n):
            t, c = time.perf_counter(), time.thread_time()
            getattr(s, name)()
            xs.append((time.perf_counter() - t, time.thread_time() - c))
    return out
