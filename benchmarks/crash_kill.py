"""SIGKILL the writers at random points and count what a crash costs (issue 16). All figures must be 0.

    .venv/bin/python -m benchmarks.crash_kill [--kills 20] [--seed 0] [--keep DIR]

* ``profile`` (tiny-llama on CPU, 12 trials a sweep) killed at a random moment of its run, then rerun:
  a committed trial that later disappears is *lost*; a trial id stored twice (in the Parquet chunks
  themselves, not as ``trials()`` dedups them) is *duplicated*; a store that cannot be read, or whose
  finished sweep is not exactly its 12 trials, is *inconsistent*.
* ``compact`` on a store of many chunks (new chunks appended between kills): readers must see every
  trial once and every sample row once at every moment (a killed compaction's merged chunks beside
  the old ones were duplicates); the next writer must leave no ``.tmp-`` file nor journal.
* ``fit`` rewriting fits.json: after a kill the file is the old one or the new one, whole (loads).
* ``plan --per-query`` rewriting a plan directory: the old plan or the new one, whole (summary.json's
  counts equal assignment.parquet's and the per-query file's rows), never a mix; a killed writer's
  staging directory is gone after the next run.
* Two writers at once on one store (``import`` started while ``profile`` writes): without ``--wait``
  the import is refused (exit 2) and nothing is lost; with ``--wait`` it waits, and every trial of
  both lands.

Runs in a few minutes on 2 cores; prints one table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CLI = [sys.executable, "-m", "llm_energy.cli"]
SWEEP_TRIALS = 12  # 2 x 2 cells x 3 repeats
PROFILE = ["profile", "--model", "tiny-llama", "--device", "cpu", "--tin", "8,16", "--tout", "4,8", "--repeats", "3",
           "--warmups", "0", "--idle-s", "0.2", "--min-window-s", "0.05", "--no-live"]


def run(args: list[str], *, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    if wait:
        return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV)
    return subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ENV)


def kill_at(args: list[str], delay: float) -> bool:
    """Start the command, SIGKILL it after ``delay`` s; True if it was still running (really killed)."""
    p = run(args, wait=False)
    try:
        p.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


def timed(args: list[str]) -> float:
    t0 = time.monotonic()
    r = run(args)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed: {r.stderr.strip()[-400:]}")
    return time.monotonic() - t0


def raw_trial_ids(store: Path) -> list[str]:
    """Every trial id in the store's chunk files as they lie on disk (what trials() dedups included)."""
    from llm_energy.trials.store import open_store

    files = open_store(store)._files("trials")  # the chunks a reader reads (a compaction journal honoured)
    return pl.concat([pl.read_parquet(f, columns=["trial_id"]) for f in files])["trial_id"].to_list() if files else []


def leftovers(d: Path) -> int:
    return sum(1 for p in d.rglob("*") if p.name.startswith(".tmp-") or ".plan-tmp-" in p.name
               or p.name == "compacting.json")


# ---- profile -------------------------------------------------------------------------------------
def bench_profile(tmp: Path, kills: int, rng: random.Random) -> dict:
    full = timed(PROFILE + ["--out", tmp / "p-ref"])
    lost = dup = bad = killed = 0
    k, store, seen = 0, tmp / "p0", set()
    while killed < kills:
        killed += kill_at(PROFILE + ["--out", store], rng.uniform(0.5, 0.9 * full))
        try:
            ids = raw_trial_ids(store) if (store / "manifest.json").exists() else []
        except Exception:  # noqa: BLE001 - an unreadable store is what this counts
            bad += 1
            ids = []
        dup += len(ids) - len(set(ids))
        lost += len(seen - set(ids))
        seen |= set(ids)
        if len(set(ids)) == SWEEP_TRIALS:  # the sweep finished between kills: a fresh store for the next ones
            k, store, seen = k + 1, tmp / f"p{k + 1}", set()
    resumed = 0
    for i in range(k + 1):  # resume every unfinished store to the end: exactly the sweep's trials each
        s = tmp / f"p{i}"
        if not (s / "manifest.json").exists() or len(set(raw_trial_ids(s))) < SWEEP_TRIALS:
            resumed += 1
            if run(PROFILE + ["--out", s]).returncode != 0:
                bad += 1
                continue
        ids = raw_trial_ids(s)
        dup += len(ids) - len(set(ids))
        bad += len(set(ids)) != SWEEP_TRIALS
        lost += SWEEP_TRIALS - min(SWEEP_TRIALS, len(set(ids)))
    return {"op": "profile", "kills": killed, "lost": lost, "dup": dup, "bad": bad, "left": 0,
            "note": f"{k + 1} stores, {resumed} resumed at the end, each {SWEEP_TRIALS}/{SWEEP_TRIALS} trials; "
                    f"full run {full:.1f} s"}


# ---- compact -------------------------------------------------------------------------------------
def _append(store: Path, start: int, n_chunks: int, rows: int = 20_000) -> None:
    import numpy as np

    from llm_energy.trials.schema import SAMPLE_SCHEMA, TRIAL_SCHEMA
    from llm_energy.trials.store import TrialStore

    st = TrialStore(store, writer="crash_kill")
    for c in range(start, start + n_chunks):
        t = np.arange(rows, dtype=float) + c * rows
        cols = {k: pl.Series(k, [None] * rows, dtype=v) for k, v in SAMPLE_SCHEMA.items()}
        cols.update(t_mono=pl.Series("t_mono", t), watts=pl.Series("watts", 10 + t % 7),
                    node=pl.Series("node", ["n"] * rows), session=pl.Series("session", ["s"] * rows),
                    device=pl.Series("device", ["cpu"] * rows), source=pl.Series("source", ["rapl"] * rows))
        st.append_samples(pl.DataFrame({k: cols[k].cast(v) for k, v in SAMPLE_SCHEMA.items()}))
        tr = {k: None for k in TRIAL_SCHEMA}
        tr.update(trial_id=f"t{c}", sweep_id="s", tin=8, tout=8, energy_j=1.0, runtime_s=0.1)
        st.append_trials(pl.DataFrame([tr], schema=TRIAL_SCHEMA))
    st.close()


def bench_compact(tmp: Path, kills: int, rng: random.Random) -> dict:
    from llm_energy.trials.store import TrialStore, open_store

    store, n = tmp / "c", 0
    _append(store, 0, 40)
    n = 40
    ref = tmp / "c-ref"
    _append(ref, 0, 40)
    full = timed(["compact", ref])
    lost = dup = bad = left = killed = 0
    while killed < kills:
        killed += kill_at(["compact", store], rng.uniform(0.05, 0.9 * full))
        try:
            s = open_store(store)  # a reader: what `fit`, `show`, `report` see right after the crash
            t, smp = s.trials(), s.samples().select("t_mono").collect()
            lost += n - t["trial_id"].n_unique() + max(0, n * 20_000 - smp["t_mono"].n_unique())
            dup += t.height - t["trial_id"].n_unique() + smp.height - smp["t_mono"].n_unique()
        except Exception:  # noqa: BLE001
            bad += 1
        TrialStore(store, writer="crash_kill").close()  # the next writer: finishes or undoes, cleans
        left += leftovers(store)
        _append(store, n, 3)  # more work for the next compaction
        n += 3
    return {"op": "compact", "kills": killed, "lost": lost, "dup": dup, "bad": bad, "left": left,
            "note": f"{n} chunks of 20k sample rows; full run {full:.1f} s"}


# ---- fit -----------------------------------------------------------------------------------------
def _grid_csv(path: Path, n_models: int = 2) -> Path:
    """A small authors'-format grid file: 9 x 9 cells, 2 models."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["Timestamp", "Phase", "Runtime (s)", "GPU Energy (mJ)", "Number of Output Tokens",
                "Number of Input Tokens", "Iteration", "Model", "Number of GPUs", "Prompt", "Total Number of Tokens",
                "Batch Size", "System", "CPU Core", "GPU Total Memory (MB)", "GPU Used Memory (MB)"])
    r = random.Random(1)
    for m in range(n_models):
        for i in range(9):
            for o in range(9):
                tin, tout = 8 * 2 ** i, 8 * 2 ** o
                e = (1 + m) * (5 + 0.01 * tin + 3 * tout + 0.003 * tin * tout) * r.uniform(0.97, 1.03)
                w.writerow([1714146368 + i, f"start-inference-I-{tin}", 0.01 * tout + 0.001 * tin, e * 1000, tout, tin,
                            0, ["falcon-7b", "Llama-2-7b-chat-hf"][m], 1, "p", tin + tout, 32, "argonne-swing", 22,
                            40960, 1.0])
    path.write_text(buf.getvalue())
    return path


def bench_fit(tmp: Path, kills: int, rng: random.Random) -> dict:
    from llm_energy.fit.fits import load_fits

    store = tmp / "f-store"
    r = run(["import", "wilkins2024", _grid_csv(tmp / "grid.csv"), "--out", store])
    assert r.returncode == 0, r.stderr
    out = tmp / "fits.json"
    full = timed(["fit", store, "--out", out])
    ref = {k: d.targets["energy_j"].coef for k, d in load_fits(out).deployments.items()}
    bad = killed = 0
    while killed < kills:
        killed += kill_at(["fit", store, "--out", out], rng.uniform(0.2, 0.9 * full))
        try:
            got = {k: d.targets["energy_j"].coef for k, d in load_fits(out).deployments.items()}
            bad += got != ref
        except Exception:  # noqa: BLE001
            bad += 1
    left = sum(1 for p in tmp.glob(".fits.json.tmp-*"))
    return {"op": "fit", "kills": killed, "lost": "-", "dup": "-", "bad": bad, "left": left,
            "note": f"fits.json old or new and whole; full run {full:.1f} s"}


# ---- plan ----------------------------------------------------------------------------------------
def _plan_consistent(d: Path) -> bool:
    s = json.loads((d / "summary.json").read_text())
    n = s["workload"]["queries"]
    a = pl.read_parquet(d / "assignment.parquet")
    names = {p.name for p in d.iterdir()}
    per_query = (d / "assignment_per_query.parquet")
    ok = int(a["count_assigned"].sum()) == n and all(Path(f).exists() for f in s["files"].values())
    ok &= names == {Path(f).name for f in s["files"].values()}  # no file of another plan beside it
    if per_query.exists():
        ok &= pl.read_parquet(per_query).height == n
    return ok


def bench_plan(tmp: Path, kills: int, rng: random.Random) -> dict:
    fits, store = tmp / "fits.json", tmp / "f-store"
    if not fits.exists():
        run(["import", "wilkins2024", _grid_csv(tmp / "grid.csv"), "--out", store])
        run(["fit", store, "--out", fits])
    keys = [d["deployment"] for d in json.loads(fits.read_text())["deployments"]]
    (tmp / "dep.yaml").write_text("deployments:\n" + "".join(
        f"  - {{name: d{i}, fit: '{k}', accuracy: {50 + 10 * i}}}\n" for i, k in enumerate(keys)))
    for n, name in ((20_000, "w1.csv"), (30_000, "w2.csv")):  # two workloads: old and new plans differ
        assert run(["workload", "synth", "--kind", "mix", "--n", n, "--seed", n, "--max-tokens", 2048,
                    "--out", tmp / name]).returncode == 0
    out = tmp / "plan"

    def cmd(w: str) -> list:
        return ["plan", "--fits", fits, "--deployments", tmp / "dep.yaml", "--workload", tmp / w, "--zeta", 0.5,
                "--per-query", "--out", out]

    full = timed(cmd("w1.csv"))
    bad = killed = left = k = 0
    while killed < kills:
        k += 1
        killed += kill_at(cmd("w2.csv" if k % 2 == 0 else "w1.csv"), rng.uniform(0.3, 0.9 * full))
        try:
            bad += not _plan_consistent(out)
        except Exception:  # noqa: BLE001
            bad += 1
    assert run(cmd("w2.csv")).returncode == 0
    bad += not _plan_consistent(out)
    left = leftovers(tmp / "plan") + sum(1 for p in tmp.iterdir() if ".plan-tmp-" in p.name)
    return {"op": "plan", "kills": killed, "lost": "-", "dup": "-", "bad": bad, "left": left,
            "note": f"old or new plan, whole; full run {full:.1f} s"}


# ---- two writers ---------------------------------------------------------------------------------
def bench_writers(tmp: Path) -> list[dict]:
    """``profile`` writing a sweep and ``import`` started while it holds the store's lock."""
    from llm_energy.trials.store import open_store

    grid = _grid_csv(tmp / "wa.csv", 2)
    assert run(["import", "wilkins2024", grid, "--out", tmp / "ra"]).returncode == 0
    want = SWEEP_TRIALS + open_store(tmp / "ra").trials().height
    rows = []
    for mode in ("refuse", "wait"):
        store = tmp / f"two-{mode}"
        extra = ["--wait"] if mode == "wait" else []
        p1 = subprocess.Popen(CLI + [str(a) for a in PROFILE] + ["--out", str(store)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV)
        while not (store / "manifest.json").exists() and p1.poll() is None:  # the profile holds the lock
            time.sleep(0.05)
        p2 = subprocess.run(CLI + ["import", "wilkins2024", str(grid), "--out", str(store), *extra],
                            capture_output=True, text=True, env=ENV)
        r1 = p1.wait()
        refused = "store in use" in p2.stderr
        if p2.returncode != 0:  # refused: nothing of it was written; rerun once the store is free
            assert run(["import", "wilkins2024", grid, "--out", store]).returncode == 0
        ids = raw_trial_ids(store)
        other = [rc for rc in (r1, p2.returncode) if rc not in (0, 2)]  # 2: refused, in one line
        rows.append({"op": f"2 writers ({mode})", "kills": 0, "lost": want - len(set(ids)),
                     "dup": len(ids) - len(set(ids)), "bad": len(other) + (mode == "refuse") * (not refused),
                     "left": 0, "note": f"profile exit {r1}, import during it exit {p2.returncode}"
                                        f"{' (refused: store in use; rerun after)' if refused else ' (waited)'}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="work here (kept) instead of a temporary directory")
    ap.add_argument("--only", help="comma list of profile,compact,fit,plan,writers")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    only = set((args.only or "profile,compact,fit,plan,writers").split(","))
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(args.keep) if args.keep else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        rows = []
        t0 = time.monotonic()
        for name, fn in (("profile", bench_profile), ("compact", bench_compact), ("fit", bench_fit),
                         ("plan", bench_plan)):
            if name in only:
                rows.append(fn(tmp, args.kills, rng))
                print(f"  {name}: done at {time.monotonic() - t0:.0f} s", file=sys.stderr)
        if "writers" in only:
            rows += bench_writers(tmp)
    head = ("operation", "SIGKILLs", "trials lost", "trials duplicated", "outputs inconsistent", "leftovers", "note")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['op']} | {r['kills']} | {r['lost']} | {r['dup']} | {r['bad']} | {r['left']} | {r['note']} |")
    print(f"\n{time.monotonic() - t0:.0f} s in all")
    bad = [r for r in rows if any(r[k] not in (0, "-") for k in ("lost", "dup", "bad", "left"))]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
