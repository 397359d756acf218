"""``llm-energy profile --time-budget-s``: a trial predicted not to finish in the time left is deferred (not
started), the next trials that fit run, and the run stops as an interrupted one does; the next run measures
the deferred ones. The budget is no part of the sweep's identity: a store made without it resumes with it.

The end-to-end tests run the real profiler on tiny-llama on the CPU; where a trial must be predicted past
the budget, the prediction is patched (this loaded machine's speed decides nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from llm_energy.cli import main
from llm_energy.measure import budget as tb
from llm_energy.trials.store import open_store

REPO = Path(__file__).resolve().parents[1]
CPU = ["--model", "tiny-llama", "--tin", "8", "--repeats", "1", "--warmups", "0", "--device", "cpu", "--threads", "1",
       "--idle-s", "0.1", "--min-window-s", "0.05", "--no-live"]


def profile(out: Path, tout: str, *extra: str) -> int:
    return main(["profile", *CPU, "--tout", tout, "--out", str(out), *extra])


def stored(out: Path) -> list[str]:
    return sorted(t.split("/", 1)[1] for t in open_store(out).done_trial_ids())


# ---- end to end ---------------------------------------------------------------------------------
def test_a_trial_past_the_budget_is_deferred_the_next_run_measures_it(tmp_path, monkeypatch, capsys):
    """Design order i8-o2, i8-o48, i8-o3: o48 is predicted at 10,000 s, past the 600 s budget, so the run
    measures o2 (the first: nothing to predict from), defers o48, measures o3 after it, and stops as an
    interrupted run (exit 130, committed trials stay). The rerun, predicting from the store's two trials,
    measures o48. The old code had no --time-budget-s (argparse exit 2)."""
    out = tmp_path / "s"
    seen: list[int] = []
    real = tb.TrialPredictor.predict

    def long_o48(self, batch, tin, tout, compiles=False):
        seen.append(len(self.costs))
        return None if not self.costs else (1e4 if tout == 48 else 0.0)

    monkeypatch.setattr(tb.TrialPredictor, "predict", long_o48)
    assert profile(out, "2,48,3", "--time-budget-s", "600") == 130
    err = capsys.readouterr().err
    assert stored(out) == ["i8-o2-b1/r0", "i8-o3-b1/r0"]
    sid = next(iter(open_store(out).sweeps()))
    assert re.search(r"time budget: 1 of 3 trials left for the next run \(the next would take ~10000 s, \d+ s left; "
                     r"more than a whole run's budget of 600 s holds\); 2 of 3 trials of sweep "
                     + sid + " are in .*; rerun the same command to resume", err), err
    assert seen == [0, 1, 2]  # o2 unpredicted, then one trial measured, then two

    seen.clear()

    def spy(self, *a, **k):
        seen.append(len(self.costs))
        return real(self, *a, **k)

    monkeypatch.setattr(tb.TrialPredictor, "predict", spy)
    assert profile(out, "2,48,3", "--time-budget-s", "600") == 0
    assert stored(out) == ["i8-o2-b1/r0", "i8-o3-b1/r0", "i8-o48-b1/r0"]
    assert seen == [2]  # predicted from the store's two committed trials
    assert list(open_store(out).sweeps()) == [sid]


def test_a_store_made_without_the_budget_resumes_with_it(tmp_path, capsys):
    out = tmp_path / "s"
    assert profile(out, "2,3") == 0
    sid = list(open_store(out).sweeps())
    capsys.readouterr()
    assert profile(out, "2,3", "--time-budget-s", "600") == 0
    assert "resuming: 2 of 2 trials already in" in capsys.readouterr().out
    assert list(open_store(out).sweeps()) == sid and len(stored(out)) == 2


def test_the_h200_stores_resume_under_the_budget_session_sh_passes():
    """data/h200/v2/grid-cache-cudnn (made without the option) is the sweep session.sh's grid-cache step with
    --time-budget-s plans: same id, no setting differs."""
    import argparse

    from llm_energy.cli import profile as cli
    from llm_energy.measure.spec import resume_spec, sweep_id

    ap = argparse.ArgumentParser()
    cli.register(ap.add_subparsers())
    args = ap.parse_args(["profile", "--model", "llama-2-7b", "--backend", "cache", "--tin", "8..2048", "--tout",
                          "8..2048", "--repeats", "1", "--warmups", "0", "--out", "x", "--node-type", "h200",
                          "--idle-s", "5", "--no-live", "--time-budget-s", "585"])
    spec = cli.spec_from_args(args)
    sweeps = open_store(REPO / "data" / "h200" / "v2" / "grid-cache-cudnn").sweeps()
    assert sweep_id(spec) in sweeps
    assert resume_spec(sweeps, spec, lambda: "nvml-counter", n_gpus=1) == spec


def test_profile_cells_passes_the_budget(tmp_path, capsys, monkeypatch):
    """benchmarks/gpu/profile_cells (session.sh's third step) takes the option: a budget spent before the
    first trial measures none, the store holds the sweep (its idle), and the run exits as interrupted."""
    from benchmarks.gpu.profile_cells import main as cells_main
    from llm_energy.cli import profile as cli

    monkeypatch.setattr(cli, "spec_from_args", cli.spec_from_args)  # profile_cells replaces it: restored after

    out = tmp_path / "c"
    argv = ["--cells", "8x2,8x3", *[a for a in CPU if a not in ("--tin", "8")], "--out", str(out),
            "--time-budget-s", "0.001"]
    assert cells_main(argv) == 130
    err = capsys.readouterr().err
    assert "time budget: 2 of 2 trials left for the next run (budget spent" in err, err
    store = open_store(out)
    assert store.trials().height == 0 and len(store.sweeps()) == 1


@pytest.mark.parametrize("value", ["-5", "0", "abc", "nan", "inf"])
def test_a_bad_budget_is_one_line_before_any_work(tmp_path, capsys, value):
    out = tmp_path / "s"
    assert profile(out, "2", f"--time-budget-s={value}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-energy profile: error: --time-budget-s=") and "\n" not in err
    assert not out.exists()


def test_session_sh_profile_steps_pass_the_budget():
    text = (REPO / "benchmarks" / "gpu" / "session.sh").read_text()
    for step in ("grid", "grid-cache", "third", "batch"):
        body = text.split(f"\n    {step})\n", 1)[1].split(";;", 1)[0]
        assert "$(tb " in body, step
    assert "timeout --signal=INT" in text


# ---- the predictor and the gate -----------------------------------------------------------------
def cost(tin, tout, step_s, prefill_s=0.01, batch=1, **kw):
    return tb.TrialCost(batch, tin, tout, prefill_s, step_s * (tout - 1), **kw)


def test_nothing_measured_predicts_nothing():
    assert tb.TrialPredictor(0.5).predict(1, 8, 8) is None


def test_a_generation_is_the_prefill_and_its_decode_steps_times_the_safety_factor():
    p = tb.TrialPredictor(0.0, overhead_s=0.0)
    p.add([cost(8, 33, 0.010)])
    assert p.generation_s(1, 8, 65) == pytest.approx(tb.SAFETY * (0.01 + 64 * 0.010))
    assert p.predict(1, 8, 65) == pytest.approx(p.generation_s(1, 8, 65))


def test_a_step_is_no_faster_than_one_measured_at_a_smaller_context():
    """Eager decode steps vary between cells (H200 llama-2-7b: 84 ms at 2048 x 32, 38 at 256 x 32): the
    largest measured at a context no larger bounds the estimate, and a line extrapolates past them."""
    p = tb.TrialPredictor(0.0, safety=1.0)
    p.add([cost(60, 41, 0.020), cost(1000, 101, 0.010)])
    assert p.generation_s(1, 1000, 101) == pytest.approx(0.01 + 100 * 0.020)
    p = tb.TrialPredictor(0.0, safety=1.0)
    p.add([cost(59, 41, 0.010), cost(999, 101, 0.020)])  # 10 ms at 100 tokens, 20 at 1100
    assert p.generation_s(1, 2000, 100) == pytest.approx(0.01 + 99 * 0.030)


def test_the_window_repeats_a_short_generation_up_to_the_minimum():
    p = tb.TrialPredictor(2.0, overhead_s=1.0, safety=1.0)
    p.add([cost(8, 5, 0.010)])
    gen = p.generation_s(1, 8, 5)
    assert p.predict(1, 8, 5) == pytest.approx(2.0 + gen + 1.0)


def test_a_new_bucket_adds_the_largest_compile_measured():
    p = tb.TrialPredictor(0.0, overhead_s=0.0, safety=1.0)
    p.add([cost(8, 5, 0.01, prepare_s=50.0, compiled=True), cost(8, 9, 0.01, prepare_s=60.0, compiled=True),
           cost(8, 7, 0.01, prepare_s=0.3, compiled=False, overhead_s=0.4)])
    gen = p.generation_s(1, 8, 9)
    assert p.predict(1, 8, 9, compiles=True) == pytest.approx(60.0 + gen + 0.4)
    assert p.predict(1, 8, 9, compiles=False) == pytest.approx(0.3 + gen + 0.4)


def test_store_rows_without_decode_seconds_are_left_out():
    assert tb.TrialCost.from_row({"batch": 1, "tin": 8, "tout": 8, "prefill_s": None, "decode_s": None}) is None
    c = tb.TrialCost.from_row({"batch": 1, "tin": 8, "tout": 8, "prefill_s": 0.1, "decode_s": 0.7,
                               "prepare_s": float("nan"), "prepare_compiled": None})
    assert c.prepare_s is None and not c.compiled


def test_the_gate_defers_what_does_not_fit_and_times_the_overhead():
    now = [0.0]
    budget = tb.TimeBudget(10.0, clock=lambda: now[0])
    gate = tb.BudgetGate(budget, tb.TrialPredictor(0.0, overhead_s=0.0, safety=1.0))

    def trial(tout):
        return SimpleNamespace(key=f"i8-o{tout}", cell=SimpleNamespace(batch=1, tin=8, tout=tout))

    assert gate.admit(trial(2), False)  # nothing to predict from: runs
    rec = SimpleNamespace(batch=1, tin=8, tout=2, prefill_s=0.5, decode_s=0.5, prepare_s=0.5,
                          prepare_compiled=False, t_start_mono=100.0, t_end_mono=101.0)
    now[0] = 2.0  # prepare 0.5 + window 1.0 + 0.5 s around them
    gate.measured(rec)
    assert not gate.admit(trial(40), False)  # 0.5 + 0.5 + 39 x 0.5 + 0.5 s > 8 s left
    assert gate.predictor.costs[0].overhead_s == pytest.approx(0.5)
    assert gate.admit(trial(3), False)  # 0.5 + 0.5 + 2 x 0.5 + 0.5 = 2.5 s fits
    now[0] = 11.0
    assert not gate.admit(trial(2), False)  # spent: nothing fits
    e = gate.spent()
    assert e.deferred == 2 and e.next_s == pytest.approx(21.0)
    assert e.describe(2, 5) == "time budget: 2 of 5 trials left for the next run (the next would take ~21 s, 0.0 s left; more than a whole run's budget of 10 s holds)"


def test_a_trial_longer_than_a_run_has_after_loading_says_a_rerun_defers_it_again():
    """Budget 10 s, 3 s of loading: the run's first check has 7 s left. A trial predicted at 8 s fits the whole
    budget but never the time a run has after loading: every rerun would load, defer it and stop, so the
    stop line says so (it used to read as if the next run would measure it)."""
    now = [3.0]
    budget = tb.TimeBudget(10.0, clock=lambda: now[0], start=0.0)
    gate = tb.BudgetGate(budget, tb.TrialPredictor(0.0, overhead_s=0.0, safety=1.0))
    gate.predictor.add([cost(8, 2, 0.5, prefill_s=0.5)])
    trial = SimpleNamespace(key="i8-o16", cell=SimpleNamespace(batch=1, tin=8, tout=16))
    assert gate.predictor.predict(1, 8, 16) == pytest.approx(8.0)
    assert not gate.admit(trial, False)
    assert gate.spent().describe(1, 3) == (
        "time budget: 1 of 3 trials left for the next run (the next would take ~8.0 s, 7.0 s left; more than the "
        "7.0 s this run had left at its first trial: a rerun with this budget will likely defer it again)")
