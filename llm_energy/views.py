"""Terminal views: live sweep progress (rich) and trial tables.

:class:`SweepView` shows one row per node from :class:`~llm_energy.profiler.ProgressTick` events
(cells done/total, ETA, watts now, joules so far, state). Without a TTY it degrades to plain log
lines (one per state change and at most one progress line every ``log_every_s``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import polars as pl
from rich.console import Console
from rich.live import Live
from rich.table import Table

from llm_energy.profiler import ProgressTick
from llm_energy.schema import SOURCE_ESTIMATE


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_joules(j: float | None) -> str:
    if j is None:
        return "-"
    for unit, k in (("MJ", 1e6), ("kJ", 1e3)):
        if abs(j) >= k:
            return f"{j / k:.2f} {unit}"
    return f"{j:.1f} J"


class SweepView:
    """Live per-node progress; use as a context manager and feed it ``update(tick)``."""

    def __init__(self, console: Console | None = None, *, live: bool | None = None, log_every_s: float = 10.0,
                 title: str = "llm-energy sweep") -> None:
        self.console = console or Console(stderr=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.rows: dict[str, ProgressTick] = {}
        self.title = title
        self.log_every_s = log_every_s
        self._last_log: dict[str, float] = {}
        self._last_state: dict[str, str] = {}
        self._live: Live | None = None

    def __enter__(self) -> "SweepView":
        if self.live_enabled:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def update(self, tick: ProgressTick) -> None:
        key = tick.node  # one row per node (an actor per GPU reports as "node/gpuN")
        self.rows[key] = tick
        if self._live is not None:
            self._live.update(self.render())
            return
        now = time.monotonic()
        changed = self._last_state.get(key) != tick.state
        if changed or now - self._last_log.get(key, 0.0) >= self.log_every_s:
            self._last_state[key] = tick.state
            self._last_log[key] = now
            self.console.print(self._line(tick), highlight=False)

    def _line(self, t: ProgressTick) -> str:
        w = f"{t.watts_now:.0f} W" if t.watts_now is not None else "- W"
        est = " (estimate)" if t.energy_source == SOURCE_ESTIMATE else ""
        msg = f" {t.message}" if t.message else ""
        return (f"[{t.node_type}] {t.node} {t.state} {t.done}/{t.total} cell={t.cell or '-'} {w}{est} "
                f"{fmt_joules(t.joules_so_far)} eta={fmt_duration(t.eta_s)}{msg}")

    def render(self) -> Table:
        tab = Table(title=self.title, expand=False)
        for col in ("node type", "node", "device", "model", "backend", "cells", "watts now", "energy", "ETA", "state"):
            tab.add_column(col, justify="right" if col in ("cells", "watts now", "energy", "ETA") else "left")
        tot_done = tot_all = 0
        tot_j = 0.0
        estimate = False
        for t in self.rows.values():
            tot_done += t.done
            tot_all += t.total
            tot_j += t.joules_so_far
            estimate |= t.energy_source == SOURCE_ESTIMATE
            w = f"{t.watts_now:.0f} W" if t.watts_now is not None else "-"
            if t.energy_source == SOURCE_ESTIMATE and t.watts_now is not None:
                w += "*"
            state = {"failed": "[red]failed[/]", "done": "[green]done[/]"}.get(t.state, t.state)
            if t.message:
                state += f" ({t.message})"
            tab.add_row(t.node_type, t.node, t.device or "-", t.model, t.backend, f"{t.done}/{t.total}", w,
                        fmt_joules(t.joules_so_far), fmt_duration(t.eta_s), state)
        if len(self.rows) > 1:
            tab.add_row("[b]total[/]", "", "", "", "", f"{tot_done}/{tot_all}", "", fmt_joules(tot_j), "", "")
        if estimate:
            tab.caption = "* estimate: CPU utilisation x TDP, no power meter on this node"
        return tab


def trials_table(df: pl.DataFrame, title: str = "trials") -> Table:
    tab = Table(title=title)
    cols = ["cell_id", "rep", "tin", "tout", "batch", "runtime s", "prefill ms", "energy J", "net J", "J/token",
            "ms/step", "source", "model", "backend", "device"]
    for c in cols:
        tab.add_column(c, justify="left" if c in ("cell_id", "source", "model", "backend", "device") else "right")
    for r in df.iter_rows(named=True):
        toks = max(1, r["tout"] * r["batch"])
        step_ms = 1e3 * (r["decode_s"] or 0.0) / max(1, r["tout"] - 1) if r["tout"] > 1 else float("nan")
        rep = f"{r['repeat']}{'w' if r['warmup'] else ''}"
        tab.add_row(r["cell_id"], rep, str(r["tin"]), str(r["tout"]), str(r["batch"]), f"{r['runtime_s']:.3f}",
                    f"{1e3 * r['prefill_s']:.1f}", f"{r['energy_j']:.2f}", f"{r['energy_net_j']:.2f}",
                    f"{r['energy_j'] / toks:.4f}", f"{step_ms:.2f}", r["energy_source"], r["model"], r["backend"],
                    r["device"])
    return tab


def stdout_console() -> Console:
    return Console(file=sys.stdout)
