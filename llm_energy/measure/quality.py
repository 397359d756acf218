"""Meter readings that cannot be trusted, flagged per measurement window (a trial's ``quality``).

A meter can fail without raising: a power reading stuck at 0, an energy counter that stops updating,
a RAPL counter that steps back (llm_energy.measure.samplers.rapl keeps such a reading as it is rather
than take it for a wrap), a reading above what the device can draw, or the CPU estimate pinned at its
TDP by other work on a shared machine. Each check looks at the raw samples of one window of one
device the trial's energy sums, and gives a :class:`Flag`; a trial with any flag is stored as
``quality = "suspect:<code>[,<code>...]"`` with the details in ``quality_note``. Its energy is kept
as measured (visible, never replaced by a plausible-looking number); ``fit`` leaves it out.

Codes (docs/schema.md):

* ``power-zero``: no counter, and every power reading in the window is 0 W;
* ``power-frozen``: no counter, and NVML power held one value for ``FROZEN_PERIODS`` update periods;
* ``counter-frozen``: the energy counter held one value for ``FROZEN_PERIODS`` update periods (at
  least ``FROZEN_MIN_S``); a busy or idle device draws power, so its counter always moves;
* ``counter-step-back``: the counter fell;
* ``energy-nonpositive``: the window's energy is 0 J or less (and no check above says why);
* ``above-limit``: mean power over the window above ``LIMIT_SLACK`` x the device's limit (NVML
  power limit, RAPL ``constraint_0_max_power_uw``), or an NVML power reading above ``PEAK_SLACK`` x it;
* ``estimate-pinned``: the CPU estimate read within ``PINNED_HEADROOM`` of its TDP at idle: other work
  keeps the CPU busy, load cannot show above idle and ``energy_net_j`` is ~0;
* ``idle-<code>``: the idle baseline's window had that flag (``energy_net_j`` subtracts it).
* ``compiled``: torch compiled (or recorded a CUDA graph) during the trial's window and again when the
  profiler measured it again (llm_energy.measure.profiler; not a meter's flag: ``check`` cannot recheck it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import polars as pl

from llm_energy.trials.schema import QUALITY_OK, QUALITY_SUSPECT, SOURCE_ESTIMATE, SOURCE_NVML_POWER

FROZEN_PERIODS = 10  # update periods a counter (or NVML power) may not hold one value for
FROZEN_MIN_S = 0.5
LIMIT_SLACK = 1.1  # mean power over a window above 1.1 x the limit: not a reading to trust
PEAK_SLACK = 1.5  # one reading above 1.5 x the limit
PINNED_HEADROOM = 0.1  # estimate at idle within 10% of its TDP


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What the checks need to know about one device's meter."""

    source: str  # the sampler's source label (nvml-power for NVML, rapl, estimate)
    update_period_s: float
    limit_w: float | None  # NVML power limit, RAPL max power, the estimate's TDP
    has_counter: bool
    uuid: str | None = None  # the card's NVML UUID (None: not a GPU, or recorded before it was)


def short_card(uuid: str | None) -> str:
    """A card's NVML UUID cut to what tells the cards of one store apart ("GPU-" and 8 hex digits), each of a
    "+"-joined list of them (a session's GPUs) cut alike; "-": not recorded."""
    return "+".join(u[:12] for u in uuid.split("+")) if uuid else "-"


@dataclass(frozen=True, slots=True)
class Flag:
    code: str
    device: str
    detail: str


def meter_info(samplers: Iterable) -> dict[str, MeterInfo]:
    """Per device id, from the samplers' devices (their power limits) and update periods."""
    return {d.device: MeterInfo(s.source, s.update_period_s, d.power_limit_w, s.has_counter, d.uuid)
            for s in samplers for d in s.devices()}


def frozen_after(m: MeterInfo) -> float:
    """Seconds a reading may hold one value before it counts as frozen."""
    return max(FROZEN_PERIODS * m.update_period_s, FROZEN_MIN_S)


def assess_window(samples: pl.DataFrame, t0: float, t1: float, devices: Iterable[str],
                  energy_j: Mapping[str, float], meters: Mapping[str, MeterInfo]) -> list[Flag]:
    """Flags for the window [t0, t1] (node monotonic s) of each device in ``devices``, from its raw
    samples (SAMPLE_SCHEMA rows; counter reads at the edges included) and its window energy."""
    flags: list[Flag] = []
    for d in devices:
        m = meters.get(d) or MeterInfo("", 0.1, None, False)
        tol = max(1.5 * m.update_period_s, 0.05)
        rows = samples.filter((pl.col("device") == d) & pl.col("t_mono").is_between(t0 - tol, t1 + tol)).sort("t_mono")
        counter = rows.filter(pl.col("joules").is_not_null())
        power = rows.filter(pl.col("watts").is_not_null() & pl.col("t_mono").is_between(t0, t1))
        mine = _counter_flags(d, counter, power, m) if counter.height else _power_flags(d, power, m, t1 - t0)
        e = energy_j.get(d)
        if e is not None and e <= 0 and not mine:
            mine.append(Flag("energy-nonpositive", d, f"window energy {e:.4g} J over {t1 - t0:.2f} s"))
        if e is not None and t1 > t0:
            mine += _limit_flags(d, e / (t1 - t0), power, m)
        flags += mine
    return flags


def _counter_flags(d: str, counter: pl.DataFrame, power: pl.DataFrame, m: MeterInfo) -> list[Flag]:
    out = []
    j, t = counter["joules"], counter["t_mono"]
    fall = (j.diff() < 0).fill_null(False)
    if fall.any():
        drop = -float(j.diff().filter(fall).min())
        out.append(Flag("counter-step-back", d, f"energy counter fell by {drop:.4g} J (not a wrap its range allows)"))
    runs = counter.with_columns((j != j.shift(1)).fill_null(True).cum_sum().alias("_run")) \
        .group_by("_run").agg(span=pl.col("t_mono").max() - pl.col("t_mono").min(), t_a=pl.col("t_mono").min(),
                              t_b=pl.col("t_mono").max())
    worst = runs.sort("span", descending=True).row(0, named=True)
    if worst["span"] >= frozen_after(m) and t.len() >= 2:
        busy = power.filter(pl.col("t_mono").is_between(worst["t_a"], worst["t_b"]))["watts"]
        also = f" while power read {busy.mean():.0f} W" if busy.len() else ""
        periods = worst["span"] / m.update_period_s
        out.append(Flag("counter-frozen", d, f"energy counter unchanged for {worst['span']:.2f} s "
                                             f"({periods:.0f} update periods){also}"))
    return out


def _power_flags(d: str, power: pl.DataFrame, m: MeterInfo, seconds: float) -> list[Flag]:
    if power.height == 0:
        return []
    w = power["watts"]
    if (w == 0).all():
        return [Flag("power-zero", d, f"power read 0 W in all {w.len()} readings over {seconds:.2f} s and the "
                                      "device has no energy counter")]
    if m.source == SOURCE_NVML_POWER and w.n_unique() == 1 and power.height >= 3:
        span = float(power["t_mono"].max() - power["t_mono"].min())
        if span >= frozen_after(m):
            return [Flag("power-frozen", d, f"power held {w[0]:.1f} W for {span:.2f} s ({power.height} readings)")]
    return []


def _limit_flags(d: str, mean_w: float, power: pl.DataFrame, m: MeterInfo) -> list[Flag]:
    lim = m.limit_w
    if not lim or lim <= 0 or m.source == SOURCE_ESTIMATE:
        return []
    if mean_w > LIMIT_SLACK * lim:
        return [Flag("above-limit", d, f"mean {mean_w:.0f} W over the window, above the device's {lim:.0f} W limit")]
    # a single reading only where the meter reads power itself (RAPL's is a counter delta over one poll,
    # as jittery as the poll's timing)
    peak = power["watts"].max() if power.height and m.source == SOURCE_NVML_POWER else None
    if peak is not None and peak > PEAK_SLACK * lim:
        return [Flag("above-limit", d, f"a reading of {peak:.0f} W, above {PEAK_SLACK:g} x the device's {lim:.0f} W limit")]
    return []


def assess_idle(idle_flags: list[Flag], idle_per_device_w: Mapping[str, float], devices: Iterable[str],
                meters: Mapping[str, MeterInfo]) -> list[Flag]:
    """Flags every trial of the run inherits from its idle baseline: the idle window's own flags
    (as ``idle-<code>``) and an estimate pinned at its TDP."""
    out = [Flag(f"idle-{f.code}", f.device, f"idle baseline: {f.detail}") for f in idle_flags]
    for d in devices:
        m, w = meters.get(d), idle_per_device_w.get(d)
        if m is None or m.source != SOURCE_ESTIMATE or not m.limit_w or w is None:
            continue
        if w >= (1 - PINNED_HEADROOM) * m.limit_w:
            out.append(Flag("estimate-pinned", d, f"the CPU estimate read {w:.0f} W at idle, {100 * w / m.limit_w:.0f}% "
                                                  f"of its {m.limit_w:.0f} W TDP: other work keeps this CPU busy, so "
                                                  "load cannot show above idle (energy_net_j ~ 0)"))
    return out


def quality_label(flags: Iterable[Flag]) -> tuple[str, str]:
    """(quality, quality_note) of a trial: "ok" and "" without flags."""
    flags = list(flags)
    if not flags:
        return QUALITY_OK, ""
    codes = ",".join(dict.fromkeys(f.code for f in flags))
    return f"{QUALITY_SUSPECT}:{codes}", "; ".join(f"{f.device}: {f.detail}" for f in flags)
