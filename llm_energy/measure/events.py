"""What a profiler yields: a sweep's start, chunks of power samples, finished trials and progress ticks (the stream a Ray actor forwards to its driver unchanged)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import polars as pl

from llm_energy.errors import UserError
from llm_energy.trials.schema import SweepInfo, TrialRecord


class ProfileError(UserError):
    """A measurement that cannot be trusted (e.g. a token-count mismatch); stops the sweep cleanly."""


# ---- events ---------------------------------------------------------------------------------
@dataclass
class SweepStarted:
    info: SweepInfo


@dataclass
class SamplesChunk:
    frame: pl.DataFrame  # SAMPLE_SCHEMA rows in time order


@dataclass
class TrialDone:
    record: TrialRecord
    done: int
    total: int


@dataclass
class ProgressTick:
    node: str
    node_type: str
    state: str  # loading | idle | running | done | failed
    done: int
    total: int
    cell: str = ""
    watts_now: float | None = None
    joules_so_far: float = 0.0
    eta_s: float | None = None
    cells_done: int = 0  # cells whose every trial (warm-ups and repeats) is done; `done`/`total` count trials
    cells_total: int = 0
    model: str = ""
    backend: str = ""
    device: str = ""
    energy_source: str = ""
    message: str = ""


ProfileEvent = Union[SweepStarted, SamplesChunk, TrialDone, ProgressTick]
