"""`llm-energy check` reports the trials the profiler stored ``suspect:compiled`` (torch compiled during the
window and again when measured again): how many and which. The flag is the profiler's compile count,
not a meter's, so the recheck on the raw samples cannot find it; check says so instead of letting the
recheck read "0 suspect" alone."""

import json

import numpy as np

from llm_energy.cli import main
from llm_energy.trials.schema import PowerSample, samples_frame
from llm_energy.trials.store import TrialStore
from tests.test_store import make_record

NOTE = "gpu0: torch compiled during the window (1 dynamo compile) and again when it was measured again"
QUALITY = {1: "suspect:compiled", 3: "suspect:counter-step-back,compiled", 4: "suspect:counter-step-back"}


def gpu_store(path):
    """Five trials on one GPU session (100 W, an NVML counter and power readings every 50 ms); trials 1 and
    3 flagged compiled (3 with a meter's code too), 4 with a meter's code only."""
    recs = []
    for i in range(5):
        r = make_record(i)
        r.trial_id, r.cell_id, r.warmup = f"s1/i{8 * (i + 1)}-o8-b1/r0", f"i{8 * (i + 1)}-o8-b1", False
        r.tin, r.tin_actual = 8 * (i + 1), 8 * (i + 1)
        r.session, r.devices, r.n_gpus, r.device, r.energy_source = "sess", ["gpu0"], 1, "gpu0", "nvml-counter"
        r.t_start_mono, r.t_end_mono, r.runtime_s, r.energy_j, r.device_energy_j = 1.0 + 2 * i, 2.0 + 2 * i, 1.0, 100.0, [100.0]
        r.quality, r.quality_note = QUALITY.get(i, "ok"), NOTE if "compiled" in QUALITY.get(i, "") else ""
        recs.append(r)
    store = TrialStore(path)
    store.append_trials(recs)
    t = np.arange(0.0, 12.0, 0.05)
    samples = [PowerSample(1e9 + x, x, "n", "gpu0", "nvml-power", watts=100.0) for x in t]
    samples += [PowerSample(1e9 + x, x, "n", "gpu0", "nvml-counter", joules=100.0 * x) for x in t]
    store.append_samples(samples_frame(samples, "sess"))
    return path


def test_check_json_names_the_compiled_trials(tmp_path, capsys):
    store = gpu_store(tmp_path / "s")
    capsys.readouterr()
    assert main(["check", str(store), "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    assert q["suspect"] == 3 and q["reasons"] == {"compiled": 2, "counter-step-back": 2}  # as stored
    assert q["recheck"]["suspect"] == 0  # the meters' checks on the raw samples cannot see the compile
    c = q["compiled"]
    assert c["n_trials"] == 2 and [r["trial_id"] for r in c["trials"]] == ["s1/i16-o8-b1/r0", "s1/i32-o8-b1/r0"]
    assert [(r["tin"], r["tout"], r["batch"]) for r in c["trials"]] == [(16, 8, 1), (32, 8, 1)]
    assert all(r["quality_note"] == NOTE for r in c["trials"])


def test_check_prints_the_compiled_trials(tmp_path, capsys):
    store = gpu_store(tmp_path / "s")
    capsys.readouterr()
    assert main(["check", str(store)]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "quality rechecked from the raw samples: 5 ok, 0 suspect" in flat
    assert ("warning: 2 trial(s) flagged suspect:compiled (torch compiled during the window and again when "
            "measured again") in flat
    assert "cannot see it): s1/i16-o8-b1/r0 (16x8 b1), s1/i32-o8-b1/r0 (32x8 b1)" in flat


def test_check_without_compiled_trials_says_nothing_of_them(tmp_path, capsys):
    recs = []
    for i in range(3):
        r = make_record(i)
        r.trial_id, r.warmup = f"s1/i8-o8-b1/r{i}", False
        recs.append(r)
    TrialStore(tmp_path / "s").append_trials(recs)
    capsys.readouterr()
    main(["check", str(tmp_path / "s")])  # no counter samples: it says so after the quality lines
    assert "suspect:compiled" not in capsys.readouterr().out


def test_a_run_interrupted_before_its_first_trial_closes_on_its_own_idle(tmp_path, capsys):
    """A resumed run stopped during its first trial leaves samples (its idle and the discarded trial)
    but no trial row: its closure is idle x time against the counter, from the idle that run measured,
    not 0 (the idle used to come only from the sweeps of the session's trials)."""
    from llm_energy.trials.schema import SweepInfo

    path = gpu_store(tmp_path / "s")
    store = TrialStore(path)
    runs = [{"session": "sess", "node": "n", "idle_w": 100.0, "idle_per_device_w": {"gpu0": 100.0}},
            {"session": "late", "node": "n", "idle_w": 80.0, "idle_per_device_w": {"gpu0": 80.0}}]
    store.register_sweep("s1", SweepInfo("s1", "tiny-llama", "static", "bfloat16", "h200", 1, idle_w=100.0,
                                         idle_per_device_w={"gpu0": 100.0}, runs=runs))
    t = np.arange(0.0, 8.0, 0.05)
    late = [PowerSample(2e9 + x, 100.0 + x, "n", "gpu0", "nvml-power", watts=80.0) for x in t]
    late += [PowerSample(2e9 + x, 100.0 + x, "n", "gpu0", "nvml-counter", joules=80.0 * x) for x in t]
    store.append_samples(samples_frame(late, "late"))
    capsys.readouterr()
    assert main(["check", str(path), "--json"]) == 0
    sess = {s["session"]: s for s in json.loads(capsys.readouterr().out)["sessions"]}
    assert sess["late"]["trials_j"] == 0 and sess["late"]["idle_w"] == 80.0
    assert abs(sess["late"]["idle_closure"] - 1.0) < 1e-6
