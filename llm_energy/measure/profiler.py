"""The core profiler: runs a sweep design on one node and yields measurements as events.

``Profiler.events()`` is a generator, so the same loop serves the local CLI (which writes events to a
:class:`~llm_energy.trials.store.TrialStore` through :func:`record_events`) and a Ray actor (which streams
them to the driver). Per trial:

1. ``backend.prepare`` (allocation/compilation, outside the window; its seconds stored as the trial's
   ``prepare_s``, its energy, counters read at its edges and integrated as the window's, as ``prepare_j``,
   ``prepare_compiled`` when it compiled a new bucket x batch, and for a static backend the caches it gave
   back to make room, as ``prepare_evictions``) and a seeded prompt of exactly ``tin`` tokens;
2. a measurement window: counters read at both edges, back-to-back generations until the window
   lasts at least ``min_window_s`` (a trial shorter than a few meter update periods is repeated
   inside one window, ``n_inner`` times, and its energy divided by the count, never reported as 0 J);
3. energy per device from :func:`llm_energy.measure.integrate.window_energy` (counter interpolation where a
   counter exists, else the trapezoid of polled power), gross and net of the idle baseline measured
   before the sweep;
4. token counts checked: a generation that did not produce exactly what was asked is an error;
5. the window's raw readings checked (:mod:`llm_energy.measure.quality`): a stuck, frozen or
   stepped-back meter, or power above the device's limit, marks the trial ``suspect``, as does a
   suspect idle baseline or a CPU estimate pinned at its TDP;
6. the compilations torch did inside the window counted (:mod:`llm_energy.measure.inference.compiles`):
   a window during which it compiled timed the compiler, not the model (H200, llama-2-7b static
   16 x 256: 31.9 ms per decode step instead of 5.1), so the trial is measured again, the compile then
   done; if it compiles again, it is stored as measured and flagged ``suspect:compiled``.

A meter that fails mid-sweep (``MeterReadError``: an NVMLError at a window edge, or every poll
failing) stops the sweep with one line naming the device; the trials committed before it stay and
rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import time
import uuid
from collections import Counter
from typing import Any, Collection, Iterable, Iterator, Sequence

import polars as pl

from llm_energy.errors import UserError
from llm_energy.measure.budget import BudgetGate, TimeBudget
from llm_energy.measure.design import PlannedTrial
from llm_energy.measure.events import (
    ProfileError,
    ProfileEvent,
    ProgressTick,
    SamplesChunk,
    SweepStarted,
    TrialDone,
)
from llm_energy.measure.inference.compiles import CompileCount, compile_count
from llm_energy.measure.inference.loading import cuda_ordinals, resolve_device
from llm_energy.measure.inference.sizing import is_static_backend
from llm_energy.measure.integrate import window_energy
from llm_energy.measure.quality import Flag, assess_idle, assess_window, meter_info, quality_label
from llm_energy.measure.samplers.base import MeterReadError, PowerSampler, now
from llm_energy.measure.spec import ProfileSpec, resume_spec, sweep_id, trial_id
from llm_energy.trials.errata import STATIC_WARMUP_MARK
from llm_energy.trials.schema import (
    SAMPLE_SCHEMA,
    SOURCE_ESTIMATE,
    IdleBaseline,
    PowerSample,
    SweepInfo,
    TrialRecord,
    samples_frame,
    versions_json,
)
from llm_energy.measure.prepare import _will_compile, prepare_energy, run_prepare
from llm_energy.measure.hardware import _describe_hardware

MAX_INNER = 10_000  # generations in one window at most
log = logging.getLogger("llm_energy.profile")


# ---- the profiler -----------------------------------------------------------------------------
class Profiler:
    def __init__(self, spec: ProfileSpec, *, node: str | None = None, samplers: list[PowerSampler] | None = None,
                 budget: TimeBudget | None = None, sampler_process: bool = False) -> None:
        self.spec = spec
        self.budget = budget  # the run's wall clock (--time-budget-s): kept out of the spec and the sweep id
        self.node = node or socket.gethostname()
        self._samplers_given = samplers
        self.sampler_process = sampler_process  # the discovered meters poll in child processes (samplers/process.py)
        self.sweep_id = sweep_id(spec)
        self.device = ""
        self.gpu_indices: tuple[int, ...] = ()  # CUDA ordinals of this process
        self.meter_indices: tuple[int, ...] = ()  # the same GPUs as NVML indices (CUDA_VISIBLE_DEVICES mapped)
        self.n_gpus = 0
        self._tail = pl.DataFrame(schema=SAMPLE_SCHEMA)
        self.session = uuid.uuid4().hex[:12]  # this run: samples and windows join within it
        self._meters: dict = {}
        self._idle_flags: list[Flag] = []

    def trial_id(self, t: PlannedTrial) -> str:
        return trial_id(self.sweep_id, t)

    def resume_into(self, sweeps: dict[str, SweepInfo], *, new_sweep: bool = False, where: str = "") -> None:
        """Bind this run to the store's sweeps: resume the sweep of the same id only if its recorded
        settings (design, seed, window, backend, dtype, energy source) are this run's; else a
        UserError saying what differs, or with ``new_sweep`` the next sweep variant whose settings
        match or that does not exist yet (:func:`~llm_energy.measure.spec.resume_spec`)."""
        self._resolve_devices()
        spec = resume_spec(sweeps, self.spec, self.energy_source, new_sweep=new_sweep, where=where, n_gpus=self.n_gpus)
        if spec != self.spec:
            self.spec, self.sweep_id = spec, sweep_id(spec)

    def energy_source(self) -> str:
        """The label this node's meters would give the sweep's energy (discovers and closes them)."""
        self._resolve_devices()
        samplers = self._samplers_given if self._samplers_given is not None else self._discover()
        try:
            return source_label(samplers, self._primary_devices(samplers))
        finally:
            if self._samplers_given is None:
                for s in samplers:
                    s.close()

    def _resolve_devices(self) -> None:
        spec = self.spec
        self.device = resolve_device(spec.device, spec.gpu_indices)
        self.gpu_indices = cuda_ordinals(self.device, spec.gpu_indices)
        self.n_gpus = len(self.gpu_indices)
        if self.gpu_indices:
            from llm_energy.measure.samplers.nvml import nvml_indices_for_cuda

            try:
                self.meter_indices = tuple(nvml_indices_for_cuda(self.gpu_indices))
            except ValueError as e:
                raise UserError(f"--gpus: {e}") from None

    def preflight(self, trials: Sequence[PlannedTrial] | None = None) -> tuple[Any, int, int]:
        """Refuse a sweep that cannot run, before anything is stored or measured: an unreadable model
        config, a sequence (tin + tout) longer than the model's ``max_position_embeddings``, or a model
        that does not fit the free memory of its device(s) at the sweep's largest batch and longest
        sequence. Returns the :class:`~llm_energy.measure.inference.backends.ModelSource` and the sizes checked."""
        from llm_energy.measure.inference.loading import read_model, resolve_dtype
        from llm_energy.measure.inference.sizing import check_sweep

        spec = self.spec
        trials = list(trials if trials is not None else spec.design.trials())
        device = resolve_device(spec.device, spec.gpu_indices)
        gpus = cuda_ordinals(device, spec.gpu_indices)
        devices = [f"cuda:{i}" for i in gpus] if gpus else ["cpu"]
        src = read_model(spec.model)
        _check_loader_deps(src)
        if not trials:
            return src, 1, 1
        batch = max(t.cell.batch for t in trials)
        seq = max(t.cell.tin + t.cell.tout for t in trials)
        check_sweep(src, resolve_dtype(spec.dtype, device), devices, batch=batch, max_seq_len=seq, backend=spec.backend,
                    beyond_context=spec.beyond_context)
        return src, batch, seq

    # ------------------------------------------------------------------------------------------
    def events(self, trials: Sequence[PlannedTrial] | None = None, skip: Collection[str] = (),
               history: Iterable[Any] = ()) -> Iterator[ProfileEvent]:
        """The sweep's events. With a time budget (:mod:`~llm_energy.measure.budget`), ``history`` (the sweep's
        committed trials) feeds its predictions; ``BudgetSpent`` is raised after the trials that fit."""
        spec = self.spec
        skip = set(skip)
        planned = list(trials if trials is not None else spec.design.trials())
        todo = [t for t in planned if self.trial_id(t) not in skip]
        # progress counts the whole sweep, trials committed by an earlier run included (a resumed run
        # shows 40/48, not 0/8; a resumed run with nothing left shows its cells done, not an empty row)
        left_in_cell = Counter({t.cell.cell_id: 0 for t in planned})
        left_in_cell.update(t.cell.cell_id for t in todo)
        done_before = len(planned) - len(todo)
        tick = dict(node=self.node, node_type=spec.node_type, model=spec.model, backend=spec.backend,
                    cells_total=len(left_in_cell))
        if not todo:
            yield ProgressTick(state="done", done=len(planned), total=len(planned), cells_done=len(left_in_cell),
                               eta_s=0.0, message="nothing left to measure", **tick)
            return
        yield ProgressTick(state="loading", done=done_before, total=len(planned),
                           cells_done=sum(n == 0 for n in left_in_cell.values()), **tick)
        self._resolve_devices()
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        # refuse what cannot run before the samplers start and any idle is measured
        _, max_batch, max_seq = self.preflight(todo)

        samplers = self._samplers_given if self._samplers_given is not None else self._discover()
        primary = self._primary_devices(samplers)
        self._meters = meter_info(samplers)
        started = False  # a start may fail (--sampler-process: a child without its meter): the started ones stop
        try:
            for s in samplers:
                s.period_s = spec.sample_period_s
                s.poll_counters = True
                s.start()
            started = True
            yield from self._sweep(todo, samplers, primary, tick, left_in_cell, max_batch, max_seq, done_before,
                                   history)
        except MeterReadError as e:
            raise ProfileError(f"meter failed mid-sweep: {e}; the trials measured before it are committed: "
                               "rerun the same command to resume" if started else f"meter failed to start: {e}") from None
        finally:
            for s in samplers:
                s.stop()
            if self._samplers_given is None:
                for s in samplers:
                    s.close()

    def _sweep(self, todo: list[PlannedTrial], samplers: list[PowerSampler], primary: list[str], tick: dict,
               left_in_cell: Counter, max_batch: int, max_seq: int, done_before: int = 0,
               history: Iterable[Any] = ()) -> Iterator[ProfileEvent]:
        from llm_energy.measure.inference.backends import make_backend
        from llm_energy.measure.inference.loading import load_model
        from llm_energy.measure.inference.sizing import kv_cache_len, kv_groups_cached

        spec, n_todo = self.spec, len(todo)
        total, base = done_before + n_todo, done_before  # ticks count the whole sweep (resumed runs too)
        cells_done = sum(n == 0 for n in left_in_cell.values())
        tick = {**tick, "cells_done": cells_done}
        # ---- idle before the model exists (no CUDA context: the device's deepest idle) ----
        yield ProgressTick(state="idle", done=base, total=total, message="cold idle", **tick)
        cold, cold_frame, _ = self._idle_baseline(samplers, primary, min(spec.idle_s, 3.0))
        yield SamplesChunk(cold_frame)
        yield ProgressTick(state="loading", done=base, total=total, **tick)
        loaded = load_model(spec.model, self.device, spec.dtype, gpu_indices=self.gpu_indices or None,
                            batch=max_batch, kv_cache=spec.backend != "no-cache",
                            max_seq_len=kv_cache_len(spec.backend, max_seq), kv_groups=kv_groups_cached(spec.backend))
        backend = make_backend(spec.backend, loaded)
        device_name, system = _describe_hardware(samplers, primary, self.gpu_indices)
        # ---- idle baseline (model resident, nothing running): what energy_net_j subtracts ----
        yield ProgressTick(state="idle", done=base, total=total, device=device_name, **tick)
        idle, idle_frame, idle_flags = self._idle_baseline(samplers, primary, spec.idle_s)
        self._idle_flags = assess_idle(idle_flags, idle.per_device, primary, self._meters)
        source = source_label(samplers, primary)
        info = self._sweep_info(loaded.dtype, source, cold, idle, device_name, system, marks=backend.version_marks())
        if self._idle_flags:
            msg = f"warning: every trial of this run is flagged suspect: {quality_label(self._idle_flags)[1]}"
            log.warning(msg)
            yield ProgressTick(state="idle", done=base, total=total, device=device_name, message=msg, **tick)
        yield SweepStarted(info)
        yield SamplesChunk(idle_frame)
        joules, n_run = 0.0, 0
        t_begin = time.monotonic()
        tick = {k: v for k, v in tick.items() if k != "cells_done"}
        gate = self._gate(samplers, history)
        for i, t in enumerate(todo):
            compiles = _will_compile(backend, t.cell)
            at = dict(done=base + n_run, total=total, cell=t.key, joules_so_far=joules, cells_done=cells_done,
                      device=device_name, energy_source=source, **tick)
            if gate is not None and not gate.admit(t, compiles):  # would not finish in the time left
                yield ProgressTick(state="deferred", message=gate.message(*gate.deferred[-1]), **at)
                continue
            if compiles:  # a static-cache compile: minutes on a GPU, not idle
                yield ProgressTick(state="compiling", message=f"batch {t.cell.batch}, {t.cell.tin + t.cell.tout} "
                                   "tokens", **at)
            rec, frame = self._run_trial(t, backend, samplers, primary, idle, source, device_name=device_name,
                                         system=system, dtype=loaded.dtype, versions=info.versions, compiles=compiles)
            if gate is not None:
                gate.measured(rec)
            joules += rec.energy_j * rec.n_inner
            n_run += 1
            yield SamplesChunk(frame)
            yield TrialDone(rec, n_run, n_todo)
            elapsed = time.monotonic() - t_begin
            left_in_cell[t.cell.cell_id] -= 1
            cells_done += left_in_cell[t.cell.cell_id] == 0
            yield ProgressTick(
                state="running", done=base + n_run, total=total, cell=t.key, watts_now=rec.mean_w,
                joules_so_far=joules, eta_s=elapsed / n_run * (n_todo - i - 1), cells_done=cells_done,
                device=device_name, energy_source=source, **tick,
            )
        if gate is not None and gate.deferred:  # stopped as an interrupted run is: the next run resumes them
            spent = gate.spent()
            yield ProgressTick(state="stopped", done=base + n_run, total=total, joules_so_far=joules,
                               device=device_name, energy_source=source, cells_done=cells_done,
                               message=spent.describe(), **tick)
            raise spent
        yield ProgressTick(state="done", done=total, total=total, joules_so_far=joules, device=device_name,
                           energy_source=source, eta_s=0.0, cells_done=len(left_in_cell), **tick)

    def _gate(self, samplers: list[PowerSampler], history: Iterable[Any]) -> BudgetGate | None:
        """The time budget's check before each trial, its predictor fed the sweep's measured trials."""
        if self.budget is None:
            return None
        spec, settle = self.spec, 1.2 * max((s.update_period_s for s in samplers if s.has_counter), default=0.0)
        min_window = spec.min_window_s if spec.min_window_s is not None else auto_min_window(samplers)
        return BudgetGate.for_run(self.budget, min_window, spec.cooldown_s + settle, history)

    def _sweep_info(self, dtype: str, source: str, cold: IdleBaseline, idle: IdleBaseline, device_name: str,
                    system: str, marks: dict[str, str] | None = None) -> SweepInfo:
        """The sweep's record, with this run (session, node, idle baselines, meters) as its one run. The
        versions (stored with every trial) hold the backend's ``marks`` (InferenceBackend.version_marks: the
        keyword it passes its KV cache under, which tells trials of the fixed backends from those of erratum
        ``kv-cache-ignored``, trials/errata.py; an eager one's SDPA kernels; a static one's torch.compile
        backend where not inductor), for a static backend that its warm-ups ran in the trial's bucket (erratum
        ``compiled-in-window``); no part of the sweep's identity."""
        spec, now_s = self.spec, time.time()
        extra = dict(marks or {})
        if is_static_backend(spec.backend):  # erratum compiled-in-window: warm-ups in the trial's bucket
            extra["static_warmup"] = STATIC_WARMUP_MARK
        versions = versions_json(extra or None)
        notes = ["CPU energy is an estimate (utilisation x TDP), not a measurement"] if source == SOURCE_ESTIMATE else []
        if self._idle_flags:
            notes.append(f"run {self.session}: {quality_label(self._idle_flags)[1]}")
        run = {"session": self.session, "node": self.node, "created": now_s, "idle_w": idle.watts,
               "idle_cold_w": cold.watts, "idle_per_device_w": idle.per_device, "versions": versions,
               "idle_quality": quality_label(self._idle_flags)[0],
               "meters": {d: dataclasses.asdict(m) for d, m in self._meters.items()}}
        return SweepInfo(
            sweep_id=self.sweep_id, model=spec.model, backend=spec.backend, dtype=dtype,
            node_type=spec.node_type, n_gpus=self.n_gpus, node=self.node, system=system, device=device_name,
            energy_source=source, idle_w=idle.watts, idle_per_device_w=idle.per_device, idle_cold_w=cold.watts,
            design=spec.design.to_dict(), spec=spec.to_dict(), versions=versions, created=now_s, notes=notes,
            runs=[run],
        )

    def _check_meters(self, samplers: list[PowerSampler]) -> None:
        """Raise the error of a sampler whose polls have all failed lately (see PowerSampler.failure)."""
        for s in samplers:
            err = s.failure()
            if err is not None:
                raise err if isinstance(err, MeterReadError) else MeterReadError(s.source, type(s).__name__, err)

    # ------------------------------------------------------------------------------------------
    def _discover(self) -> list[PowerSampler]:
        from llm_energy.measure.samplers.discover import discover_samplers

        found = discover_samplers(self.node, gpu_indices=self.meter_indices or None, period_s=self.spec.sample_period_s,
                                  cpu=not self.gpu_indices)
        if self.sampler_process:
            from llm_energy.measure.samplers.process import in_processes

            return in_processes(found)
        return found

    def _primary_devices(self, samplers: list[PowerSampler]) -> list[str]:
        """Devices whose energy is the deployment's ``energy_j``: its GPUs, else the CPU meters."""
        devs = [d for s in samplers for d in s.devices()]
        if self.gpu_indices:
            want = [f"gpu{i}" for i in self.meter_indices]
            found = [d.device for d in devs if d.device in want]
            if not found:
                raise UserError(f"no GPU power meter for {', '.join(want)} (is NVML available?)")
            return found
        cpu = [d.device for d in devs if d.kind in ("cpu", "dram")]
        if not cpu:
            raise UserError("no CPU power meter or estimate available")
        return cpu

    def _collect(self, samplers: list[PowerSampler], extra: list[PowerSample]) -> pl.DataFrame:
        got: list[PowerSample] = list(extra)
        for s in samplers:
            got.extend(s.drain())
        got.sort(key=lambda x: x.t_mono)
        return samples_frame(got, self.session)

    def _read_counters(self, samplers: list[PowerSampler]) -> list[PowerSample]:
        out: list[PowerSample] = []
        for s in samplers:
            if s.has_counter:
                out.extend(s.read_counters())
        return out

    def _energy(self, frame: pl.DataFrame, trial_id: str, t0: float, t1: float,
                spans: Sequence[tuple[float, float]] = ()) -> pl.DataFrame:
        """Energy per device over [t0, t1] (rows ``trial_id``) and over each earlier span of ``spans``, disjoint
        from it and each other (rows ``trial_id#k``: prepare's), integrated alike."""
        both = pl.concat([self._tail, frame], how="vertical_relaxed") if self._tail.height else frame
        starts, ends = zip((t0, t1), *spans)
        win = pl.DataFrame({"trial_id": [trial_id] + [f"{trial_id}#{k}" for k in range(len(spans))], "node": self.node,
                            "session": self.session, "t_start_mono": starts, "t_end_mono": ends})
        e = window_energy(both, win)
        # keep ~1 s of history: the start edge's counter interpolation needs the update before it
        self._tail = both.filter(pl.col("t_mono") >= t1 - 1.0)
        # per window and device: the counter where one exists, else the trapezoid
        return e.sort(pl.col("method") != "counter").unique(["trial_id", "device"], keep="first", maintain_order=True)

    def _settle(self, samplers: list[PowerSampler]) -> None:
        """Wait one counter update period past a window's end so its edge can be interpolated."""
        periods = [s.update_period_s for s in samplers if s.has_counter]
        if periods:
            time.sleep(1.2 * max(periods))

    def _idle_baseline(self, samplers, primary, seconds: float) -> tuple[IdleBaseline, pl.DataFrame, list[Flag]]:
        """Idle power over ``seconds`` of nothing running, its samples, and what the quality checks
        found wrong with its readings."""
        spec = self.spec
        c0 = self._read_counters(samplers)
        _, t0 = now()
        time.sleep(max(seconds, 3 * spec.sample_period_s))
        _, t1 = now()
        c1 = self._read_counters(samplers)
        self._settle(samplers)
        self._check_meters(samplers)
        frame = self._collect(samplers, c0 + c1)
        e = self._energy(frame, "idle", t0, t1)
        dur = t1 - t0
        per = {r["device"]: r["energy_j"] / dur for r in e.iter_rows(named=True)}
        watts = sum(per.get(d, 0.0) for d in primary)
        flags = assess_window(frame, t0, t1, primary, {d: per[d] * dur for d in primary if d in per}, self._meters)
        idle = IdleBaseline(watts=watts, per_device=per, seconds=dur, source=source_label(samplers, primary))
        return idle, frame, flags

    def _run_trial(self, t: PlannedTrial, backend, samplers, primary, idle: IdleBaseline, source: str, *,
                   device_name: str, system: str, dtype: str, versions: str,
                   compiles: bool = False) -> tuple[TrialRecord, pl.DataFrame]:
        spec, c = self.spec, t.cell
        # compile + capture + warm-up: never in the window; its time and energy (prepare_s, prepare_j) apart
        n0, evicted0 = getattr(backend, "compiles", 0), getattr(backend, "evictions", None)
        edges, span = run_prepare(backend, c, lambda: self._read_counters(samplers))
        spans, compiles = [span], compiles or getattr(backend, "compiles", 0) > n0  # an OOM retry compiles again
        seed = int(hashlib.sha1(f"{spec.seed}/{c.cell_id}/{t.repeat}".encode()).hexdigest()[:8], 16)
        prompt = backend.make_prompt(c.batch, c.tin, seed)
        w = self._window(t, backend, prompt, samplers)
        edges, first = edges + w.edges, w.compiled
        if first:  # it timed torch compiling, not the model: measured again, the compile now done
            log.warning("trial %s: torch compiled during its window (%s); measured again", t.key, first.describe())
            spans.append((w.m0, w.m1))  # the discarded window compiled: prepare's time and energy
            compiles = True
            w = self._window(t, backend, prompt, samplers)
            edges = edges + w.edges  # the discarded window's samples are stored all the same
        results, w0, m0, w1, m1 = w.results, w.w0, w.m0, w.w1, w.m1
        n_inner = len(results)
        tid = self.trial_id(t)
        frame = self._collect(samplers, edges)
        e = self._energy(frame, tid, m0, m1, spans)
        by_dev = {r["device"]: r for r in e.filter(pl.col("trial_id") == tid).iter_rows(named=True)}
        missing = [d for d in primary if d not in by_dev]
        if missing:
            raise ProfileError(f"trial {t.key}: no power samples for {', '.join(missing)}")
        window_j = sum(by_dev[d]["energy_j"] for d in primary)
        dur = m1 - m0
        runtime = sum(r.runtime_s for r in results) / n_inner
        prefill = sum(r.prefill_s for r in results) / n_inner
        energy = window_j / n_inner
        peaks = [by_dev[d]["peak_w"] for d in primary if by_dev[d]["peak_w"] is not None]
        power_rows = frame.filter(pl.col("watts").is_not_null() & pl.col("device").is_in(primary)
                                  & (pl.col("t_mono") >= m0) & (pl.col("t_mono") <= m1))
        update = max((s.update_period_s for s in samplers), default=0.1)
        devices = list(by_dev)
        prepare_j, prepare_device_j = prepare_energy(e, tid, primary, devices)
        flags = assess_window(frame, m0, m1, primary, {d: by_dev[d]["energy_j"] for d in primary}, self._meters)
        if w.compiled:
            flags.append(compiled_flag(primary, first, w.compiled))
        quality, quality_note = quality_label(flags + self._idle_flags)
        rec = TrialRecord(
            trial_id=tid, sweep_id=self.sweep_id, cell_id=c.cell_id, repeat=t.repeat, warmup=t.warmup,
            tin=c.tin, tout=c.tout, batch=c.batch, tin_actual=results[0].tin_actual, tout_actual=results[0].tout_actual,
            runtime_s=runtime, prefill_s=prefill, decode_s=runtime - prefill,
            energy_j=energy, energy_net_j=energy - idle.watts * runtime, idle_w=idle.watts, energy_source=source,
            mean_w=window_j / dur if dur > 0 else None, peak_w=sum(peaks) if peaks else None,
            n_samples=power_rows.height, n_inner=n_inner, short_window=dur < 3 * update,
            device_energy_j=[by_dev[d]["energy_j"] / n_inner for d in devices], devices=devices,
            t_start=w0, t_end=w1, t_start_mono=m0, t_end_mono=m1, node=self.node, node_type=spec.node_type,
            system=system, device=device_name, n_gpus=self.n_gpus, model=spec.model, backend=spec.backend,
            dtype=dtype, versions=versions, session=self.session, quality=quality, quality_note=quality_note,
            prepare_s=sum(b - a for a, b in spans), prepare_compiled=compiles,
            prepare_j=prepare_j, prepare_device_j=prepare_device_j,
            prepare_evictions=None if evicted0 is None else backend.evictions - evicted0,
        )
        return rec, frame

    def _window(self, t: PlannedTrial, backend, prompt, samplers: list[PowerSampler]) -> _Window:
        """One measurement window (after the cooldown): back-to-back generations until it lasts
        ``min_window_s``, counters read at both edges, the compilations torch did inside it counted."""
        spec, c = self.spec, t.cell
        if spec.cooldown_s > 0:
            time.sleep(spec.cooldown_s)
        min_window = spec.min_window_s if spec.min_window_s is not None else auto_min_window(samplers)
        compiled0 = compile_count()  # outside the counter edges: a first call may import torch._dynamo
        c0 = self._read_counters(samplers)
        w0, m0 = now()
        results = []
        while True:  # back-to-back generations until the window lasts min_window_s
            results.append(backend.generate(prompt, c.tout))
            if time.monotonic() - m0 >= min_window or len(results) >= MAX_INNER:
                break
        w1, m1 = now()
        c1 = self._read_counters(samplers)
        compiled = compile_count() - compiled0
        self._settle(samplers)
        self._check_meters(samplers)
        for r in results:
            if r.tin_actual != c.tin or r.tout_actual != c.tout or r.batch != c.batch:
                raise ProfileError(
                    f"trial {t.key}: asked tin={c.tin} tout={c.tout} batch={c.batch}, got tin={r.tin_actual} "
                    f"tout={r.tout_actual} batch={r.batch}; the sweep stops rather than store a wrong count"
                )
        return _Window(results, c0 + c1, w0, m0, w1, m1, compiled)


# ---- helpers ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Window:
    """One measurement window: its generations, counter reads at its edges, wall and monotonic edges, and
    the compilations torch did inside it."""

    results: list
    edges: list[PowerSample]
    w0: float
    m0: float
    w1: float
    m1: float
    compiled: CompileCount


COMPILED_CODE = "compiled"  # the quality code of compiled_flag (the profiler's, not a meter's)


def compiled_flag(primary: Sequence[str], first: CompileCount, again: CompileCount) -> Flag:
    """Flag ``compiled``: torch compiled during a trial's window and again during the window measured in
    its place (its time and energy include compilation: kept as measured, left out of fits)."""
    return Flag(COMPILED_CODE, "+".join(primary), f"torch compiled during the window ({first.describe()}) and again "
                                                f"when it was measured again ({again.describe()}): time and energy "
                                                "include compilation")


def _check_loader_deps(src: Any) -> None:
    """A checkpoint directory's weights load through transformers' ``device_map``, which needs the
    ``accelerate`` package: refused here, before the store and idle samples (issue 16: a traceback
    after both were written)."""
    import importlib.util

    if src.checkpoint and src.has_weights and importlib.util.find_spec("accelerate") is None:
        raise UserError(f"{src.name}: loading a checkpoint's weights needs the 'accelerate' package, which is not "
                        "installed (.venv/bin/pip install accelerate)")


def auto_min_window(samplers: list[PowerSampler]) -> float:
    """Shortest measurement window: 20 meter update periods (2 s on NVML's 100 ms), at least 0.5 s.
    Measured on an H100: counter and integrated power agree to ~0.3% (median) over windows > 5 s,
    ~1% over 1-5 s and ~4% under 1 s (docs/measurement.md)."""
    periods = [s.update_period_s for s in samplers]
    return max(0.5, 20 * max(periods, default=0.0))


def source_label(samplers: list[PowerSampler], primary: list[str]) -> str:
    labels = []
    for s in samplers:
        if any(d.device in primary for d in s.devices()):
            lab = s.source
            if s.has_counter and s.source.startswith("nvml"):
                lab = "nvml-counter"
            labels.append(lab)
    return "+".join(dict.fromkeys(labels)) or "none"


