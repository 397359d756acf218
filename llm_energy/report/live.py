"""The live sweep view (rich), and the progress file that mirrors it to another process.

:class:`SweepView` shows one row per (node, model) sweep, in the order they started, from :class:`~llm_energy.measure.profiler.ProgressTick` events
(cells and trials done/total, ETA, watts now, joules so far, state). Without a TTY it degrades to plain log
lines (one per state change and at most one progress line every ``log_every_s``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from llm_energy.measure.events import ProgressTick
from llm_energy.report.tables import fmt_duration, fmt_joules
from llm_energy.trials.schema import SOURCE_ESTIMATE


class SweepView:
    """Live per-node progress; use as a context manager and feed it ``update(tick)``.

    One row per (node or GPU group, model) sweep, kept when the node moves on to its next model; the
    totals add up those rows (cells and trials of every sweep, including trials an earlier run
    committed). A tick that carries no counts (a failure report) keeps the counts its sweep had. With ``mirror`` set, a JSON snapshot of the ticks is written there
    (atomically, at most every ``mirror_every_s``) so another process can show the same view
    (``llm-energy watch``, ``make demo``)."""

    def __init__(self, console: Console | None = None, *, live: bool | None = None, log_every_s: float = 10.0,
                 title: str = "llm-energy sweep", mirror: str | Path | None = None, mirror_every_s: float = 0.5) -> None:
        self.console = console or Console(stderr=True)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.rows: dict[str, ProgressTick] = {}  # node -> its latest tick
        self.sweeps: dict[tuple[str, str], ProgressTick] = {}  # (node, model) -> latest tick with progress
        self.title = title
        self.log_every_s = log_every_s
        self.mirror = Path(mirror) if mirror else None
        self.mirror_every_s = mirror_every_s
        self._mirrored = 0.0
        self._last_log: dict[str, float] = {}
        self._last_state: dict[str, str] = {}
        self._live: Live | None = None

    def __enter__(self) -> "SweepView":
        if self.live_enabled:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._write_mirror(force=True)
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def update(self, tick: ProgressTick) -> None:
        key = tick.node
        if not tick.model and key in self.rows:  # a report that names no model: the node's current one
            tick = dataclasses.replace(tick, model=self.rows[key].model, backend=self.rows[key].backend)
        prev = self.sweeps.get((key, tick.model))
        if prev is not None and tick.total == 0 and prev.total > 0:
            # a failure report carries no progress: keep what the sweep had reached
            tick = dataclasses.replace(prev, state=tick.state, message=tick.message, watts_now=None, eta_s=None)
        self.rows[key] = tick
        self.sweeps[(key, tick.model)] = tick
        self._write_mirror()
        if self._live is not None:
            self._live.update(self.render())
            return
        now = time.monotonic()
        changed = self._last_state.get(key) != tick.state
        if changed or now - self._last_log.get(key, 0.0) >= self.log_every_s:
            self._last_state[key] = tick.state
            self._last_log[key] = now
            self.console.print(self._line(tick), highlight=False)

    def _write_mirror(self, force: bool = False) -> None:
        if self.mirror is None or not (force or time.monotonic() - self._mirrored >= self.mirror_every_s):
            return
        self._mirrored = time.monotonic()
        write_progress(self.mirror, self.title, list(self.rows.values()), list(self.sweeps.values()))

    def _line(self, t: ProgressTick) -> str:
        w = f"{t.watts_now:.0f} W" if t.watts_now is not None else "- W"
        est = " (estimate)" if t.energy_source == SOURCE_ESTIMATE else ""
        msg = f" {t.message}" if t.message else ""
        return (f"[{t.node_type}] {t.node} {t.model} {t.state} cells {t.cells_done}/{t.cells_total} "
                f"trials {t.done}/{t.total} cell={t.cell or '-'} {w}{est} "
                f"{fmt_joules(t.joules_so_far)} eta={fmt_duration(t.eta_s)}{msg}")

    def render(self) -> Table:
        tab = Table(title=self.title, expand=False)
        num = ("cells", "trials", "watts now", "energy", "ETA")
        for col in ("node type", "node", "device", "model", "backend", *num, "state"):
            tab.add_column(col, justify="right" if col in num else "left")
        estimate = False
        for t in self.sweeps.values():
            estimate |= t.energy_source == SOURCE_ESTIMATE
            w = f"{t.watts_now:.0f} W" if t.watts_now is not None else "-"
            if t.energy_source == SOURCE_ESTIMATE and t.watts_now is not None:
                w += "*"
            state = {"failed": "[red]failed[/]", "done": "[green]done[/]"}.get(t.state, t.state)
            if t.message:
                state += f" ({t.message})"
            tab.add_row(t.node_type, t.node, t.device or "-", t.model, t.backend, f"{t.cells_done}/{t.cells_total}",
                        f"{t.done}/{t.total}", w, fmt_joules(t.joules_so_far), fmt_duration(t.eta_s), state)
        if self.sweeps:
            done = sum(t.done for t in self.sweeps.values())
            total = sum(t.total for t in self.sweeps.values())
            joules = sum(t.joules_so_far for t in self.sweeps.values())
            running = [t for t in self.sweeps.values() if t.state not in ("done", "failed")]
            watts = [t.watts_now for t in running if t.watts_now is not None]
            etas = [t.eta_s for t in running if t.eta_s is not None]
            n_fail = sum(t.state == "failed" for t in self.sweeps.values())
            cells = sum(t.cells_done for t in self.sweeps.values())
            cells_all = sum(t.cells_total for t in self.sweeps.values())
            nodes = len({n for n, _ in self.sweeps})
            tab.add_row("[b]total[/]", f"{nodes} nodes", "", f"{len(self.sweeps)} sweeps", "",
                        f"{cells}/{cells_all}", f"{done}/{total}", f"{sum(watts):.0f} W" if watts else "-",
                        fmt_joules(joules),
                        fmt_duration(max(etas)) if etas else "-",
                        f"{len(running)} running" + (f", {n_fail} failed" if n_fail else ""))
        if estimate:
            tab.caption = "* estimate: CPU utilisation x TDP, no power meter on this node"
        return tab


PROGRESS_VERSION = 1


def write_progress(path: Path, title: str, rows: list[ProgressTick], sweeps: list[ProgressTick]) -> None:
    """A JSON snapshot of a sweep's progress: ``{"version", "title", "t_wall", "rows": [...],
    "sweeps": [...]}`` (ProgressTick records as objects: each node's latest, each (node, model)
    sweep's latest), written atomically (temp + rename)."""
    import json
    import os

    doc = {"version": PROGRESS_VERSION, "title": title, "t_wall": time.time(),
           "rows": [dataclasses.asdict(t) for t in rows], "sweeps": [dataclasses.asdict(t) for t in sweeps]}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError:
        pass  # a progress mirror must never stop a sweep


def read_progress(path: Path) -> tuple[str, float, list[ProgressTick], list[ProgressTick]] | None:
    """(title, written at, rows, sweeps) from :func:`write_progress`; None if absent or unreadable."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict) or doc.get("version") != PROGRESS_VERSION:
            return None
        fields = {f.name for f in dataclasses.fields(ProgressTick)}

        def ticks(key: str) -> list[ProgressTick]:
            return [ProgressTick(**{k: v for k, v in d.items() if k in fields}) for d in doc[key]]

        return doc["title"], float(doc["t_wall"]), ticks("rows"), ticks("sweeps")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # random bytes: a UnicodeDecodeError
        return None


def view_from_progress(path: Path, console: Console | None = None) -> SweepView | None:
    """A SweepView holding a progress file's state (for rendering in another process)."""
    got = read_progress(path)
    if got is None:
        return None
    title, _, rows, sweeps = got
    v = SweepView(console, live=False, title=title)
    v.rows = {t.node: t for t in rows}
    v.sweeps = {(t.node, t.model): t for t in sweeps}
    return v


