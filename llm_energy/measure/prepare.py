"""A trial's ``backend.prepare`` (compilation, CUDA-graph capture, warm-up generations), run outside its measurement
window: whether it will compile, and its span and energy, measured as a window's (counters read at its edges,
integrated by :func:`~llm_energy.measure.integrate.window_energy`), so that ``check``'s session closure can
count it rather than take its time for idle (H200, llama-2-7b, batch 256: ~600 W)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import polars as pl

from llm_energy.trials.schema import PowerSample


def _will_compile(backend: Any, cell: Any) -> bool:
    """Whether ``backend.prepare`` for ``cell`` compiles (the static backend: once per bucket x batch; under
    ``dynbatch`` once per bucket for the batches >= 2, ``StaticBackend.will_compile``)."""
    will = getattr(backend, "will_compile", None)
    if callable(will):
        return bool(will(cell.batch, cell.tin, cell.tout))
    caches = getattr(backend, "_caches", None)
    if caches is None:
        return False
    from llm_energy.measure.inference.backends import bucket_len

    return (cell.batch, bucket_len(cell.tin + cell.tout)) not in caches


def run_prepare(backend: Any, cell: Any,
                read_counters: Callable[[], list[PowerSample]]) -> tuple[list[PowerSample], tuple[float, float]]:
    """``backend.prepare`` for ``cell``, timed apart from the window on the samples' monotonic clock: the counter
    readings at its two edges (so the counter can be interpolated there) and its (start, end)."""
    edges = read_counters()
    p0 = time.monotonic()
    backend.prepare(cell.batch, cell.tin, cell.tout)
    p1 = time.monotonic()
    return edges + read_counters(), (p0, p1)


def prepare_energy(e: pl.DataFrame, window_id: str, primary: Sequence[str],
                   devices: Sequence[str]) -> tuple[float, list[float]]:
    """From the profiler's per-window energies ``e`` (the measured window's rows ``window_id``, the others
    prepare's spans), prepare's energy summed over ``primary`` (as ``energy_j``) and per device of ``devices``
    (as ``device_energy_j``)."""
    spans = e.filter(pl.col("trial_id") != window_id).group_by("device").agg(pl.col("energy_j").sum())
    per = dict(zip(spans["device"].to_list(), spans["energy_j"].to_list()))
    return sum(per.get(d, 0.0) for d in primary), [per.get(d, 0.0) for d in devices]
