"""Sweep designs: which (tin, tout, batch) cells to measure, how often, and in what order.

A design is cells x repeats plus warm-up trials (stored, flagged ``warmup=True``, excluded from fits).
Cell ids are stable (``i{tin}-o{tout}-b{batch}``), so a rerun or a different design over the same
cells skips what is already in the store.

Run order: all warm-ups first, then one pass over every cell per repeat, each pass shuffled with its
own seed. Thermal drift therefore lines up with neither a factor nor the repeat index within a cell,
and a sweep cut short has every cell at least once before any cell has two repeats.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from llm_energy.errors import UserError, bad_value

DESIGN_KINDS = ("grid", "one-factor", "random-log")
MAX_TRIALS = 1_000_000  # trials in one sweep (at the shortest window, weeks of measuring)
PAPER_TOKENS = tuple(2**k for k in range(3, 12))  # 8, 16, ..., 2048: the paper's 9x9 grid


@dataclass(frozen=True, slots=True, order=True)
class Cell:
    """One design point: ``batch`` sequences of ``tin`` prompt tokens and ``tout`` new tokens each."""

    tin: int
    tout: int
    batch: int = 1

    @property
    def cell_id(self) -> str:
        return f"i{self.tin}-o{self.tout}-b{self.batch}"


@dataclass(frozen=True, slots=True)
class PlannedTrial:
    cell: Cell
    repeat: int  # 0-based over the cell's trials, warm-ups first
    warmup: bool

    @property
    def key(self) -> str:
        return f"{self.cell.cell_id}/r{self.repeat}"


@dataclass(frozen=True, slots=True)
class SweepDesign:
    kind: str
    cells: tuple[Cell, ...]
    repeats: int = 3
    warmups: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DESIGN_KINDS:
            raise bad_value("design", self.kind, f"unknown design; choose one of {', '.join(DESIGN_KINDS)}")
        if self.repeats < 1:
            raise bad_value("repeats", self.repeats, "must be >= 1")
        if self.warmups < 0:
            raise bad_value("warmups", self.warmups, "must be >= 0")
        if not self.cells:
            raise UserError("design has no cells")
        n = len(self.cells) * (self.warmups + self.repeats)
        if n > MAX_TRIALS:  # refused before the trial list is built (issue 16: 1e8 repeats allocated for minutes)
            raise bad_value("repeats", self.repeats, f"{len(self.cells)} cells x {self.warmups + self.repeats} "
                            f"trials each = {n} trials; a sweep holds at most {MAX_TRIALS}")
        for c in self.cells:
            for name in ("tin", "tout", "batch"):
                v = getattr(c, name)
                if not isinstance(v, int) or v < 1:
                    raise bad_value(name, v, "must be a positive integer")

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def grid(
        cls,
        tins: Iterable[int],
        touts: Iterable[int],
        batches: Iterable[int] = (1,),
        repeats: int = 3,
        warmups: int = 1,
        seed: int = 0,
    ) -> "SweepDesign":
        """Full factorial grid (the paper's: tin, tout in 8, 16, ..., 2048)."""
        cells = tuple(Cell(i, o, b) for b in _uniq(batches) for i in _uniq(tins) for o in _uniq(touts))
        return cls("grid", cells, repeats, warmups, seed)

    @classmethod
    def one_factor(
        cls,
        tins: Iterable[int],
        touts: Iterable[int],
        batches: Iterable[int] = (1,),
        *,
        base_tin: int = 32,
        base_tout: int = 32,
        base_batch: int = 1,
        repeats: int = 3,
        warmups: int = 1,
        seed: int = 0,
    ) -> "SweepDesign":
        """One factor at a time around a base point (like the paper's input and output sweeps)."""
        cells = {Cell(i, base_tout, base_batch) for i in _uniq(tins)}
        cells |= {Cell(base_tin, o, base_batch) for o in _uniq(touts)}
        cells |= {Cell(base_tin, base_tout, b) for b in _uniq(batches)}
        return cls("one-factor", tuple(sorted(cells)), repeats, warmups, seed)

    @classmethod
    def random_log(
        cls,
        n: int,
        tin_range: tuple[int, int] = (8, 2048),
        tout_range: tuple[int, int] = (8, 2048),
        batches: Iterable[int] = (1,),
        repeats: int = 1,
        warmups: int = 1,
        seed: int = 0,
    ) -> "SweepDesign":
        """Space-filling design: a Latin hypercube in (log tin, log tout), per batch size.

        Each of the n strata of log tin and of log tout holds exactly one point; tokens are rounded
        to integers and duplicates dropped.
        """
        if n < 1:
            raise bad_value("n", n, "must be >= 1")
        for name, (lo, hi) in (("tin_range", tin_range), ("tout_range", tout_range)):
            if lo < 1 or hi < lo:
                raise bad_value(name, (lo, hi), "need 1 <= low <= high")
        rng = random.Random(seed)
        cells: set[Cell] = set()
        for b in _uniq(batches):
            u = _lhs_column(n, rng)
            v = _lhs_column(n, rng)
            for a, c in zip(u, v):
                cells.add(Cell(_log_interp(tin_range, a), _log_interp(tout_range, c), b))
        return cls("random-log", tuple(sorted(cells)), repeats, warmups, seed)

    # ---- run order ---------------------------------------------------------------------------
    def trials(self) -> list[PlannedTrial]:
        """Every trial of the design in run order (see the module docstring)."""
        out: list[PlannedTrial] = []
        for p in range(self.warmups + self.repeats):
            order = list(self.cells)
            random.Random(f"{self.seed}/{p}").shuffle(order)
            out.extend(PlannedTrial(c, p, p < self.warmups) for c in order)
        return out

    @property
    def n_trials(self) -> int:
        return len(self.cells) * (self.warmups + self.repeats)

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cells": [[c.tin, c.tout, c.batch] for c in self.cells],
            "repeats": self.repeats,
            "warmups": self.warmups,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepDesign":
        try:
            cells = tuple(Cell(int(i), int(o), int(b)) for i, o, b in d["cells"])
            return cls(str(d["kind"]), cells, int(d["repeats"]), int(d["warmups"]), int(d["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"design: malformed design record ({e})") from None


def _uniq(xs: Iterable[int]) -> list[int]:
    seen: list[int] = []
    for x in xs:
        if x not in seen:
            seen.append(x)
    return seen


def _lhs_column(n: int, rng: random.Random) -> list[float]:
    col = [(k + rng.random()) / n for k in range(n)]
    rng.shuffle(col)
    return col


def _log_interp(rng_: tuple[int, int], u: float) -> int:
    lo, hi = rng_
    return max(lo, min(hi, int(round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))))))


def parse_int_list(text: str, *, name: str) -> list[int]:
    """Parse a CLI list like ``8,16,32`` or a power-of-two range ``8..2048`` into positive ints."""
    text = text.strip()
    if ".." in text and "," not in text:
        lo_s, hi_s = text.split("..", 1)
        lo, hi = _parse_pos_int(lo_s, name), _parse_pos_int(hi_s, name)
        if hi < lo:
            raise bad_value(f"--{name}", text, "range end is below its start")
        out, v = [], lo
        while v <= hi:
            out.append(v)
            v *= 2
        return out
    parts = [p for p in text.split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise bad_value(f"--{name}", text, "expected a comma-separated list of positive integers")
    return _uniq(_parse_pos_int(p, name, whole=text) for p in parts)


def _parse_pos_int(s: str, name: str, whole: str | None = None) -> int:
    s = s.strip()
    try:
        v = int(s)
    except ValueError:
        raise bad_value(f"--{name}", whole or s, f"{s!r} is not an integer") from None
    if v < 1:
        raise bad_value(f"--{name}", whole or s, f"{v} is not a positive token/batch count")
    return v


def design_from_lists(
    kind: str,
    tins: Sequence[int],
    touts: Sequence[int],
    batches: Sequence[int],
    *,
    repeats: int,
    warmups: int,
    seed: int,
    n_random: int = 16,
) -> SweepDesign:
    """The design a CLI invocation asks for."""
    if kind == "grid":
        return SweepDesign.grid(tins, touts, batches, repeats, warmups, seed)
    if kind == "one-factor":
        return SweepDesign.one_factor(
            tins, touts, batches, base_tin=min(tins), base_tout=min(touts), base_batch=min(batches),
            repeats=repeats, warmups=warmups, seed=seed,
        )
    if kind == "random-log":
        return SweepDesign.random_log(
            n_random, (min(tins), max(tins)), (min(touts), max(touts)), batches, repeats, warmups, seed
        )
    raise bad_value("--design", kind, f"unknown design; choose one of {', '.join(DESIGN_KINDS)}")
