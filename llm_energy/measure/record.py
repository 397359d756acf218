"""Writing a profiler's event stream to a trial store, keeping its invariant: a trial is committed only after its samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import polars as pl

from llm_energy.measure.events import (
    ProfileEvent,
    SamplesChunk,
    SweepStarted,
    TrialDone,
)
from llm_energy.trials.store import TrialStore


@dataclass
class RecordSummary:
    trials_written: int = 0
    samples_written: int = 0
    sweeps: list[str] = field(default_factory=list)


class StoreWriter:
    """Writes profiler events to a store in order, keeping its invariant: a trial is committed only
    after its samples.

    With ``flush_rows=0`` each samples chunk is written as it arrives (the single-node profiler,
    :func:`record_events`). With a larger ``flush_rows`` samples are buffered across chunks, and
    across the streams of many actors, into one Parquet file per flush instead of one per chunk (the
    cluster driver); they are still flushed before every trial, after ``flush_s`` without one, and
    by :meth:`flush` at the end."""

    def __init__(self, store: TrialStore, flush_rows: int = 0, flush_s: float = 2.0) -> None:
        self.store = store
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.summary = RecordSummary()
        self._buf: list[pl.DataFrame] = []
        self._rows = 0
        self._last = time.monotonic()

    def add(self, events: Iterable[Any], on_event: Callable[[Any], None] | None = None) -> None:
        """Write ``events`` (other kinds pass through to ``on_event`` only), calling ``on_event``
        after each one is written."""
        for ev in events:
            if isinstance(ev, SamplesChunk):
                if ev.frame.height:
                    self._buf.append(ev.frame)
                    self._rows += ev.frame.height
                    if self._rows >= self.flush_rows:
                        self.flush()
            elif isinstance(ev, TrialDone):
                self.flush()
                self.summary.trials_written += self.store.append_trials([ev.record])
            elif isinstance(ev, SweepStarted):
                self.store.register_sweep(ev.info.sweep_id, ev.info)
                self.summary.sweeps.append(ev.info.sweep_id)
            if on_event is not None:
                on_event(ev)
        if self._buf and time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            frame = pl.concat(self._buf, how="vertical_relaxed") if len(self._buf) > 1 else self._buf[0]
            self.summary.samples_written += self.store.append_samples(frame)
            self._buf, self._rows = [], 0
        self._last = time.monotonic()


def record_events(
    events: Iterable[ProfileEvent], store: TrialStore, on_event: Callable[[ProfileEvent], None] | None = None
) -> RecordSummary:
    """Write a profiler's events to a store in order (samples before the trial they belong to)."""
    writer = StoreWriter(store)
    writer.add(events, on_event)
    return writer.summary
