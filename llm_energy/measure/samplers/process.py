"""Opt-in: a sampler's polling in a spawned child process (``llm-energy profile --sampler-process``).

The profiler's samplers poll on threads of the process that runs inference, every 20 ms. An eager decode step
is bound by the Python thread launching it, and those threads may slow it (H200 llama-2-7b, the ``cache``
backend: 33.6 ms a step alone, 44.9 ms while NVML and the estimate poll; benchmarks/gpu/eager_step.py's meter
loops tell the causes apart). :class:`ProcessSampler` keeps the sampler's interface but runs its poll loop
(the same ``PowerSampler._poll``) in a child started with multiprocessing 'spawn': the child never imports
torch nor touches this process's CUDA context, and this process runs no polling thread at all.

* The child builds its own sampler of the same kind from picklable arguments (:func:`recipe`: NVML's GPU
  indices, RAPL's powercap root, the estimate's TDP and idle); the sampler given stays in this process for
  ``devices()`` and the reads at window edges (``read_counters``, ``read_power``).
* Samples stay in the child until ``drain()`` asks for them (one round trip through a Pipe, at window edges
  only); ``failure()`` and the poll figures (``polls``, ``poll_cpu_s``, ``poll_errors``) come with each
  round trip. A child that died or stopped answering is a failed meter (``failure()`` says so).
* Optional, for benchmarks (``benchmarks/gpu/eager_meters.py``): ``time_reads=True`` clocks each of the child's
  reads while it polls (wall and CPU seconds: two clock reads a call) and ``idle_reads=N`` times N reads of each
  kind back to back in the child before it polls; they come back with the stop (``read_times``,
  ``idle_read_times``, and ``child_imported_torch``: whether the child's interpreter holds torch). Off (the
  default, what ``profile --sampler-process`` runs), the child does neither.
* Timestamps are ``time.monotonic`` in both processes: one clock on Linux (CLOCK_MONOTONIC is system-wide).
  RAPL counters are unwrapped in each process on its own; both see a wrap as long as each reads at least once
  per wrap period (minutes at full power).
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import types
from typing import Any

from llm_energy.measure.samplers.base import (MeteredDevice, MeterReadError, PowerSampler, ReadTime, clock_reads,
                                              time_reads)
from llm_energy.trials.schema import PowerSample

START_S = 60.0  # the child's imports and its meter's init (nvmlInit) may take this long on a busy node
REPLY_S = 10.0  # a round trip that takes longer counts as a dead child


def recipe(s: PowerSampler) -> tuple[type, dict[str, Any]] | None:
    """(class, keyword arguments) that build a sampler like ``s`` in another process; None for a kind the
    child cannot build (it stays on its thread)."""
    from llm_energy.measure.samplers.estimate import EstimateSampler
    from llm_energy.measure.samplers.nvml import NvmlSampler
    from llm_energy.measure.samplers.rapl import RaplSampler

    if isinstance(s, NvmlSampler):  # a module (pynvml) is imported there again; a fake object is pickled
        return NvmlSampler, {"gpu_indices": list(s.indices), "nvml": None if isinstance(s.nvml, types.ModuleType) else s.nvml}
    if isinstance(s, RaplSampler):
        return RaplSampler, {"root": str(s.root)}
    if isinstance(s, EstimateSampler):
        return EstimateSampler, {"tdp_w": s.tdp_w, "idle_w": s.idle_w}
    return None


def in_processes(samplers: list[PowerSampler]) -> list[PowerSampler]:
    """Each sampler that a child can build wrapped in a :class:`ProcessSampler`; the rest as they are."""
    return [ProcessSampler(s) if recipe(s) is not None else s for s in samplers]


class RemoteError(Exception):
    """An error raised in the child, by its type name and message (the exception itself may not pickle)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return self.args[0]


def _error(kind: str, message: str) -> Exception:
    """An exception whose type name is ``kind`` (so MeterReadError's line names it as in this process)."""
    return type(kind, (RemoteError,), {})(kind, message)


def _stats(s: PowerSampler) -> dict[str, Any]:
    e = s.last_error
    if isinstance(e, MeterReadError):
        err = (e.device, e.meter, type(e.error).__name__, str(e.error))
    else:
        err = None if e is None else (s.source, type(s).__name__, type(e).__name__, str(e))
    return {"polls": s.polls, "poll_cpu_s": s.poll_cpu_s, "poll_errors": s.poll_errors,
            "failed_in_a_row": s.failed_in_a_row, "failing_since": s.failing_since, "last_error": err}


def _child(conn: Any, cls: type, node: str, kw: dict[str, Any], period_s: float, poll_counters: bool,
           timing: tuple[bool, int] = (False, 0)) -> None:
    """The child: build the sampler, poll on its thread, answer "drain" / "stats" / "stop" until stopped or
    the parent is gone. ``timing``: (clock the polls' reads, reads of each kind timed before polling); what they
    measured comes with the answer to "stop"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C (or timeout's SIGINT to the group) is the parent's to handle
    s = None
    try:
        s = cls(node, period_s=period_s, **kw)
        s.poll_counters = poll_counters
        idle = time_reads(s, timing[1]) if timing[1] else {}
    except Exception as e:  # noqa: BLE001 - no meter here: the parent's start() raises it
        conn.send(("error", (type(e).__name__, str(e)), None))
        if s is not None:
            s.close()
        return
    try:
        reads = clock_reads(s) if timing[0] else {}
        s.start()
        conn.send(("ready", _stats(s), None))
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):  # the parent exited
                return
            if cmd == "stop":
                s.stop()
            st = _stats(s)
            if cmd == "stop" and (timing[0] or timing[1]):
                st["timing"] = {"reads": reads, "idle": idle, "imported_torch": "torch" in sys.modules}
            conn.send(("ok", st, s.drain() if cmd in ("drain", "stop") else None))
            if cmd == "stop":
                return
    finally:
        s.close()


class ProcessSampler(PowerSampler):
    """``inner``'s meter polled by a spawned child; the same start / stop / drain / failure interface.
    ``time_reads`` / ``idle_reads``: the child's read timing (module docstring), in ``read_times`` and
    ``idle_read_times`` after ``stop()``."""

    def __init__(self, inner: PowerSampler, *, time_reads: bool = False, idle_reads: int = 0) -> None:
        rec = recipe(inner)
        if rec is None:
            raise ValueError(f"{type(inner).__name__} cannot poll in a child process")
        super().__init__(inner.node, inner.period_s)
        self.inner = inner
        self._cls, self._kw = rec
        self.source, self.update_period_s, self.has_counter = inner.source, inner.update_period_s, inner.has_counter
        self.poll_counters = inner.poll_counters
        self._proc: Any = None
        self._conn: Any = None
        self._dead: BaseException | None = None  # why the child stopped answering
        self._left: list[PowerSample] = []  # what the child had polled when it was stopped
        self.time_reads, self.idle_reads = time_reads, idle_reads
        #: per read kind, each of the child's reads while it polled (wall s, CPU s); with time_reads, after stop()
        self.read_times: dict[str, list[ReadTime]] = {}
        #: per read kind, the idle_reads reads the child timed back to back before polling; after stop()
        self.idle_read_times: dict[str, list[ReadTime]] = {}
        self.child_imported_torch: bool | None = None  # with either timing, after stop()

    # ---- this process's meter: devices and the reads at window edges ----
    def devices(self) -> list[MeteredDevice]:
        return self.inner.devices()

    def read_power(self) -> list[PowerSample]:
        return self.inner.read_power()

    def read_counters(self) -> list[PowerSample]:
        return self.inner.read_counters()

    # ---- the child's polling ----
    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        """Start the child; returns once it polls. Raises MeterReadError where the child cannot build its meter."""
        if self._proc is not None:
            return
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, self._cls, self.node, self._kw, self.period_s,
                                                      self.poll_counters, (self.time_reads, self.idle_reads)),
                                 name=f"{type(self.inner).__name__}-poll", daemon=True)
        self._dead = None
        self._proc.start()
        child.close()
        what, info = self._reply(START_S)
        if what != "ready":
            self._end()
            kind, msg = info if what == "error" else (type(self._dead).__name__, str(self._dead))
            raise MeterReadError(self.source, f"{type(self.inner).__name__} in a child process", _error(kind, msg))

    def _reply(self, timeout: float) -> tuple[str, Any]:
        """The child's next answer (its stats taken in), or ("dead", None) with ``_dead`` set."""
        try:
            if not self._conn.poll(timeout):
                raise TimeoutError(f"no answer in {timeout:.0f} s")
            what, info, samples = self._conn.recv()
        except (EOFError, OSError, TimeoutError) as e:
            self._gone(e)
            return "dead", None
        if what in ("ready", "ok"):
            self._take(info)
        if samples:
            self._left.extend(samples)
        return what, info

    def _gone(self, e: BaseException) -> None:
        code = self._proc.exitcode if self._proc is not None else None
        self._dead = RuntimeError(f"the sampler process is gone ({type(e).__name__}: {e}; exit code {code})")

    def _take(self, st: dict[str, Any]) -> None:
        self.polls, self.poll_cpu_s, self.poll_errors = st["polls"], st["poll_cpu_s"], st["poll_errors"]
        self.failed_in_a_row, self.failing_since = st["failed_in_a_row"], st["failing_since"]
        if st["last_error"] is not None:
            device, meter, kind, msg = st["last_error"]
            self.last_error = MeterReadError(device, meter, _error(kind, msg))
        if "timing" in st:
            t = st["timing"]
            self.read_times, self.idle_read_times = t["reads"], t["idle"]
            self.child_imported_torch = t["imported_torch"]

    def _ask(self, cmd: str) -> bool:
        if self._proc is None or self._dead is not None:
            return False
        try:
            self._conn.send(cmd)
        except (OSError, ValueError) as e:
            self._gone(e)
            return False
        return self._reply(REPLY_S)[0] == "ok"

    def drain(self) -> list[PowerSample]:
        """What the child polled since the previous drain, oldest first (also after stop)."""
        self._ask("drain")
        out, self._left = self._left, []
        return out

    def failure(self) -> BaseException | None:
        """The child's meter's failure (as PowerSampler.failure), or the child's own when it died."""
        if self._proc is not None:
            self._ask("stats")
            if self._dead is not None:
                return MeterReadError(self.source, f"{type(self.inner).__name__} in a child process", self._dead)
        return super().failure()

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            self._ask("stop")
        finally:
            self._end()

    def _end(self) -> None:
        proc, self._proc = self._proc, None
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        self._conn.close()

    def close(self) -> None:
        self.stop()
        self.inner.close()
