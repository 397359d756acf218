"""A run's wall-clock time budget (``llm-energy profile --time-budget-s``): before each trial the profiler
predicts how long it will take and defers one that would not finish before the budget's end; when none
of the trials left fits, the run stops as an interrupted run does (every committed trial stays) and the
next run measures the deferred ones.

A trial's predicted seconds, from the trials of the same sweep measured so far (the store's committed
ones on resume and this run's; :class:`TrialPredictor`):

* one generation = prefill (the first token) + (tout - 1) decode steps, each the larger of a least-squares line
  (slope >= 0) and the largest value measured at a size no larger (prefill by ``batch x tin``, a decode
  step by ``batch x (tin + tout)``, the cache it reads at its end), times ``SAFETY``;
* the window: that generation, repeated until the window lasts ``min_window_s`` (``n_inner``), so at most
  ``min_window_s`` + one generation;
* ``backend.prepare``: the largest compile measured (``prepare_s`` of a trial that compiled) when the
  trial needs a new static-cache bucket, else the largest other prepare; none before one is measured;
* the fixed overhead around them (cooldown, counter settle, energy integration, the store's writes):
  the largest this run measured, else cooldown + ``OVERHEAD_S``.

With no trial measured yet nothing can be predicted: the trial runs, unless the budget is spent. The
budget is kept out of the sweep's identity (spec.py): a run with it resumes a store made without it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

SAFETY = 1.2  # on the generation's predicted seconds: eager decode steps vary ~2x between cells (H200)
OVERHEAD_S = 1.0  # a trial's fixed overhead before one is measured (H200 eager grid: ~1 s between windows)


def secs(x: float) -> str:
    """Seconds as a message shows them: ``105 s``, ``2.4 s``."""
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


class BudgetSpent(Exception):
    """The run's time budget holds none of the trials left: it stops, the next run resumes them."""

    def __init__(self, deferred: int, next_s: float | None, left_s: float, budget_s: float,
                 run_s: float | None = None) -> None:
        self.deferred, self.next_s, self.left_s, self.budget_s = deferred, next_s, left_s, budget_s
        self.run_s = run_s  # the time left when the run's first trial could start (after loading, idle)
        super().__init__(self.describe())

    def describe(self, left_trials: int | None = None, total: int | None = None) -> str:
        """``time budget: 12 of 81 trials left for the next run (the next would take ~105 s, 40 s left)``."""
        n = self.deferred if left_trials is None else left_trials
        count = f"{n} of {total}" if total is not None else str(n)
        if self.next_s is None:
            why = f"budget spent, {secs(-self.left_s)} over" if self.left_s < 0 else f"{secs(self.left_s)} left"
        else:
            why = f"the next would take ~{secs(self.next_s)}, {secs(max(self.left_s, 0.0))} left"
            if self.next_s > self.budget_s:
                why += f"; more than a whole run's budget of {secs(self.budget_s)} holds"
            elif self.run_s is not None and self.next_s > self.run_s:  # the load's time is every run's too
                why += (f"; more than the {secs(self.run_s)} this run had left at its first trial: a rerun with "
                        "this budget will likely defer it again")
        return f"time budget: {count} trials left for the next run ({why})"


@dataclass
class TimeBudget:
    """``seconds`` of wall clock from ``start`` (default: when it is made, i.e. the command's start)."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    start: float | None = None

    def __post_init__(self) -> None:
        if self.start is None:
            self.start = self.clock()

    def left(self) -> float:
        return self.start + self.seconds - self.clock()


@dataclass(frozen=True, slots=True)
class TrialCost:
    """What one measured trial cost: per generation its prefill and decode seconds; its prepare seconds
    (``compiled``: a new bucket's compile); ``overhead_s`` its wall time outside prepare and window (this
    run's trials only)."""

    batch: int
    tin: int
    tout: int
    prefill_s: float
    decode_s: float
    prepare_s: float | None = None
    compiled: bool = False
    overhead_s: float | None = None

    @classmethod
    def from_row(cls, r: Any, overhead_s: float | None = None) -> "TrialCost | None":
        """From a store's trial row (a dict) or a :class:`~llm_energy.trials.schema.TrialRecord`; None
        for a row without prefill and decode seconds (an imported trial)."""
        get = r.get if isinstance(r, dict) else lambda k: getattr(r, k, None)
        if get("prefill_s") is None or get("decode_s") is None:
            return None
        prep = get("prepare_s")
        prep = float(prep) if prep is not None and math.isfinite(prep) else None
        return cls(int(get("batch")), int(get("tin")), int(get("tout")), float(get("prefill_s")),
                   float(get("decode_s")), prep, bool(get("prepare_compiled") or False), overhead_s)


def upper_estimate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """A conservative y at ``x``: the larger of a least-squares line (slope clamped at >= 0) and the
    largest y measured at an x no larger (or, below every x measured, the y at the smallest)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((a - mx) ** 2 for a in xs)
    slope = max(0.0, sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / var) if var > 0 else 0.0
    line = my + slope * (x - mx)
    below = [b for a, b in zip(xs, ys) if a <= x]
    floor = max(below) if below else ys[min(range(n), key=lambda i: xs[i])]
    return max(line, floor)


@dataclass
class TrialPredictor:
    """Predicted seconds of a trial from the trials measured so far (see the module docstring)."""

    min_window_s: float
    overhead_s: float = OVERHEAD_S
    safety: float = SAFETY
    costs: list[TrialCost] = field(default_factory=list)

    def add(self, costs: Iterable[TrialCost | None]) -> None:
        self.costs.extend(c for c in costs if c is not None and c.tout > 0 and math.isfinite(c.decode_s)
                          and math.isfinite(c.prefill_s))

    def generation_s(self, batch: int, tin: int, tout: int) -> float:
        """One generation: the prefill (its first token) and tout - 1 decode steps, times the safety factor."""
        cs = self.costs
        prefill = upper_estimate([c.batch * c.tin for c in cs], [c.prefill_s for c in cs], batch * tin)
        ds = [c for c in cs if c.tout > 1] or cs  # only one-token trials: a step costs as much as their prefill
        step = upper_estimate([c.batch * (c.tin + c.tout) for c in ds],
                              [c.decode_s / (c.tout - 1) if c.tout > 1 else c.prefill_s for c in ds],
                              batch * (tin + tout))
        return self.safety * max(0.0, prefill + (tout - 1) * step)

    def predict(self, batch: int, tin: int, tout: int, compiles: bool = False) -> float | None:
        """Seconds from this trial's start to the next's, or None with nothing measured yet."""
        if not self.costs:
            return None
        gen = self.generation_s(batch, tin, tout)
        window = gen if gen >= self.min_window_s else self.min_window_s + gen
        prep = [c.prepare_s for c in self.costs if c.prepare_s is not None and c.compiled == compiles]
        over = [c.overhead_s for c in self.costs if c.overhead_s is not None]
        return max(prep, default=0.0) + window + max(over, default=self.overhead_s)


class BudgetGate:
    """The profiler's check before each trial: admit it if its prediction fits the time left, else
    defer it; and after it, what it cost (its overhead timed up to the next check)."""

    def __init__(self, budget: TimeBudget, predictor: TrialPredictor) -> None:
        self.budget, self.predictor = budget, predictor
        self.deferred: list[tuple[Any, float | None]] = []  # (trial, its prediction) in design order
        self._pending: tuple[Any, float] | None = None  # the last trial admitted and when
        self.first_left: float | None = None  # the time left at the first check (after loading, idle)

    @classmethod
    def for_run(cls, budget: TimeBudget, min_window_s: float, fixed_s: float, history: Iterable[Any]) -> "BudgetGate":
        """The gate of a run whose windows last at least ``min_window_s`` and whose trials wait ``fixed_s``
        (cooldown, counter settle) each, its predictor fed the sweep's measured trials ``history``."""
        predictor = TrialPredictor(min_window_s, overhead_s=fixed_s + OVERHEAD_S)
        predictor.add(TrialCost.from_row(r) for r in history)
        return cls(budget, predictor)

    def admit(self, trial: Any, compiles: bool) -> bool:
        self._close_pending()
        c = trial.cell
        need = self.predictor.predict(c.batch, c.tin, c.tout, compiles)
        left = self.budget.left()
        self.first_left = left if self.first_left is None else self.first_left
        if left <= 0 or (need is not None and need > left):
            self.deferred.append((trial, need))
            return False
        self._pending = (None, self.budget.clock())
        return True

    def measured(self, record: Any) -> None:
        """The record of the trial just admitted; its overhead is timed at the next check."""
        if self._pending is not None:
            self._pending = (record, self._pending[1])

    def _close_pending(self) -> None:
        if self._pending is None or self._pending[0] is None:
            self._pending = None
            return
        rec, t0 = self._pending
        self._pending = None
        window = rec.t_end_mono - rec.t_start_mono
        over = max(0.0, self.budget.clock() - t0 - (rec.prepare_s or 0.0) - window)
        self.predictor.add([TrialCost.from_row(rec, over)])

    def message(self, trial: Any, need: float | None) -> str:
        est = f"~{secs(need)}" if need is not None else "budget spent"
        return f"deferred {trial.key} ({est}, {secs(max(self.budget.left(), 0.0))} left)"

    def spent(self) -> BudgetSpent:
        return BudgetSpent(len(self.deferred), self.deferred[0][1] if self.deferred else None, self.budget.left(),
                           self.budget.seconds, self.first_left)
