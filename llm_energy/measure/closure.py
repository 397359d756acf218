"""Energy accounting checks on a store's raw samples (``llm-energy check``).

* **Instrument agreement** per trial and device: the energy counter (interpolated between update
  points) against the trapezoid of the polled power, over the same window.
* **Session closure** per profiler session and device: the counter's total from the session's first
  to last reading against (a) the sum of the trials' window energies, plus the energy of their
  ``backend.prepare`` (compilation, CUDA-graph capture, warm-up generations: ``prepare_j``, measured
  since it was recorded), plus the idle baseline times the rest of the time (outside windows and
  prepare), and (b) the trapezoid of all polled power. Stores from before ``prepare_j`` count prepare's
  time as idle, the old (trials + idle x outside) / counter: at batch 256 prepare draws ~600 W (H200,
  llama-2-7b: 0.96 where batch-1 stores closed at 0.98-0.997). What (a) still misses is reported in
  joules: the rest's energy above idle (a heavy window's power decaying through the cooldown and the
  counter's settle wait, the model loading).
* **Quality**: how many trials the meters' checks flagged suspect, and why
  (:mod:`llm_energy.measure.quality`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from llm_energy.measure.integrate import window_energy
from llm_energy.measure.quality import MeterInfo, assess_window, quality_label
from llm_energy.trials.schema import SOURCE_NVML_POWER, SweepInfo, quality_counts, suspect_rows
from llm_energy.trials.store import TrialStore


def quality_summary(trials: pl.DataFrame, limit: int = 20) -> dict:
    """Trials ok and suspect, suspect flags per reason code, and the first ``limit`` suspect trials."""
    bad = trials.filter(suspect_rows())
    rows = bad.select("trial_id", "quality", "quality_note").head(limit).to_dicts() if bad.height else []
    return {"ok": trials.height - bad.height, "suspect": bad.height, "reasons": quality_counts(trials),
            "suspect_trials": rows}


def _run(info: SweepInfo | None, session: str) -> dict:
    return next((r for r in (info.runs if info else []) if r.get("session") == session), {})


def _meters(info: SweepInfo | None, session: str, devices: list[str], source: str) -> dict[str, MeterInfo]:
    """The run's meters as recorded (limits, update periods); for runs recorded before that, what the
    trial's energy source implies (no limits)."""
    rec = _run(info, session).get("meters") or {}
    known = set(MeterInfo.__slots__)  # a record of a later version may carry more
    out = {d: MeterInfo(**{k: v for k, v in m.items() if k in known}) for d, m in rec.items() if isinstance(m, dict)}
    for d in devices:
        if d not in out:
            nvml = source.startswith("nvml")
            out[d] = MeterInfo(SOURCE_NVML_POWER if nvml else source, 0.1 if nvml else 0.001 if source == "rapl" else 0.02,
                               None, source in ("nvml-counter", "rapl"))
    return out


def recheck_quality(store: TrialStore) -> pl.DataFrame:
    """The meters' checks run again on the stored raw samples of every measured trial: trial_id, the
    stored quality and the rechecked one with its note. (A compacted store keeps one power reading per
    interval and only the counter's update points: a frozen counter no longer shows there.)"""
    trials = store.trials().filter(pl.col("session").is_not_null() & pl.col("devices").is_not_null())
    cols = {"trial_id": pl.String, "quality": pl.String, "recheck": pl.String, "recheck_note": pl.String}
    if trials.height == 0:
        return pl.DataFrame(schema=cols)
    samples = store.samples().filter(pl.col("session").is_in(trials["session"].unique().to_list())).collect()
    streams = samples.partition_by("node", "session", as_dict=True)
    sweeps, rows = store.sweeps(), []
    for r in trials.iter_rows(named=True):
        frame = streams.get((r["node"], r["session"]))
        devs = [d for d in r["devices"] if d.startswith("gpu") == bool(r["n_gpus"])]
        if frame is None or not devs:
            continue
        t0, t1 = r["t_start_mono"], r["t_end_mono"]
        energy = {d: e * (r["n_inner"] or 1) for d, e in zip(r["devices"], r["device_energy_j"]) if d in devs}
        meters = _meters(sweeps.get(r["sweep_id"]), r["session"], devs, r["energy_source"] or "")
        flags = assess_window(frame.filter(pl.col("t_mono").is_between(t0 - 1, t1 + 1)), t0, t1, devs, energy, meters)
        q, note = quality_label(flags)
        rows.append({"trial_id": r["trial_id"], "quality": r["quality"], "recheck": q, "recheck_note": note})
    return pl.DataFrame(rows, schema=cols)


def run_idle_w(info: SweepInfo, session: str, device: str) -> float | None:
    """The idle power of ``device`` measured by the run ``session`` of a sweep (each run keeps its own
    baseline); the sweep's first baseline for records without runs."""
    run = _run(info, session)
    return (run.get("idle_per_device_w") or {}).get(device) if run else info.idle_per_device_w.get(device)


def run_cards(run: dict) -> dict[str, str]:
    """Per device of a run record (a sweep's ``runs`` entry), its card's NVML UUID as the run recorded it
    with its meter; devices without one (a CPU meter, a run recorded before it) are absent."""
    meters = run.get("meters") or {}
    return {d: m["uuid"] for d, m in meters.items() if isinstance(m, dict) and m.get("uuid")}


def instrument_agreement(store: TrialStore) -> pl.DataFrame:
    """Per trial x device: counter_j, power_j and (power - counter) / counter."""
    t = store.trials().filter(pl.col("session").is_not_null())
    if t.height == 0:
        return pl.DataFrame()
    e = window_energy(store.samples(), t.select("trial_id", "node", "session", "t_start_mono", "t_end_mono"))
    wide = (e.group_by("trial_id", "device")
            .agg(pl.col("energy_j").filter(pl.col("method") == "counter").first().alias("counter_j"),
                 pl.col("energy_j").filter(pl.col("method") == "trapezoid").first().alias("power_j"))
            .drop_nulls())
    return (wide.join(t.select("trial_id", "cell_id", "backend", "runtime_s", "n_inner"), on="trial_id")
            .with_columns(((pl.col("power_j") - pl.col("counter_j")) / pl.col("counter_j")).alias("rel_diff"))
            .sort("trial_id", "device"))


@dataclass
class SessionClosure:
    session: str
    device: str
    seconds: float
    counter_j: float  # counter total over the session
    power_j: float  # trapezoid of all polled power over the same span
    trials_j: float  # sum of trial window energies (energy per generation x n_inner)
    window_s: float  # time inside trial windows
    idle_w: float
    outside_j: float  # counter energy outside trial windows
    prepare_j: float | None = None  # the trials' prepare energy; None: not recorded (a store from before it)
    prepare_s: float | None = None  # the trials' prepare seconds (None: not recorded)
    card: str | None = None  # the device's NVML UUID as the run recorded it (None: not a GPU, or recorded before it was)

    @property
    def idle_closure(self) -> float:
        """(trials + idle x time outside windows) / counter total: prepare's time counted as idle."""
        return (self.trials_j + self.idle_w * (self.seconds - self.window_s)) / self.counter_j

    @property
    def counts_prepare(self) -> bool:
        """Whether :attr:`closure` adds the measured prepare energy (else it is :attr:`idle_closure`)."""
        return self.prepare_j is not None and self.prepare_s is not None

    @property
    def rest_s(self) -> float:
        """Seconds outside trial windows and, where it was measured, outside prepare."""
        return self.seconds - self.window_s - (self.prepare_s if self.counts_prepare else 0.0)

    @property
    def rest_above_idle_j(self) -> float:
        """What :attr:`closure` misses: the counter's energy over :attr:`rest_s` above idle x rest_s."""
        return self.counter_j - self.trials_j - (self.prepare_j if self.counts_prepare else 0.0) - self.idle_w * self.rest_s

    @property
    def closure(self) -> float:
        """(trials + prepare + idle x rest) / counter total where prepare's energy was recorded, else
        :attr:`idle_closure`."""
        if not self.counts_prepare:
            return self.idle_closure
        return (self.trials_j + self.prepare_j + self.idle_w * self.rest_s) / self.counter_j

    @property
    def power_closure(self) -> float:
        return self.power_j / self.counter_j

    def to_dict(self) -> dict:
        """``check --json``'s session row: the keys it always had (``idle_closure`` keeps its formula) and
        ``prepare_j``, ``prepare_s`` (null where not recorded), ``rest_s``, ``rest_above_idle_j``,
        ``closure``, ``closure_counts_prepare``, ``card`` (the GPU's NVML UUID; null where not recorded)."""
        return {"session": self.session, "device": self.device, "seconds": self.seconds, "counter_j": self.counter_j,
                "power_j": self.power_j, "trials_j": self.trials_j, "window_s": self.window_s, "idle_w": self.idle_w,
                "outside_windows_j": self.outside_j, "idle_closure": self.idle_closure,
                "power_closure": self.power_closure, "prepare_j": self.prepare_j, "prepare_s": self.prepare_s,
                "rest_s": self.rest_s, "rest_above_idle_j": self.rest_above_idle_j, "closure": self.closure,
                "closure_counts_prepare": self.counts_prepare, "card": self.card}


def _prepare(tr: pl.DataFrame, device: str) -> tuple[float | None, float | None]:
    """The session's trials' prepare energy on ``device`` and prepare seconds; None where a trial did not record
    it (a store from before ``prepare_j``: then the closure counts prepare's time as idle)."""
    if tr.height == 0:
        return None, None
    secs = None if tr["prepare_s"].null_count() else float(tr["prepare_s"].sum())
    joules = 0.0
    for pd, d in zip(tr["prepare_device_j"].to_list(), tr["devices"].to_list()):
        if pd is None:
            return None, secs
        joules += pd[d.index(device)] if device in (d or []) else 0.0
    return joules, secs


def session_closure(store: TrialStore) -> list[SessionClosure]:
    trials = store.trials().filter(pl.col("session").is_not_null())
    samples = store.samples().filter(pl.col("session").is_not_null()).collect()
    sweeps = store.sweeps()
    out = []
    for (session, device), s in samples.filter(pl.col("joules").is_not_null()).group_by(["session", "device"]):
        s = s.sort("t_mono")
        t0, t1 = float(s["t_mono"][0]), float(s["t_mono"][-1])
        node = s["node"][0]
        whole = pl.DataFrame({"trial_id": ["session"], "node": [node], "session": [session], "t_start_mono": [t0], "t_end_mono": [t1]})
        e = window_energy(samples.filter((pl.col("session") == session) & (pl.col("device") == device)), whole)
        counter = e.filter(pl.col("method") == "counter")["energy_j"].sum()
        power = e.filter(pl.col("method") == "trapezoid")["energy_j"].sum()
        tr = trials.filter(pl.col("session") == session)
        per_dev = [de[d.index(device)] * n if device in d else 0.0
                   for de, d, n in zip(tr["device_energy_j"].to_list(), tr["devices"].to_list(), tr["n_inner"].to_list())]
        trials_j = float(sum(per_dev))
        window_s = float((tr["t_end_mono"] - tr["t_start_mono"]).sum()) if tr.height else 0.0
        # a run interrupted before its first trial committed has no trial rows: its sweep is the one
        # whose runs record the session (else its idle, and so its closure, would read 0)
        sweep_ids = tr["sweep_id"].unique().to_list() or [x for x, i in sweeps.items() if _run(i, session)]
        idle = [run_idle_w(sweeps[x], session, device) for x in sweep_ids if x in sweeps]
        idle_w = float(idle[0]) if idle and idle[0] is not None else 0.0
        prep_j, prep_s = _prepare(tr, device)
        card = next((c for x in sweep_ids if x in sweeps if (c := run_cards(_run(sweeps[x], session)).get(device))), None)
        out.append(SessionClosure(session, device, t1 - t0, counter, power, trials_j, window_s, idle_w, counter - trials_j,
                                  prep_j, prep_s, card))
    return sorted(out, key=lambda c: (c.session, c.device))
