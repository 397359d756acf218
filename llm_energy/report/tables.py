"""Terminal tables (rich) and the number formats the report and the CLI share.

The fits and candidate tables read the fit stage's typed records; :func:`fit_rows` and
:func:`candidate_rows` are the one walk over them that the terminal tables here and the Markdown tables
of :mod:`llm_energy.report.markdown` both render.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Iterator

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from llm_energy.fit.fits import DeploymentFit, FitsFile, TargetModel
from llm_energy.fit.records import Candidate


NON_TTY_WIDTH = 200  # a job log, a pipe or a file: wide enough that no table is cut


def stdout_console() -> Console:
    """The console tables print to: a terminal's own width; elsewhere (a Ray job's log, a pipe, a file)
    ``$COLUMNS`` if set, else :data:`NON_TTY_WIDTH`, so columns are never cut to a few characters."""
    if sys.stdout.isatty():
        return Console(file=sys.stdout)
    return Console(file=sys.stdout, width=int(os.environ.get("COLUMNS") or 0) or NON_TTY_WIDTH)


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


def _f(v, spec):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _pct(v):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{100 * v:+.1f}%" if v < 0 else f"{100 * v:.1f}%"


def _num(v, spec: str) -> str:
    """A column an imported store may leave null (prefill, decode, net energy)."""
    return "-" if v is None else format(v, spec)


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...] = ("deployment", "target", "form")) -> Table:
    tab = Table(title=title)
    for c in columns:
        tab.add_column(c, justify="left" if c in left else "right")
    return tab


def fit_rows(fits: FitsFile) -> Iterator[tuple[DeploymentFit, str, TargetModel, Candidate | None]]:
    """(deployment, target name, chosen model, the paper form's candidate row or None), in file order."""
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            yield d, t, m, m.candidate("paper")


def candidate_rows(fits: FitsFile) -> Iterator[tuple[DeploymentFit, str, Candidate]]:
    """Every candidate of every (deployment, target): the chosen one first, then by held-out median."""
    for d in fits.deployments.values():
        for t, m in d.targets.items():
            for c in sorted(m.candidates, key=lambda c: (not c.chosen, c.median)):
                yield d, t, c


def fits_table(fits: FitsFile) -> Table:
    tab = _table("fits (held-out relative error: K-fold over cells)",
                 ("deployment", "target", "form", "n", "R² unc.", "R² cent.", "held-out median", "held-out p90",
                  "paper form median", "90% PI"))
    for d, t, m, paper in fit_rows(fits):
        st, cv, pi = m.stats, m.cv, m.interval
        tab.add_row(d.deployment, t, m.form, str(st.n if st.n is not None else d.n_trials),
                    _f(st.r2_uncentered, ".4f"), _f(st.r2_centered, ".4f"), _pct(cv.median if cv else None),
                    _pct(cv.p90 if cv else None), _pct(paper.median) if paper else "-",
                    f"{_pct(pi.q_lo)}..{_pct(pi.q_hi)}" if pi and pi.q_lo is not None else "-")
    return tab


def candidates_table(fits: FitsFile) -> Table:
    """Every candidate form of every (deployment, target): held-out median and p90, sane, chosen."""
    tab = _table("candidate forms (held-out relative error; auto picks, among the eligible, the sane form with "
                 "the lowest median)",
                 ("deployment", "target", "form", "held-out median", "held-out p90", "sane", "eligible", "chosen"))
    for d, t, c in candidate_rows(fits):
        tab.add_row(d.deployment, t, c.form, _pct(c.median), _pct(c.p90), "yes" if c.sane else "no",
                    eligibility(c, t), "*" if c.chosen else "")
    return tab


def eligibility(c, target: str) -> str:
    """Why auto may not choose a candidate: a form not made for the target (energy only the additive
    ones, runtime only the floored ones) or, pooled over batch sizes, one without a batch term."""
    if getattr(c, "eligible", True):
        return "yes"
    from llm_energy.fit.forms import NOT_FOR
    return f"no (not for {target})" if c.form in NOT_FOR.get(target, ()) else "no (no batch term)"


def _pi(lo, hi, spec: str) -> str:
    return "-" if lo is None or hi is None else f"{lo:{spec}}..{hi:{spec}}"


def predictions_table(pred: pl.DataFrame, limit: int = 50) -> Table:
    """The first ``limit`` rows of :func:`llm_energy.fit.fits.predict_all` output."""
    tab = Table(title=f"predictions ({pred.height} rows)")
    for c in ("deployment", "tin", "tout", "batch", "energy J", "90% PI", "runtime s", "90% PI "):
        tab.add_column(c)
    for r in pred.head(limit).iter_rows(named=True):
        tab.add_row(r["deployment"], str(r["tin"]), str(r["tout"]), str(r["batch"]), f"{r['energy_j']:.2f}",
                    _pi(r["energy_j_lo"], r["energy_j_hi"], ".2f"), f"{r['runtime_s']:.3f}",
                    _pi(r["runtime_s_lo"], r["runtime_s_hi"], ".3f"))
    return tab


def trials_table(df: pl.DataFrame, title: str = "trials") -> Table:
    tab = _table(title, ("cell_id", "rep", "tin", "tout", "batch", "runtime s", "prefill ms", "energy J", "net J",
                         "J/token", "ms/step", "source", "model", "backend", "device"),
                 left=("cell_id", "source", "model", "backend", "device"))
    for r in df.iter_rows(named=True):
        toks = max(1, r["tout"] * r["batch"])
        step_ms = 1e3 * (r["decode_s"] or 0.0) / max(1, r["tout"] - 1) if r["tout"] > 1 else float("nan")
        rep = f"{r['repeat']}{'w' if r['warmup'] else ''}"
        prefill_ms = 1e3 * r["prefill_s"] if r["prefill_s"] is not None else None
        per_tok = r["energy_j"] / toks if r["energy_j"] is not None else None  # null: the meter failed
        tab.add_row(r["cell_id"], rep, str(r["tin"]), str(r["tout"]), str(r["batch"]), _num(r["runtime_s"], ".3f"),
                    _num(prefill_ms, ".1f"), _num(r["energy_j"], ".2f"), _num(r["energy_net_j"], ".2f"),
                    _num(per_tok, ".4f"), f"{step_ms:.2f}", r["energy_source"], r["model"], r["backend"],
                    r["device"])
    return tab


def cell_summary_table(meas: pl.DataFrame) -> Table:
    """Medians over repeats per (tin, tout, batch) cell of a sweep's measured trials (``profile``'s summary)."""
    g = (
        meas.group_by("tin", "tout", "batch")
        .agg(
            n=pl.len(),
            energy_j=pl.col("energy_j").median(),
            runtime_s=pl.col("runtime_s").median(),
            decode_s=pl.col("decode_s").median(),
        )
        .sort("batch", "tin", "tout")
    )
    tab = _table("per cell (medians over repeats)", ("tin", "tout", "batch", "n", "energy J", "J/token", "runtime s",
                                                     "ms/step"), left=())
    for r in g.iter_rows(named=True):
        step = 1e3 * r["decode_s"] / (r["tout"] - 1) if r["tout"] > 1 else math.nan
        tab.add_row(str(r["tin"]), str(r["tout"]), str(r["batch"]), str(r["n"]), f"{r['energy_j']:.3f}",
                    f"{r['energy_j'] / (r['tout'] * r['batch']):.4f}", f"{r['runtime_s']:.3f}", f"{step:.2f}")
    return tab
